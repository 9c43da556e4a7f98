//! Adam with decoupled weight decay (AdamW, Loshchilov & Hutter 2019).
//!
//! ```text
//! m ← β₁ m + (1 − β₁) g          v ← β₂ v + (1 − β₂) g²
//! x ← x − λ wd x − λ m̂ / (√v̂ + ε),   m̂ = m / (1 − β₁ᵗ), v̂ = v / (1 − β₂ᵗ)
//! ```

use burn::tensor::{backend::Backend, Tensor};

use super::State;

/// Adam's hyper-parameters.
#[derive(Clone, Copy, Debug)]
pub struct AdamParams {
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

/// One AdamW step. `fresh` (entries in [0, 1], the shape of x) marks the part of each
/// coordinate that a basis change has just brought in ([`super`] docs): its moments are
/// filled as if g had been the gradient at every earlier step, so that part starts like a new
/// parameter in Adam (m̂ = g, v̂ = g²) although the step counter is not reset.
pub fn step<B: Backend>(
    x: Tensor<B, 2>,
    g: Tensor<B, 2>,
    state: Option<State<B>>,
    fresh: Option<Tensor<B, 2>>,
    lr: f64,
    p: AdamParams,
) -> (Tensor<B, 2>, State<B>) {
    let (time, mut m, mut v) = match state {
        Some(State { time, moment_1: Some(m), moment_2: Some(v) }) => (time, m, v),
        _ => (0, g.zeros_like(), g.zeros_like()),
    };
    if let Some(f) = fresh {
        // 1 − βᵗ: the weight t earlier steps of gradient g would have left in the moment.
        let seen = |beta: f64| 1.0 - beta.powi(time as i32);
        m = m + (f.clone() * g.clone()).mul_scalar(seen(p.beta1));
        v = v + (f * g.clone() * g.clone()).mul_scalar(seen(p.beta2));
    }
    let time = time + 1;
    let m = m.mul_scalar(p.beta1) + g.clone().mul_scalar(1.0 - p.beta1);
    let v = v.mul_scalar(p.beta2) + (g.clone() * g).mul_scalar(1.0 - p.beta2);
    let c1 = 1.0 - p.beta1.powi(time as i32);
    let c2 = 1.0 - p.beta2.powi(time as i32);
    let update = m.clone().div_scalar(c1) / (v.clone().div_scalar(c2).sqrt().add_scalar(p.eps));
    let x = if p.weight_decay > 0.0 { x.clone() - x.mul_scalar(lr * p.weight_decay) } else { x };
    let x = x - update.mul_scalar(lr);
    (x, State { time, moment_1: Some(m), moment_2: Some(v) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    #[test]
    fn first_step_moves_each_entry_by_lr_in_the_gradient_sign() {
        // With bias correction, Adam's first step is λ·g/(|g| + ε) ≈ λ·sign(g).
        let device = Default::default();
        let x = Tensor::<NdArray<f64>, 2>::from_data([[1.0, -2.0]], &device);
        let g = Tensor::<NdArray<f64>, 2>::from_data([[0.5, -3.0]], &device);
        let p = AdamParams { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
        let (x1, state) = step(x, g, None, None, 0.1, p);
        let got = x1.into_data().to_vec::<f64>().unwrap();
        assert!((got[0] - 0.9).abs() < 1e-6 && (got[1] + 1.9).abs() < 1e-6, "{got:?}");
        assert_eq!(state.time, 1);
    }
}
