//! The patch matrix P of an image on the CPU backend (Burn's `flex`, plain or under autodiff),
//! as one op: `P = im2col(x)` forward, and backward the gradient's rows added back onto the
//! pixels they were copied from (`col2im`, the adjoint).
//!
//! With P formed, every product of a convolution is one call of [`super::super::matmul()`]
//! (`P A` for a factor A, `Pᵀ G` for its gradient, `G Aᵀ` for P's). flex's own `conv2d` is a
//! tiled im2col + gemm too, but its backward pass is generic Burn: the input gradient a
//! transposed convolution, the kernel gradient a convolution of the input by the output
//! gradient (a kernel the size of the image), both far from the product rate at these shapes
//! (docs/performance-log.md). P is built once per forward and shared by every product of the
//! layer and by the `Activations` record.
//!
//! Values are moved bit for bit forward (any float type); backward sums in f32, each pixel's
//! ≤ k_h·k_w contributions in a fixed order, and rounds once to x's type.

use std::ops::Range;

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Shape, Tensor, TensorData};
use burn_flex::FlexTensor;

use super::Conv2dShape;
use crate::layers::backends::{filled_in_parallel, in_dtype, on_flex, tracked_on_flex};
use crate::layers::cast::is_lane;
use crate::layers::contiguous::copy;
use crate::layers::{cast, matmul};

/// The largest P formed where no gradient needs it (an evaluation batch): beyond it
/// [`product_in_pieces`] forms P of a few images at a time, so that a large evaluation batch
/// holds no more than this at once. Where a gradient needs P (a tracked input, or a factor whose
/// gradient is `Pᵀ G`) it is formed at any size, as the product's backward pass keeps it.
pub(super) const UNTRACKED_MAX_BYTES: usize = 16 << 20;

/// `P a` from P of a few images at a time, each piece's P within [`UNTRACKED_MAX_BYTES`], for
/// an input whose whole P [`patch_matrix`] declined; `None` where P is not formed at all (other
/// backends and types).
pub(super) fn product_in_pieces<B: Backend>(
    x: &Tensor<B, 4>,
    shape: &Conv2dShape,
    a: &Tensor<B, 2>,
) -> Option<Tensor<B, 2>> {
    let [batch, ..] = x.dims();
    let grid = Grid::new(shape, x.dims());
    let per_image = grid.bytes_per_image(x.dtype());
    let images = (UNTRACKED_MAX_BYTES / per_image.max(1)).max(1);
    if images >= batch {
        // One piece is the whole P, which `patch_matrix` declined: not a backend or type it
        // forms P for.
        return None;
    }
    let mut pieces = Vec::with_capacity(batch.div_ceil(images));
    for start in (0..batch).step_by(images) {
        let piece = x.clone().narrow(0, start, images.min(batch - start));
        let p = patch_matrix(piece, shape, false).ok()?;
        pieces.push(matmul(cast(p, a.dtype()), a.clone()));
    }
    Some(Tensor::cat(pieces, 0))
}

/// P (`[batch·H'·W', C_in·k_h·k_w]`, rows as [`Conv2dShape`] orders them) on the CPU backend
/// in f32, bf16 or f16; `Err(x)`, untouched, on any other backend or type, or when P would
/// exceed [`UNTRACKED_MAX_BYTES`] while neither `needed` nor x is tracked. The caller has
/// checked that the convolution fits the image ([`Conv2dShape::output_size`]).
pub(super) fn patch_matrix<B: Backend>(
    x: Tensor<B, 4>,
    shape: &Conv2dShape,
    needed: bool,
) -> Result<Tensor<B, 2>, Tensor<B, 4>> {
    if !is_lane(x.dtype()) {
        return Err(x);
    }
    let grid = Grid::new(shape, x.dims());
    let bytes = grid.input[0] * grid.bytes_per_image(x.dtype());
    if bytes > UNTRACKED_MAX_BYTES && !needed && !tracked_on_flex(&x) {
        return Err(x);
    }
    on_flex([x], |[x]| im2col(x, &grid), |[x]| im2col_autodiff(x, grid)).map_err(|[x]| x)
}

/// The sizes one image and its patches need: the input `[batch, c, h, w]`, the output grid
/// `[ho, wo]`, and the kernel's geometry.
#[derive(Clone, Copy, Debug)]
struct Grid {
    input: [usize; 4],
    output: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
}

impl Grid {
    fn new(shape: &Conv2dShape, input: [usize; 4]) -> Self {
        let mut output = [0; 2];
        for d in 0..2 {
            let reach = shape.dilation[d] * (shape.kernel[d] - 1) + 1;
            output[d] = (input[2 + d] + 2 * shape.padding[d] - reach) / shape.stride[d] + 1;
        }
        let Conv2dShape { kernel, stride, padding, dilation, .. } = *shape;
        Self { input, output, kernel, stride, padding, dilation }
    }

    /// Columns of P: c·k_h·k_w.
    fn n(&self) -> usize {
        self.input[1] * self.kernel[0] * self.kernel[1]
    }

    /// Bytes of one image's rows of P in `dtype`.
    fn bytes_per_image(&self, dtype: DType) -> usize {
        self.output[0] * self.output[1] * self.n() * dtype.size()
    }

    /// The kernel offsets k along axis `d` (0: rows, 1: columns) at which output position `at`
    /// reads inside the image, not the padding: source `at·s + k·dil − p ∈ [0, size)`.
    fn offsets(&self, d: usize, at: usize) -> Range<usize> {
        let (base, dilation, padding) = (at * self.stride[d], self.dilation[d], self.padding[d]);
        let first = padding.saturating_sub(base).div_ceil(dilation);
        let end = (self.input[2 + d] + padding).saturating_sub(base).div_ceil(dilation).min(self.kernel[d]);
        first.min(end)..end
    }

    /// The output positions along axis `d` that read inside the image at kernel offset `k`.
    fn positions(&self, d: usize, k: usize) -> Range<usize> {
        let (shift, stride, padding) = (k * self.dilation[d], self.stride[d], self.padding[d]);
        let first = padding.saturating_sub(shift).div_ceil(stride);
        let end = (self.input[2 + d] + padding).saturating_sub(shift).div_ceil(stride).min(self.output[d]);
        first.min(end)..end
    }

    /// The source coordinate along axis `d` of output position `at` at kernel offset `k`, for
    /// the pairs [`Self::offsets`] and [`Self::positions`] give.
    fn source(&self, d: usize, at: usize, k: usize) -> usize {
        at * self.stride[d] + k * self.dilation[d] - self.padding[d]
    }
}

/// P of a flex tensor `[batch, c, h, w]`, in its type.
fn im2col(x: FlexTensor, grid: &Grid) -> FlexTensor {
    let x = copy(x);
    let [batch, _, _, _] = grid.input;
    let [ho, wo] = grid.output;
    let shape = Shape::new([batch * ho * wo, grid.n()]);
    let mut data = match x.dtype().size() {
        2 => TensorData::new(im2col_typed::<u16>(bytemuck::cast_slice(x.bytes()), grid), shape),
        4 => TensorData::new(im2col_typed::<u32>(bytemuck::cast_slice(x.bytes()), grid), shape),
        size => unreachable!("im2col: {size}-byte elements"),
    };
    // The bits are moved as they are; the dtype says what they are.
    data.dtype = x.dtype();
    FlexTensor::from_data(data)
}

/// `P[(b·H' + y)·W' + x, (c·k_h + i)·k_w + j] = x[b, c, y s_h + i d_h − p_h, x s_w + j d_w − p_w]`
/// (0 in the padding), one output row y of one image per parallel task.
fn im2col_typed<T: bytemuck::Pod + Send + Sync>(x: &[T], grid: &Grid) -> Vec<T> {
    let [batch, c, h, w] = grid.input;
    let [ho, wo] = grid.output;
    let [kh, kw] = grid.kernel;
    let n = grid.n();
    filled_in_parallel(batch * ho * wo * n, wo * n, |task, rows: &mut [T]| {
        let (b, y) = (task / ho, task % ho);
        for (at, row) in rows.chunks_mut(n).enumerate() {
            // Entries in the padding stay as `filled_in_parallel` zeroed them.
            let columns = grid.offsets(1, at);
            let Some(first) = columns.clone().next() else { continue };
            let from = grid.source(1, at, first);
            for ci in 0..c {
                let plane = &x[(b * c + ci) * h * w..][..h * w];
                for i in grid.offsets(0, y) {
                    let line = &plane[grid.source(0, y, i) * w..][..w];
                    let out = &mut row[(ci * kh + i) * kw..][..kw];
                    match grid.dilation[1] {
                        1 => out[columns.clone()].copy_from_slice(&line[from..][..columns.len()]),
                        _ => columns.clone().for_each(|j| out[j] = line[grid.source(1, at, j)]),
                    }
                }
            }
        }
    })
}

/// The image gradient of P's gradient `g` (col2im, the adjoint of [`im2col_typed`]): each
/// pixel the sum of the entries of `g` that P copied it to, in f32; one image channel per
/// parallel task. For each kernel offset the sweep runs along a row of output positions, whose
/// targets are distinct pixels, so that no add waits for the one before.
fn col2im(g: &[f32], grid: &Grid) -> Vec<f32> {
    let [batch, c, h, w] = grid.input;
    let [ho, wo] = grid.output;
    let [kh, kw] = grid.kernel;
    let n = grid.n();
    filled_in_parallel(batch * c * h * w, h * w, |task, plane: &mut [f32]| {
        let (b, ci) = (task / c, task % c);
        for y in 0..ho {
            let rows = &g[(b * ho + y) * wo * n..][..wo * n];
            for i in grid.offsets(0, y) {
                let line = &mut plane[grid.source(0, y, i) * w..][..w];
                for j in 0..kw {
                    let column = (ci * kh + i) * kw + j;
                    for at in grid.positions(1, j) {
                        line[grid.source(1, at, j)] += rows[at * n + column];
                    }
                }
            }
        }
    })
}

/// [`im2col`] as an autodiff op; its state is the grid and x's type.
fn im2col_autodiff(x: FloatTensor<Autodiff<Flex>>, grid: Grid) -> FloatTensor<Autodiff<Flex>> {
    let dtype = x.primitive.dtype();
    match Im2col.prepare::<NoCheckpointing>([x.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish((grid, dtype), im2col(x.primitive, &grid)),
        OpsKind::UnTracked(prep) => prep.finish(im2col(x.primitive, &grid)),
    }
}

/// The backward step of [`im2col_autodiff`]: [`col2im`], rounded to x's type.
#[derive(Debug)]
struct Im2col;

impl Backward<Flex, 1> for Im2col {
    type State = (Grid, DType);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (grid, dtype) = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |g| {
            let g = copy(in_dtype(g, DType::F32));
            let dx = col2im(bytemuck::cast_slice(g.bytes()), &grid);
            in_dtype(FlexTensor::from_data(TensorData::new(dx, Shape::new(grid.input))), dtype)
        });
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;
    use burn::tensor::module::unfold4d;
    use burn::tensor::ops::UnfoldOptions;
    use burn::tensor::{Distribution, FloatDType};

    use super::super::tests::geometries;
    use super::*;

    type Train = Autodiff<Flex>;
    type Exact = Autodiff<NdArray<f64>>;

    fn values<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f64> {
        t.into_data().convert::<f64>().to_vec().unwrap()
    }

    fn on<Bk: Backend, const D: usize>(values: &[f64], dims: [usize; D]) -> Tensor<Bk, D> {
        Tensor::from_data(TensorData::new(values.to_vec(), dims), &Default::default())
    }

    /// P by Burn's `unfold4d` (rows as [`Conv2dShape`] orders them).
    fn unfolded<Bk: Backend>(x: Tensor<Bk, 4>, shape: &Conv2dShape) -> Tensor<Bk, 2> {
        let options = UnfoldOptions::new(shape.stride, shape.padding, shape.dilation);
        let p = unfold4d(x, shape.kernel, options);
        let [batch, n, positions] = p.dims();
        p.swap_dims(1, 2).reshape([batch * positions, n])
    }

    /// For every geometry, on `Autodiff<flex>` in f32: P is `unfold4d`'s bit for bit, and the
    /// gradient of ⟨P, G⟩ for x (col2im of G) is the one autodiff takes through `unfold4d` in
    /// f64, within f32 round-off of the k_h·k_w-term sums.
    #[test]
    fn p_is_unfold4d_and_its_backward_is_the_adjoint() {
        for (shape, [h, w]) in geometries() {
            let dims = [2, shape.c_in, h, w];
            let x = Tensor::<Train, 4>::random(dims, Distribution::Normal(0.0, 1.0), &Default::default());
            let leaf = x.clone().require_grad();
            let p = patch_matrix(leaf.clone(), &shape, false).expect("formed on flex");
            assert_eq!(p.clone().into_data(), unfolded(x.clone(), &shape).into_data(), "{shape}: P");
            let g = Tensor::<Train, 2>::random(p.dims(), Distribution::Normal(0.0, 1.0), &Default::default());
            let dx = values(leaf.grad(&(p * g.clone()).sum().backward()).unwrap());

            let exact = on::<Exact, 4>(&values(x), dims).require_grad();
            let p = unfolded(exact.clone(), &shape);
            let g = on::<Exact, 2>(&values(g), p.dims());
            let expected = values(exact.grad(&(p * g).sum().backward()).unwrap());
            let gap = dx.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(gap < 1e-5, "{shape}: col2im differs by {gap:e}");
            assert!(expected.iter().any(|v| v.abs() > 0.5), "{shape}: a gradient worth comparing");
        }
    }

    /// In bf16, P moves x's bits; its gradient for x is the f32 sum rounded once to bf16.
    #[test]
    fn bf16_moves_bits_and_rounds_the_gradient_once() {
        let (shape, [h, w]) = geometries()[2];
        let dims = [2, shape.c_in, h, w];
        let x = Tensor::<Train, 4>::random(dims, Distribution::Normal(0.0, 1.0), &Default::default())
            .cast(FloatDType::BF16);
        let leaf = x.clone().require_grad();
        let p = patch_matrix(leaf.clone(), &shape, false).expect("formed on flex");
        assert_eq!(p.dtype(), DType::BF16);
        let wide = patch_matrix(x.clone().cast(FloatDType::F32), &shape, false).unwrap();
        assert_eq!(p.clone().into_data(), wide.cast(FloatDType::BF16).into_data(), "P");

        let g = Tensor::<Train, 2>::random(p.dims(), Distribution::Normal(0.0, 1.0), &Default::default())
            .cast(FloatDType::BF16);
        let dx = leaf.grad(&(p * g.clone()).sum().backward()).unwrap();
        assert_eq!(dx.dtype(), DType::BF16);
        let exact = on::<Exact, 4>(&values(x), dims).require_grad();
        let p = unfolded(exact.clone(), &shape);
        let g = on::<Exact, 2>(&values(g), p.dims());
        let expected = values(exact.grad(&(p * g).sum().backward()).unwrap());
        for (got, exact) in values(dx).into_iter().zip(expected) {
            // Half a bf16 ulp of the sum, plus the f32 sum's round-off.
            assert!((got - exact).abs() <= exact.abs() * 2f64.powi(-8) + 1e-5, "{got} against {exact}");
        }
    }

    /// P is formed for an input without a gradient and on plain flex; f64 and other backends
    /// get their input back for the generic path.
    #[test]
    fn untracked_plain_f64_and_other_backends() {
        let (shape, [h, w]) = geometries()[0];
        let dims = [1, shape.c_in, h, w];
        let x = Tensor::<Train, 4>::random(dims, Distribution::Default, &Default::default());
        let expected = unfolded(x.clone(), &shape).into_data();
        assert_eq!(patch_matrix(x.clone(), &shape, false).unwrap().into_data(), expected);
        let plain = Tensor::<Flex, 4>::from_data(x.clone().into_data(), &Default::default());
        assert_eq!(patch_matrix(plain, &shape, false).unwrap().into_data(), expected);
        assert!(patch_matrix(x.cast(FloatDType::F64), &shape, false).is_err());
        let other = Tensor::<NdArray, 4>::zeros(dims, &Default::default());
        assert_eq!(patch_matrix(other, &shape, false).unwrap_err().dims(), dims);
    }

    /// Beyond [`UNTRACKED_MAX_BYTES`] P is formed only where a gradient needs it.
    #[test]
    fn a_large_p_is_formed_only_where_a_gradient_needs_it() {
        let shape = Conv2dShape::new(1, 4, [5, 5]);
        // 64·60·60 rows of 25 f32: 23 MB.
        let x = Tensor::<Train, 4>::zeros([64, 1, 64, 64], &Default::default());
        const { assert!(64 * 60 * 60 * 25 * 4 > UNTRACKED_MAX_BYTES) };
        assert!(patch_matrix(x.clone(), &shape, false).is_err(), "untracked: Burn's convolution");
        assert!(patch_matrix(x.clone(), &shape, true).is_ok(), "needed for a gradient: formed");
        let p = patch_matrix(x.require_grad(), &shape, false).expect("tracked: formed");
        assert_eq!(p.dims(), [64 * 60 * 60, 25]);
        let small = Tensor::<Train, 4>::zeros([1, 1, 64, 64], &Default::default());
        assert!(patch_matrix(small, &shape, false).is_ok(), "small and untracked: formed");
    }

    /// Where P is declined, `P a` from pieces of the batch is the product with the whole P, row
    /// for row; other backends get `None`.
    #[test]
    fn the_product_in_pieces_is_the_whole_product() {
        let shape = Conv2dShape::new(2, 4, [3, 3]).with_padding([1, 1]);
        // P is 100·4096 rows of 18 f32 (29.5 MB): pieces of 56 and 44 images.
        let x =
            Tensor::<Train, 4>::random([100, 2, 64, 64], Distribution::Normal(0.0, 1.0), &Default::default());
        let a = Tensor::<Train, 2>::random([18, 3], Distribution::Normal(0.0, 1.0), &Default::default());
        let whole = matmul(patch_matrix(x.clone(), &shape, true).unwrap(), a.clone());
        assert!(patch_matrix(x.clone(), &shape, false).is_err(), "declined whole");
        let pieces = product_in_pieces(&x, &shape, &a).expect("on flex");
        assert_eq!(pieces.dims(), whole.dims());
        let gap = (pieces - whole).abs().max().into_scalar();
        assert!(gap < 1e-5, "pieces differ by {gap}");
        let other = Tensor::<NdArray, 4>::zeros([1, 2, 8, 8], &Default::default());
        assert!(product_in_pieces(&other, &shape, &Tensor::zeros([18, 3], &Default::default())).is_none());
    }
}
