//! `DenseLinear`: `z = x W + b` with a full n×m W, trained by an ordinary optimizer step.
//!
//! Low-rank networks keep their small output layer dense (as the paper does); dense training,
//! the baseline, uses it for every layer. Initialisation: W has i.i.d. N(0, gain²/n) entries
//! (He/Kaiming-normal for gain = √2), the bias is zero.

use std::fmt;

use burn::tensor::{
    backend::{AutodiffBackend, Backend},
    FloatDType, Tensor,
};
use faer::Mat;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};

use super::bias::add_bias;
use super::cast::cast;
use super::conv2d::Rows;
use crate::linalg::from_faer;
use crate::{Error, Result};

/// A dense linear layer.
#[derive(Clone, Debug)]
pub struct DenseLinear<B: Backend> {
    w: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
    leaves: Option<(Tensor<B, 2>, Option<Tensor<B, 1>>)>,
    /// The type the product runs in (as [`super::LowRankLinear::set_autocast`]); `None`: W's.
    autocast: Option<FloatDType>,
}

impl<B: Backend> DenseLinear<B> {
    /// W with N(0, gain²/n) entries and a zero bias.
    pub fn random(n: usize, m: usize, bias: bool, gain: f64, rng: &mut StdRng, device: &B::Device) -> Self {
        let normal = Normal::new(0.0, gain / (n as f64).sqrt()).expect("finite std");
        let w = Mat::from_fn(n, m, |_, _| normal.sample(rng));
        Self {
            w: from_faer(w.as_ref(), device),
            bias: bias.then(|| Tensor::zeros([m], device)),
            leaves: None,
            autocast: None,
        }
    }

    /// A layer from a given n×m weight and bias of length m.
    pub fn from_weights(w: Tensor<B, 2>, bias: Option<Tensor<B, 1>>) -> Result<Self> {
        let [_, m] = w.dims();
        if let Some(b) = &bias {
            if b.dims() != [m] {
                return Err(Error::shape("bias of DenseLinear", format!("[{m}]"), format!("{:?}", b.dims())));
            }
        }
        Ok(Self { w, bias, leaves: None, autocast: None })
    }

    /// W (n×m).
    pub fn weight(&self) -> &Tensor<B, 2> {
        &self.w
    }
    /// The bias, if any.
    pub fn bias(&self) -> Option<&Tensor<B, 1>> {
        self.bias.as_ref()
    }
    /// Replaces W by `step(W)` (an optimizer step), moving W in so the step may update its
    /// buffer in place.
    #[track_caller]
    pub fn map_weight(&mut self, step: impl FnOnce(Tensor<B, 2>) -> Tensor<B, 2>) {
        let (dims, device) = (self.w.dims(), self.w.device());
        // A 0×0 stand-in while the step holds the only handle to W.
        let w = std::mem::replace(&mut self.w, Tensor::empty([0, 0], &device));
        self.w = step(w);
        assert_eq!(self.w.dims(), dims, "DenseLinear: W keeps its shape");
    }
    /// Replaces the bias, if the layer has one, by `step(bias)`, moved in as W is.
    #[track_caller]
    pub fn map_bias(&mut self, step: impl FnOnce(Tensor<B, 1>) -> Tensor<B, 1>) {
        if let Some(b) = self.bias.take() {
            let b1 = step(b);
            assert_eq!(b1.dims(), [self.w.dims()[1]], "DenseLinear: the bias keeps its shape");
            self.bias = Some(b1);
        }
    }
    /// Runs the product `x W` in `dtype` (`None`: in W's type, the default), with x and W cast
    /// for it and the output cast back to W's type before the bias ([`super::Precision`]).
    pub fn set_autocast(&mut self, dtype: Option<FloatDType>) {
        self.autocast = dtype;
    }
    /// The type set by [`Self::set_autocast`].
    pub fn autocast(&self) -> Option<FloatDType> {
        self.autocast
    }
    /// n·m plus the bias.
    pub fn num_params(&self) -> usize {
        let [n, m] = self.w.dims();
        n * m + self.bias.as_ref().map_or(0, |_| m)
    }

    /// `z = x W + b`.
    ///
    /// # Shapes
    /// - x: [batch, n]
    /// - output: [batch, m]
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.forward_rows(&x)
    }

    /// `z = x W + b` for a batch of rows or the patches of an image ([`super::conv2d`]).
    pub(crate) fn forward_rows(&self, x: &impl Rows<B>) -> Tensor<B, 2> {
        let (w, b) = match &self.leaves {
            Some((w, b)) => (w.clone(), b.clone()),
            None => (self.w.clone(), self.bias.clone()),
        };
        let z = match self.autocast {
            Some(dtype) => cast(x.times(cast(w.clone(), dtype)), w.dtype()),
            None => x.times(w),
        };
        match b {
            Some(b) => add_bias(z, b),
            None => z,
        }
    }
}

impl<B: AutodiffBackend> DenseLinear<B> {
    /// Makes W and b trainable leaves for the next forward.
    pub fn begin_pass(&mut self) {
        let w = self.w.clone().detach().require_grad();
        let b = self.bias.clone().map(|b| b.detach().require_grad());
        self.leaves = Some((w, b));
    }

    /// The gradients of W and b from this pass (none outside a pass); drops the leaves.
    pub fn take_grads(&mut self, grads: &B::Gradients) -> (Option<Tensor<B, 2>>, Option<Tensor<B, 1>>) {
        let Some((w, b)) = self.leaves.take() else { return (None, None) };
        let g_w = w.grad(grads).map(Tensor::from_inner);
        let g_b = b.and_then(|b| b.grad(grads)).map(Tensor::from_inner);
        (g_w, g_b)
    }

    /// Drops the leaves without stepping (a pass in which this layer does not train).
    pub fn end_pass(&mut self) {
        self.leaves = None;
    }
}

impl<B: Backend> fmt::Display for DenseLinear<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [n, m] = self.w.dims();
        write!(
            f,
            "DenseLinear {{n: {n}, m: {m}, bias: {}, params: {}}}",
            self.bias.is_some(),
            self.num_params()
        )
    }
}
