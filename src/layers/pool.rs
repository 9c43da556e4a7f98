//! Max pooling over the windows of an image without padding, `[batch, c, h, w]` →
//! `[batch, c, h', w']` with h' = ⌊(h − k_h)/s_h⌋ + 1 (w' alike), and its gradient: each output's
//! gradient goes to the pixel its max came from.
//!
//! On the CPU backend (Burn's `flex`, plain or under autodiff) in f32, [`max_pool2d()`] is one
//! parallel pass over the image planes forward, which finds each window's max and keeps its
//! position in the plane, and one backward, which adds each output's gradient to that position.
//! Burn 0.21's flex kernel is a generic 3-d pooling with padding and dilation checks for every
//! pixel, and was about a tenth of a LeNet-5 step (docs/performance-log.md). Values and
//! gradients are Burn's: the first max in row-major order wins a tie, as in Burn's rule (and a
//! NaN wins only as a window's first pixel). Everywhere else (CUDA, f64, halves, other
//! backends) it is Burn's `max_pool2d`.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{module, DType, Shape, Tensor, TensorData};
use burn_flex::FlexTensor;

use super::backends::{filled_in_parallel, in_dtype, on_flex};
use super::contiguous::copy;

/// Max pooling of `x` (`[batch, c, h, w]`) over `kernel`-sized windows `stride` apart, without
/// padding: one fused pass each way on the CPU backend in f32, Burn's `max_pool2d` otherwise.
/// Windows that do not fit (`kernel` beyond `[h, w]`, a zero `kernel` or `stride`) go to Burn's
/// pooling, and so do planes too large for the kernel's 32-bit positions.
pub fn max_pool2d<B: Backend>(x: Tensor<B, 4>, kernel: [usize; 2], stride: [usize; 2]) -> Tensor<B, 4> {
    let [_, _, h, w] = x.dims();
    let fits = kernel[0] <= h && kernel[1] <= w && !kernel.contains(&0) && !stride.contains(&0);
    let fits = fits && h.saturating_mul(w) <= u32::MAX as usize;
    if x.dtype() != DType::F32 || !fits {
        return module::max_pool2d(x, kernel, stride, [0, 0], [1, 1], false);
    }
    let grid = Windows::new(x.dims(), kernel, stride);
    on_flex([x], |[x]| grid.forward(x).0, |[x]| pool_autodiff(x, grid))
        .unwrap_or_else(|[x]| module::max_pool2d(x, kernel, stride, [0, 0], [1, 1], false))
}

/// The geometry of one pooling: input `[batch, c, h, w]`, output `[h', w']`, kernel and stride.
#[derive(Clone, Copy, Debug)]
struct Windows {
    input: [usize; 4],
    output: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
}

impl Windows {
    fn new(input: [usize; 4], kernel: [usize; 2], stride: [usize; 2]) -> Self {
        let output = [0, 1].map(|d| (input[2 + d] - kernel[d]) / stride[d] + 1);
        Self { input, output, kernel, stride }
    }

    /// Image planes (batch · c).
    fn planes(&self) -> usize {
        self.input[0] * self.input[1]
    }

    /// The pooled tensor and, for each output, the position of its max in its plane
    /// (row-major, y·w + x).
    fn forward(&self, x: FlexTensor) -> (FlexTensor, Vec<u32>) {
        let x = copy(x);
        let x = x.as_slice::<f32>().expect("contiguous f32");
        let [_, _, h, w] = self.input;
        let [ho, wo] = self.output;
        let ([kh, kw], [sh, sw]) = (self.kernel, self.stride);
        let argmax = filled_in_parallel(self.planes() * ho * wo, ho * wo, |plane, out: &mut [u32]| {
            let image = &x[plane * h * w..][..h * w];
            for (y, row) in out.chunks_exact_mut(wo).enumerate() {
                for (at, best) in row.iter_mut().enumerate() {
                    let first = y * sh * w + at * sw;
                    let (mut arg, mut max) = (first, image[first]);
                    for i in 0..kh {
                        let line = first + i * w;
                        for (j, &v) in image[line..][..kw].iter().enumerate() {
                            if v > max {
                                (arg, max) = (line + j, v);
                            }
                        }
                    }
                    *best = arg as u32;
                }
            }
        });
        let values = filled_in_parallel(argmax.len(), ho * wo, |plane, out: &mut [f32]| {
            let (image, arg) = (&x[plane * h * w..][..h * w], &argmax[plane * ho * wo..][..ho * wo]);
            out.iter_mut().zip(arg).for_each(|(o, &a)| *o = image[a as usize]);
        });
        let shape = Shape::new([self.input[0], self.input[1], ho, wo]);
        (FlexTensor::from_data(TensorData::new(values, shape)), argmax)
    }

    /// The input's gradient: each output's gradient added to the pixel its max came from.
    fn backward(&self, argmax: &[u32], grad: FlexTensor) -> FlexTensor {
        let g = copy(in_dtype(grad, DType::F32));
        let g = g.as_slice::<f32>().expect("contiguous f32");
        let [_, _, h, w] = self.input;
        let per_plane = self.output[0] * self.output[1];
        let dx = filled_in_parallel(self.planes() * h * w, h * w, |plane, dx: &mut [f32]| {
            let (g, arg) = (&g[plane * per_plane..][..per_plane], &argmax[plane * per_plane..][..per_plane]);
            g.iter().zip(arg).for_each(|(&g, &a)| dx[a as usize] += g);
        });
        FlexTensor::from_data(TensorData::new(dx, Shape::new(self.input)))
    }
}

/// The fused forward pass as an autodiff op; it keeps the positions of the maxima.
fn pool_autodiff(x: FloatTensor<Autodiff<Flex>>, grid: Windows) -> FloatTensor<Autodiff<Flex>> {
    match MaxPool.prepare::<NoCheckpointing>([x.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (y, argmax) = grid.forward(x.primitive);
            prep.finish((grid, argmax), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(grid.forward(x.primitive).0),
    }
}

/// The backward step of [`pool_autodiff`]; its state is the geometry and the maxima's positions.
#[derive(Debug)]
struct MaxPool;

impl Backward<Flex, 1> for MaxPool {
    type State = (Windows, Vec<u32>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (grid, argmax) = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |g| grid.backward(&argmax, g));
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;
    use burn::tensor::{Distribution, FloatDType};

    use super::*;

    type Train = Autodiff<Flex>;
    type Exact = Autodiff<NdArray<f64>>;

    fn values<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f64> {
        t.into_data().convert::<f64>().to_vec().unwrap()
    }

    /// Burn's max pooling without padding.
    fn burn_pool<Bk: Backend>(x: Tensor<Bk, 4>, kernel: [usize; 2], stride: [usize; 2]) -> Tensor<Bk, 4> {
        module::max_pool2d(x, kernel, stride, [0, 0], [1, 1], false)
    }

    /// (kernel, stride, [h, w]): LeNet-5's 2×2 by 2, sizes the windows do not tile, overlapping
    /// windows (a pixel in several), and unequal axes.
    const GEOMETRIES: [([usize; 2], [usize; 2], [usize; 2]); 5] = [
        ([2, 2], [2, 2], [24, 24]),
        ([2, 2], [2, 2], [7, 9]),
        ([3, 3], [2, 2], [9, 8]),
        ([3, 3], [1, 1], [5, 6]),
        ([2, 3], [1, 2], [6, 7]),
    ];

    /// On `Autodiff<flex>` in f32: the output is Burn's bit for bit, and the input's gradient is
    /// the one autodiff takes through Burn's pooling in f64.
    #[test]
    fn values_and_gradients_are_burn_s() {
        for (kernel, stride, [h, w]) in GEOMETRIES {
            let dims = [2, 3, h, w];
            let x = Tensor::<Train, 4>::random(dims, Distribution::Normal(0.0, 1.0), &Default::default());
            let leaf = x.clone().require_grad();
            let y = max_pool2d(leaf.clone(), kernel, stride);
            assert_eq!(y.clone().into_data(), burn_pool(x.clone(), kernel, stride).into_data(), "{kernel:?}");
            let g = Tensor::<Train, 4>::random(y.dims(), Distribution::Normal(0.0, 1.0), &Default::default());
            let dx = values(leaf.grad(&(y * g.clone()).sum().backward()).unwrap());

            let device = Default::default();
            let exact = Tensor::<Exact, 4>::from_data(x.into_data().convert::<f64>(), &device).require_grad();
            let y = burn_pool(exact.clone(), kernel, stride);
            let g = Tensor::<Exact, 4>::from_data(g.into_data().convert::<f64>(), &device);
            let expected = values(exact.grad(&(y * g).sum().backward()).unwrap());
            let gap = dx.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(gap < 1e-6, "{kernel:?} by {stride:?}: the gradient differs by {gap:e}");
            assert!(expected.iter().filter(|v| **v == 0.0).count() > 0, "pixels that are no max");
        }
    }

    /// After a ReLU most windows tie at zero: the first pixel of a tie gets the gradient, as in
    /// Burn's pooling on the same backend.
    #[test]
    fn ties_go_to_the_first_pixel_as_in_burn() {
        let x =
            Tensor::<Train, 4>::random([2, 2, 8, 8], Distribution::Normal(-1.0, 1.0), &Default::default())
                .clamp_min(0.0);
        let ours = x.clone().require_grad();
        let burns = x.require_grad();
        let dx = ours.grad(&max_pool2d(ours.clone(), [2, 2], [2, 2]).sum().backward()).unwrap();
        let expected = burns.grad(&burn_pool(burns.clone(), [2, 2], [2, 2]).sum().backward()).unwrap();
        assert_eq!(dx.into_data(), expected.into_data());
    }

    /// Plain flex takes the kernel; f64 and other backends take Burn's pooling.
    #[test]
    fn other_types_and_backends_are_burn_s() {
        let x = Tensor::<Flex, 4>::random([1, 2, 6, 6], Distribution::Normal(0.0, 1.0), &Default::default());
        let expected = burn_pool(x.clone(), [2, 2], [2, 2]).into_data();
        assert_eq!(max_pool2d(x.clone(), [2, 2], [2, 2]).into_data(), expected);
        let wide = x.clone().cast(FloatDType::F64);
        assert_eq!(max_pool2d(wide, [2, 2], [2, 2]).into_data(), expected.convert::<f64>());
        let other = Tensor::<NdArray, 4>::from_data(x.into_data(), &Default::default());
        assert_eq!(
            max_pool2d(other.clone(), [3, 2], [1, 2]).into_data(),
            burn_pool(other, [3, 2], [1, 2]).into_data()
        );
    }
}
