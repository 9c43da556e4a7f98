//! Plain SGD, `x ← x − λ g`: the explicit Euler step of the gradient flow.

use burn::tensor::{backend::Backend, Tensor};

/// One SGD step.
pub fn step<B: Backend>(x: Tensor<B, 2>, g: Tensor<B, 2>, lr: f64) -> Tensor<B, 2> {
    x - g.mul_scalar(lr)
}
