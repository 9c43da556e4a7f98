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
//! 2 thin QRs, 1 SVD of 2r×2r. The K-pass result waits in the layer's scratch for the L-pass.

use burn::tensor::backend::AutodiffBackend;

use super::{required, Counters, Integrator, IntegratorKind, Pass};
use crate::layers::{FactorGrads, LowRankLinear};
use crate::linalg::{augment_basis, truncated_svd, TruncationConfig};
use crate::optim::{Bases, Optimizer};
use crate::{Error, Result};

/// The rank-adaptive BUG integrator.
#[derive(Debug)]
pub struct Bug {
    /// ϑ and the rank bounds of step (5).
    pub truncation: TruncationConfig,
    counters: Counters,
}

impl Bug {
    /// BUG with the given truncation.
    pub fn new(truncation: TruncationConfig) -> Self {
        Self { truncation, counters: Counters::default() }
    }
}

impl<B: AutodiffBackend> Integrator<B> for Bug {
    fn kind(&self) -> IntegratorKind {
        IntegratorKind::Bug
    }

    fn passes(&self) -> &'static [Pass] {
        &[Pass::K, Pass::L, Pass::S]
    }

    fn after_pass(
        &self,
        pass: usize,
        layer: &mut LowRankLinear<B>,
        grads: FactorGrads<B>,
        opt: &Optimizer,
    ) -> Result<()> {
        let kind = IntegratorKind::Bug;
        let (U, S, V) = (layer.u().clone(), layer.s().clone(), layer.v().clone());
        match pass {
            0 => {
                // (1) K1 = K0 − λ ∇_K ℒ; W stays W0 for the L-pass.
                let K1 = opt.step(
                    U.matmul(S),
                    required(grads.k, "K", kind)?,
                    &mut layer.slots.k,
                    Bases::right(&V),
                );
                layer.scratch = vec![K1];
                Ok(())
            }
            1 => {
                // (2) L1 = L0 − λ ∇_L ℒ
                let L1 = opt.step(
                    V.clone().matmul(S.clone().transpose()),
                    required(grads.l, "L", kind)?,
                    &mut layer.slots.l,
                    Bases::right(&U),
                );
                let K1 = layer
                    .scratch
                    .pop()
                    .ok_or_else(|| Error::Unsupported("bug: L-pass before K-pass".into()))?;
                // (3) Û = orth([K1 | U0]), V̂ = orth([L1 | V0]), Ŝ = (Ûᵀ U0) S0 (V0ᵀ V̂)
                self.counters.qr(2);
                let U_hat = augment_basis(&K1, &U);
                let V_hat = augment_basis(&L1, &V);
                let S_hat =
                    U_hat.clone().transpose().matmul(U).matmul(S).matmul(V.transpose().matmul(V_hat.clone()));
                layer.set_factors(U_hat, S_hat, V_hat)
            }
            _ => {
                layer.step_bias(grads.bias, opt);
                // (4) Ŝ1 = Ŝ − λ ∇_S ℒ
                let S1 = opt.step(S, required(grads.s, "S", kind)?, &mut layer.slots.s, Bases::both(&U, &V));
                // (5) Ŝ1 = P Σ Qᵀ, truncated
                self.counters.svd();
                let t = truncated_svd(&S1, &self.truncation, layer.n(), layer.m(), "BUG Ŝ1")?;
                layer.set_factors(U.matmul(t.P), t.Sigma, V.matmul(t.Q))
            }
        }
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }
}
