//! The training backends, recognised at run time.
//!
//! A custom backward pass (or a CPU kernel) can only be written for a concrete backend, such as
//! `Autodiff<I, C>`, while the models are generic over `B: Backend`. Rather than a trait bound
//! that would spread through every model, the ops that have one ([`super::attention`],
//! [`super::capture`], [`super::gelu()`], [`super::layer_norm()`], [`super::softmax()`],
//! [`super::contiguous()`]) check at run time whether `B` is a backend they know
//! ([`as_backend`], a safe `Any` downcast; `on_flex` for an op with a kernel on flex and one
//! under autodiff) and take Burn's generic path otherwise.

use std::any::Any;

use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::{Autodiff, Flex};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{backend::Backend, Tensor, TensorPrimitive};
use burn_flex::FlexTensor;

/// `t` as a tensor of backend `A` when `B` is `A`; `Err(t)`, untouched, otherwise.
pub fn as_backend<B: Backend, A: Backend, const D: usize>(
    t: Tensor<B, D>,
) -> Result<Tensor<A, D>, Tensor<B, D>> {
    match (Box::new(t) as Box<dyn Any>).downcast::<Tensor<A, D>>() {
        Ok(t) => Ok(*t),
        Err(t) => Err(*t.downcast::<Tensor<B, D>>().expect("the box holds the Tensor<B, D> put in")),
    }
}

/// Applies `plain` to `x`'s primitive when `B` is Burn's `flex` CPU backend and `autodiff`
/// when it is `Autodiff<flex>` (without checkpointing: the op `autodiff` records is prepared
/// for that strategy); gives `x` back unchanged for any other backend ([`super::backends`]).
pub(crate) fn on_flex<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    plain: impl FnOnce(FlexTensor) -> FlexTensor,
    autodiff: impl FnOnce(FloatTensor<Autodiff<Flex>>) -> FloatTensor<Autodiff<Flex>>,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    fn map<A: Backend, const D: usize>(
        x: Tensor<A, D>,
        f: impl FnOnce(FloatTensor<A>) -> FloatTensor<A>,
    ) -> Tensor<A, D> {
        Tensor::from_primitive(TensorPrimitive::Float(f(x.into_primitive().tensor())))
    }
    let x = match as_backend::<B, Flex, D>(x) {
        Ok(x) => return Ok(as_backend::<Flex, B, D>(map(x, plain)).expect("B is flex")),
        Err(x) => x,
    };
    let x = as_backend::<B, Autodiff<Flex, NoCheckpointing>, D>(x)?;
    Ok(as_backend::<Autodiff<Flex, NoCheckpointing>, B, D>(map(x, autodiff)).expect("B is Autodiff<flex>"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CpuBackend, TrainBackend};

    #[test]
    fn a_tensor_passes_as_its_own_backend_only() {
        let t = Tensor::<TrainBackend, 2>::ones([2, 3], &Default::default());
        let same = as_backend::<TrainBackend, TrainBackend, 2>(t).expect("the same backend");
        let back = as_backend::<TrainBackend, CpuBackend, 2>(same).expect_err("another backend");
        assert_eq!(back.dims(), [2, 3]);
    }
}
