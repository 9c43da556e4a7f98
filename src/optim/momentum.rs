//! Heavy-ball momentum: `v ← β v + g`, `x ← x − λ v` (PyTorch's SGD with momentum, no dampening).

use burn::tensor::{backend::Backend, Tensor};

use super::State;

/// One momentum step; the state holds the velocity v in `moment_1`.
pub fn step<B: Backend>(
    x: Tensor<B, 2>,
    g: Tensor<B, 2>,
    state: Option<State<B>>,
    lr: f64,
    beta: f64,
) -> (Tensor<B, 2>, State<B>) {
    let (time, v) = match state {
        Some(State { time, moment_1: Some(v), .. }) => (time, v.mul_scalar(beta) + g),
        _ => (0, g),
    };
    let x = x - v.clone().mul_scalar(lr);
    (x, State { time: time + 1, moment_1: Some(v), moment_2: None })
}
