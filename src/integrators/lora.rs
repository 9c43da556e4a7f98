//! Plain factorization `W = A Bᵀ` trained by the optimizer (the "vanilla" baseline, LoRA-style).
//!
//! Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022. The layer keeps
//! U = A (n×r), V = B (m×r) as free factors and S = I; one pass gives ∇_A = G B and
//! ∇_B = Gᵀ A, and the optimizer steps both. Fixed rank, no QR, no SVD.
//!
//! [`Lora::prepare`] turns a layer's `U S Vᵀ` into `A = U S`, `B = V` without changing W, so an
//! adapter that starts at S = 0 becomes LoRA's usual zero-product start (A = 0, B ≠ 0).
//! Not robust to small singular values: the factor ODEs it discretises contain S⁻¹ implicitly,
//! which is the contrast the paper draws.

use burn::tensor::{backend::AutodiffBackend, Tensor};

use super::steps::{bias_step, required};
use rayon::prelude::*;

use super::{on_cubecl, Integrator, IntegratorKind, LayerStep, Pass, Products, Spec, StepCost};
use crate::layers::{low_rank_linear::check_finite, LowRankLinear};
use crate::linalg::read_all;
use crate::optim::{Bases, Optimizer};
use crate::{Error, Result};

/// One step's products: x U S Vᵀ (r wide) in its one pass.
pub const COST: StepCost = StepCost { passes: 1, low_rank: |p| Products::PASS * p.three(p.r, p.r) };

/// The plain-factorization integrator.
#[derive(Debug, Default)]
pub struct Lora;

impl<B: AutodiffBackend> Integrator<B> for Lora {
    fn spec(&self) -> Spec {
        Spec { kind: IntegratorKind::Lora, passes: &[Pass::Factors], qr: 0, svd: 0 }
    }

    fn prepare(&self, layer: &mut LowRankLinear<B>) -> Result<()> {
        let A = layer.u().clone().matmul(layer.s().clone());
        let B_ = layer.v().clone();
        let r = B_.dims()[1];
        layer.set_factors(A, Tensor::eye(r, &B_.device()), B_)
    }

    fn after_pass(&self, _pass: Pass, step: LayerStep<'_, B>, opt: &Optimizer) -> Result<()> {
        let (A, B_) = factor_step(step, opt)?;
        // S = I carries no NaN of A or B (unlike the other integrators' cores), so check here.
        check_finite(&A, "lora factor A")?;
        check_finite(&B_, "lora factor B")
    }

    /// Every layer's step, then one read for the whole network: a NaN or ∞ in A or B makes
    /// the sum of its entries non-finite, so the sums of all layers are checked together
    /// instead of reading each factor (a synchronisation point per layer on a GPU).
    fn after_pass_all(&self, _pass: Pass, layers: Vec<LayerStep<'_, B>>, opt: &Optimizer) -> Result<()> {
        let on_gpu = layers.first().is_some_and(|s| on_cubecl::<B>(&s.layer.u().device()));
        let probe = |s| factor_step(s, opt).map(|(A, B_)| (A.sum() + B_.sum()).reshape([1, 1]));
        let sums: Vec<Tensor<B, 2>> = if on_gpu {
            layers.into_iter().map(probe).collect::<Result<_>>()?
        } else {
            layers.into_par_iter().map(probe).collect::<Result<_>>()?
        };
        match read_all(&sums).iter().position(|s| !s[(0, 0)].is_finite()) {
            Some(i) => Err(Error::NonFinite { context: format!("lora factor A or B of low-rank layer {i}") }),
            None => Ok(()),
        }
    }
}

/// The optimizer steps of A, B and the bias; returns the new A and B, set in the layer
/// unchecked.
fn factor_step<B: AutodiffBackend>(
    step: LayerStep<'_, B>,
    opt: &Optimizer,
) -> Result<(Tensor<B, 2>, Tensor<B, 2>)> {
    let LayerStep { layer, state, grads } = step;
    let kind = IntegratorKind::Lora;
    bias_step(layer, &mut state.slots, grads.bias, opt);
    let slots = &mut state.slots;
    let A = opt.step(layer.u().clone(), required(grads.u, "A", kind)?, &mut slots.u, Bases::none());
    let B_ = opt.step(layer.v().clone(), required(grads.v, "B", kind)?, &mut slots.v, Bases::none());
    let S = layer.s().clone();
    layer.set_factors_checked_elsewhere(A.clone(), S, B_.clone())?;
    Ok((A, B_))
}
