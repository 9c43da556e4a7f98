//! The product of two matrices, `a b` ([m, k] × [k, n] → [m, n]), or of two stacks of them
//! ([…, m, k] × […, k, n], the same leading dimensions), and its gradients `∂a = g bᵀ`,
//! `∂b = aᵀ g` (ᵀ swapping the last two axes).
//!
//! On the CPU backend (Burn's `flex`, plain or under autodiff) in f32, [`matmul()`] calls gemm
//! (the crate flex uses) on the operands' strides, transposes included, and writes into a
//! fresh, uninitialised buffer. flex 0.21's own product allocates its output zero-filled and
//! then copies it once more to align it (`FlexTensor::empty`): two passes over every product's
//! output, by one thread, with the page faults of fresh memory, which a profile of the ViT step
//! showed as the main thread's largest cost (docs/performance-log.md). Everywhere else (CUDA,
//! f64, halves, other backends, leading dimensions that broadcast) it is Burn's `matmul`.
//!
//! The values are gemm's, as flex's: the same kernel with the same strides and threading. In
//! bf16 (mixed precision, [`super::Precision`]) both compute in f32 and round the product to
//! bf16; here the operands are copied into f32 and the product rounded back by [`super::cast()`]'s
//! parallel passes, where flex converts one element at a time and copies a transposed operand
//! first.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{binary, Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{bf16, DType, Shape, Tensor, TensorData};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::backends::{in_dtype, on_flex};
use super::cast::convert;

/// One product with at least this many multiply-adds (m·k·n) runs gemm on all threads; a stack
/// of smaller ones with at least [`BATCH_PARALLEL_WORK`] in all runs its products side by side
/// (flex's thresholds, so that the values and the threading are flex's).
const PARALLEL_WORK: usize = 192 * 192 * 192;
/// See [`PARALLEL_WORK`].
const BATCH_PARALLEL_WORK: usize = 128 * 128 * 128;

/// `a b` for an [m, k] `a` and a [k, n] `b`, or stacks of them with the same leading
/// dimensions: gemm into a fresh buffer on the CPU backend in f32 and bf16, Burn's `matmul`
/// otherwise.
pub fn matmul<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> Tensor<B, D> {
    let same_stack = a.dims()[..D - 2] == b.dims()[..D - 2];
    if a.dtype() != b.dtype() || !matches!(a.dtype(), DType::F32 | DType::BF16) || !same_stack {
        return a.matmul(b);
    }
    on_flex([a, b], |[a, b]| product(&a, &b), |[a, b]| product_autodiff(a, b))
        .unwrap_or_else(|[a, b]| a.matmul(b))
}

/// `a b` of two flex tensors of one type, f32 or bf16 (computed in f32, rounded to bf16).
fn product(a: &FlexTensor, b: &FlexTensor) -> FlexTensor {
    match a.dtype() {
        DType::F32 => gemm_f32(a, b),
        DType::BF16 => convert(gemm_f32(&widened(a), &widened(b)), DType::BF16),
        other => unreachable!("matmul: the gemm path got {other:?}"),
    }
}

/// A bf16 operand in f32 (exact). The backward pass's operands are transposed row-major
/// tensors: those are converted as stored and transposed back, since gemm reads any strides;
/// any other view is converted through a row-major copy.
fn widened(t: &FlexTensor) -> FlexTensor {
    let stored = transposed(t.clone());
    match stored.as_slice::<bf16>() {
        Some(_) => transposed(convert(stored, DType::F32)),
        None => convert(t.clone(), DType::F32),
    }
}

/// The product as an autodiff op: each operand is kept only when the other one's gradient needs
/// it (`∂a = g bᵀ` needs b, `∂b = aᵀ g` needs a).
fn product_autodiff(
    a: FloatTensor<Autodiff<Flex>>,
    b: FloatTensor<Autodiff<Flex>>,
) -> FloatTensor<Autodiff<Flex>> {
    let (a_tracked, b_tracked) = (a.is_tracked(), b.is_tracked());
    match Product.prepare::<NoCheckpointing>([a.node.clone(), b.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let c = product(&a.primitive, &b.primitive);
            let state = (b_tracked.then(|| a.primitive.clone()), a_tracked.then(|| b.primitive.clone()));
            prep.finish(state, c)
        }
        OpsKind::UnTracked(prep) => prep.finish(product(&a.primitive, &b.primitive)),
    }
}

/// The backward step of [`product_autodiff`]; its state is (a, b), each where needed.
#[derive(Debug)]
struct Product;

impl Backward<Flex, 2> for Product {
    type State = (Option<FlexTensor>, Option<FlexTensor>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (a, b) = ops.state;
        // The gradient in the operands' type, as Burn's backward of a product.
        let dtype = a.as_ref().or(b.as_ref()).expect("an operand kept").dtype();
        binary::<Flex, _, _>(
            ops.parents,
            ops.node,
            grads,
            |g| product(&in_dtype(g, dtype), &transposed(b.expect("kept for ∂a"))),
            |g| product(&transposed(a.expect("kept for ∂b")), &in_dtype(g, dtype)),
        );
    }
}

/// `t` with its last two axes swapped (a view).
fn transposed(t: FlexTensor) -> FlexTensor {
    let d = t.layout().num_dims();
    t.transpose(d - 2, d - 1)
}

/// `a b` of two f32 flex tensors of any strides, [.., m, k] × [.., k, n] with the same leading
/// dimensions, by gemm into a new row-major buffer that is never zero-filled (gemm writes every
/// element of it).
fn gemm_f32(a: &FlexTensor, b: &FlexTensor) -> FlexTensor {
    let (la, lb) = (a.layout(), b.layout());
    let (sa, sb) = (la.shape(), lb.shape());
    let d = sa.num_dims();
    assert!(d >= 2 && sb.num_dims() == d && sa[..d - 2] == sb[..d - 2], "matmul: {sa:?} × {sb:?}");
    let (m, k, n) = (sa[d - 2], sa[d - 1], sb[d - 1]);
    assert_eq!(k, sb[d - 2], "matmul: {sa:?} × {sb:?}");
    let stack = &sa[..d - 2];
    let count: usize = stack.iter().product();
    let mut dims = stack.to_vec();
    dims.extend([m, n]);
    let mut c = Vec::<f32>::with_capacity(count * m * n);
    if k == 0 {
        c.resize(count * m * n, 0.0);
        return FlexTensor::from_data(TensorData::new(c, Shape::from(dims)));
    }
    if m * n == 0 || count == 0 {
        return FlexTensor::from_data(TensorData::new(c, Shape::from(dims)));
    }
    let (ra, rb) = (la.strides(), lb.strides());
    // The element offset of product i's operands: its index in the stack through the strides.
    let offset = |i: usize, strides: &[isize], start: usize| {
        let (mut rest, mut at) = (i, start as isize);
        for axis in (0..d - 2).rev() {
            at += (rest % stack[axis]) as isize * strides[axis];
            rest /= stack[axis];
        }
        at
    };
    let (pa, pb) = (a.storage::<f32>().as_ptr() as usize, b.storage::<f32>().as_ptr() as usize);
    let one = |i: usize, out: *mut f32, parallelism: gemm::Parallelism| {
        // SAFETY: the layouts address elements of their own buffers (start offset plus strides
        // within the shape), and `out` has room for the m·n elements of product i, all of
        // which gemm writes (`read_dst` false, k > 0).
        unsafe {
            let pa = (pa as *const f32).offset(offset(i, ra, la.start_offset()));
            let pb = (pb as *const f32).offset(offset(i, rb, lb.start_offset()));
            gemm::gemm(
                m,
                n,
                k,
                out,
                1,
                n as isize,
                false,
                pa,
                ra[d - 1],
                ra[d - 2],
                pb,
                rb[d - 1],
                rb[d - 2],
                0.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
    };
    let work = m.saturating_mul(k).saturating_mul(n);
    let total = work.saturating_mul(count);
    let side_by_side = count > 1 && total >= BATCH_PARALLEL_WORK && (count >= 4 || work < PARALLEL_WORK);
    let out = c.spare_capacity_mut();
    if side_by_side {
        out.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(i, o)| one(i, o.as_mut_ptr().cast(), gemm::Parallelism::None));
    } else {
        let parallelism = match work >= PARALLEL_WORK {
            true => gemm::Parallelism::Rayon(0),
            false => gemm::Parallelism::None,
        };
        for (i, o) in out.chunks_mut(m * n).enumerate() {
            one(i, o.as_mut_ptr().cast(), parallelism);
        }
    }
    // SAFETY: every product wrote its m·n elements.
    unsafe { c.set_len(count * m * n) };
    FlexTensor::from_data(TensorData::new(c, Shape::from(dims)))
}
