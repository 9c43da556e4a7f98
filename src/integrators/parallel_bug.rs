//! Parallel BUG / GeoLoRA: all factor updates from one gradient evaluation.
//!
//! Ceruti, Kusch, Lubich, Sulz, "A parallel rank-adaptive integrator for dynamical low-rank
//! approximation", SISC 2024; as a training method GeoLoRA (Schotthöfer, Zangrando, Ceruti,
//! Tudisco, Kusch 2024). One step per layer, W0 = U0 S0 V0ᵀ of rank r, G = ∇ℒ(W0):
//!
//! ```text
//! (1) tangent pass: one forward/backward of x(K Vᵀ + U Lᵀ − U S Vᵀ) gives
//!     ∇_K = G V0, ∇_L = Gᵀ U0, ∇_S = −U0ᵀ G V0; biases step here
//!     K1 = U0 S0 − λ G V0,  L1 = V0 S0ᵀ − λ Gᵀ U0,  S1 = S0 − λ U0ᵀ G V0
//! (2) augment: [U0 | Ũ] = orth([U0 | K1]),  [V0 | Ṽ] = orth([V0 | L1])      (QR 1, 2)
//! (3) Ŝ = [ S1       L1ᵀ Ṽ ]
//!         [ Ũᵀ K1    0     ]       so Û Ŝ V̂ᵀ = W0 − λ P(W0) G
//! (4) truncate Ŝ = P Σ Qᵀ by ϑ:  U ← Û P, S ← Σ, V ← V̂ Q                   (SVD)
//! ```
//!
//! with P(W)Z = UUᵀZ + ZVVᵀ − UUᵀZVVᵀ the tangent-space projection. Cost per layer and step:
//! 1 pass, 2 thin QRs, 1 SVD of 2r×2r.
//!
//! Difference from GeoLoRA's code: it evaluates x U S Vᵀ with U, S, V trainable and recovers
//! G V = ∇_U S⁻ᵀ with S diagonal, which needs S invertible (an adapter starting at S = 0 is
//! not). The tangent parametrization gives the same three gradients without inverting S, at
//! the price of about twice the low-rank forward work.

use burn::tensor::{backend::AutodiffBackend, Tensor};

use super::steps::{bias_step, k_step, l_step, new_directions, required, s_step, truncate_core};
use super::{Integrator, IntegratorKind, LayerStep, Pass, Spec};
use crate::linalg::TruncationConfig;
use crate::optim::Optimizer;
use crate::Result;

/// The parallel BUG / GeoLoRA integrator.
#[derive(Debug)]
pub struct ParallelBug {
    /// ϑ and the rank bounds of step (4).
    pub truncation: TruncationConfig,
}

impl ParallelBug {
    /// Parallel BUG with the given truncation.
    pub fn new(truncation: TruncationConfig) -> Self {
        Self { truncation }
    }
}

impl<B: AutodiffBackend> Integrator<B> for ParallelBug {
    fn spec(&self) -> Spec {
        Spec { kind: IntegratorKind::ParallelBug, passes: &[Pass::Tangent], qr: 2, svd: 1 }
    }

    fn after_pass(&self, _pass: Pass, step: LayerStep<'_, B>, opt: &Optimizer) -> Result<()> {
        let LayerStep { layer, state, grads } = step;
        let kind = IntegratorKind::ParallelBug;
        bias_step(layer, &mut state.slots, grads.bias, opt);
        let (U0, V0) = (layer.u().clone(), layer.v().clone());
        // (1) K1, L1, S1 from the one tangent pass (the pass gives ∇_S = −U0ᵀ G V0).
        let K1 = k_step(layer, &mut state.slots, required(grads.k, "K", kind)?, opt);
        let L1 = l_step(layer, &mut state.slots, required(grads.l, "L", kind)?, opt);
        let S1 = s_step(layer, &mut state.slots, required(grads.s, "S", kind)?.neg(), opt);
        // (2) augment: the new directions Ũ, Ṽ (none once a basis spans its whole space)
        let U_new = (U0.dims()[1] < layer.n()).then(|| new_directions(&U0, &K1));
        let V_new = (V0.dims()[1] < layer.m()).then(|| new_directions(&V0, &L1));
        // (3) the augmented core, block by block
        let mut top = vec![S1];
        if let Some(V_new) = &V_new {
            top.push(L1.transpose().matmul(V_new.clone()));
        }
        let mut rows = vec![Tensor::cat(top, 1)];
        if let Some(U_new) = &U_new {
            let mut bottom = vec![U_new.clone().transpose().matmul(K1)];
            if let Some(V_new) = &V_new {
                bottom.push(Tensor::zeros([U_new.dims()[1], V_new.dims()[1]], &U_new.device()));
            }
            rows.push(Tensor::cat(bottom, 1));
        }
        let S_hat = Tensor::cat(rows, 0);
        let widen = |B0: Tensor<B, 2>, new: Option<Tensor<B, 2>>| match new {
            Some(new) => Tensor::cat(vec![B0, new], 1),
            None => B0,
        };
        // (4) truncate
        truncate_core(layer, widen(U0, U_new), &S_hat, widen(V0, V_new), &self.truncation, "parallel BUG Ŝ")
    }
}
