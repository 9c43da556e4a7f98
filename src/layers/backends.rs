//! The training backends, recognised at run time.
//!
//! A custom backward pass (or a CPU kernel) can only be written for a concrete backend, such as
//! `Autodiff<I, C>`, while the models are generic over `B: Backend`. Rather than a trait bound
//! that would spread through every model, the ops that have one ([`super::attention`],
//! [`super::capture`], [`super::gelu()`], [`super::layer_norm()`], [`super::softmax()`],
//! [`super::contiguous()`], [`super::matmul()`], [`super::cast()`], [`super::add_bias()`]) check
//! at run time whether `B` is a backend they know ([`as_backend`], a safe `Any` downcast;
//! `on_flex` for an op of one or more tensors with a kernel on flex and one under autodiff) and
//! take Burn's generic path otherwise.

use std::any::{Any, TypeId};

use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::{Autodiff, Flex};
use burn::tensor::ops::{FloatTensor, FloatTensorOps};
use burn::tensor::{backend::Backend, DType, Element, Tensor, TensorPrimitive};
use burn_flex::FlexTensor;
use rayon::prelude::*;

/// `t` as a tensor of backend `A` when `B` is `A`; `Err(t)`, untouched, otherwise.
pub fn as_backend<B: Backend, A: Backend, const D: usize>(
    t: Tensor<B, D>,
) -> Result<Tensor<A, D>, Tensor<B, D>> {
    match (Box::new(t) as Box<dyn Any>).downcast::<Tensor<A, D>>() {
        Ok(t) => Ok(*t),
        Err(t) => Err(*t.downcast::<Tensor<B, D>>().expect("the box holds the Tensor<B, D> put in")),
    }
}

/// Applies `plain` to the primitives of `xs` (tensors of one backend) when `B` is Burn's `flex`
/// CPU backend and `autodiff` when it is `Autodiff<flex>` (without checkpointing: the op
/// `autodiff` records is prepared for that strategy); gives `xs` back unchanged for any other
/// backend ([`super::backends`]). The output's rank `E` may differ from the inputs'.
pub(crate) fn on_flex<B: Backend, const D: usize, const N: usize, const E: usize>(
    xs: [Tensor<B, D>; N],
    plain: impl FnOnce([FlexTensor; N]) -> FlexTensor,
    autodiff: impl FnOnce([FloatTensor<Autodiff<Flex>>; N]) -> FloatTensor<Autodiff<Flex>>,
) -> Result<Tensor<B, E>, [Tensor<B, D>; N]> {
    /// `f` on the primitives of `xs` as tensors of `A`, which is `B`.
    fn map<A: Backend, B: Backend, const D: usize, const N: usize, const E: usize>(
        xs: [Tensor<B, D>; N],
        f: impl FnOnce([FloatTensor<A>; N]) -> FloatTensor<A>,
    ) -> Tensor<B, E> {
        let xs = xs.map(|x| as_backend::<B, A, D>(x).expect("B is A").into_primitive().tensor());
        as_backend::<A, B, E>(Tensor::from_primitive(TensorPrimitive::Float(f(xs)))).expect("A is B")
    }
    type Ad = Autodiff<Flex, NoCheckpointing>;
    match TypeId::of::<B>() {
        id if id == TypeId::of::<Flex>() => Ok(map::<Flex, B, D, N, E>(xs, plain)),
        id if id == TypeId::of::<Ad>() => Ok(map::<Ad, B, D, N, E>(xs, autodiff)),
        _ => Err(xs),
    }
}

/// Whether `t` is a tensor of `Autodiff<flex>` that autodiff tracks (a gradient flows to it or
/// through it); false on any other backend.
pub(crate) fn tracked_on_flex<B: Backend, const D: usize>(t: &Tensor<B, D>) -> bool {
    type Ad = Autodiff<Flex, NoCheckpointing>;
    as_backend::<B, Ad, D>(t.clone()).is_ok_and(|t| t.into_primitive().tensor().is_tracked())
}

/// `t`'s elements as a mutable slice, when `t` is contiguous from its buffer's start and the
/// buffer's only owner: an element-wise kernel may then write its output over its input.
pub(crate) fn owned_from_start<E: Element + bytemuck::Pod>(t: &mut FlexTensor) -> Option<&mut [E]> {
    let n = t.layout().num_elements();
    if t.layout().contiguous_offsets() != Some((0, n)) {
        return None;
    }
    t.try_storage_mut::<E>().map(|buffer| &mut buffer[..n])
}

/// `t`, copied into row-major order when its elements are not one contiguous run of `E`.
pub(crate) fn readable<E: Element + bytemuck::Pod>(t: FlexTensor) -> FlexTensor {
    match t.as_slice::<E>() {
        Some(_) => t,
        None => t.to_contiguous(),
    }
}

/// A new buffer of `n` elements, written by `fill(task, part)` in parallel, `part` being
/// elements `task · chunk ..` (`chunk` of them, fewer in the last). Each part is zeroed just
/// before `fill` gets it, by the thread that fills it: a kernel's output is not zero-filled (and
/// its fresh pages faulted in) by one thread first, in a pass of its own.
pub(crate) fn filled_in_parallel<E: bytemuck::Pod + Send + Sync>(
    n: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [E]) + Sync + Send,
) -> Vec<E> {
    let mut buffer = Vec::<E>::with_capacity(n);
    buffer.spare_capacity_mut()[..n].par_chunks_mut(chunk.max(1)).enumerate().for_each(|(task, part)| {
        // SAFETY: all-zero bytes are a valid `E` (`Pod`), so the part is initialised once zeroed.
        let part = unsafe {
            std::ptr::write_bytes(part.as_mut_ptr(), 0, part.len());
            &mut *(part as *mut [std::mem::MaybeUninit<E>] as *mut [E])
        };
        fill(task, part);
    });
    // SAFETY: every element was zeroed above.
    unsafe { buffer.set_len(n) };
    buffer
}

/// `t` in `dtype`: a gradient that autodiff hands back in another float type than the
/// kernel's, cast only where it differs.
pub(crate) fn in_dtype(t: FlexTensor, dtype: DType) -> FlexTensor {
    match t.dtype() == dtype {
        true => t,
        false => Flex::float_cast(t, dtype.into()),
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
