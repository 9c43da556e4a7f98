//! bc-PSI: the backward-corrected projector-splitting integrator (fixed rank).
//!
//! The S-step of PSI runs backward in time and needs its own pass; bc-PSI replaces it by the
//! matrix product `S̃ = (U1ᵀ U0) S0` (Kusch, Schotthöfer, Walter 2025, the method abc-PSI
//! augments). One step per layer, W0 = U0 S0 V0ᵀ of rank r:
//!
//! ```text
//! (1) K-pass:  K1 = U0 S0 − λ ∇_K ℒ(K0 V0ᵀ)
//! (2)          U1 = qr(K1).Q                                               (QR 1)
//! (3) bc S:    S̃ = (U1ᵀ U0) S0          (so U1 S̃ V0ᵀ = U1 U1ᵀ W0, not W0)
//! (4) L-pass:  L1 = V0 S̃ᵀ − λ ∇_L ℒ(U1 L0ᵀ);  biases step here
//! (5)          V1, R = qr(L1),  S1 = Rᵀ                                    (QR 2)
//! ```
//!
//! Cost per layer and step: 2 passes, 2 thin QRs, no SVD; the rank never changes.
//! Difference from the authors' code: step (3) is a matrix product; their code multiplies
//! `(U1ᵀ U0) * S0` element-wise.
//!
//! On a GPU the QRs of (2) and (5) run for all layers together from their Gram matrices
//! ([`super::batched::qr_all`]): a step reads 2 + 2 + 2 times whatever the number of layers.
//! The result is the same step (equal to round-off in f64, tested); [`BcPsi::batched`]
//! switches it.

use burn::tensor::backend::AutodiffBackend;

use super::steps::{bc_s_step, bias_step, k_step, k_step_qr_all, l_step, qr_l_step, qr_l_step_all, required};
use super::{
    batched, batches, each_layer, Integrator, IntegratorKind, LayerStep, Pass, Products, Spec, StepCost,
};
use crate::linalg::orth;
use crate::optim::Optimizer;
use crate::Result;

/// One step's products: x K V0ᵀ in the K-pass, x U1 Lᵀ in the L-pass (both r wide).
pub const COST: StepCost = StepCost { passes: 2, low_rank: |p| Products::PASS * 2.0 * p.two(p.r) };

/// The bc-PSI integrator.
#[derive(Debug, Default)]
pub struct BcPsi {
    /// Whether the QRs run batched across layers with the tall factors on the device
    /// ([`super::batched::qr_all`]); `None`: on a GPU with an f32 backend only.
    pub batched: Option<bool>,
}

impl BcPsi {
    /// Sets [`Self::batched`] (`None`: on a GPU with an f32 backend only).
    pub fn batched(mut self, batched: Option<bool>) -> Self {
        self.batched = batched;
        self
    }
}

impl<B: AutodiffBackend> Integrator<B> for BcPsi {
    fn spec(&self) -> Spec {
        Spec { kind: IntegratorKind::BcPsi, passes: &[Pass::K, Pass::L], qr: 2, svd: 0 }
    }

    fn after_pass_all(&self, pass: Pass, mut layers: Vec<LayerStep<'_, B>>, opt: &Optimizer) -> Result<()> {
        if !batches(self.batched, &layers) {
            return each_layer(self, pass, layers, opt);
        }
        let kind = IntegratorKind::BcPsi;
        if pass != Pass::K {
            return qr_l_step_all(layers, opt, kind, "bc-PSI");
        }
        // (1) per layer, then (2) U1 = qr(K1).Q for all layers at once, (3) per layer.
        let qrs = k_step_qr_all(&mut layers, opt, kind, "bc-PSI")?;
        for (LayerStep { layer, .. }, batched::BatchedQr { Q: U1, .. }) in layers.iter_mut().zip(qrs) {
            let (U0, S0, V0) = (layer.u().clone(), layer.s().clone(), layer.v().clone());
            let S_tilde = bc_s_step(&U1, &U0, S0);
            layer.set_factors_checked_elsewhere(U1, S_tilde, V0)?;
        }
        Ok(())
    }

    fn after_pass(&self, pass: Pass, step: LayerStep<'_, B>, opt: &Optimizer) -> Result<()> {
        let LayerStep { layer, state, grads } = step;
        let kind = IntegratorKind::BcPsi;
        if pass == Pass::K {
            let (U0, S0, V0) = (layer.u().clone(), layer.s().clone(), layer.v().clone());
            // (1) K1 = K0 − λ ∇_K ℒ;  (2) U1 = qr(K1).Q;  (3) S̃ = (U1ᵀ U0) S0
            let K1 = k_step(layer, &mut state.slots, required(grads.k, "K", kind)?, opt);
            let U1 = orth(&K1);
            let S_tilde = bc_s_step(&U1, &U0, S0);
            layer.set_factors(U1, S_tilde, V0)
        } else {
            bias_step(layer, &mut state.slots, grads.bias, opt);
            // (4) L1 = L0 − λ ∇_L ℒ;  (5) V1, R = qr(L1), S1 = Rᵀ
            let L1 = l_step(layer, &mut state.slots, required(grads.l, "L", kind)?, opt);
            qr_l_step(layer, &L1)
        }
    }
}
