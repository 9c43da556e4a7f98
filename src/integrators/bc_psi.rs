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

use burn::tensor::backend::AutodiffBackend;

use super::{required, Counters, Integrator, IntegratorKind, Pass};
use crate::layers::{FactorGrads, LowRankLinear};
use crate::linalg::{orth, tensor_qr};
use crate::optim::{Bases, Optimizer};
use crate::Result;

/// The bc-PSI integrator.
#[derive(Debug, Default)]
pub struct BcPsi {
    counters: Counters,
}

impl<B: AutodiffBackend> Integrator<B> for BcPsi {
    fn kind(&self) -> IntegratorKind {
        IntegratorKind::BcPsi
    }

    fn passes(&self) -> &'static [Pass] {
        &[Pass::K, Pass::L]
    }

    fn after_pass(
        &self,
        pass: usize,
        layer: &mut LowRankLinear<B>,
        grads: FactorGrads<B>,
        opt: &Optimizer,
    ) -> Result<()> {
        let kind = IntegratorKind::BcPsi;
        let (U0, S0, V0) = (layer.u().clone(), layer.s().clone(), layer.v().clone());
        if pass == 0 {
            // (1) K1 = K0 − λ ∇_K ℒ
            let K1 = opt.step(
                U0.clone().matmul(S0.clone()),
                required(grads.k, "K", kind)?,
                &mut layer.slots.k,
                Bases::right(&V0),
            );
            // (2) U1 = qr(K1).Q
            self.counters.qr(1);
            let U1 = orth(&K1);
            // (3) S̃ = (U1ᵀ U0) S0
            let S_tilde = U1.clone().transpose().matmul(U0).matmul(S0);
            layer.set_factors(U1, S_tilde, V0)
        } else {
            layer.step_bias(grads.bias, opt);
            // (4) L1 = L0 − λ ∇_L ℒ
            let L1 = opt.step(
                V0.matmul(S0.transpose()),
                required(grads.l, "L", kind)?,
                &mut layer.slots.l,
                Bases::right(&U0),
            );
            // (5) V1, R = qr(L1), S1 = Rᵀ
            self.counters.qr(1);
            let (V1, R) = tensor_qr(&L1);
            layer.set_factors(U0, R.transpose(), V1)
        }
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }
}
