//! abc-PSI: the augmented backward-corrected projector-splitting integrator.
//!
//! Kusch, Schotthöfer, Walter, "An Augmented Backward-Corrected Projector Splitting Integrator
//! for Dynamical Low-Rank Training", arXiv:2502.03006 (2025). One step per low-rank layer,
//! with λ the learning rate and W0 = U0 S0 V0ᵀ (U0 n×r, S0 r×r, V0 m×r):
//!
//! ```text
//! (1) K-pass:  K0 = U0 S0,  K1 = K0 − λ ∇_K ℒ(K0 V0ᵀ)                    K n×r
//! (2) augment: Û = orth([K1 | U0])                                        Û n×2r  (QR 1)
//! (3) bc S:    S̄ = (Ûᵀ U0) S0            so Û S̄ V0ᵀ = W0 exactly          S̄ 2r×r
//! (4) L-pass:  L0 = V0 S̄ᵀ,  L1 = L0 − λ ∇_L ℒ(Û L0ᵀ);  biases step here   L m×2r
//! (5) truncate W1 = Û L1ᵀ to the smallest rank r1 whose dropped singular values have
//!     2-norm < ϑ‖σ‖₂, clamped to [r_min, r_max]:  U ← Û P, S ← Σ, V ← Y
//! ```
//!
//! Before truncation `W1 = W0 − λ Û Ûᵀ ∇ℒ(W0)` (property T2); nothing inverts S (T7).
//!
//! Step (5) has two equivalent forms ([`AbcPsiForm`]). The paper writes `V̂, R = qr(L1)`,
//! `Ŝ = Rᵀ`, then an SVD `Ŝ = P Σ Qᵀ` and `V ← V̂ Q`. Because Û is orthonormal, a thin SVD
//! `L1 = Y Σ Zᵀ` gives the same truncation directly (`U ← Û Z`, `V ← Y`) with one
//! decomposition instead of two. That single-QR form is the default: fewer host calls per
//! step, and the same singular values.
//!
//! Cost per layer and step: 2 passes, 1 thin QR (n×2r), 1 thin SVD (m×2r); the two-step form
//! adds a QR of m×2r. With a plain optimizer other than SGD, λ∇ is replaced by that
//! optimizer's update, whose state is carried across the basis changes ([`crate::optim`]).
//!
//! # One shared pass (`abc_psi_one_pass`)
//!
//! After step (3) the network computes the same function as before it (T1), so the L-pass
//! evaluates ∇_L ℒ = Gᵀ Û with the same G = ∇_W ℒ(W0) as the K-pass, unless something else
//! changed in between: the dense layers, which step after the K-pass. The one-pass form runs a
//! single forward/backward ([`crate::layers::Pass::Activations`]) that records each layer's input x and output
//! gradient δ, and forms both gradients from them, `∇_K = xᵀ(δ V0)` and `∇_L = δᵀ(x Û)`. It
//! equals the two-pass method to round-off when every trainable layer is low-rank (tested), and
//! otherwise differs only in that ∇_L does not see the dense layers' step of this iteration.
//! It halves the forward/backward work, which dominates when the layer sits in a large frozen
//! network (adapters in a ViT).
//!
//! # Batched across layers
//!
//! On a GPU, steps (2), (3) and (5) of all layers run together ([`super::batched`]): the n×2r
//! and m×2r factors stay on the device and only their Gram matrices and the small rotations
//! cross, in two reads and two uploads per phase whatever the number of layers (three in an
//! augmentation where a remainder is too ill-conditioned for CholeskyQR2). The result is
//! the same step (equal to round-off in f64, tested); [`AbcPsi::batched`] switches it.
//!
//! Differences from the authors' code: ranks are exact (no max-rank buffers), and the rank
//! bounds are ours ([`TruncationConfig`]) rather than their "keep the old rank under 10" rule.

use burn::tensor::{backend::AutodiffBackend, Tensor};

use super::steps::{augment, bc_s_step, bias_step, k_step, l_step, required, truncate_core};
use super::{
    batched, batches, each_layer, Integrator, IntegratorKind, LayerStep, Pass, Products, Spec, StepCost,
};
use crate::layers::LowRankLinear;
use crate::linalg::{tensor_qr, truncated_svd, TruncationConfig};
use crate::optim::Optimizer;
use crate::Result;

/// One step's products: the K-pass multiplies x K V0ᵀ (r wide), the L-pass x Û Lᵀ (Û 2r wide).
pub const COST: StepCost = StepCost { passes: 2, low_rank: |p| Products::PASS * (p.two(p.r) + p.two(p.r_u)) };

/// The one-pass form: x U S Vᵀ forward and its input gradient (no factor is a leaf), then the
/// integrator's ∇_K = xᵀ(δ V0) and ∇_L = δᵀ(x Û).
pub const COST_ONE_PASS: StepCost =
    StepCost { passes: 1, low_rank: |p| 2.0 * p.three(p.r, p.r) + p.two(p.r) + p.two(p.r_u) };

/// How step (5) is computed (module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AbcPsiForm {
    /// One thin SVD of L1 (m×2r): one QR per step in total.
    #[default]
    SingleQr,
    /// `qr(L1)` and then an SVD of the 2r×2r core, as the paper writes it.
    QrThenSvd,
}

/// The abc-PSI integrator.
#[derive(Debug)]
pub struct AbcPsi {
    /// ϑ and the rank bounds of step (5).
    pub truncation: TruncationConfig,
    /// How step (5) is computed.
    pub form: AbcPsiForm,
    /// Both gradients from one pass (module docs).
    pub one_pass: bool,
    /// Whether steps (2), (3) and (5) run batched across layers with the tall factors on the
    /// device ([`super::batched`]); `None`: on a GPU with an f32 backend only.
    pub batched: Option<bool>,
}

impl AbcPsi {
    /// abc-PSI in the single-QR form; rejects an invalid `truncation` ([`TruncationConfig::validate`]).
    pub fn new(truncation: TruncationConfig) -> Result<Self> {
        truncation.validate()?;
        Ok(Self { truncation, form: AbcPsiForm::default(), one_pass: false, batched: None })
    }

    /// The one-pass form (module docs).
    pub fn one_pass(mut self) -> Self {
        self.one_pass = true;
        self
    }

    /// Sets [`Self::batched`] (`None`: on a GPU with an f32 backend only).
    pub fn batched(mut self, batched: Option<bool>) -> Self {
        self.batched = batched;
        self
    }

    /// abc-PSI with the given form of step (5).
    pub fn with_form(mut self, form: AbcPsiForm) -> Self {
        self.form = form;
        self
    }
}

impl<B: AutodiffBackend> Integrator<B> for AbcPsi {
    fn spec(&self) -> Spec {
        let qr = if self.form == AbcPsiForm::QrThenSvd { 2 } else { 1 };
        match self.one_pass {
            true => Spec { kind: IntegratorKind::AbcPsiOnePass, passes: &[Pass::Activations], qr, svd: 1 },
            false => Spec { kind: IntegratorKind::AbcPsi, passes: &[Pass::K, Pass::L], qr, svd: 1 },
        }
    }

    fn after_pass_all(&self, pass: Pass, mut layers: Vec<LayerStep<'_, B>>, opt: &Optimizer) -> Result<()> {
        // Only the single-QR form batches.
        if self.form != AbcPsiForm::SingleQr || !batches(self.batched, &layers) {
            return each_layer(self, pass, layers, opt);
        }
        let kind = Integrator::<B>::spec(self).kind;
        if pass != Pass::L {
            // (1) per layer on the device, then (2) and (3) for all layers at once.
            let mut items = Vec::with_capacity(layers.len());
            for LayerStep { layer, state, grads } in layers.iter_mut() {
                let V0 = layer.v().clone();
                let K1 = k_step(layer, &mut state.slots, required(grads.grad_k(&V0), "K", kind)?, opt);
                items.push((&mut **layer, K1));
            }
            batched::augment_all(&mut items)?;
            if pass == Pass::K {
                return Ok(());
            }
        }
        // (4) per layer, then (5) for all layers at once.
        let mut items = Vec::with_capacity(layers.len());
        for LayerStep { layer, state, grads } in layers.iter_mut() {
            let grad_L = required(grads.grad_l(layer.u()), "L", kind)?;
            bias_step(layer, &mut state.slots, grads.bias.take(), opt);
            let L1 = l_step(layer, &mut state.slots, grad_L, opt);
            items.push((&mut **layer, L1));
        }
        batched::truncate_all(&mut items, &self.truncation, |layer, L1| self.truncate(layer, L1))
    }

    fn after_pass(&self, pass: Pass, step: LayerStep<'_, B>, opt: &Optimizer) -> Result<()> {
        let LayerStep { layer, state, grads } = step;
        let kind = Integrator::<B>::spec(self).kind;
        if pass != Pass::L {
            // (1) K-step, (2) augment, (3) backward-corrected S-step.
            let (U0, S0, V0) = (layer.u().clone(), layer.s().clone(), layer.v().clone());
            let K1 = k_step(layer, &mut state.slots, required(grads.grad_k(&V0), "K", kind)?, opt);
            let U_hat = augment(&K1, &U0);
            let S_bar = bc_s_step(&U_hat, &U0, S0);
            layer.set_factors(U_hat, S_bar, V0)?;
            if pass == Pass::K {
                return Ok(());
            }
        }
        // (4) the L-pass, or in one pass right away with Gᵀ Û from the same x and δ; (5).
        let grad_L = required(grads.grad_l(layer.u()), "L", kind)?;
        bias_step(layer, &mut state.slots, grads.bias, opt);
        let L1 = l_step(layer, &mut state.slots, grad_L, opt);
        self.truncate(layer, L1)
    }
}

impl AbcPsi {
    /// (5) Truncate W1 = Û L1ᵀ.
    fn truncate<B: AutodiffBackend>(&self, layer: &mut LowRankLinear<B>, L1: Tensor<B, 2>) -> Result<()> {
        let U_hat = layer.u().clone();
        match self.form {
            AbcPsiForm::SingleQr => {
                // L1 = Y Σ Zᵀ  ⇒  W1 = (Û Z) Σ Yᵀ.
                let t = truncated_svd(&L1, &self.truncation, layer.n(), layer.m(), "abc-PSI L1")?;
                layer.set_factors(U_hat.matmul(t.Q), t.Sigma, t.P)
            }
            AbcPsiForm::QrThenSvd => {
                // V̂, R = qr(L1), Ŝ = Rᵀ = P Σ Qᵀ  ⇒  W1 = (Û P) Σ (V̂ Q)ᵀ.
                let (V_hat, R) = tensor_qr(&L1);
                truncate_core(layer, U_hat, &R.transpose(), V_hat, &self.truncation, "abc-PSI Ŝ")
            }
        }
    }
}
