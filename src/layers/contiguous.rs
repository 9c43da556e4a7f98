//! [`contiguous`]: a tensor's values copied into row-major order, so that a permuted or windowed
//! view is read once, fast, instead of by every operation that consumes it; and
//! [`permute_contiguous`], a permutation whose output and whose gradient are both copied so.
//!
//! burn-flex copies a view quickly when its layout collapses to at most two dimensions (a tiled
//! transpose); any other view, such as the `[batch, C, H·W]` transpose of a convolution's rows
//! or the six-dimensional windows of its patch matrix, it walks one element at a time with a
//! strided index. Here, on flex, the outer dimensions are walked by index and the inner two are
//! copied as a tile (by rows where the last stride is 1), in parallel over the outer index.
//! Values are moved bit for bit, so every float type is served. The copy is the identity, so
//! its backward pass hands the gradient through unchanged; a permutation's backward pass copies
//! the gradient back through the inverse permutation (where autodiff's own would hand the next
//! operation a strided view). Other backends get the view: their operations read strided views
//! at full speed, or copy where they must.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Element, Tensor, TensorData};
use burn_flex::{FlexTensor, Layout};

use super::backends::{filled_in_parallel, on_flex};

/// Elements one parallel task copies at least: below this, splitting costs more than it saves.
const MIN_TASK: usize = 1 << 14;
/// The side of a square tile of a transposing copy, in elements.
const TILE: usize = 16;

/// `x` in row-major order: a copy of a view on Burn's `flex` CPU backend (with or without
/// autodiff; see the module docs), `x` itself on any other backend.
pub fn contiguous<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    on_flex([x], |[x]| copy(x), |[x]| copy_autodiff(x)).unwrap_or_else(|[x]| x)
}

/// `x.permute(axes)` in row-major order, and its gradient too: on flex, copies both ways (module
/// docs); elsewhere, the permuted view.
pub fn permute_contiguous<B: Backend, const D: usize>(x: Tensor<B, D>, axes: [usize; D]) -> Tensor<B, D> {
    let permuted = |x: FlexTensor| copy(x.permute(&axes));
    on_flex([x], |[x]| permuted(x), |[x]| permute_autodiff(x, &axes)).unwrap_or_else(|[x]| x.permute(axes))
}

/// The permuted copy as an autodiff op; its state is the inverse permutation.
fn permute_autodiff(x: FloatTensor<Autodiff<Flex>>, axes: &[usize]) -> FloatTensor<Autodiff<Flex>> {
    let mut inverse = vec![0; axes.len()];
    for (i, &a) in axes.iter().enumerate() {
        inverse[a] = i;
    }
    let y = copy(x.primitive.permute(axes));
    match PermuteContiguous.prepare::<NoCheckpointing>([x.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(inverse, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

/// The backward step of [`permute_autodiff`]: the gradient copied through the inverse permutation.
#[derive(Debug)]
struct PermuteContiguous;

impl Backward<Flex, 1> for PermuteContiguous {
    type State = Vec<usize>;

    fn backward(self, ops: Ops<Vec<usize>, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let inverse = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| copy(grad.permute(&inverse)));
    }
}

/// The copy as an autodiff op whose backward pass is the identity.
fn copy_autodiff(x: FloatTensor<Autodiff<Flex>>) -> FloatTensor<Autodiff<Flex>> {
    ToContiguous.prepare::<NoCheckpointing>([x.node.clone()]).compute_bound().stateless(copy(x.primitive))
}

/// The backward step of [`copy_autodiff`]: the identity.
#[derive(Debug)]
struct ToContiguous;

impl Backward<Flex, 1> for ToContiguous {
    type State = ();

    fn backward(self, ops: Ops<(), 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| grad);
    }
}

/// A row-major copy of `x` (`x` itself when it already is one whole buffer).
pub(crate) fn copy(x: FlexTensor) -> FlexTensor {
    let layout = x.layout();
    let n = layout.num_elements();
    if layout.contiguous_offsets() == Some((0, n)) && x.bytes().len() == n * x.dtype().size() {
        return x;
    }
    let (shape, strides) = collapse(layout);
    // flex's own copy is fast at rank ≤ 2 and handles negative strides (flips).
    if shape.len() <= 2 || strides.iter().any(|&s| s < 0) || n == 0 {
        return x.to_contiguous();
    }
    let strides: Vec<usize> = strides.iter().map(|&s| s as usize).collect();
    match x.dtype().size() {
        2 => copy_typed::<u16>(&x, &shape, &strides),
        4 => copy_typed::<u32>(&x, &shape, &strides),
        8 => copy_typed::<u64>(&x, &shape, &strides),
        _ => x.to_contiguous(),
    }
}

/// The view's shape and strides without dimensions of size 1, adjacent dimensions that are
/// one run in memory merged.
fn collapse(layout: &Layout) -> (Vec<usize>, Vec<isize>) {
    let (mut shape, mut strides) = (Vec::new(), Vec::new());
    for (&d, &s) in layout.shape().iter().zip(layout.strides()) {
        if d == 1 {
            continue;
        }
        match (shape.last_mut(), strides.last()) {
            (Some(last), Some(&last_stride)) if last_stride == s * d as isize => {
                *last *= d;
                *strides.last_mut().expect("a stride per dimension") = s;
            }
            _ => {
                shape.push(d);
                strides.push(s);
            }
        }
    }
    (shape, strides)
}

/// The copy of `x`'s elements, read as `T` (a plain type of the element's size), from the
/// collapsed `shape` and `strides` (rank ≥ 3, non-negative).
fn copy_typed<T: Element + bytemuck::Pod>(x: &FlexTensor, shape: &[usize], strides: &[usize]) -> FlexTensor {
    let src: &[T] = bytemuck::cast_slice(x.bytes());
    let start = x.layout().start_offset();
    let k = shape.len();
    let (rows, cols) = (shape[k - 2], shape[k - 1]);
    let (row_stride, col_stride) = (strides[k - 2], strides[k - 1]);
    let (outer_shape, outer_strides) = (&shape[..k - 2], &strides[..k - 2]);
    let tile = rows * cols;
    let outer: usize = outer_shape.iter().product();
    let per_task = MIN_TASK.div_ceil(tile).max(1);
    let dst = filled_in_parallel(outer * tile, tile * per_task, |task, chunk: &mut [T]| {
        for (j, out) in chunk.chunks_mut(tile).enumerate() {
            // The source offset of outer index `task · per_task + j`.
            let mut index = task * per_task + j;
            let mut base = start;
            for (&d, &s) in outer_shape.iter().zip(outer_strides).rev() {
                base += (index % d) * s;
                index /= d;
            }
            copy_tile(src, base, out, (rows, cols), (row_stride, col_stride));
        }
    });
    // The buffer is taken over as it is; the dtype says what its bits are.
    let mut data = TensorData::new(dst, x.layout().shape().clone());
    data.dtype = x.dtype();
    FlexTensor::from_data(data)
}

/// `out[r·cols + c] = src[base + r·row_stride + c·col_stride]`: rows at a time when the columns
/// are adjacent, else in square tiles, so that reads and writes both stay in cache.
fn copy_tile<T: Copy>(
    src: &[T],
    base: usize,
    out: &mut [T],
    (rows, cols): (usize, usize),
    (row_stride, col_stride): (usize, usize),
) {
    if col_stride == 1 {
        for (r, row) in out.chunks_mut(cols).enumerate() {
            let from = base + r * row_stride;
            row.copy_from_slice(&src[from..from + cols]);
        }
        return;
    }
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                let (from, to) = (base + r * row_stride, r * cols);
                for c in c0..(c0 + TILE).min(cols) {
                    out[to + c] = src[from + c * col_stride];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;
    use burn::tensor::{FloatDType, TensorPrimitive};

    use super::*;

    type Train = Autodiff<Flex>;

    fn counting<Bk: Backend, const D: usize>(shape: [usize; D]) -> Tensor<Bk, D> {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 7.0).collect();
        Tensor::from_data(TensorData::new(values, shape), &Default::default())
    }

    fn flex<const D: usize>(t: Tensor<Flex, D>) -> FlexTensor {
        t.into_primitive().tensor()
    }

    /// Views of rank 3 to 6 of tensors in `dtype` that flex's copy walks element by element:
    /// permutations, narrowed (offset) views, a convolution's overlapping windows, and one that
    /// collapses to rank 2.
    fn views(dtype: FloatDType) -> Vec<(String, FlexTensor)> {
        let typed = |t: Tensor<Flex, 4>| t.cast(dtype);
        let x = typed(counting::<Flex, 4>([3, 4, 5, 6]));
        let mut views = Vec::new();
        for axes in [[0, 2, 3, 1], [0, 3, 1, 2], [3, 2, 1, 0], [1, 0, 3, 2], [0, 1, 3, 2], [2, 0, 1, 3]] {
            views.push((format!("permute {axes:?}"), flex(x.clone().permute(axes))));
        }
        let narrowed = x.clone().narrow(1, 1, 2).narrow(3, 2, 3).permute([0, 3, 1, 2]);
        views.push(("narrowed, then permuted".into(), flex(narrowed)));
        let windows: Tensor<Flex, 6> = x.clone().unfold::<5, _>(2, 3, 1).unfold(3, 2, 2);
        views.push(("windows, rows of the patch matrix".into(), flex(windows.permute([0, 2, 3, 1, 4, 5]))));
        let rows = typed(counting::<Flex, 4>([4, 35, 6, 1])).reshape([4, 35, 6]);
        views.push(("rows to NCHW".into(), flex(rows.clone().swap_dims(1, 2))));
        views.push(("collapses to a transpose".into(), flex(rows.permute([2, 0, 1]))));
        views
    }

    #[test]
    fn the_copy_is_flex_s_copy_bit_for_bit_in_every_float_type() {
        for dtype in [FloatDType::F32, FloatDType::BF16, FloatDType::F64] {
            for (name, view) in views(dtype) {
                let n = view.layout().num_elements();
                assert_ne!(view.layout().contiguous_offsets(), Some((0, n)), "{name}: not a view");
                let ours = copy(view.clone());
                assert_eq!(ours.layout().contiguous_offsets(), Some((0, n)), "{name}, {dtype:?}");
                assert_eq!(ours.layout().shape(), view.layout().shape(), "{name}, {dtype:?}");
                assert_eq!(ours.dtype(), view.dtype(), "{name}, {dtype:?}");
                assert_eq!(ours.into_data(), view.to_contiguous().into_data(), "{name}, {dtype:?}");
            }
        }
    }

    #[test]
    fn the_gradient_passes_through_unchanged() {
        let x = counting::<Train, 4>([2, 3, 4, 5]).require_grad();
        let w = counting::<Train, 4>([2, 4, 5, 3]).cos();
        let gradient = |through: bool| {
            let view = x.clone().permute([0, 2, 3, 1]);
            let y = if through { contiguous(view) } else { view };
            let grads = (y.clone() * w.clone()).sum().backward();
            (y.into_data(), x.grad(&grads).expect("x requires its gradient").into_data())
        };
        let (ours, plain) = (gradient(true), gradient(false));
        assert_eq!(ours, plain);
        // The fused copy ran: its output is one contiguous buffer.
        let y = contiguous(x.clone().permute([0, 2, 3, 1])).into_primitive();
        let TensorPrimitive::Float(y) = y else { panic!("a float tensor") };
        assert_eq!(y.primitive.layout().contiguous_offsets(), Some((0, 120)));
    }

    #[test]
    fn a_permutation_and_its_gradient_are_burn_s() {
        let w = counting::<Train, 4>([4, 2, 5, 3]).sin();
        for axes in [[2, 0, 3, 1], [0, 2, 1, 3], [3, 2, 1, 0]] {
            let x = counting::<Train, 4>([2, 3, 4, 5]).require_grad();
            let run = |ours: bool| {
                let y = if ours { permute_contiguous(x.clone(), axes) } else { x.clone().permute(axes) };
                let w = w.clone().reshape(y.dims());
                let grads = (y.clone() * w).sum().backward();
                (y.into_data(), x.grad(&grads).expect("x requires its gradient").into_data())
            };
            assert_eq!(run(true), run(false), "{axes:?}");
            let y = permute_contiguous(x.clone().detach(), axes).into_primitive().tensor();
            assert_eq!(y.primitive.layout().contiguous_offsets(), Some((0, 120)), "{axes:?}");
        }
    }

    #[test]
    fn other_backends_get_the_view_back() {
        let x = counting::<NdArray<f64>, 3>([2, 3, 4]);
        assert_eq!(contiguous(x.clone().swap_dims(0, 2)).into_data(), x.clone().swap_dims(0, 2).into_data());
        assert_eq!(permute_contiguous(x.clone(), [1, 2, 0]).into_data(), x.permute([1, 2, 0]).into_data());
    }
}
