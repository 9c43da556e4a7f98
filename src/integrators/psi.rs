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

use burn::tensor::backend::AutodiffBackend;

use super::{required, Counters, Integrator, IntegratorKind, Pass};
use crate::layers::{FactorGrads, LowRankLinear};
use crate::linalg::tensor_qr;
use crate::optim::{Bases, Optimizer};
use crate::Result;

/// The PSI (KSL) integrator.
#[derive(Debug, Default)]
pub struct Psi {
    counters: Counters,
}

impl<B: AutodiffBackend> Integrator<B> for Psi {
    fn kind(&self) -> IntegratorKind {
        IntegratorKind::Psi
    }

    fn passes(&self) -> &'static [Pass] {
        &[Pass::K, Pass::S, Pass::L]
    }

    fn after_pass(
        &self,
        pass: usize,
        layer: &mut LowRankLinear<B>,
        grads: FactorGrads<B>,
        opt: &Optimizer,
    ) -> Result<()> {
        let kind = IntegratorKind::Psi;
        let (U, S, V) = (layer.u().clone(), layer.s().clone(), layer.v().clone());
        match pass {
            0 => {
                // (1) K1 = K0 − λ ∇_K ℒ;  (2) U1, Ŝ = qr(K1)
                let K1 = opt.step(
                    U.matmul(S),
                    required(grads.k, "K", kind)?,
                    &mut layer.slots.k,
                    Bases::right(&V),
                );
                self.counters.qr(1);
                let (U1, S_hat) = tensor_qr(&K1);
                layer.set_factors(U1, S_hat, V)
            }
            1 => {
                // (3) S̃ = Ŝ + λ ∇_S ℒ: an optimizer step on −∇_S, i.e. backward in time.
                let grad_S = required(grads.s, "S", kind)?.neg();
                let S_tilde = opt.step(S, grad_S, &mut layer.slots.s, Bases::both(&U, &V));
                layer.set_factors(U, S_tilde, V)
            }
            _ => {
                layer.step_bias(grads.bias, opt);
                // (4) L1 = L0 − λ ∇_L ℒ;  (5) V1, R = qr(L1), S1 = Rᵀ
                let L1 = opt.step(
                    V.matmul(S.transpose()),
                    required(grads.l, "L", kind)?,
                    &mut layer.slots.l,
                    Bases::right(&U),
                );
                self.counters.qr(1);
                let (V1, R) = tensor_qr(&L1);
                layer.set_factors(U, R.transpose(), V1)
            }
        }
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }
}
