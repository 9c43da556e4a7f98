//! Softmax along the last axis with a scale folded in, p = softmax(s·x) (s > 0; attention's
//! s = 1/√d_h), and its gradient dx = s · p ⊙ (g − rowsum(g⊙p)).
//!
//! On the CPU backend (Burn's `flex`, plain or under autodiff) in f32, [`softmax()`] runs one
//! fused kernel ([`kernel`]) forward and one backward, each a single parallel pass over the
//! rows, in the input's (or the gradient's) buffer when it owns it; under autodiff it keeps
//! only p. Everywhere else (CUDA, f64, halves, other backends, s ≤ 0) it is
//! [`softmax_chain`]: Burn's product with s and its `activation::softmax`.
//!
//! # Shapes
//! - x: any shape, rows along the last axis; p has x's shape (contiguous for the kernel).

pub mod kernel;

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::tensor::activation;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Tensor, TensorMetadata};
use burn_flex::FlexTensor;

use super::backends::{in_dtype, on_flex};

/// softmax(scale · x) along the last axis: fused on the CPU backend in f32, the chain of tensor
/// ops otherwise.
pub fn softmax<B: Backend, const D: usize>(x: Tensor<B, D>, scale: f64) -> Tensor<B, D> {
    let d = x.dims()[D - 1];
    let s = scale as f32;
    if x.dtype() != DType::F32 || d == 0 || !(s > 0.0 && s.is_finite()) {
        return softmax_chain(x, scale);
    }
    on_flex([x], |[x]| fused_forward(x, s), |[x]| fused_autodiff(x, s))
        .unwrap_or_else(|[x]| softmax_chain(x, scale))
}

/// softmax(scale · x) along the last axis as Burn ops: the product with `scale`, then Burn's
/// softmax (max subtracted, exp, sum, division), differentiated by autodiff.
pub fn softmax_chain<B: Backend, const D: usize>(x: Tensor<B, D>, scale: f64) -> Tensor<B, D> {
    activation::softmax(x.mul_scalar(scale), D - 1)
}

/// The fused forward pass as an autodiff op: p is kept for the backward pass.
fn fused_autodiff(x: FloatTensor<Autodiff<Flex>>, scale: f32) -> FloatTensor<Autodiff<Flex>> {
    match ScaledSoftmax.prepare::<NoCheckpointing>([x.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let p = fused_forward(x.primitive, scale);
            prep.finish((p.clone(), scale), p)
        }
        OpsKind::UnTracked(prep) => prep.finish(fused_forward(x.primitive, scale)),
    }
}

/// The backward step of [`fused_autodiff`]; its state is p and the scale.
#[derive(Debug)]
struct ScaledSoftmax;

impl Backward<Flex, 1> for ScaledSoftmax {
    type State = (FlexTensor, f32);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (p, scale) = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| fused_backward(&p, grad, scale));
    }
}

/// p = softmax(s·x) of an f32 flex tensor, in x's buffer when x owns it.
fn fused_forward(x: FlexTensor, scale: f32) -> FlexTensor {
    let d = *x.shape().last().expect("at least one axis");
    let mut p = x.into_data();
    kernel::forward_in_place(p.as_mut_slice::<f32>().expect("f32"), d, scale);
    FlexTensor::from_data(p)
}

/// dx = s · p ⊙ (g − rowsum(g⊙p)), in g's buffer when g owns it.
fn fused_backward(p: &FlexTensor, grad: FlexTensor, scale: f32) -> FlexTensor {
    let grad = in_dtype(grad, DType::F32);
    let d = *p.shape().last().expect("at least one axis");
    let mut g = grad.into_data();
    let p = p.as_slice::<f32>().expect("p is contiguous f32");
    kernel::backward_in_place(p, g.as_mut_slice::<f32>().expect("f32"), d, scale);
    FlexTensor::from_data(g)
}
