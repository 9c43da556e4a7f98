//! Attention's head split and merge as contiguous copies: [B, T, H·d_h] ↔ [B, H, T, d_h], head j
//! owning columns j·d_h..(j+1)·d_h.
//!
//! As Burn ops this is a reshape and a swap of axes 1 and 2: a view forward, but the backward
//! pass (and the merge's forward) reshapes a permuted tensor, which burn-flex copies element by
//! element through its scalar strided iterator. On flex (plain or under autodiff) in f32, bf16
//! and f16, [`split_heads`] and [`merge_heads`] copy each token's d_h-long run of a head at once,
//! in parallel, forward and backward (each one's backward is the other's copy). Everywhere
//! else (CUDA, f64, other backends) they are the reshape and swap of [`split_heads_chain`] and
//! [`merge_heads_chain`].

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{bf16, f16, DType, Element, Tensor, TensorData, TensorPrimitive};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::backends::as_backend;

type AutodiffFlex = Autodiff<Flex, NoCheckpointing>;

/// [B, T, H·d_h] → [B, H, T, d_h] (contiguous on flex), `heads` = H.
pub fn split_heads<B: Backend>(x: Tensor<B, 3>, heads: usize) -> Tensor<B, 4> {
    let [b, t, d] = x.dims();
    if heads == 0 || d % heads != 0 || !copyable(x.dtype()) {
        return split_heads_chain(x, heads);
    }
    let dims = [b, t, heads, d / heads];
    let x = match as_backend::<B, Flex, 3>(x) {
        Ok(x) => return back::<Flex, B, 4>(permute(prim(x), dims, Direction::Split)),
        Err(x) => x,
    };
    match as_backend::<B, AutodiffFlex, 3>(x) {
        Ok(x) => back::<AutodiffFlex, B, 4>(fused_autodiff(prim(x), dims, Direction::Split)),
        Err(x) => split_heads_chain(x, heads),
    }
}

/// [B, H, T, d_h] → [B, T, H·d_h] (contiguous on flex).
pub fn merge_heads<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [b, h, t, d_h] = x.dims();
    if !copyable(x.dtype()) {
        return merge_heads_chain(x);
    }
    let dims = [b, t, h, d_h];
    let x = match as_backend::<B, Flex, 4>(x) {
        Ok(x) => return back::<Flex, B, 3>(permute(prim(x), dims, Direction::Merge)),
        Err(x) => x,
    };
    match as_backend::<B, AutodiffFlex, 4>(x) {
        Ok(x) => back::<AutodiffFlex, B, 3>(fused_autodiff(prim(x), dims, Direction::Merge)),
        Err(x) => merge_heads_chain(x),
    }
}

/// The split as Burn ops: a reshape to [B, T, H, d_h] and a swap of axes 1 and 2 (a view).
pub fn split_heads_chain<B: Backend>(x: Tensor<B, 3>, heads: usize) -> Tensor<B, 4> {
    let [b, t, d] = x.dims();
    x.reshape([b, t, heads, d / heads]).swap_dims(1, 2)
}

/// The merge as Burn ops: a swap of axes 1 and 2 and a reshape to [B, T, H·d_h].
pub fn merge_heads_chain<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [b, h, t, d_h] = x.dims();
    x.swap_dims(1, 2).reshape([b, t, h * d_h])
}

fn copyable(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::BF16 | DType::F16)
}

fn prim<A: Backend, const D: usize>(t: Tensor<A, D>) -> FloatTensor<A> {
    t.into_primitive().tensor()
}

/// The result as a tensor of `B` (which is the backend `A` it was computed on).
fn back<A: Backend, B: Backend, const D: usize>(t: FloatTensor<A>) -> Tensor<B, D> {
    as_backend::<A, B, D>(Tensor::from_primitive(TensorPrimitive::Float(t))).expect("B is A")
}

/// Which way a copy goes; the backward of one is the other.
#[derive(Clone, Copy, Debug)]
enum Direction {
    /// [B, T, H, d_h] → [B, H, T, d_h].
    Split,
    /// [B, H, T, d_h] → [B, T, H, d_h].
    Merge,
}

impl Direction {
    fn reverse(self) -> Self {
        match self {
            Self::Split => Self::Merge,
            Self::Merge => Self::Split,
        }
    }
}

/// The copy as an autodiff op; its state is the [B, T, H, d_h] sizes and the direction.
fn fused_autodiff(
    x: FloatTensor<AutodiffFlex>,
    dims: [usize; 4],
    direction: Direction,
) -> FloatTensor<AutodiffFlex> {
    match HeadCopy.prepare::<NoCheckpointing>([x.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish((dims, direction), permute(x.primitive, dims, direction)),
        OpsKind::UnTracked(prep) => prep.finish(permute(x.primitive, dims, direction)),
    }
}

#[derive(Debug)]
struct HeadCopy;

impl Backward<Flex, 1> for HeadCopy {
    type State = ([usize; 4], Direction);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (dims, direction) = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |g| permute(g, dims, direction.reverse()));
    }
}

/// `x` copied in the direction's order, for sizes [B, T, H, d_h].
fn permute(x: FlexTensor, dims: [usize; 4], direction: Direction) -> FlexTensor {
    match x.dtype() {
        DType::F32 => permute_typed::<f32>(x, dims, direction),
        DType::BF16 => permute_typed::<bf16>(x, dims, direction),
        DType::F16 => permute_typed::<f16>(x, dims, direction),
        other => unreachable!("heads: the copy got {other:?}"),
    }
}

fn permute_typed<E: Element + bytemuck::Pod + Send + Sync>(
    x: FlexTensor,
    [b, t, h, d_h]: [usize; 4],
    direction: Direction,
) -> FlexTensor {
    let x = match x.as_slice::<E>() {
        Some(_) => x,
        None => x.to_contiguous(),
    };
    let src = x.as_slice::<E>().expect("contiguous");
    let shape = match direction {
        Direction::Split => vec![b, h, t, d_h],
        Direction::Merge => vec![b, t, h * d_h],
    };
    let Some(&first) = src.first() else {
        return FlexTensor::from_data(TensorData::new(Vec::<E>::new(), shape));
    };
    let mut dst = vec![first; src.len()];
    match direction {
        Direction::Split => copy_runs(src, &mut dst, [b, t, h, d_h]),
        Direction::Merge => copy_runs(src, &mut dst, [b, h, t, d_h]),
    }
    FlexTensor::from_data(TensorData::new(dst, shape))
}

/// dst[i, k, j, :] = src[i, j, k, :] for src of sizes [n0, n1, n2, run]: each output chunk
/// [k-th block of i] gathers n1 runs, one per j.
fn copy_runs<E: Copy + Send + Sync>(src: &[E], dst: &mut [E], [_, n1, n2, run]: [usize; 4]) {
    let block = n1 * run;
    dst.par_chunks_mut(block).enumerate().for_each(|(ik, out)| {
        let (i, k) = (ik / n2, ik % n2);
        for (j, out) in out.chunks_exact_mut(run).enumerate() {
            let start = ((i * n1 + j) * n2 + k) * run;
            out.copy_from_slice(&src[start..start + run]);
        }
    });
}
