//! The training backends, recognised at run time.
//!
//! A custom backward pass (or a CPU kernel) can only be written for a concrete backend, such as
//! `Autodiff<I, C>`, while the models are generic over `B: Backend`. Rather than a trait bound
//! that would spread through every model, the ops that have one ([`super::attention`],
//! [`super::capture`], [`super::gelu()`], [`super::layer_norm()`], [`super::softmax()`],
//! [`super::heads`]) check at run time whether `B` is a backend they know ([`as_backend`], a
//! safe `Any` downcast) and take Burn's generic path otherwise.

use std::any::Any;

use burn::tensor::{backend::Backend, Tensor};

/// `t` as a tensor of backend `A` when `B` is `A`; `Err(t)`, untouched, otherwise.
pub fn as_backend<B: Backend, A: Backend, const D: usize>(
    t: Tensor<B, D>,
) -> Result<Tensor<A, D>, Tensor<B, D>> {
    match (Box::new(t) as Box<dyn Any>).downcast::<Tensor<A, D>>() {
        Ok(t) => Ok(*t),
        Err(t) => Err(*t.downcast::<Tensor<B, D>>().expect("the box holds the Tensor<B, D> put in")),
    }
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
