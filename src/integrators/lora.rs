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

use super::{required, Counters, Integrator, IntegratorKind, Pass};
use crate::layers::{low_rank_linear::check_finite, FactorGrads, LowRankLinear};
use crate::optim::{Bases, Optimizer};
use crate::Result;

/// The plain-factorization integrator.
#[derive(Debug, Default)]
pub struct Lora {
    counters: Counters,
}

impl<B: AutodiffBackend> Integrator<B> for Lora {
    fn kind(&self) -> IntegratorKind {
        IntegratorKind::Lora
    }

    fn passes(&self) -> &'static [Pass] {
        &[Pass::Factors]
    }

    fn prepare(&self, layer: &mut LowRankLinear<B>) -> Result<()> {
        let A = layer.u().clone().matmul(layer.s().clone());
        let B_ = layer.v().clone();
        let r = B_.dims()[1];
        layer.set_factors(A, Tensor::eye(r, &B_.device()), B_)
    }

    fn after_pass(
        &self,
        _pass: usize,
        layer: &mut LowRankLinear<B>,
        grads: FactorGrads<B>,
        opt: &Optimizer,
    ) -> Result<()> {
        let kind = IntegratorKind::Lora;
        layer.step_bias(grads.bias, opt);
        let A = opt.step(layer.u().clone(), required(grads.u, "A", kind)?, &mut layer.slots.u, Bases::none());
        let B_ =
            opt.step(layer.v().clone(), required(grads.v, "B", kind)?, &mut layer.slots.v, Bases::none());
        // S = I carries no NaN of A or B (unlike the other integrators' cores), so check here.
        check_finite(&A, "lora factor A")?;
        check_finite(&B_, "lora factor B")?;
        let S = layer.s().clone();
        layer.set_factors(A, S, B_)
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }
}
