//! Time integrators for the low-rank gradient flow, one file each, behind one trait.
//!
//! An integrator answers three questions, and the training step ([`crate::train::step`])
//! asks nothing else:
//!
//! 1. which forward parametrizations ([`Pass`]) one step evaluates, in order;
//! 2. how a layer is set up when training starts ([`Integrator::prepare`]);
//! 3. what to do with each pass's gradients ([`Integrator::after_pass`]): the factor
//!    updates, basis augmentation, and after the last pass the truncation to a new rank.
//!
//! Dense layers are not the integrator's business: they take an ordinary optimizer step from
//! the first pass of every step.
//!
//! | method | file | passes | QR | SVD | rank |
//! |---|---|---|---|---|---|
//! | abc-PSI (Kusch, Schotthöfer, Walter 2025) | [`abc_psi`] | K, L | 1 | 1 | adaptive |
//! | abc-PSI, one shared pass | [`abc_psi`] | activations | 1 | 1 | adaptive |
//! | bc-PSI | [`bc_psi`] | K, L | 2 | 0 | fixed |
//! | PSI / KSL (Lubich, Oseledets 2014) | [`psi`] | K, S, L | 2 | 0 | fixed |
//! | rank-adaptive BUG (Ceruti, Kusch, Lubich 2022) | [`bug`] | K, L, S | 2 | 1 | adaptive |
//! | parallel BUG / GeoLoRA | [`parallel_bug`] | tangent | 2 | 1 | adaptive |
//! | plain factorization (LoRA-style) | [`lora`] | factors | 0 | 0 | fixed |
//! | dense training | [`dense`] | dense | 0 | 0 | full |
//!
//! Adding an integrator means one new file and one arm in [`IntegratorKind::build`].
#![allow(non_snake_case)]

pub mod abc_psi;
pub mod bc_psi;
pub mod bug;
pub mod dense;
pub mod lora;
pub mod parallel_bug;
pub mod psi;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::layers::{FactorGrads, LowRankLinear};
use crate::linalg::TruncationConfig;
use crate::optim::Optimizer;
use crate::Result;

/// The forward parametrization a pass evaluates each low-rank layer in (see
/// [`crate::layers::low_rank_linear`] for the table of leaves and gradients).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Pass {
    /// `x K Vᵀ`, K = U S trainable.
    K,
    /// `x U Lᵀ`, L = V Sᵀ trainable.
    L,
    /// `x U S Vᵀ`, S trainable.
    S,
    /// `x (K Vᵀ + U Lᵀ − U S Vᵀ)`, K, L, S trainable: all tangent directions in one pass.
    Tangent,
    /// `x U S Vᵀ`, U and V trainable as free factors.
    Factors,
    /// Dense layers only.
    Dense,
    /// `x U S Vᵀ` with no factor leaf: the pass records the layer's input x and output
    /// gradient δ, so the integrator can form G V and Gᵀ U for bases it builds afterwards.
    Activations,
}

/// How many passes, QR and SVD decompositions an integrator has performed.
#[derive(Debug, Default)]
pub struct Counters {
    passes: AtomicU64,
    qr: AtomicU64,
    svd: AtomicU64,
}

/// A copy of [`Counters`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterSnapshot {
    /// Forward + backward passes over the whole network.
    pub passes: u64,
    /// Thin QR decompositions, summed over layers.
    pub qr: u64,
    /// SVDs (of a 2r×2r core or an m×2r factor), summed over layers.
    pub svd: u64,
}

impl Counters {
    /// Records one forward + backward pass.
    pub fn pass(&self) {
        self.passes.fetch_add(1, Ordering::Relaxed);
    }
    /// Records `k` QR decompositions.
    pub fn qr(&self, k: u64) {
        self.qr.fetch_add(k, Ordering::Relaxed);
    }
    /// Records one SVD.
    pub fn svd(&self) {
        self.svd.fetch_add(1, Ordering::Relaxed);
    }
    /// The current counts.
    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            passes: self.passes.load(Ordering::Relaxed),
            qr: self.qr.load(Ordering::Relaxed),
            svd: self.svd.load(Ordering::Relaxed),
        }
    }
}

/// A time integrator for low-rank layers (module docs).
pub trait Integrator<B: AutodiffBackend>: Send + Sync {
    /// Which method this is.
    fn kind(&self) -> IntegratorKind;

    /// The forward parametrizations of one step, in order.
    fn passes(&self) -> &'static [Pass];

    /// Sets a layer up before its first step (the default leaves it as it is).
    fn prepare(&self, _layer: &mut LowRankLinear<B>) -> Result<()> {
        Ok(())
    }

    /// Consumes the gradients of pass number `pass` (an index into [`Integrator::passes`])
    /// for one layer, and updates its factors.
    fn after_pass(
        &self,
        pass: usize,
        layer: &mut LowRankLinear<B>,
        grads: FactorGrads<B>,
        opt: &Optimizer,
    ) -> Result<()>;

    /// Passes, QRs and SVDs performed so far.
    fn counters(&self) -> &Counters;
}

/// The registry of integrators; the serde name, the CLI name and the file name agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum IntegratorKind {
    /// Augmented backward-corrected PSI (the seed paper).
    AbcPsi,
    /// abc-PSI with its K- and L-gradients from one pass (equal to two passes when every
    /// trainable layer is low-rank; otherwise the L-gradient does not see the dense layers' step).
    AbcPsiOnePass,
    /// Backward-corrected PSI (fixed rank).
    BcPsi,
    /// Projector-splitting / KSL integrator (fixed rank, backward S-step).
    Psi,
    /// Rank-adaptive basis-update & Galerkin (DLRT).
    Bug,
    /// Parallel BUG / GeoLoRA.
    ParallelBug,
    /// Plain factorization `W = A Bᵀ` trained by the optimizer.
    Lora,
    /// Dense training.
    Dense,
}

impl IntegratorKind {
    /// Every integrator, in the order of the table in the module docs.
    pub const ALL: [IntegratorKind; 8] = [
        IntegratorKind::AbcPsi,
        IntegratorKind::AbcPsiOnePass,
        IntegratorKind::BcPsi,
        IntegratorKind::Psi,
        IntegratorKind::Bug,
        IntegratorKind::ParallelBug,
        IntegratorKind::Lora,
        IntegratorKind::Dense,
    ];

    /// The name used in configs, on the command line and as the file name.
    pub fn name(self) -> &'static str {
        match self {
            IntegratorKind::AbcPsi => "abc_psi",
            IntegratorKind::AbcPsiOnePass => "abc_psi_one_pass",
            IntegratorKind::BcPsi => "bc_psi",
            IntegratorKind::Psi => "psi",
            IntegratorKind::Bug => "bug",
            IntegratorKind::ParallelBug => "parallel_bug",
            IntegratorKind::Lora => "lora",
            IntegratorKind::Dense => "dense",
        }
    }

    /// Builds the integrator; `truncation` is validated and used by the rank-adaptive ones.
    pub fn build<B: AutodiffBackend>(self, truncation: &TruncationConfig) -> Result<Box<dyn Integrator<B>>> {
        truncation.validate()?;
        let t = truncation.clone();
        Ok(match self {
            IntegratorKind::AbcPsi => Box::new(abc_psi::AbcPsi::new(t)),
            IntegratorKind::AbcPsiOnePass => Box::new(abc_psi::AbcPsi::new(t).one_pass()),
            IntegratorKind::BcPsi => Box::new(bc_psi::BcPsi::default()),
            IntegratorKind::Psi => Box::new(psi::Psi::default()),
            IntegratorKind::Bug => Box::new(bug::Bug::new(t)),
            IntegratorKind::ParallelBug => Box::new(parallel_bug::ParallelBug::new(t)),
            IntegratorKind::Lora => Box::new(lora::Lora::default()),
            IntegratorKind::Dense => Box::new(dense::Dense::default()),
        })
    }
}

impl fmt::Display for IntegratorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The gradient a pass must have produced, or an error naming it.
pub(crate) fn required<T>(grad: Option<T>, what: &str, kind: IntegratorKind) -> Result<T> {
    grad.ok_or_else(|| {
        crate::Error::Unsupported(format!(
            "{kind}: the pass produced no gradient for {what} (does the loss depend on this layer?)"
        ))
    })
}
