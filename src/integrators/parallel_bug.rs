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

use super::{required, Counters, Integrator, IntegratorKind, Pass};
use crate::layers::{FactorGrads, LowRankLinear};
use crate::linalg::{augment_basis, truncated_svd, TruncationConfig};
use crate::optim::{Bases, Optimizer};
use crate::Result;

/// The parallel BUG / GeoLoRA integrator.
#[derive(Debug)]
pub struct ParallelBug {
    /// ϑ and the rank bounds of step (4).
    pub truncation: TruncationConfig,
    counters: Counters,
}

impl ParallelBug {
    /// Parallel BUG with the given truncation.
    pub fn new(truncation: TruncationConfig) -> Self {
        Self { truncation, counters: Counters::default() }
    }
}

/// (2) The directions of orth([B0 | X]) orthogonal to the orthonormal B0 (at most n − r).
fn new_directions<B: AutodiffBackend>(B0: &Tensor<B, 2>, X: Tensor<B, 2>) -> Tensor<B, 2> {
    let [n, r] = B0.dims();
    let Q = augment_basis(&X, B0);
    let width = Q.dims()[1];
    // augment_basis returns [B0 | N] with N orthogonal to B0.
    Q.slice([0..n, r..width])
}

impl<B: AutodiffBackend> Integrator<B> for ParallelBug {
    fn kind(&self) -> IntegratorKind {
        IntegratorKind::ParallelBug
    }

    fn passes(&self) -> &'static [Pass] {
        &[Pass::Tangent]
    }

    fn after_pass(
        &self,
        _pass: usize,
        layer: &mut LowRankLinear<B>,
        grads: FactorGrads<B>,
        opt: &Optimizer,
    ) -> Result<()> {
        let kind = IntegratorKind::ParallelBug;
        layer.step_bias(grads.bias, opt);
        let (U0, S0, V0) = (layer.u().clone(), layer.s().clone(), layer.v().clone());
        let (r_u, r_v) = (U0.dims()[1], V0.dims()[1]);
        // (1) K1, L1, S1 from the one tangent pass (the pass gives ∇_S = −U0ᵀ G V0).
        let K1 = opt.step(
            U0.clone().matmul(S0.clone()),
            required(grads.k, "K", kind)?,
            &mut layer.slots.k,
            Bases::right(&V0),
        );
        let L1 = opt.step(
            V0.clone().matmul(S0.clone().transpose()),
            required(grads.l, "L", kind)?,
            &mut layer.slots.l,
            Bases::right(&U0),
        );
        let S1 = opt.step(S0, required(grads.s, "S", kind)?.neg(), &mut layer.slots.s, Bases::both(&U0, &V0));
        // (2) augment
        self.counters.qr(2);
        let U_new = (r_u < layer.n()).then(|| new_directions(&U0, K1.clone()));
        let V_new = (r_v < layer.m()).then(|| new_directions(&V0, L1.clone()));
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
        let U_hat = match U_new {
            Some(U_new) => Tensor::cat(vec![U0, U_new], 1),
            None => U0,
        };
        let V_hat = match V_new {
            Some(V_new) => Tensor::cat(vec![V0, V_new], 1),
            None => V0,
        };
        // (4) truncate
        self.counters.svd();
        let t = truncated_svd(&S_hat, &self.truncation, layer.n(), layer.m(), "parallel BUG Ŝ")?;
        layer.set_factors(U_hat.matmul(t.P), t.Sigma, V_hat.matmul(t.Q))
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }
}
