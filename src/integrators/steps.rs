//! The step functions the integrators compose, named as in the papers.
//!
//! W0 = U0 S0 V0ᵀ is the layer at the start of the step (U0 n×r, S0 r×r, V0 m×r), λ the
//! learning rate; with an optimizer other than SGD, λ∇ is that optimizer's update, whose state
//! is carried across basis changes ([`crate::optim`]).
//!
//! | function | formula |
//! |---|---|
//! | [`k_step`] | K1 = U S − λ ∇_K ℒ, columns in the basis V |
//! | [`l_step`] | L1 = V Sᵀ − λ ∇_L ℒ, columns in the basis U |
//! | [`s_step`] | S1 = S − λ g, rows in U, columns in V |
//! | [`s_step_backward`] | PSI's S̃ = S + (S − S1), S1 = [`s_step`] on ∇_S ℒ |
//! | [`bias_step`] | b1 = b − λ ∇_b ℒ |
//! | [`augment`] | Û = orth([K1 \| U0]) = [U0 \| N] |
//! | [`bc_s_step`] | S̃ = (U1ᵀ U0) S0 |
//! | [`qr_l_step`] | V1, R = qr(L1); W ← U Rᵀ V1ᵀ |
//! | [`k_step_qr_all`], [`qr_l_step_all`] | the same for every layer, QRs from Gram matrices |
//! | [`truncate_core`] | Ŝ = P Σ Qᵀ truncated by ϑ; U ← Û P, S ← Σ, V ← V̂ Q |

use burn::tensor::{backend::AutodiffBackend, Tensor};

use super::batched::{self, BatchedQr};
use super::{FactorSlots, IntegratorKind, LayerStep};
use crate::layers::LowRankLinear;
use crate::linalg::{augment_basis, tensor_qr, truncated_svd, TruncationConfig};
use crate::optim::{Bases, Optimizer};
use crate::{Error, Result};

/// The gradient a pass must have produced, or an error naming it.
pub fn required<T>(grad: Option<T>, what: &str, kind: IntegratorKind) -> Result<T> {
    grad.ok_or_else(|| {
        Error::Unsupported(format!(
            "{kind}: the pass produced no gradient for {what} (does the loss depend on this layer?)"
        ))
    })
}

/// K1 = K0 − λ ∇_K ℒ with K0 = U S, in the basis V (the layer's current factors).
pub fn k_step<B: AutodiffBackend>(
    layer: &LowRankLinear<B>,
    slots: &mut FactorSlots<B>,
    grad_K: Tensor<B, 2>,
    opt: &Optimizer,
) -> Tensor<B, 2> {
    let K0 = layer.u().clone().matmul(layer.s().clone());
    opt.step(K0, grad_K, &mut slots.k, Bases::right(layer.v()))
}

/// L1 = L0 − λ ∇_L ℒ with L0 = V Sᵀ, in the basis U (the layer's current factors).
pub fn l_step<B: AutodiffBackend>(
    layer: &LowRankLinear<B>,
    slots: &mut FactorSlots<B>,
    grad_L: Tensor<B, 2>,
    opt: &Optimizer,
) -> Tensor<B, 2> {
    let L0 = layer.v().clone().matmul(layer.s().clone().transpose());
    opt.step(L0, grad_L, &mut slots.l, Bases::right(layer.u()))
}

/// PSI's S-step, backward in time: S̃ = S + (S − S1) with S1 = [`s_step`] on ∇_S ℒ, so that
/// the whole optimizer step runs backward, weight decay included (S̃ = S + λ ∇_S ℒ for SGD).
/// A step on −∇_S would run only the gradient's part backward, and decay W a third time in
/// a step whose K- and L-steps decay it already.
pub fn s_step_backward<B: AutodiffBackend>(
    layer: &LowRankLinear<B>,
    slots: &mut FactorSlots<B>,
    grad_S: Tensor<B, 2>,
    opt: &Optimizer,
) -> Tensor<B, 2> {
    let S = layer.s().clone();
    let S1 = s_step(layer, slots, grad_S, opt);
    S.mul_scalar(2.0) - S1
}

/// S1 = S − λ g in the bases U (rows) and V (columns).
pub fn s_step<B: AutodiffBackend>(
    layer: &LowRankLinear<B>,
    slots: &mut FactorSlots<B>,
    g: Tensor<B, 2>,
    opt: &Optimizer,
) -> Tensor<B, 2> {
    opt.step(layer.s().clone(), g, &mut slots.s, Bases::both(layer.u(), layer.v()))
}

/// b1 = b − λ ∇_b ℒ, when the layer has a bias and the pass a gradient for it.
pub fn bias_step<B: AutodiffBackend>(
    layer: &mut LowRankLinear<B>,
    slots: &mut FactorSlots<B>,
    grad: Option<Tensor<B, 1>>,
    opt: &Optimizer,
) {
    if let Some(g) = grad {
        layer.map_bias(|b| opt.step_vector(b, g, &mut slots.bias));
    }
}

/// Û = orth([K1 | U0]), returned as [U0 | N] with N orthogonal to U0 ([`augment_basis`]).
pub fn augment<B: AutodiffBackend>(K1: &Tensor<B, 2>, U0: &Tensor<B, 2>) -> Tensor<B, 2> {
    augment_basis(K1, U0)
}

/// The directions of orth([B0 | X]) orthogonal to the orthonormal B0 (at most n − r).
pub fn new_directions<B: AutodiffBackend>(B0: &Tensor<B, 2>, X: &Tensor<B, 2>) -> Tensor<B, 2> {
    let [n, r] = B0.dims();
    let Q = augment(X, B0);
    let width = Q.dims()[1];
    Q.slice([0..n, r..width])
}

/// S̃ = (U1ᵀ U0) S0: the core of W0 in the new basis U1 (W0 itself when span U1 ⊇ span U0).
pub fn bc_s_step<B: AutodiffBackend>(U1: &Tensor<B, 2>, U0: &Tensor<B, 2>, S0: Tensor<B, 2>) -> Tensor<B, 2> {
    U1.clone().transpose().matmul(U0.clone()).matmul(S0)
}

/// V1, R = qr(L1), then W ← U Rᵀ V1ᵀ with the layer's U: the fixed-rank L-step's end.
pub fn qr_l_step<B: AutodiffBackend>(layer: &mut LowRankLinear<B>, L1: &Tensor<B, 2>) -> Result<()> {
    let (V1, R) = tensor_qr(L1);
    layer.set_factors(layer.u().clone(), R.transpose(), V1)
}

/// The K-step of every layer, then K1 = U1 R for all at once ([`batched::qr_all`]): PSI's and
/// bc-PSI's step (2) with the tall factors on the device. `method` names K1 in errors.
pub fn k_step_qr_all<B: AutodiffBackend>(
    layers: &mut [LayerStep<'_, B>],
    opt: &Optimizer,
    kind: IntegratorKind,
    method: &str,
) -> Result<Vec<BatchedQr<B>>> {
    let mut K1 = Vec::with_capacity(layers.len());
    for LayerStep { layer, state, grads } in layers.iter_mut() {
        K1.push(k_step(layer, &mut state.slots, required(grads.k.take(), "K", kind)?, opt));
    }
    batched::qr_all(&K1, |i| format!("{method} K1 of low-rank layer {i}"))
}

/// [`qr_l_step`] for every layer, after its bias and L-step: V1, R = qr(L1) for all at once
/// ([`batched::qr_all`]) and W ← U Rᵀ V1ᵀ. `method` names L1 in errors.
pub fn qr_l_step_all<B: AutodiffBackend>(
    mut layers: Vec<LayerStep<'_, B>>,
    opt: &Optimizer,
    kind: IntegratorKind,
    method: &str,
) -> Result<()> {
    let mut L1 = Vec::with_capacity(layers.len());
    for LayerStep { layer, state, grads } in layers.iter_mut() {
        bias_step(layer, &mut state.slots, grads.bias.take(), opt);
        L1.push(l_step(layer, &mut state.slots, required(grads.l.take(), "L", kind)?, opt));
    }
    let qrs = batched::qr_all(&L1, |i| format!("{method} L1 of low-rank layer {i}"))?;
    for (LayerStep { layer, .. }, BatchedQr { Q: V1, R, .. }) in layers.iter_mut().zip(qrs) {
        let U = layer.u().clone();
        layer.set_factors_checked_elsewhere(U, R.transpose(), V1)?;
    }
    Ok(())
}

/// Truncates W = Û Ŝ V̂ᵀ: Ŝ = P Σ Qᵀ with the rank the truncation rule picks, then
/// U ← Û P, S ← Σ, V ← V̂ Q. `context` names Ŝ in errors.
pub fn truncate_core<B: AutodiffBackend>(
    layer: &mut LowRankLinear<B>,
    U_hat: Tensor<B, 2>,
    S_hat: &Tensor<B, 2>,
    V_hat: Tensor<B, 2>,
    truncation: &TruncationConfig,
    context: &str,
) -> Result<()> {
    let t = truncated_svd(S_hat, truncation, layer.n(), layer.m(), context)?;
    layer.set_factors(U_hat.matmul(t.P), t.Sigma, V_hat.matmul(t.Q))
}
