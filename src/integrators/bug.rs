//! Rank-adaptive BUG: the basis-update & Galerkin integrator behind DLRT.
//!
//! Ceruti, Kusch, Lubich, "A rank-adaptive robust integrator for dynamical low-rank
//! approximation", BIT 2022; used for training by Schotthöfer et al., NeurIPS 2022. One step
//! per layer, W0 = U0 S0 V0ᵀ of rank r:
//!
//! ```text
//! (1) K-pass:  K1 = U0 S0 − λ ∇_K ℒ(K V0ᵀ)         (at W0)
//! (2) L-pass:  L1 = V0 S0ᵀ − λ ∇_L ℒ(U0 Lᵀ)        (at W0)
//! (3) augment: Û = orth([K1 | U0]),  V̂ = orth([L1 | V0])                   (QR 1, 2)
//!              Ŝ = (Ûᵀ U0) S0 (V0ᵀ V̂)            so Û Ŝ V̂ᵀ = W0
//! (4) S-pass:  Ŝ1 = Ŝ − λ ∇_S ℒ(Û S V̂ᵀ);  biases step here
//! (5) truncate Ŝ1 = P Σ Qᵀ by ϑ:  U ← Û P, S ← Σ, V ← V̂ Q                 (SVD)
//! ```
//!
//! "At W0" holds for the low-rank layers; layers that are not low-rank (a dense head) take
//! their step from the K-pass, so the L- and S-passes see them already stepped, as in every
//! multi-pass integrator here (the training loop steps them once per step, after pass 0).
//!
//! Before truncation `W1 = W0 − λ Û Ûᵀ ∇ℒ(W0) V̂ V̂ᵀ`. Cost per layer and step: 3 passes,
//! 2 thin QRs, 1 SVD of 2r×2r. The K-pass result waits in the layer's [`super::LayerState`] for the L-pass.
//!
//! On a GPU, steps (3) and (5) of all layers run together ([`super::batched`], as parallel
//! BUG's): every U and V basis is augmented in the same Gram rounds (two reads for all of them)
//! and every core Ŝ1 is read at once, so a step reads 3 + 3 times whatever the number of layers
//! (the three losses and the three phases). The result is the same step (equal to round-off
//! in f64, tested); [`Bug::batched`] switches it.

use burn::tensor::{backend::AutodiffBackend, Tensor};

use super::batched::{self, Augmentation, CoreTruncation};
use super::steps::{augment, bias_step, k_step, l_step, required, s_step, truncate_core};
use super::{batches, each_layer, Integrator, IntegratorKind, LayerStep, Pass, Products, Spec, StepCost};
use crate::linalg::TruncationConfig;
use crate::optim::Optimizer;
use crate::{Error, Result};

/// One step's products: K and L at W0 (r wide), then S: x Û Ŝ V̂ᵀ (2r wide).
pub const COST: StepCost =
    StepCost { passes: 3, low_rank: |p| Products::PASS * (2.0 * p.two(p.r) + p.three(p.r_u, p.r_v)) };

/// The rank-adaptive BUG integrator.
#[derive(Debug)]
pub struct Bug {
    /// ϑ and the rank bounds of step (5).
    pub truncation: TruncationConfig,
    /// Whether steps (3) and (5) run batched across layers with the tall factors on the device
    /// ([`super::batched`]); `None`: on a GPU with an f32 backend only.
    pub batched: Option<bool>,
}

impl Bug {
    /// BUG with the given truncation; rejects an invalid one ([`TruncationConfig::validate`]).
    pub fn new(truncation: TruncationConfig) -> Result<Self> {
        truncation.validate()?;
        Ok(Self { truncation, batched: None })
    }

    /// Sets [`Self::batched`] (`None`: on a GPU with an f32 backend only).
    pub fn batched(mut self, batched: Option<bool>) -> Self {
        self.batched = batched;
        self
    }
}

impl<B: AutodiffBackend> Integrator<B> for Bug {
    fn spec(&self) -> Spec {
        Spec { kind: IntegratorKind::Bug, passes: &[Pass::K, Pass::L, Pass::S], qr: 2, svd: 1 }
    }

    fn after_pass_all(&self, pass: Pass, mut layers: Vec<LayerStep<'_, B>>, opt: &Optimizer) -> Result<()> {
        if !batches(self.batched, &layers) || pass == Pass::K {
            return each_layer(self, pass, layers, opt);
        }
        let kind = IntegratorKind::Bug;
        if pass == Pass::L {
            // (2) per layer, then (3) for all layers at once: every U and V basis in shared rounds.
            let mut pairs = Vec::with_capacity(2 * layers.len());
            for (i, LayerStep { layer, state, grads }) in layers.iter_mut().enumerate() {
                let L1 = l_step(layer, &mut state.slots, required(grads.l.take(), "L", kind)?, opt);
                let K1 = state
                    .pending
                    .take()
                    .ok_or_else(|| Error::Internal("bug: L-pass before K-pass".into()))?;
                pairs.push(Augmentation { layer: i, names: "U0 or K1", basis: layer.u().clone(), new: K1 });
                pairs.push(Augmentation { layer: i, names: "V0 or L1", basis: layer.v().clone(), new: L1 });
            }
            let mut augmented = batched::augment_bases(&pairs, "BUG")?.into_iter();
            for LayerStep { layer, .. } in layers.iter_mut() {
                let (U, S, V) = (layer.u().clone(), layer.s().clone(), layer.v().clone());
                let ((U_hat, u_checked), (V_hat, v_checked)) =
                    (augmented.next().expect("U per layer"), augmented.next().expect("V per layer"));
                let S_hat = galerkin_core(&U_hat, U, S, V, &V_hat);
                match u_checked && v_checked {
                    true => layer.set_factors_checked_elsewhere(U_hat, S_hat, V_hat)?,
                    false => layer.set_factors(U_hat, S_hat, V_hat)?,
                }
            }
            return Ok(());
        }
        // (4) per layer, then (5) for all layers at once.
        let mut cores = Vec::with_capacity(layers.len());
        for LayerStep { layer, state, grads } in layers.iter_mut() {
            bias_step(layer, &mut state.slots, grads.bias.take(), opt);
            let S1 = s_step(layer, &mut state.slots, required(grads.s.take(), "S", kind)?, opt);
            let (U_hat, V_hat) = (layer.u().clone(), layer.v().clone());
            cores.push(CoreTruncation { layer: &mut **layer, U_hat, S_hat: S1, V_hat });
        }
        batched::truncate_cores_all(cores, &self.truncation, "BUG")
    }

    fn after_pass(&self, pass: Pass, step: LayerStep<'_, B>, opt: &Optimizer) -> Result<()> {
        let LayerStep { layer, state, grads } = step;
        let kind = IntegratorKind::Bug;
        match pass {
            Pass::K => {
                // (1) K1 = K0 − λ ∇_K ℒ; W stays W0 for the L-pass.
                state.pending = Some(k_step(layer, &mut state.slots, required(grads.k, "K", kind)?, opt));
                Ok(())
            }
            Pass::L => {
                // (2) L1 = L0 − λ ∇_L ℒ
                let L1 = l_step(layer, &mut state.slots, required(grads.l, "L", kind)?, opt);
                let K1 = state
                    .pending
                    .take()
                    .ok_or_else(|| Error::Internal("bug: L-pass before K-pass".into()))?;
                // (3) Û = orth([K1 | U0]), V̂ = orth([L1 | V0]), Ŝ = (Ûᵀ U0) S0 (V0ᵀ V̂)
                let (U, S, V) = (layer.u().clone(), layer.s().clone(), layer.v().clone());
                let U_hat = augment(&K1, &U);
                let V_hat = augment(&L1, &V);
                let S_hat = galerkin_core(&U_hat, U, S, V, &V_hat);
                layer.set_factors(U_hat, S_hat, V_hat)
            }
            _ => {
                bias_step(layer, &mut state.slots, grads.bias, opt);
                // (4) Ŝ1 = Ŝ − λ ∇_S ℒ;  (5) Ŝ1 = P Σ Qᵀ, truncated
                let S1 = s_step(layer, &mut state.slots, required(grads.s, "S", kind)?, opt);
                let (U_hat, V_hat) = (layer.u().clone(), layer.v().clone());
                truncate_core(layer, U_hat, &S1, V_hat, &self.truncation, "BUG Ŝ1")
            }
        }
    }
}

/// (3) Ŝ = (Ûᵀ U0) S0 (V0ᵀ V̂): W0 in the augmented bases.
fn galerkin_core<B: AutodiffBackend>(
    U_hat: &Tensor<B, 2>,
    U0: Tensor<B, 2>,
    S0: Tensor<B, 2>,
    V0: Tensor<B, 2>,
    V_hat: &Tensor<B, 2>,
) -> Tensor<B, 2> {
    U_hat.clone().transpose().matmul(U0).matmul(S0).matmul(V0.transpose().matmul(V_hat.clone()))
}
