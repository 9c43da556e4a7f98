//! PSI / KSL: the projector-splitting integrator of Lubich and Oseledets (BIT 2014).
//!
//! A Lie–Trotter splitting of the projected flow into K, S and L substeps, the S-substep
//! running backward in time. Fixed rank r; one step per layer, W0 = U0 S0 V0ᵀ:
//!
//! ```text
//! (1) K-pass:  K1 = U0 S0 − λ ∇_K ℒ(K V0ᵀ)
//! (2)          U1, Ŝ = qr(K1)                                              (QR 1)
//! (3) S-pass:  S̃ = Ŝ + λ ∇_S ℒ(U1 S V0ᵀ)         (backward in time)
//! (4) L-pass:  L1 = V0 S̃ᵀ − λ ∇_L ℒ(U1 Lᵀ);  biases step here
//! (5)          V1, R = qr(L1),  S1 = Rᵀ                                    (QR 2)
//! ```
//!
//! Cost per layer and step: 3 passes, 2 thin QRs, no SVD. PSI is exact when the target
//! A(t) has rank r (Lubich & Oseledets, Theorem 4.1): with the linear loss
//! ℒ(W) = −⟨W, A(t1) − A(t0)⟩/λ a step from A(t0) returns A(t1) to round-off.
//!
//! On a GPU the QRs of (2) and (5) run for all layers together from their Gram matrices
//! ([`super::batched::qr_all`]): a step reads 3 + 2 + 2 times whatever the number of layers
//! (the losses and two rounds per QR). The result is the same step (equal to round-off in f64,
//! tested); [`Psi::batched`] switches it.

use burn::tensor::backend::AutodiffBackend;

use super::steps::{
    bias_step, k_step, k_step_qr_all, l_step, qr_l_step, qr_l_step_all, required, s_step_backward,
};
use super::{
    batched, batches, each_layer, Integrator, IntegratorKind, LayerStep, Pass, Products, Spec, StepCost,
};
use crate::linalg::tensor_qr;
use crate::optim::Optimizer;
use crate::Result;

/// One step's products: K (x K V0ᵀ), S (x U1 S V0ᵀ) and L (x U1 Lᵀ), all r wide.
pub const COST: StepCost =
    StepCost { passes: 3, low_rank: |p| Products::PASS * (2.0 * p.two(p.r) + p.three(p.r, p.r)) };

/// The PSI (KSL) integrator.
#[derive(Debug, Default)]
pub struct Psi {
    /// Whether the QRs run batched across layers with the tall factors on the device
    /// ([`super::batched::qr_all`]); `None`: on a GPU with an f32 backend only.
    pub batched: Option<bool>,
}

impl Psi {
    /// Sets [`Self::batched`] (`None`: on a GPU with an f32 backend only).
    pub fn batched(mut self, batched: Option<bool>) -> Self {
        self.batched = batched;
        self
    }
}

impl<B: AutodiffBackend> Integrator<B> for Psi {
    fn spec(&self) -> Spec {
        Spec { kind: IntegratorKind::Psi, passes: &[Pass::K, Pass::S, Pass::L], qr: 2, svd: 0 }
    }

    fn after_pass_all(&self, pass: Pass, mut layers: Vec<LayerStep<'_, B>>, opt: &Optimizer) -> Result<()> {
        if !batches(self.batched, &layers) {
            return each_layer(self, pass, layers, opt);
        }
        let kind = IntegratorKind::Psi;
        match pass {
            Pass::K => {
                // (1) per layer, then (2) U1, Ŝ = qr(K1) for all layers at once.
                let qrs = k_step_qr_all(&mut layers, opt, kind, "PSI")?;
                for (LayerStep { layer, .. }, batched::BatchedQr { Q: U1, R: S_hat, .. }) in
                    layers.iter_mut().zip(qrs)
                {
                    let V0 = layer.v().clone();
                    // Ŝ = R is checked by its Gram matrix or by the fallback's host QR.
                    layer.set_factors_checked_elsewhere(U1, S_hat, V0)?;
                }
                Ok(())
            }
            Pass::S => {
                // (3) per layer; a NaN in S̃ reaches L1, whose Gram matrix the L-phase reads.
                for LayerStep { layer, state, grads } in layers.iter_mut() {
                    let g = required(grads.s.take(), "S", kind)?;
                    let S_tilde = s_step_backward(layer, &mut state.slots, g, opt);
                    let (U, V) = (layer.u().clone(), layer.v().clone());
                    layer.set_factors_checked_elsewhere(U, S_tilde, V)?;
                }
                Ok(())
            }
            _ => qr_l_step_all(layers, opt, kind, "PSI"),
        }
    }

    fn after_pass(&self, pass: Pass, step: LayerStep<'_, B>, opt: &Optimizer) -> Result<()> {
        let LayerStep { layer, state, grads } = step;
        let kind = IntegratorKind::Psi;
        match pass {
            Pass::K => {
                // (1) K1 = K0 − λ ∇_K ℒ;  (2) U1, Ŝ = qr(K1)
                let K1 = k_step(layer, &mut state.slots, required(grads.k, "K", kind)?, opt);
                let (U1, S_hat) = tensor_qr(&K1);
                layer.set_factors(U1, S_hat, layer.v().clone())
            }
            Pass::S => {
                // (3) S̃ = Ŝ + λ ∇_S ℒ: the optimizer's step, backward in time.
                let S_tilde = s_step_backward(layer, &mut state.slots, required(grads.s, "S", kind)?, opt);
                layer.set_factors(layer.u().clone(), S_tilde, layer.v().clone())
            }
            _ => {
                bias_step(layer, &mut state.slots, grads.bias, opt);
                // (4) L1 = L0 − λ ∇_L ℒ;  (5) V1, R = qr(L1), S1 = Rᵀ
                let L1 = l_step(layer, &mut state.slots, required(grads.l, "L", kind)?, opt);
                qr_l_step(layer, &L1)
            }
        }
    }
}
