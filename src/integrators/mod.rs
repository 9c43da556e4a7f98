//! Time integrators for the low-rank gradient flow, one file each, behind one trait.
//!
//! An integrator answers three questions, and the training step (`train::Trainer`) asks
//! nothing else:
//!
//! 1. what one step is ([`Integrator::spec`]): which forward parametrizations ([`Pass`]) it
//!    evaluates, in order, and how many QR and SVD decompositions it does per layer;
//! 2. how a layer is set up when training starts ([`Integrator::prepare`]);
//! 3. what to do with a pass's gradients ([`Integrator::after_pass`]): the factor updates,
//!    basis augmentation, and after the last pass the truncation to a new rank.
//!
//! The integrator files compose the shared step functions of [`steps`] (K-, L-, S-steps,
//! augmentation, truncation) in the order of their pseudocode. Per-layer state (optimizer
//! slots, a factor carried from one pass to the next) lives in a [`LayerState`] that the
//! training step owns and hands in with each layer. [`Integrator::after_pass_all`] receives
//! every layer of a pass at once, so an integrator can batch one phase across layers
//! ([`batched`], all but LoRA's on a GPU); by default the layers update side by side on the CPU.
//!
//! Dense layers are not the integrator's business: they take an ordinary optimizer step from
//! the first pass of every step. Dense training has no integrator at all
//! ([`IntegratorKind::build`] gives `None`).
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
//! | dense training | none | dense | 0 | 0 | full |
//!
//! Adding an integrator means one new file (with its [`StepCost`]) and one line of `registry!`.
#![allow(non_snake_case)]

pub mod abc_psi;
pub mod batched;
pub mod bc_psi;
pub mod bug;
pub mod lora;
pub mod parallel_bug;
pub mod psi;
pub mod steps;

use std::fmt;

use burn::tensor::{
    backend::{AutodiffBackend, Backend},
    Tensor,
};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use crate::layers::Pass;
use crate::layers::{FactorGrads, LowRankLinear};
use crate::linalg::TruncationConfig;
use crate::optim::{DenseSlots, Optimizer, Slot};
use crate::Result;

/// What one step of an integrator is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    /// Which method this is.
    pub kind: IntegratorKind,
    /// The forward parametrizations of one step, in order (no pass appears twice).
    pub passes: &'static [Pass],
    /// Thin QR decompositions per layer and step.
    pub qr: u64,
    /// SVDs (of a 2r×2r core or an m×2r factor) per layer and step.
    pub svd: u64,
}

/// Passes, QRs and SVDs performed, summed over steps (and over layers for QR and SVD).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterSnapshot {
    /// Forward + backward passes over the whole network.
    pub passes: u64,
    /// Thin QR decompositions, summed over layers.
    pub qr: u64,
    /// SVDs, summed over layers.
    pub svd: u64,
}

impl std::ops::Add for CounterSnapshot {
    type Output = Self;
    fn add(self, b: Self) -> Self {
        Self { passes: self.passes + b.passes, qr: self.qr + b.qr, svd: self.svd + b.svd }
    }
}

/// Optimizer state of each factor role of a layer, carried across basis changes by
/// [`Optimizer::step`].
#[derive(Clone, Debug, Default)]
pub struct FactorSlots<B: Backend> {
    /// K = U S, columns in V.
    pub k: Slot<B>,
    /// L = V Sᵀ, columns in U.
    pub l: Slot<B>,
    /// S, rows in U, columns in V.
    pub s: Slot<B>,
    /// U as a free factor (LoRA's A).
    pub u: Slot<B>,
    /// V as a free factor (LoRA's B).
    pub v: Slot<B>,
    /// The bias.
    pub bias: Slot<B>,
}

/// What training carries for one low-rank layer besides its weights.
#[derive(Clone, Debug, Default)]
pub struct LayerState<B: Backend> {
    /// Optimizer state per factor role.
    pub slots: FactorSlots<B>,
    /// A factor computed in one pass and used in a later pass of the same step (BUG's K1);
    /// `None` between steps.
    pub pending: Option<Tensor<B, 2>>,
}

/// Everything training carries for a network besides its weights: a [`LayerState`] per
/// low-rank layer and the optimizer slots of each dense layer, in the network's order.
#[derive(Clone, Debug, Default)]
pub struct TrainState<B: Backend> {
    /// One per low-rank layer.
    pub low_rank: Vec<LayerState<B>>,
    /// One per dense layer.
    pub dense: Vec<DenseSlots<B>>,
}

/// One layer's part of a pass: the layer, its state and the gradients the pass produced.
pub struct LayerStep<'a, B: AutodiffBackend> {
    /// The layer being updated.
    pub layer: &'a mut LowRankLinear<B>,
    /// Its optimizer slots and pending factors.
    pub state: &'a mut LayerState<B>,
    /// The gradients of its leaves in this pass.
    pub grads: FactorGrads<B>,
}

/// A time integrator for low-rank layers (module docs).
pub trait Integrator<B: AutodiffBackend>: Send + Sync {
    /// The method, its passes and its decompositions per layer and step.
    fn spec(&self) -> Spec;

    /// Sets a layer up before its first step (the default leaves it as it is).
    fn prepare(&self, _layer: &mut LowRankLinear<B>) -> Result<()> {
        Ok(())
    }

    /// Consumes one layer's gradients of `pass` and updates its factors.
    fn after_pass(&self, pass: Pass, step: LayerStep<'_, B>, opt: &Optimizer) -> Result<()>;

    /// Every layer's update after `pass`. The default runs [`Integrator::after_pass`] per
    /// layer: side by side on the CPU, where each layer's host decompositions are sequential
    /// and a single small QR cannot use the cores; in order on a GPU, where the updates are
    /// queued from this thread only (CubeCL's behaviour with kernels from several threads has
    /// not been measured here).
    fn after_pass_all(&self, pass: Pass, layers: Vec<LayerStep<'_, B>>, opt: &Optimizer) -> Result<()> {
        each_layer(self, pass, layers, opt)
    }
}

/// The default [`Integrator::after_pass_all`]: [`Integrator::after_pass`] per layer, side by
/// side on the CPU and in order on a GPU (see there).
pub fn each_layer<B: AutodiffBackend, I: Integrator<B> + ?Sized>(
    integrator: &I,
    pass: Pass,
    layers: Vec<LayerStep<'_, B>>,
    opt: &Optimizer,
) -> Result<()> {
    if layers.first().is_some_and(|s| on_cubecl::<B>(&s.layer.u().device())) {
        layers.into_iter().try_for_each(|s| integrator.after_pass(pass, s, opt))
    } else {
        layers.into_par_iter().try_for_each(|s| integrator.after_pass(pass, s, opt))
    }
}

/// Whether the device is a GPU of Burn's CubeCL backends (CUDA here).
pub fn on_cubecl<B: burn::tensor::backend::Backend>(device: &B::Device) -> bool {
    B::name(device).contains("cubecl")
}

/// Whether an integrator with the batched setting `setting` ([`BatchedUpdate::setting`])
/// batches its update of `layers`: when there are any, and, if the setting is unset, on a GPU
/// with an f32 backend only.
pub fn batches<B: AutodiffBackend>(setting: Option<bool>, layers: &[LayerStep<'_, B>]) -> bool {
    layers.first().is_some_and(|s| {
        setting.unwrap_or_else(|| {
            crate::linalg::single_precision::<B>() && on_cubecl::<B>(&s.layer.u().device())
        })
    })
}

/// Whether the updates with decompositions (all but LoRA's) run one phase for all layers at
/// once with the tall factors on the device ([`batched`]), or layer by layer. Both compute
/// the same step (to round-off); batching trades the host's parallel per-layer work for a few
/// device reads per phase, which pays on a GPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "NameOrFlag", into = "String")]
pub enum BatchedUpdate {
    /// Batched on a GPU with an f32 backend, layer by layer elsewhere.
    #[default]
    Auto,
    /// Batched on every device.
    On,
    /// Layer by layer on every device.
    Off,
}

impl BatchedUpdate {
    /// Every choice, in the order `--help` lists them.
    pub const ALL: [Self; 3] = [Self::Auto, Self::On, Self::Off];

    /// The config / command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::On => "on",
            Self::Off => "off",
        }
    }

    /// The integrators' `batched` field: `None` for `Auto` ([`batches`]).
    pub fn setting(self) -> Option<bool> {
        match self {
            Self::Auto => None,
            Self::On => Some(true),
            Self::Off => Some(false),
        }
    }
}

crate::layers::compute::named_choice!(BatchedUpdate, "batched_update");

/// A config's `batched_update`: a name, or `true` / `false` for `"on"` / `"off"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum NameOrFlag {
    Flag(bool),
    Name(String),
}

impl TryFrom<NameOrFlag> for BatchedUpdate {
    type Error = crate::Error;
    fn try_from(v: NameOrFlag) -> Result<Self> {
        match v {
            NameOrFlag::Flag(true) => Ok(Self::On),
            NameOrFlag::Flag(false) => Ok(Self::Off),
            NameOrFlag::Name(name) => name.parse(),
        }
    }
}

/// Defines [`IntegratorKind`] from one line per method: its doc, name, [`StepCost`] and how it
/// is built from the truncation settings and the batched-update setting.
macro_rules! registry {
    ($($(#[$doc:meta])* $kind:ident = $name:literal, $cost:expr, |$t:ident, $batched:ident| $build:expr;)*) => {
        /// The registry of methods; the serde name, the CLI name and the file name agree.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
        #[serde(rename_all = "snake_case")]
        #[value(rename_all = "snake_case")]
        pub enum IntegratorKind {
            $($(#[$doc])* $kind,)*
        }

        impl IntegratorKind {
            /// Every method, in the order of the table in the module docs.
            pub const ALL: [IntegratorKind; [$($name),*].len()] = [$(IntegratorKind::$kind),*];

            /// The name used in configs, on the command line and as the file name.
            pub fn name(self) -> &'static str {
                match self {
                    $(IntegratorKind::$kind => $name,)*
                }
            }

            /// The matrix-product cost model of one step ([`StepCost`]).
            pub fn cost(self) -> StepCost {
                match self {
                    $(IntegratorKind::$kind => $cost,)*
                }
            }

            /// Builds the integrator, or `None` for dense training; `truncation` is validated
            /// and used by the rank-adaptive methods, `batched` by every method with
            /// decompositions.
            pub fn build<B: AutodiffBackend>(
                self,
                truncation: &TruncationConfig,
                batched: BatchedUpdate,
            ) -> Result<Option<Box<dyn Integrator<B>>>> {
                truncation.validate()?;
                match self {
                    $(IntegratorKind::$kind => {
                        let ($t, $batched) = (truncation.clone(), batched.setting());
                        Ok($build)
                    })*
                }
            }
        }
    };
}

registry! {
    /// Augmented backward-corrected PSI (the seed paper).
    AbcPsi = "abc_psi", abc_psi::COST,
        |t, batched| Some(Box::new(abc_psi::AbcPsi::new(t)?.batched(batched)));
    /// abc-PSI with its K- and L-gradients from one pass (equal to two passes when every
    /// trainable layer is low-rank; otherwise the L-gradient does not see the dense layers' step).
    AbcPsiOnePass = "abc_psi_one_pass", abc_psi::COST_ONE_PASS,
        |t, batched| Some(Box::new(abc_psi::AbcPsi::new(t)?.one_pass().batched(batched)));
    /// Backward-corrected PSI (fixed rank).
    BcPsi = "bc_psi", bc_psi::COST, |_t, batched| Some(Box::new(bc_psi::BcPsi::default().batched(batched)));
    /// Projector-splitting / KSL integrator (fixed rank, backward S-step).
    Psi = "psi", psi::COST, |_t, batched| Some(Box::new(psi::Psi::default().batched(batched)));
    /// Rank-adaptive basis-update & Galerkin (DLRT).
    Bug = "bug", bug::COST, |t, batched| Some(Box::new(bug::Bug::new(t)?.batched(batched)));
    /// Parallel BUG / GeoLoRA.
    ParallelBug = "parallel_bug", parallel_bug::COST,
        |t, batched| Some(Box::new(parallel_bug::ParallelBug::new(t)?.batched(batched)));
    /// Plain factorization `W = A Bᵀ` trained by the optimizer.
    Lora = "lora", lora::COST, |_t, _batched| Some(Box::new(lora::Lora));
    /// Dense training: no low-rank layer, no integrator.
    Dense = "dense", DENSE_COST, |_t, _batched| None;
}

/// Dense training's step: one pass, in which a low-rank layer (there is none) would cost its
/// forward x U S Vᵀ.
const DENSE_COST: StepCost = StepCost { passes: 1, low_rank: |p| Products::PASS * p.three(p.r, p.r) };

/// The matrix-product cost model of a method's step (`bench::flops`, whose docs derive each
/// method's): how many passes it makes, and what one low-rank layer multiplies in them.
#[derive(Clone, Copy, Debug)]
pub struct StepCost {
    /// Passes per step, each a forward and a backward; a dense layer costs the same in each.
    pub passes: usize,
    /// FLOPs of one low-rank layer's products over the whole step.
    pub low_rank: fn(&Products) -> f64,
}

/// One low-rank n×m layer of rank r with b rows of input, for [`StepCost::low_rank`]; the
/// augmented bases Û and V̂ are `r_u` = min(2r, n) and `r_v` = min(2r, m) wide.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Products {
    /// Rows of input (batch × positions).
    pub b: f64,
    /// Fan-in.
    pub n: f64,
    /// Fan-out.
    pub m: f64,
    /// Rank.
    pub r: f64,
    /// Width of Û.
    pub r_u: f64,
    /// Width of V̂.
    pub r_v: f64,
}

impl Products {
    /// A pass (forward and backward) in forwards: the backward's input and weight gradients
    /// each repeat the forward's products.
    pub const PASS: f64 = 3.0;

    /// The layer n×m of rank r at b rows.
    pub fn new(b: f64, n: usize, m: usize, r: usize) -> Self {
        let (r_u, r_v) = ((2 * r).min(n) as f64, (2 * r).min(m) as f64);
        Self { b, n: n as f64, m: m as f64, r: r as f64, r_u, r_v }
    }

    /// FLOPs of x A Bᵀ with A n×w and B m×w (x K Vᵀ, x U Lᵀ).
    pub fn two(&self, w: f64) -> f64 {
        2.0 * self.b * (self.n * w + w * self.m)
    }

    /// FLOPs of x U S Vᵀ with U n×w_u, S w_u×w_v and V m×w_v.
    pub fn three(&self, w_u: f64, w_v: f64) -> f64 {
        2.0 * self.b * (self.n * w_u + w_u * w_v + w_v * self.m)
    }
}

/// A clap value parser for the methods that train a low-rank layer (all but `dense`), for
/// commands that have nothing dense to train.
pub fn parse_low_rank_method(s: &str) -> std::result::Result<IntegratorKind, String> {
    match IntegratorKind::ALL.into_iter().find(|k| k.name() == s) {
        Some(IntegratorKind::Dense) | None => {
            Err(format!("expected a low-rank method ({}), got {s:?}", low_rank_names()))
        }
        Some(kind) => Ok(kind),
    }
}

/// The names of the low-rank methods, comma-separated.
pub fn low_rank_names() -> String {
    let names: Vec<&str> =
        IntegratorKind::ALL.iter().filter(|k| **k != IntegratorKind::Dense).map(|k| k.name()).collect();
    names.join(", ")
}

impl fmt::Display for IntegratorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
