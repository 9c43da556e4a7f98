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
//! Before truncation `W1 = W0 − λ Û Ûᵀ ∇ℒ(W0) V̂ V̂ᵀ`. Cost per layer and step: 3 passes,
//! 2 thin QRs, 1 SVD of 2r×2r. The K-pass result waits in the layer's [`super::LayerState`] for the L-pass.

use burn::tensor::backend::AutodiffBackend;

use super::steps::{augment, bias_step, k_step, l_step, required, s_step, truncate_core};
use super::{Integrator, IntegratorKind, LayerStep, Pass, Spec};
use crate::linalg::TruncationConfig;
use crate::optim::Optimizer;
use crate::{Error, Result};

/// The rank-adaptive BUG integrator.
#[derive(Debug)]
pub struct Bug {
    /// ϑ and the rank bounds of step (5).
    pub truncation: TruncationConfig,
}

impl Bug {
    /// BUG with the given truncation.
    pub fn new(truncation: TruncationConfig) -> Self {
        Self { truncation }
    }
}

impl<B: AutodiffBackend> Integrator<B> for Bug {
    fn spec(&self) -> Spec {
        Spec { kind: IntegratorKind::Bug, passes: &[Pass::K, Pass::L, Pass::S], qr: 2, svd: 1 }
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
                let S_hat =
                    U_hat.clone().transpose().matmul(U).matmul(S).matmul(V.transpose().matmul(V_hat.clone()));
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
