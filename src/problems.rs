//! Matrix problems that check an integrator without a data set.
//!
//! A single [`LowRankLinear`] evaluated on the identity, `z = I W = W`, in whatever
//! parametrization the integrator's pass asks for, with one of two losses:
//!
//! - least squares `ℒ(W) = ½‖W − A‖²_F`: ∇ℒ = W − A, L-smooth with L = 1, minimised over
//!   rank-r matrices by the truncated SVD of A;
//! - the linear loss `ℒ(W) = −⟨W, A1 − A0⟩ / λ`: one gradient step of size λ adds exactly
//!   A1 − A0, which turns a training step into a step of dynamical low-rank approximation of
//!   the time-dependent matrix A(t) (the Lubich–Oseledets test).
//!
//! These are the problems of the property tests (T1–T7 of the notes), reachable from Rust
//! code and from `dlrt matrix`.

use burn::tensor::{backend::AutodiffBackend, Tensor};

use crate::layers::{DenseLinear, LowRankLinear, Network};

/// One low-rank layer and the identity input that makes its output equal W.
pub struct MatrixProblem<B: AutodiffBackend> {
    /// The layer being trained.
    pub layer: LowRankLinear<B>,
    identity: Tensor<B, 2>,
}

impl<B: AutodiffBackend> MatrixProblem<B> {
    /// Wraps `layer` (n×m); the input is I_n.
    pub fn new(layer: LowRankLinear<B>) -> Self {
        let identity = Tensor::eye(layer.n(), &layer.u().device());
        Self { layer, identity }
    }

    /// W in the current pass's parametrization (n×m).
    pub fn weight(&self) -> Tensor<B, 2> {
        self.layer.forward(self.identity.clone())
    }

    /// `½‖W − A‖²_F`.
    pub fn least_squares(&self, target: &Tensor<B, 2>) -> Tensor<B, 1> {
        (self.weight() - target.clone()).powf_scalar(2.0).sum().mul_scalar(0.5)
    }

    /// `−⟨W, increment⟩ / λ`: a gradient step of size λ adds `increment` to W.
    pub fn linear(&self, increment: &Tensor<B, 2>, lr: f64) -> Tensor<B, 1> {
        (self.weight() * increment.clone()).sum().mul_scalar(-1.0 / lr)
    }
}

impl<B: AutodiffBackend> Network<B> for MatrixProblem<B> {
    fn low_rank_layers(&mut self) -> Vec<&mut LowRankLinear<B>> {
        vec![&mut self.layer]
    }

    fn dense_layers(&mut self) -> Vec<&mut DenseLinear<B>> {
        Vec::new()
    }
}
