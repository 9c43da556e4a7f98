//! Convolutions with low-rank and dense kernels: [`LowRankConv2d`], [`DenseConv2d`].
//!
//! A kernel `[C_out, C_in, k_h, k_w]` is kept as its matricised form W (n×m) with
//! n = C_in·k_h·k_w (fan-in) and m = C_out (fan-out), `W[c·k_h·k_w + i·k_w + j, o] =
//! kernel[o, c, i, j]`, so that the convolution is `z = P W + b` on the matrix P of image
//! patches (one row per batch element and output position). The low-rank layer keeps
//! `W = U S Vᵀ` exactly as [`LowRankLinear`] does (it *is* a [`LowRankLinear`] on patches):
//! every integrator trains it unchanged, through the same passes.
//!
//! On the CPU backend P is formed once per forward (`conv2d/patches.rs`: an im2col whose
//! backward pass is the matching col2im), and every product is a matrix product: `P A` for an
//! n×k factor A (U, K, or Û), then the rest (S, Vᵀ, Lᵀ), at a cost ∝ k = r, not C_out.
//! Elsewhere (CUDA) P
//! is not formed in the forward: `P A` is a convolution with the k-channel kernel Aᵀ, and the
//! rest of the product a matrix product over the channel dimension; only the `Activations`
//! pass materialises P there (Burn's `unfold4d`), as that pass records the layer's input.
//!
//! Stride, padding and dilation mean what they mean for Burn's `Conv2d` (symmetric padding,
//! groups = 1), and at full rank the layer computes Burn's `Conv2d` with kernel
//! `Wᵀ.reshape([C_out, C_in, k_h, k_w])`.
//!
//! # Shapes
//! - input: `[batch, C_in, H, W]`
//! - output: `[batch, C_out, H', W']`, `H' = (H + 2 p_h − d_h (k_h − 1) − 1) / s_h + 1`

mod patches;

use std::cell::OnceCell;
use std::fmt;

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::module::{conv2d, unfold4d};
use burn::tensor::ops::{ConvOptions, PadMode, UnfoldOptions};
use burn::tensor::Tensor;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use super::backends::tracked_on_flex;
use super::{cast, contiguous, matmul, permute_contiguous, DenseLinear, LowRankLinear};
use crate::linalg::TruncationConfig;
use crate::{Error, Result};

/// What a layer's factors multiply: a batch of rows x, or the patch matrix P of an image.
pub(crate) trait Rows<B: Backend> {
    /// `x A` for an n×k `A`, one row per input row (patch).
    fn times(&self, a: Tensor<B, 2>) -> Tensor<B, 2>;
    /// x itself, rows × n (the `Activations` pass records it).
    fn rows(&self) -> Tensor<B, 2>;
}

impl<B: Backend> Rows<B> for Tensor<B, 2> {
    fn times(&self, a: Tensor<B, 2>) -> Tensor<B, 2> {
        // A no-op but in mixed precision, where a bf16 W0 takes x in bf16 and f32 factors in f32.
        matmul(cast(self.clone(), a.dtype()), a)
    }
    fn rows(&self) -> Tensor<B, 2> {
        self.clone()
    }
}

/// The geometry of a 2-D convolution: channels, kernel size, stride, padding, dilation
/// (groups = 1), as Burn's `Conv2dConfig`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conv2dShape {
    /// Input channels C_in.
    pub c_in: usize,
    /// Output channels C_out.
    pub c_out: usize,
    /// Kernel size `[k_h, k_w]`.
    pub kernel: [usize; 2],
    /// Stride `[s_h, s_w]`.
    pub stride: [usize; 2],
    /// Zero padding on each side, `[p_h, p_w]`.
    pub padding: [usize; 2],
    /// Dilation `[d_h, d_w]`.
    pub dilation: [usize; 2],
}

impl Conv2dShape {
    /// A `c_in → c_out` convolution with a `kernel` (k_h, k_w), stride 1, no padding, no
    /// dilation.
    pub fn new(c_in: usize, c_out: usize, kernel: [usize; 2]) -> Self {
        Self { c_in, c_out, kernel, stride: [1, 1], padding: [0, 0], dilation: [1, 1] }
    }
    /// The same with another stride.
    pub fn with_stride(self, stride: [usize; 2]) -> Self {
        Self { stride, ..self }
    }
    /// The same with another padding.
    pub fn with_padding(self, padding: [usize; 2]) -> Self {
        Self { padding, ..self }
    }
    /// The same with another dilation.
    pub fn with_dilation(self, dilation: [usize; 2]) -> Self {
        Self { dilation, ..self }
    }
    /// Fan-in n = C_in·k_h·k_w: the rows of the matricised kernel.
    pub fn n(&self) -> usize {
        self.c_in * self.kernel[0] * self.kernel[1]
    }
    /// Fan-out m = C_out.
    pub fn m(&self) -> usize {
        self.c_out
    }

    /// Checks that no size is zero; `layer` names the layer in the error.
    pub fn validate(&self, layer: &str) -> Result<()> {
        let fields = [
            ("c_in", self.c_in),
            ("c_out", self.c_out),
            ("kernel", self.kernel[0].min(self.kernel[1])),
            ("stride", self.stride[0].min(self.stride[1])),
            ("dilation", self.dilation[0].min(self.dilation[1])),
        ];
        for (field, value) in fields {
            if value == 0 {
                return Err(Error::config(&format!("{layer}.{field}"), format!("{self}"), "sizes ≥ 1"));
            }
        }
        Ok(())
    }

    /// `[H', W']` for an `[H, W]` input; an error naming `layer` when the dilated kernel is
    /// larger than the padded image.
    pub fn output_size(&self, layer: &str, [h, w]: [usize; 2]) -> Result<[usize; 2]> {
        self.validate(layer)?;
        let mut out = [0; 2];
        for (d, size) in [h, w].into_iter().enumerate() {
            let reach = self.dilation[d] * (self.kernel[d] - 1) + 1;
            let padded = size + 2 * self.padding[d];
            if reach > padded {
                return Err(Error::shape(
                    format!("input of {layer} ({self})"),
                    format!("an image of at least {reach} pixels along dimension {d} after padding"),
                    format!("{size} + 2·{} = {padded}", self.padding[d]),
                ));
            }
            out[d] = (padded - reach) / self.stride[d] + 1;
        }
        Ok(out)
    }

    /// Checks `1 ≤ r ≤ min(n, m)`; the error names `layer`.
    pub fn check_rank(&self, layer: &str, r: usize) -> Result<()> {
        let max = self.n().min(self.m());
        if r == 0 || r > max {
            return Err(Error::config(
                &format!("{layer}.rank"),
                r,
                &format!(
                    "1 ≤ rank ≤ min(C_in·k_h·k_w, C_out) = min({}, {}) = {max} ({self})",
                    self.n(),
                    self.m()
                ),
            ));
        }
        Ok(())
    }

    /// The n×m matricised form of a `[C_out, C_in, k_h, k_w]` kernel.
    pub fn matricise<B: Backend>(&self, kernel: Tensor<B, 4>) -> Tensor<B, 2> {
        kernel.reshape([self.m(), self.n()]).transpose()
    }

    /// The `[C_out, C_in, k_h, k_w]` kernel of an n×m matrix (the inverse of
    /// [`Self::matricise`]); an n×k factor gives a k-channel kernel.
    pub fn kernel<B: Backend>(&self, w: Tensor<B, 2>) -> Tensor<B, 4> {
        let k = w.dims()[1];
        w.transpose().reshape([k, self.c_in, self.kernel[0], self.kernel[1]])
    }

    /// Runs `core` (a [`LowRankLinear`] or [`DenseLinear`] on patch rows) as a convolution.
    fn apply<B: Backend>(
        &self,
        layer: &str,
        x: Tensor<B, 4>,
        core: impl FnOnce(&Patches<'_, B>) -> Tensor<B, 2>,
    ) -> Result<Tensor<B, 4>> {
        let [batch, c, h, w] = x.dims();
        if c != self.c_in {
            return Err(Error::shape(
                format!("input channels of {layer} ({self})"),
                self.c_in.to_string(),
                c.to_string(),
            ));
        }
        let [ho, wo] = self.output_size(layer, [h, w])?;
        let z = core(&Patches::new(x, self));
        let m = z.dims()[1];
        // One copy into NCHW here (and of the gradient back into rows), rather than a permuted
        // view that every later op walks strided.
        Ok(permute_contiguous(z.reshape([batch, ho, wo, m]), [0, 3, 1, 2]))
    }
}

impl fmt::Display for Conv2dShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kernel [{}, {}, {}, {}], stride {:?}, padding {:?}, dilation {:?}",
            self.c_out, self.c_in, self.kernel[0], self.kernel[1], self.stride, self.padding, self.dilation
        )
    }
}

/// An image seen as its patch matrix P (module docs).
struct Patches<'a, B: Backend> {
    x: Tensor<B, 4>,
    shape: &'a Conv2dShape,
    /// P, once the CPU backend has formed it.
    formed: OnceCell<Tensor<B, 2>>,
}

impl<'a, B: Backend> Patches<'a, B> {
    fn new(x: Tensor<B, 4>, shape: &'a Conv2dShape) -> Self {
        Self { x, shape, formed: OnceCell::new() }
    }

    /// P where the CPU backend forms it ([`patches`]), once for all of the layer's products:
    /// at any size when `needed` (a gradient or a record needs it) or x is tracked, else within
    /// [`patches::UNTRACKED_MAX_BYTES`].
    fn formed(&self, needed: bool) -> Option<Tensor<B, 2>> {
        if let Some(p) = self.formed.get() {
            return Some(p.clone());
        }
        let p = patches::patch_matrix(self.x.clone(), self.shape, needed).ok()?;
        Some(self.formed.get_or_init(|| p).clone())
    }
}

impl<B: Backend> Rows<B> for Patches<'_, B> {
    /// `P A` as rows `[batch·H'·W', k]`: on the CPU backend a matrix product (with P whole,
    /// or piece by piece for a large batch that no gradient needs), elsewhere a convolution into
    /// k channels.
    fn times(&self, a: Tensor<B, 2>) -> Tensor<B, 2> {
        if let Some(p) = self.formed(tracked_on_flex(&a)) {
            // A no-op but under autocast (`super::Precision`), where the factor is bf16.
            return matmul(cast(p, a.dtype()), a);
        }
        if let Some(z) = patches::product_in_pieces(&self.x, self.shape, &a) {
            return z;
        }
        let s = self.shape;
        let options = ConvOptions::new(s.stride, s.padding, s.dilation, 1);
        // A no-op but under autocast (`super::Precision`), where the kernel is bf16.
        let y = conv2d(cast(self.x.clone(), a.dtype()), s.kernel(a), None, options);
        let [batch, k, ho, wo] = y.dims();
        permute_contiguous(y, [0, 2, 3, 1]).reshape([batch * ho * wo, k])
    }

    fn rows(&self) -> Tensor<B, 2> {
        if let Some(p) = self.formed(true) {
            return p.detach();
        }
        let s = self.shape;
        // P is a record, never differentiated: its copies stay out of the autodiff graph.
        let x = self.x.clone().detach();
        if s.dilation == [1, 1] {
            // The patches are windows of the (zero-padded) x: one copy from the windows' view
            // into rows. `unfold4d` copies twice without padding (into [batch, n, positions],
            // then into rows) and with padding runs a convolution with n one-hot channels.
            let [batch, c, _, _] = x.dims();
            let [ph, pw] = s.padding;
            let x = match s.padding {
                [0, 0] => x,
                _ => x.pad([(ph, ph), (pw, pw)], PadMode::Constant(0.0)),
            };
            let windows: Tensor<B, 6> =
                x.unfold::<5, _>(2, s.kernel[0], s.stride[0]).unfold(3, s.kernel[1], s.stride[1]);
            let [_, _, ho, wo, kh, kw] = windows.dims();
            return contiguous(windows.permute([0, 2, 3, 1, 4, 5])).reshape([batch * ho * wo, c * kh * kw]);
        }
        let p = unfold4d(x, s.kernel, UnfoldOptions::new(s.stride, s.padding, s.dilation));
        let [batch, n, positions] = p.dims();
        contiguous(p.swap_dims(1, 2)).reshape([batch * positions, n])
    }
}

/// A convolution whose matricised kernel is `W = U S Vᵀ` (module docs); a Burn module, whose
/// record is its core's ([`super::module`]) under `core`.
#[derive(Module, Debug)]
pub struct LowRankConv2d<B: Backend> {
    #[module(skip)]
    shape: Conv2dShape,
    core: LowRankLinear<B>,
}

impl<B: Backend> LowRankConv2d<B> {
    /// Random orthonormal U (n×r), V (C_out×r) and S as [`LowRankLinear::random`].
    pub fn random(
        shape: Conv2dShape,
        r: usize,
        bias: bool,
        gain: f64,
        rng: &mut StdRng,
        device: &B::Device,
    ) -> Result<Self> {
        shape.validate("LowRankConv2d")?;
        shape.check_rank("LowRankConv2d", r)?;
        let core = LowRankLinear::random(shape.n(), shape.m(), r, bias, gain, rng, device)?;
        Ok(Self { shape, core })
    }

    /// Truncated SVD of a dense `[C_out, C_in, k_h, k_w]` kernel (rank `rank`, or the one
    /// `truncation` chooses), as [`LowRankLinear::from_dense`].
    pub fn from_kernel(
        shape: Conv2dShape,
        kernel: Tensor<B, 4>,
        bias: Option<Tensor<B, 1>>,
        rank: Option<usize>,
        truncation: &TruncationConfig,
    ) -> Result<Self> {
        shape.validate("LowRankConv2d")?;
        let expected = [shape.c_out, shape.c_in, shape.kernel[0], shape.kernel[1]];
        if kernel.dims() != expected {
            return Err(Error::shape(
                "kernel of LowRankConv2d",
                format!("{expected:?}"),
                format!("{:?}", kernel.dims()),
            ));
        }
        if let Some(r) = rank {
            shape.check_rank("LowRankConv2d", r)?;
        }
        let core = LowRankLinear::from_dense(&shape.matricise(kernel), rank, truncation, bias)?;
        Ok(Self { shape, core })
    }

    /// A layer from its geometry and the low-rank matricised kernel.
    pub fn from_core(shape: Conv2dShape, core: LowRankLinear<B>) -> Result<Self> {
        shape.validate("LowRankConv2d")?;
        if (core.n(), core.m()) != (shape.n(), shape.m()) {
            return Err(Error::shape(
                format!("factors of LowRankConv2d ({shape})"),
                format!("n×m = {}×{}", shape.n(), shape.m()),
                format!("{}×{}", core.n(), core.m()),
            ));
        }
        Ok(Self { shape, core })
    }

    /// The geometry.
    pub fn shape(&self) -> &Conv2dShape {
        &self.shape
    }
    /// The matricised kernel `U S Vᵀ` with its bias, which the integrators train.
    pub fn core(&self) -> &LowRankLinear<B> {
        &self.core
    }
    /// The same, mutable: what [`super::Network::low_rank_layers`] hands out.
    pub fn core_mut(&mut self) -> &mut LowRankLinear<B> {
        &mut self.core
    }
    /// Current rank.
    pub fn rank(&self) -> usize {
        self.core.rank()
    }
    /// The dense kernel `[C_out, C_in, k_h, k_w]` (for export and tests).
    pub fn to_kernel(&self) -> Tensor<B, 4> {
        self.shape.kernel(self.core.to_dense())
    }
    /// Inference parameters: r(n + m) + r² plus the bias.
    pub fn num_params(&self) -> usize {
        self.core.num_params()
    }

    /// The convolution in the current pass's parametrization; an error when the input's
    /// channels differ from C_in or the dilated kernel is larger than the padded image.
    ///
    /// # Shapes
    /// - x: `[batch, C_in, H, W]`
    /// - output: `[batch, C_out, H', W']`
    pub fn try_forward(&self, x: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        self.shape.apply("LowRankConv2d", x, |p| self.core.forward_rows(p))
    }

    /// [`Self::try_forward`] for inputs known to fit (a model checks its input size once,
    /// with [`Conv2dShape::output_size`], when it is built).
    ///
    /// # Panics
    /// On the inputs for which `try_forward` returns an error, with its message.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.try_forward(x).unwrap_or_else(|e| panic!("LowRankConv2d: {e}"))
    }
}

/// A convolution with a dense kernel, trained by the optimizer (dense training, or a layer a
/// low-rank network keeps dense).
#[derive(Clone, Debug)]
pub struct DenseConv2d<B: Backend> {
    shape: Conv2dShape,
    core: DenseLinear<B>,
}

impl<B: Backend> DenseConv2d<B> {
    /// Kernel entries N(0, gain²/n) (He for gain = √2), zero bias, as [`DenseLinear::random`].
    pub fn random(
        shape: Conv2dShape,
        bias: bool,
        gain: f64,
        rng: &mut StdRng,
        device: &B::Device,
    ) -> Result<Self> {
        shape.validate("DenseConv2d")?;
        Ok(Self { shape, core: DenseLinear::random(shape.n(), shape.m(), bias, gain, rng, device) })
    }

    /// A layer from its geometry and the matricised kernel (n×m).
    pub fn from_core(shape: Conv2dShape, core: DenseLinear<B>) -> Result<Self> {
        shape.validate("DenseConv2d")?;
        let [n, m] = core.weight().dims();
        if (n, m) != (shape.n(), shape.m()) {
            return Err(Error::shape(
                format!("weight of DenseConv2d ({shape})"),
                format!("{}×{}", shape.n(), shape.m()),
                format!("{n}×{m}"),
            ));
        }
        Ok(Self { shape, core })
    }

    /// The geometry.
    pub fn shape(&self) -> &Conv2dShape {
        &self.shape
    }
    /// The matricised kernel and bias, which the optimizer trains.
    pub fn core(&self) -> &DenseLinear<B> {
        &self.core
    }
    /// The same, mutable: what [`super::Network::dense_layers`] hands out.
    pub fn core_mut(&mut self) -> &mut DenseLinear<B> {
        &mut self.core
    }
    /// The kernel `[C_out, C_in, k_h, k_w]`.
    pub fn to_kernel(&self) -> Tensor<B, 4> {
        self.shape.kernel(self.core.weight().clone())
    }

    /// The convolution; errors as [`LowRankConv2d::try_forward`].
    pub fn try_forward(&self, x: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        self.shape.apply("DenseConv2d", x, |p| self.core.forward_rows(p))
    }

    /// [`Self::try_forward`] for inputs known to fit.
    ///
    /// # Panics
    /// On the inputs for which `try_forward` returns an error, with its message.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.try_forward(x).unwrap_or_else(|e| panic!("DenseConv2d: {e}"))
    }
}

/// The convolution of `x` by a matricised kernel held in a [`LowRankLinear`] (for models
/// that keep their layers' cores in one list, as [`crate::models`] do).
pub fn conv_low_rank<B: Backend>(
    shape: &Conv2dShape,
    core: &LowRankLinear<B>,
    x: Tensor<B, 4>,
) -> Result<Tensor<B, 4>> {
    shape.apply("the convolution", x, |p| core.forward_rows(p))
}

/// The convolution of `x` by a matricised kernel held in a [`DenseLinear`].
pub fn conv_dense<B: Backend>(
    shape: &Conv2dShape,
    core: &DenseLinear<B>,
    x: Tensor<B, 4>,
) -> Result<Tensor<B, 4>> {
    shape.apply("the convolution", x, |p| core.forward_rows(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::{Distribution, ElementConversion};
    use rand::SeedableRng;

    type B = NdArray<f64>;

    fn max_abs(t: Tensor<B, 4>) -> f64 {
        t.abs().max().into_scalar()
    }

    /// Geometries with and without padding, stride and dilation, and each image they take.
    pub(super) fn geometries() -> [(Conv2dShape, [usize; 2]); 8] {
        [
            (Conv2dShape::new(3, 5, [3, 3]), [7, 6]),
            (Conv2dShape::new(2, 4, [3, 2]).with_stride([2, 3]), [9, 11]),
            (Conv2dShape::new(2, 4, [3, 2]).with_stride([2, 1]).with_padding([1, 2]), [6, 5]),
            (Conv2dShape::new(2, 3, [2, 3]).with_dilation([2, 1]), [5, 7]),
            (Conv2dShape::new(2, 3, [2, 3]).with_dilation([2, 1]).with_padding([1, 0]), [5, 7]),
            (Conv2dShape::new(1, 6, [5, 5]).with_padding([2, 2]), [8, 8]),
            (Conv2dShape::new(3, 8, [3, 3]).with_stride([2, 1]).with_padding([1, 1]), [9, 7]),
            // Rows of outputs that read only padding; dilated columns.
            (
                Conv2dShape::new(2, 3, [2, 2]).with_stride([3, 2]).with_padding([2, 1]).with_dilation([1, 2]),
                [5, 6],
            ),
        ]
    }

    /// At full rank the layer is Burn's convolution; so is the patch matrix P (the
    /// `Activations` pass's record) times the matricised kernel, as rows, and P is bit-equal to
    /// `unfold4d`'s: with and without padding, stride and dilation (the windows' path and
    /// `unfold4d`'s).
    #[test]
    fn full_rank_equals_burns_conv2d_for_every_geometry() {
        let device = Default::default();
        let truncation = TruncationConfig::default();
        for (shape, image) in geometries() {
            let kernel = Tensor::<B, 4>::random(
                [shape.c_out, shape.c_in, shape.kernel[0], shape.kernel[1]],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let bias = Tensor::<B, 1>::random([shape.c_out], Distribution::Normal(0.0, 1.0), &device);
            let x =
                Tensor::<B, 4>::random([2, shape.c_in, image[0], image[1]], Distribution::Default, &device);
            let r = shape.n().min(shape.m());
            let layer =
                LowRankConv2d::from_kernel(shape, kernel.clone(), Some(bias.clone()), Some(r), &truncation)
                    .unwrap();
            assert!(max_abs(layer.to_kernel() - kernel.clone()) < 1e-12, "{shape}: U S Vᵀ is the kernel");
            let options = ConvOptions::new(shape.stride, shape.padding, shape.dilation, 1);
            let expected = conv2d(x.clone(), kernel.clone(), Some(bias.clone()), options);
            let got = layer.forward(x.clone());
            assert_eq!(got.dims(), expected.dims(), "{shape}");
            assert!(max_abs(got - expected.clone()) < 1e-12, "{shape}");

            let p = Patches::new(x.clone(), &shape).rows();
            let [batch, m, ho, wo] = expected.dims();
            let rows = p.clone().matmul(shape.matricise(kernel)) + bias.unsqueeze::<2>();
            let got = rows.reshape([batch, ho, wo, m]).permute([0, 3, 1, 2]);
            assert!(max_abs(got - expected) < 1e-12, "{shape}: P W + b");
            let unfold = UnfoldOptions::new(shape.stride, shape.padding, shape.dilation);
            let reference =
                unfold4d(x, shape.kernel, unfold).swap_dims(1, 2).reshape([batch * ho * wo, shape.n()]);
            assert_eq!(p.into_data(), reference.into_data(), "{shape}: P");
        }
    }

    /// On the CPU training backend, where P is formed ([`patches`]) and every product is a
    /// matrix product, for every geometry: the dense and the low-rank layer give Burn's
    /// convolution's output and its gradients for the input and the kernel (f32 round-off
    /// relative to the sums' magnitude), and P is `unfold4d`'s, bit for bit.
    #[test]
    fn on_flex_the_layers_and_their_gradients_are_burn_s_convolution() {
        type T = crate::TrainBackend;
        let device = Default::default();
        let truncation = TruncationConfig::default();
        /// max |a − b| / max(1, max |b|).
        fn gap<Bk: Backend>(a: Tensor<Bk, 4>, b: Tensor<Bk, 4>) -> f64 {
            let scale = b.clone().abs().max().into_scalar().elem::<f64>().max(1.0);
            (a - b).abs().max().into_scalar().elem::<f64>() / scale
        }
        for (shape, image) in geometries() {
            let dims = [shape.c_out, shape.c_in, shape.kernel[0], shape.kernel[1]];
            let kernel = Tensor::<T, 4>::random(dims, Distribution::Normal(0.0, 1.0), &device);
            let x =
                Tensor::<T, 4>::random([3, shape.c_in, image[0], image[1]], Distribution::Default, &device)
                    .require_grad();
            let options = ConvOptions::new(shape.stride, shape.padding, shape.dilation, 1);
            let k = kernel.clone().require_grad();
            let theirs = conv2d(x.clone(), k.clone(), None, options.clone());
            let w = Tensor::<T, 4>::random(theirs.dims(), Distribution::Default, &device);
            let grads = (theirs.clone() * w.clone()).sum().backward();
            let (dx, dk) = (x.grad(&grads).unwrap(), k.grad(&grads).unwrap());

            let k = kernel.clone().require_grad();
            let dense = DenseConv2d::from_core(
                shape,
                DenseLinear::from_weights(shape.matricise(k.clone()), None).unwrap(),
            )
            .unwrap();
            let ours = dense.forward(x.clone());
            let grads = (ours.clone() * w.clone()).sum().backward();
            assert!(gap(ours, theirs.clone()) < 1e-5, "{shape}: dense output");
            assert!(gap(x.grad(&grads).unwrap(), dx.clone()) < 1e-5, "{shape}: dense input gradient");
            assert!(gap(k.grad(&grads).unwrap(), dk) < 1e-5, "{shape}: dense kernel gradient");

            let r = shape.n().min(shape.m());
            let low_rank = LowRankConv2d::from_kernel(shape, kernel, None, Some(r), &truncation).unwrap();
            let ours = low_rank.forward(x.clone());
            let grads = (ours.clone() * w).sum().backward();
            assert!(gap(ours, theirs) < 1e-5, "{shape}: low-rank output");
            assert!(gap(x.grad(&grads).unwrap(), dx) < 1e-5, "{shape}: low-rank input gradient");

            let unfold = UnfoldOptions::new(shape.stride, shape.padding, shape.dilation);
            let p = Patches::new(x.clone(), &shape);
            assert!(p.formed(false).is_some(), "{shape}: P is formed on flex");
            let [batch, n, positions] = unfold4d(x.clone(), shape.kernel, unfold.clone()).dims();
            let reference = unfold4d(x, shape.kernel, unfold).swap_dims(1, 2).reshape([batch * positions, n]);
            assert_eq!(p.rows().into_data(), reference.into_data(), "{shape}: P");
        }
    }

    /// A batch whose P exceeds the limit where no gradient needs it (an evaluation batch) is
    /// multiplied piece by piece: the layer's output is still Burn's convolution.
    #[test]
    fn a_large_batch_without_gradient_is_burn_s_convolution() {
        type T = crate::TrainBackend;
        let device = Default::default();
        let shape = Conv2dShape::new(2, 4, [3, 3]).with_padding([1, 1]);
        let kernel = Tensor::<T, 4>::random([4, 2, 3, 3], Distribution::Normal(0.0, 1.0), &device);
        let x = Tensor::<T, 4>::random([100, 2, 64, 64], Distribution::Default, &device);
        let layer = DenseConv2d::from_core(
            shape,
            DenseLinear::from_weights(shape.matricise(kernel.clone()), None).unwrap(),
        )
        .unwrap();
        let options = ConvOptions::new(shape.stride, shape.padding, shape.dilation, 1);
        let gap = (layer.forward(x.clone()) - conv2d(x, kernel, None, options)).abs().max().into_scalar();
        assert!(gap < 1e-5, "output differs by {gap}");
    }

    #[test]
    fn output_size_and_bad_geometry_are_errors_naming_the_layer() {
        let shape = Conv2dShape::new(1, 6, [5, 5]).with_padding([2, 2]);
        assert_eq!(shape.output_size("conv1", [28, 28]).unwrap(), [28, 28]);
        assert_eq!(Conv2dShape::new(6, 16, [5, 5]).output_size("conv2", [14, 14]).unwrap(), [10, 10]);
        let err = Conv2dShape::new(1, 2, [5, 5]).output_size("conv2", [3, 8]).unwrap_err().to_string();
        assert!(
            err.contains("conv2") && err.contains("at least 5 pixels") && err.contains("3 + 2·0"),
            "{err}"
        );
        let err = shape.check_rank("conv1", 7).unwrap_err().to_string();
        assert!(err.contains("conv1.rank") && err.contains("= 6"), "{err}");
        let err = Conv2dShape::new(1, 2, [3, 3]).with_stride([0, 1]).validate("c").unwrap_err().to_string();
        assert!(err.contains("c.stride"), "{err}");
        let mut rng = StdRng::seed_from_u64(0);
        let layer = LowRankConv2d::<B>::random(shape, 2, true, 1.0, &mut rng, &Default::default()).unwrap();
        let x = Tensor::<B, 4>::zeros([1, 2, 28, 28], &Default::default());
        let err = layer.try_forward(x).unwrap_err().to_string();
        assert!(
            err.contains("input channels of LowRankConv2d") && err.contains("expected 1, got 2"),
            "{err}"
        );
    }
}
