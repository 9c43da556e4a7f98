//! A projection `z = x W + b` of a block: frozen dense, or with a low-rank adapter.

use burn::tensor::{backend::Backend, DType, FloatDType, Tensor};

use super::weights::put;
use crate::io::TensorMap;
use crate::layers::{cast, DenseLinear, LowRankLinear};
use crate::Result;

/// A projection `z = x W + b`: frozen, or with a trainable low-rank adapter on the frozen W.
#[derive(Clone, Debug)]
// Burn parameters make a LowRankLinear large; a network holds one per layer, built once.
#[allow(clippy::large_enum_variant)]
pub enum Projection<B: Backend> {
    /// The pretrained W, not trained.
    Frozen(DenseLinear<B>),
    /// `x W0 + x U S Vᵀ + b`, trained by an integrator.
    Adapted(LowRankLinear<B>),
}

impl<B: Backend> Projection<B> {
    /// Applies the projection to every token, in the frozen weight's float type: x is cast to
    /// it and so is the output. An adapter's low-rank part runs in its factors' type (the
    /// casts at the adapter's boundary, [`LowRankLinear::forward`]).
    ///
    /// # Shapes
    /// - x: [batch, tokens, n]
    /// - output: [batch, tokens, m]
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, n] = x.dims();
        let (x, dtype) = (x.reshape([b * t, n]), self.dtype());
        let z = match self {
            Projection::Frozen(l) => l.forward(cast(x, dtype)),
            Projection::Adapted(l) => cast(l.forward(x), dtype),
        };
        let m = z.dims()[1];
        z.reshape([b, t, m])
    }

    /// The float type of the frozen weight (of an adapter's base W0): the projection's.
    pub fn dtype(&self) -> DType {
        match self {
            Projection::Frozen(l) => l.weight().dtype(),
            Projection::Adapted(l) => l.base().map_or(l.u().dtype(), |w0| w0.dtype()),
        }
    }

    /// Stores the frozen weight and bias (an adapter's W0 only) in `dtype`.
    pub(super) fn cast_frozen(&mut self, dtype: FloatDType) -> Result<()> {
        match self {
            Projection::Frozen(l) => *l = cast_dense(l, dtype)?,
            Projection::Adapted(l) => l.cast_base(dtype),
        }
        Ok(())
    }

    /// (n, m).
    pub fn shape(&self) -> (usize, usize) {
        match self {
            Projection::Frozen(l) => (l.weight().dims()[0], l.weight().dims()[1]),
            Projection::Adapted(l) => (l.n(), l.m()),
        }
    }

    /// The bias (an adapter's own, which it trains).
    pub fn bias(&self) -> Option<&Tensor<B, 1>> {
        match self {
            Projection::Frozen(l) => l.bias(),
            Projection::Adapted(l) => l.bias(),
        }
    }

    /// The effective n×m weight (`W0 + U S Vᵀ` for an adapter) and the bias.
    pub fn merged(&self) -> (Tensor<B, 2>, Option<Tensor<B, 1>>) {
        match self {
            Projection::Frozen(l) => (l.weight().clone(), l.bias().cloned()),
            Projection::Adapted(l) => l.merge(),
        }
    }

    /// Writes `{name}.weight` ([m, n], PyTorch's layout) and `{name}.bias`; adapters folded in.
    pub(super) fn save(&self, name: &str, out: &mut TensorMap) {
        let (w, b) = self.merged();
        put(out, format!("{name}.weight"), &w.transpose());
        if let Some(b) = b {
            put(out, format!("{name}.bias"), &b);
        }
    }
}

/// `l` with its weight and bias stored in `dtype`.
pub(super) fn cast_dense<B: Backend>(l: &DenseLinear<B>, dtype: FloatDType) -> Result<DenseLinear<B>> {
    DenseLinear::from_weights(cast(l.weight().clone(), dtype), l.bias().map(|b| cast(b.clone(), dtype)))
}
