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
//! On a GPU, steps (2) and (4) of all layers run together ([`super::batched`], as abc-PSI's):
//! every U and V basis is augmented in the same Gram rounds (two reads for all of them) and
//! every core Ŝ is read at once (one read), so a step reads 4 times whatever the number of
//! layers. The result is the same step (equal to round-off in f64, tested);
//! [`ParallelBug::batched`] switches it.
//!
//! Difference from GeoLoRA's code: it evaluates x U S Vᵀ with U, S, V trainable and recovers
//! G V = ∇_U S⁻ᵀ with S diagonal, which needs S invertible (an adapter starting at S = 0 is
//! not). The tangent parametrization gives the same three gradients without inverting S, at
//! the price of about twice the low-rank forward work.

use burn::tensor::{backend::AutodiffBackend, Tensor};

use super::batched::{self, Augmentation, CoreTruncation};
use super::steps::{bias_step, k_step, l_step, new_directions, required, s_step, truncate_core};
use super::{batches, each_layer, Integrator, IntegratorKind, LayerStep, Pass, Products, Spec, StepCost};
use crate::linalg::TruncationConfig;
use crate::optim::Optimizer;
use crate::Result;

/// One step's products, in its one tangent pass: x U and x K (n×r each), (x K − x U S) V0ᵀ
/// and (x U) Lᵀ.
pub const COST: StepCost = StepCost {
    passes: 1,
    low_rank: |p| Products::PASS * 2.0 * p.b * (2.0 * p.n * p.r + p.r * p.r + 2.0 * p.r * p.m),
};

/// The parallel BUG / GeoLoRA integrator.
#[derive(Debug)]
pub struct ParallelBug {
    /// ϑ and the rank bounds of step (4).
    pub truncation: TruncationConfig,
    /// Whether steps (2) and (4) run batched across layers with the tall factors on the device
    /// ([`super::batched`]); `None`: on a GPU with an f32 backend only.
    pub batched: Option<bool>,
}

impl ParallelBug {
    /// Parallel BUG with the given truncation; rejects an invalid one ([`TruncationConfig::validate`]).
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

impl<B: AutodiffBackend> Integrator<B> for ParallelBug {
    fn spec(&self) -> Spec {
        Spec { kind: IntegratorKind::ParallelBug, passes: &[Pass::Tangent], qr: 2, svd: 1 }
    }

    fn after_pass_all(&self, pass: Pass, mut layers: Vec<LayerStep<'_, B>>, opt: &Optimizer) -> Result<()> {
        if !batches(self.batched, &layers) {
            return each_layer(self, pass, layers, opt);
        }
        // (1) per layer on the device.
        let mut steps = Vec::with_capacity(layers.len());
        for LayerStep { layer, state, grads } in layers.iter_mut() {
            bias_step(layer, &mut state.slots, grads.bias.take(), opt);
            steps.push(factor_steps(layer, &mut state.slots, grads, opt)?);
        }
        // (2) every basis that can grow, augmented in shared rounds: [U0 | Ũ], [V0 | Ṽ].
        let mut pairs = Vec::new();
        for (i, (LayerStep { layer, .. }, (K1, L1, _))) in layers.iter().zip(&steps).enumerate() {
            let (U0, V0) = (layer.u().clone(), layer.v().clone());
            if U0.dims()[1] < layer.n() {
                pairs.push(Augmentation { layer: i, names: "U0 or K1", basis: U0, new: K1.clone() });
            }
            if V0.dims()[1] < layer.m() {
                pairs.push(Augmentation { layer: i, names: "V0 or L1", basis: V0, new: L1.clone() });
            }
        }
        let mut augmented = batched::augment_bases(&pairs, "parallel BUG")?.into_iter().map(|(Q, _)| Q);
        // (3) per layer, then (4) for all layers at once.
        let mut cores = Vec::with_capacity(layers.len());
        for (LayerStep { layer, .. }, (K1, L1, S1)) in layers.iter_mut().zip(steps) {
            let (U0, V0) = (layer.u().clone(), layer.v().clone());
            // The new directions: the columns of orth([B0 | X]) after B0's.
            let mut new = |B0: &Tensor<B, 2>, grows: bool| {
                grows.then(|| {
                    let Q = augmented.next().expect("one augmentation per basis that grows");
                    let [rows, cols] = Q.dims();
                    Q.slice([0..rows, B0.dims()[1]..cols])
                })
            };
            let U_new = new(&U0, U0.dims()[1] < layer.n());
            let V_new = new(&V0, V0.dims()[1] < layer.m());
            let S_hat = core(S1, K1, L1, U_new.as_ref(), V_new.as_ref());
            let (U_hat, V_hat) = (widen(U0, U_new), widen(V0, V_new));
            cores.push(CoreTruncation { layer: &mut **layer, U_hat, S_hat, V_hat });
        }
        batched::truncate_cores_all(cores, &self.truncation, "parallel BUG")
    }

    fn after_pass(&self, _pass: Pass, step: LayerStep<'_, B>, opt: &Optimizer) -> Result<()> {
        let LayerStep { layer, state, mut grads } = step;
        bias_step(layer, &mut state.slots, grads.bias.take(), opt);
        let (U0, V0) = (layer.u().clone(), layer.v().clone());
        // (1) K1, L1, S1 from the one tangent pass.
        let (K1, L1, S1) = factor_steps(layer, &mut state.slots, &grads, opt)?;
        // (2) augment: the new directions Ũ, Ṽ (none once a basis spans its whole space)
        let U_new = (U0.dims()[1] < layer.n()).then(|| new_directions(&U0, &K1));
        let V_new = (V0.dims()[1] < layer.m()).then(|| new_directions(&V0, &L1));
        // (3) the augmented core
        let S_hat = core(S1, K1, L1, U_new.as_ref(), V_new.as_ref());
        // (4) truncate
        truncate_core(layer, widen(U0, U_new), &S_hat, widen(V0, V_new), &self.truncation, "parallel BUG Ŝ")
    }
}

/// (1) K1 = U0 S0 − λ G V0, L1 = V0 S0ᵀ − λ Gᵀ U0, S1 = S0 − λ U0ᵀ G V0 (the pass gives
/// ∇_S = −U0ᵀ G V0).
fn factor_steps<B: AutodiffBackend>(
    layer: &crate::layers::LowRankLinear<B>,
    slots: &mut super::FactorSlots<B>,
    grads: &crate::layers::FactorGrads<B>,
    opt: &Optimizer,
) -> Result<(Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 2>)> {
    let kind = IntegratorKind::ParallelBug;
    let K1 = k_step(layer, slots, required(grads.k.clone(), "K", kind)?, opt);
    let L1 = l_step(layer, slots, required(grads.l.clone(), "L", kind)?, opt);
    let S1 = s_step(layer, slots, required(grads.s.clone(), "S", kind)?.neg(), opt);
    Ok((K1, L1, S1))
}

/// Û = [B0 | new], or B0 when its basis did not grow.
fn widen<B: AutodiffBackend>(B0: Tensor<B, 2>, new: Option<Tensor<B, 2>>) -> Tensor<B, 2> {
    match new {
        Some(new) => Tensor::cat(vec![B0, new], 1),
        None => B0,
    }
}

/// (3) Ŝ = [S1, L1ᵀṼ; ŨᵀK1, 0], block by block (a block row or column only where its basis grew).
fn core<B: AutodiffBackend>(
    S1: Tensor<B, 2>,
    K1: Tensor<B, 2>,
    L1: Tensor<B, 2>,
    U_new: Option<&Tensor<B, 2>>,
    V_new: Option<&Tensor<B, 2>>,
) -> Tensor<B, 2> {
    let mut top = vec![S1];
    if let Some(V_new) = V_new {
        top.push(L1.transpose().matmul(V_new.clone()));
    }
    let mut rows = vec![Tensor::cat(top, 1)];
    if let Some(U_new) = U_new {
        let mut bottom = vec![U_new.clone().transpose().matmul(K1)];
        if let Some(V_new) = V_new {
            bottom.push(Tensor::zeros([U_new.dims()[1], V_new.dims()[1]], &U_new.device()));
        }
        rows.push(Tensor::cat(bottom, 1));
    }
    Tensor::cat(rows, 0)
}
