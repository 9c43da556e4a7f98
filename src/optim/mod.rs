//! Optimizers for the factor steps, and how their state follows a change of basis.
//!
//! The integrators read each factor update as an optimizer step: with plain SGD,
//! `K1 = K0 − λ ∇_K ℒ` is the explicit Euler step of the paper; momentum and Adam replace the
//! raw gradient by a running average. Each optimizer is a pure per-tensor function in its own
//! file ([`sgd`], [`momentum`], [`adam`]); [`Optimizer`] dispatches and owns the one rule that
//! is specific to low-rank training, the transport of state across basis changes.
//!
//! # Carrying state across basis changes
//!
//! A factor is expressed in bases: K = U S (n×r) has its columns in the basis V, L = V Sᵀ in
//! the basis U, S (r×r) in U (rows) and V (columns). When augmentation or truncation replaces
//! a basis B_old (n×r_old) by B_new (n×r_new), the optimizer state recorded against B_old is
//! rewritten in B_new with T = B_oldᵀ B_new (r_old×r_new), one T per side:
//!
//! - first moments (momentum, Adam's m): `M ← T_leftᵀ M T_right`, the orthogonal projection
//!   of the ambient moment `B_left M B_rightᵀ` onto the new bases; exact when the span is kept;
//! - second moments (Adam's v): `V ← (T_left ∘ T_left)ᵀ V (T_right ∘ T_right)`, the variance of
//!   the projected gradient when its coordinates are independent. It stays nonnegative and is
//!   unchanged by permutations and sign flips of the basis.
//!
//! Augmentation brings in directions the old bases did not contain. A new basis vector b keeps
//! the fraction κ = ‖B_oldᵀ b‖² of the old span; the rest, 1 − κ, is fresh, and the projection
//! gives it no history (m = v = 0). Adam treats a parameter without history by its bias
//! correction, but the step counter runs on, so a fresh coordinate's first step was
//! `(1 − β₁) g / √((1 − β₂) g² / (1 − β₂ᵗ))`: up to 3.2 λ late in training, against λ for a
//! new parameter in Adam itself and much less for established coordinates with noisy
//! gradients. Those kicks, every step, slowed abc-PSI adapters down (docs/performance-log.md). So Adam fills
//! the fresh part as Adam would start it: moments as if the current gradient had been seen at
//! every earlier step ([`adam::step`]), which makes the bias-corrected m̂ = g and v̂ = g² there.
//!
//! An identity change (T = I) leaves the state bit-for-bit as it was. Adam's step counter is
//! kept, so bias correction does not restart. Without recorded bases (dense weights, biases,
//! LoRA factors) the state is used as is.

pub mod adam;
pub mod momentum;
pub mod sgd;

use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The learning rate λ (the Euler step size of the gradient flow).
pub type LearningRate = f64;

/// Which optimizer, with its hyper-parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerConfig {
    /// Plain SGD: `x ← x − λ g`, the paper's explicit Euler step.
    Sgd,
    /// Heavy-ball momentum: `v ← β v + g`, `x ← x − λ v`.
    Momentum {
        /// β in [0, 1).
        #[serde(default = "default_momentum")]
        beta: f64,
    },
    /// Adam with decoupled weight decay (AdamW when `weight_decay` > 0).
    Adam {
        /// β₁ in [0, 1).
        #[serde(default = "default_beta1")]
        beta1: f64,
        /// β₂ in [0, 1).
        #[serde(default = "default_beta2")]
        beta2: f64,
        /// ε > 0 added to √v̂.
        #[serde(default = "default_eps")]
        eps: f64,
        /// Decoupled weight decay coefficient ≥ 0.
        #[serde(default)]
        weight_decay: f64,
    },
}

fn default_momentum() -> f64 {
    0.9
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}

impl OptimizerConfig {
    /// Adam with the literature defaults (β₁ = 0.9, β₂ = 0.999, ε = 1e-8) and weight decay `wd`.
    pub fn adamw(weight_decay: f64) -> Self {
        OptimizerConfig::Adam {
            beta1: default_beta1(),
            beta2: default_beta2(),
            eps: default_eps(),
            weight_decay,
        }
    }

    /// Checks that every hyper-parameter is in range.
    pub fn validate(&self) -> Result<()> {
        let unit = |field: &str, x: f64| {
            if (0.0..1.0).contains(&x) {
                Ok(())
            } else {
                Err(Error::config(field, x, "a value in [0, 1)"))
            }
        };
        match *self {
            OptimizerConfig::Sgd => Ok(()),
            OptimizerConfig::Momentum { beta } => unit("beta", beta),
            OptimizerConfig::Adam { beta1, beta2, eps, weight_decay } => {
                unit("beta1", beta1)?;
                unit("beta2", beta2)?;
                if !(eps > 0.0 && eps.is_finite()) {
                    return Err(Error::config("eps", eps, "a finite value > 0"));
                }
                if !(weight_decay >= 0.0 && weight_decay.is_finite()) {
                    return Err(Error::config("weight_decay", weight_decay, "a finite value >= 0"));
                }
                Ok(())
            }
        }
    }
}

/// Optimizer state of one tensor.
#[derive(Clone, Debug)]
pub struct State<B: Backend> {
    /// Number of steps taken (Adam's bias correction).
    pub time: usize,
    /// First moment (momentum velocity or Adam's m).
    pub moment_1: Option<Tensor<B, 2>>,
    /// Second moment (Adam's v).
    pub moment_2: Option<Tensor<B, 2>>,
}

/// One parameter's optimizer state together with the bases it is expressed in.
#[derive(Clone, Debug)]
pub struct Slot<B: Backend> {
    /// The state, `None` before the first step.
    pub state: Option<State<B>>,
    /// Row basis of the recorded state (for S: U), if the rows are not ambient coordinates.
    pub left: Option<Tensor<B, 2>>,
    /// Column basis of the recorded state (for K: V; for L: U; for S: V).
    pub right: Option<Tensor<B, 2>>,
}

impl<B: Backend> Default for Slot<B> {
    fn default() -> Self {
        Self { state: None, left: None, right: None }
    }
}

/// Optimizer state of a dense layer's weight and bias (ambient coordinates).
#[derive(Clone, Debug, Default)]
pub struct DenseSlots<B: Backend> {
    /// State of W.
    pub weight: Slot<B>,
    /// State of the bias.
    pub bias: Slot<B>,
}

/// The bases a factor is expressed in during this step (see the module docs).
pub struct Bases<'a, B: Backend> {
    /// Row basis, for S.
    pub left: Option<&'a Tensor<B, 2>>,
    /// Column basis.
    pub right: Option<&'a Tensor<B, 2>>,
}

impl<B: Backend> Clone for Bases<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend> Copy for Bases<'_, B> {}

impl<'a, B: Backend> Bases<'a, B> {
    /// No bases: ambient coordinates (dense weights, biases, LoRA factors).
    pub fn none() -> Self {
        Self { left: None, right: None }
    }
    /// Columns in basis `b` (K in V, L in U).
    pub fn right(b: &'a Tensor<B, 2>) -> Self {
        Self { left: None, right: Some(b) }
    }
    /// Rows in `u`, columns in `v` (S).
    pub fn both(u: &'a Tensor<B, 2>, v: &'a Tensor<B, 2>) -> Self {
        Self { left: Some(u), right: Some(v) }
    }
}

/// An optimizer and its learning rate.
#[derive(Clone, Debug)]
pub struct Optimizer {
    /// Which update rule.
    pub config: OptimizerConfig,
    /// λ.
    pub lr: LearningRate,
}

impl Optimizer {
    /// Plain SGD with step size λ = `lr` (the paper's setting).
    pub fn sgd(lr: LearningRate) -> Self {
        Self { config: OptimizerConfig::Sgd, lr }
    }

    /// An optimizer from its config; validates it and λ.
    pub fn new(config: OptimizerConfig, lr: LearningRate) -> Result<Self> {
        let opt = Self { config, lr };
        opt.validate()?;
        Ok(opt)
    }

    /// Checks the rule's hyper-parameters and λ (the fields are public; [`Optimizer::sgd`]
    /// checks nothing).
    pub fn validate(&self) -> Result<()> {
        self.config.validate()?;
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(Error::config("lr", self.lr, "a finite learning rate > 0"));
        }
        Ok(())
    }

    /// One step of parameter `x` with gradient `g`, which live in `bases`; returns the new `x`.
    ///
    /// The slot's state is first carried from the bases it was recorded in to `bases`.
    pub fn step<B: Backend>(
        &self,
        x: Tensor<B, 2>,
        g: Tensor<B, 2>,
        slot: &mut Slot<B>,
        bases: Bases<'_, B>,
    ) -> Tensor<B, 2> {
        if let OptimizerConfig::Sgd = self.config {
            return sgd::step(x, g, self.lr);
        }
        let (state, fresh) = slot.state.take().map(|s| transport(s, slot, bases)).unzip();
        let fits = |t: &Tensor<B, 2>| t.dims() == x.dims();
        let state = state.filter(|s| s.moment_1.as_ref().is_none_or(fits));
        let fresh = fresh.flatten().filter(fits);
        let (x, state) = match self.config {
            OptimizerConfig::Sgd => unreachable!("handled above"),
            // Momentum has no normalisation (and no fill): a fresh direction's velocity starts
            // at 0, as a new parameter's does.
            OptimizerConfig::Momentum { beta } => momentum::step(x, g, state, self.lr, beta),
            OptimizerConfig::Adam { beta1, beta2, eps, weight_decay } => {
                let p = adam::AdamParams { beta1, beta2, eps, weight_decay };
                adam::step(x, g, state, fresh, self.lr, p)
            }
        };
        slot.state = Some(state);
        slot.left = bases.left.cloned();
        slot.right = bases.right.cloned();
        x
    }

    /// Steps a bias (a vector) in ambient coordinates.
    pub fn step_vector<B: Backend>(
        &self,
        b: Tensor<B, 1>,
        g: Tensor<B, 1>,
        slot: &mut Slot<B>,
    ) -> Tensor<B, 1> {
        let m = b.dims()[0];
        self.step(b.reshape([1, m]), g.reshape([1, m]), slot, Bases::none()).reshape([m])
    }
}

/// Rewrites `state` from the slot's recorded bases into `bases` (module docs give the rule).
/// Also returns, when a basis changed and the state has a second moment (Adam: the one that
/// normalises the step), the fresh fraction of each entry of the parameter (0 where the old
/// bases contained its direction, 1 where they had none of it).
fn transport<B: Backend>(
    mut state: State<B>,
    slot: &Slot<B>,
    bases: Bases<'_, B>,
) -> (State<B>, Option<Tensor<B, 2>>) {
    let change = |old: &Option<Tensor<B, 2>>, new: Option<&Tensor<B, 2>>| match (old, new) {
        (Some(old), Some(new)) => Some(old.clone().transpose().matmul(new.clone())),
        _ => None,
    };
    let t_left = change(&slot.left, bases.left);
    let t_right = change(&slot.right, bases.right);
    let apply = |m: Tensor<B, 2>, square: bool| {
        let sq = |t: &Tensor<B, 2>| if square { t.clone() * t.clone() } else { t.clone() };
        let m = match &t_left {
            Some(t) => sq(t).transpose().matmul(m),
            None => m,
        };
        match &t_right {
            Some(t) => m.matmul(sq(t)),
            None => m,
        }
    };
    state.moment_1 = state.moment_1.map(|m| apply(m, false));
    state.moment_2 = state.moment_2.map(|v| apply(v, true));
    // κ of each new basis vector as a row (1×r_new); 1 − κ_left,i κ_right,j is the fresh part.
    let kept = |t: &Tensor<B, 2>| (t.clone() * t.clone()).sum_dim(0).clamp(0.0, 1.0);
    let kept = match (&t_left, &t_right, &state.moment_2) {
        (None, None, _) | (_, _, None) => None,
        (l, r, Some(m)) => {
            let [rows, cols] = m.dims();
            let device = m.device();
            let left = l.as_ref().map_or_else(|| Tensor::ones([rows, 1], &device), |t| kept(t).transpose());
            let right = r.as_ref().map_or_else(|| Tensor::ones([1, cols], &device), kept);
            Some(left.matmul(right))
        }
    };
    (state, kept.map(|k| k.neg().add_scalar(1.0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::{from_faer, thin_qr};
    use burn::backend::NdArray;
    use rand::{rngs::StdRng, SeedableRng};

    type B = NdArray<f64>;

    fn orthonormal(n: usize, r: usize, seed: u64) -> Tensor<B, 2> {
        let mut rng = StdRng::seed_from_u64(seed);
        let g = crate::linalg::qr::tests::gaussian(n, r, &mut rng);
        from_faer(thin_qr(g.as_ref()).Q.as_ref(), &Default::default())
    }

    fn slot_with_state(m1: Tensor<B, 2>, m2: Tensor<B, 2>, v: Tensor<B, 2>) -> Slot<B> {
        Slot {
            state: Some(State { time: 3, moment_1: Some(m1), moment_2: Some(m2) }),
            left: None,
            right: Some(v),
        }
    }

    #[test]
    fn identity_basis_change_leaves_state_unchanged() {
        let v = orthonormal(30, 4, 1);
        let m1 = orthonormal(10, 4, 2);
        let m2 = m1.clone() * m1.clone();
        let slot = slot_with_state(m1.clone(), m2.clone(), v.clone());
        let (state, fresh) = transport(slot.state.clone().unwrap(), &slot, Bases::right(&v));
        let close = |a: Tensor<B, 2>, b: Tensor<B, 2>| (a - b).abs().max().into_scalar() < 1e-14;
        assert!(close(state.moment_1.unwrap(), m1));
        assert!(close(state.moment_2.unwrap(), m2));
        assert!(fresh.unwrap().abs().max().into_scalar() < 1e-14, "nothing is fresh");
        assert_eq!(state.time, 3);
    }

    #[test]
    fn first_moment_keeps_its_ambient_value_when_the_span_is_kept() {
        // New basis = old basis rotated and augmented: the ambient moment M Vᵀ is preserved.
        let v_old = orthonormal(30, 4, 3);
        let extra = orthonormal(30, 8, 4);
        let v_new = crate::linalg::orth(&Tensor::cat(vec![v_old.clone(), extra], 1));
        let m1 = orthonormal(10, 4, 5);
        let m2 = m1.clone() * m1.clone();
        let slot = slot_with_state(m1.clone(), m2, v_old.clone());
        let (state, _) = transport(slot.state.clone().unwrap(), &slot, Bases::right(&v_new));
        let new_m1 = state.moment_1.unwrap();
        assert_eq!(new_m1.dims(), [10, 12]);
        let before = m1.matmul(v_old.transpose());
        let after = new_m1.matmul(v_new.transpose());
        assert!((before - after).abs().max().into_scalar() < 1e-12);
        assert!(state.moment_2.unwrap().min().into_scalar() >= 0.0);
    }

    #[test]
    fn transport_reports_which_directions_are_fresh() {
        // V_new = orth([V_old | E]): its first 4 columns are ±V_old, its last 4 are new to it.
        let v_old = orthonormal(30, 4, 10);
        let v_new = crate::linalg::orth(&Tensor::cat(vec![v_old.clone(), orthonormal(30, 4, 11)], 1));
        let m1 = orthonormal(6, 4, 12);
        let slot = slot_with_state(m1.clone(), m1.clone() * m1, v_old);
        let (state, fresh) = transport(slot.state.clone().unwrap(), &slot, Bases::right(&v_new));
        let fresh = fresh.expect("the basis changed");
        assert_eq!(fresh.dims(), [6, 8]);
        let close = |a: Tensor<B, 2>, b: f64| (a.sub_scalar(b)).abs().max().into_scalar() < 1e-12;
        assert!(close(fresh.clone().slice([0..6, 0..4]), 0.0) && close(fresh.slice([0..6, 4..8]), 1.0));
        let m = state.moment_1.unwrap().slice([0..6, 4..8]);
        assert!(close(m, 0.0), "no history in a fresh direction");
    }

    #[test]
    fn a_fresh_direction_steps_like_a_new_parameter_in_adam() {
        // Late in training (t = 1000), the same gradient in an established coordinate whose
        // history is that gradient, and in a fresh one: both step λ, as Adam's first step
        // would. Without the fill the fresh one stepped 2.5 λ.
        let opt = Optimizer::new(OptimizerConfig::adamw(0.0), 1.0).unwrap();
        let v0 = orthonormal(20, 1, 13);
        let v1 = crate::linalg::orth(&Tensor::cat(vec![v0.clone(), orthonormal(20, 1, 14)], 1));
        let device = Default::default();
        let mut slot = Slot {
            state: Some(State {
                time: 1000,
                moment_1: Some(Tensor::<B, 2>::ones([1, 1], &device).mul_scalar(1.0 - 0.9f64.powi(1000))),
                moment_2: Some(Tensor::<B, 2>::ones([1, 1], &device).mul_scalar(1.0 - 0.999f64.powi(1000))),
            }),
            left: None,
            right: Some(v0),
        };
        let x = Tensor::<B, 2>::zeros([1, 2], &device);
        let g = Tensor::<B, 2>::ones([1, 2], &device);
        let x1 = opt.step(x, g, &mut slot, Bases::right(&v1)).into_data().to_vec::<f64>().unwrap();
        assert!((x1[0] + 1.0).abs() < 1e-6 && (x1[1] + 1.0).abs() < 1e-6, "{x1:?}");
    }

    #[test]
    fn adam_state_is_carried_not_reset_across_a_basis_change() {
        let opt = Optimizer::new(OptimizerConfig::adamw(0.0), 0.1).unwrap();
        let v0 = orthonormal(20, 3, 6);
        let x = orthonormal(8, 3, 7);
        let g = orthonormal(8, 3, 8);
        let mut slot = Slot::default();
        let _ = opt.step(x.clone(), g.clone(), &mut slot, Bases::right(&v0));
        let v1 = crate::linalg::orth(&Tensor::cat(vec![v0.clone(), orthonormal(20, 2, 9)], 1));
        let x1 = x.matmul(v0.clone().transpose()).matmul(v1.clone());
        let g1 = g.matmul(v0.transpose()).matmul(v1.clone());
        let _ = opt.step(x1, g1, &mut slot, Bases::right(&v1));
        let state = slot.state.unwrap();
        assert_eq!(state.time, 2, "the step counter survives the basis change");
        assert_eq!(state.moment_1.unwrap().dims(), [8, 5]);
    }

    /// The columns sign·e_i of I_k for each (i, sign) in `idx`.
    fn unit_columns(k: usize, idx: &[(usize, f64)]) -> Tensor<B, 2> {
        let d = faer::Mat::from_fn(k, idx.len(), |i, j| if i == idx[j].0 { idx[j].1 } else { 0.0 });
        from_faer(d.as_ref(), &Default::default())
    }

    fn matrix(rows: &[&[f64]]) -> Tensor<B, 2> {
        let d = faer::Mat::from_fn(rows.len(), rows[0].len(), |i, j| rows[i][j]);
        from_faer(d.as_ref(), &Default::default())
    }

    fn values(t: Tensor<B, 2>) -> Vec<f64> {
        t.into_data().to_vec::<f64>().unwrap()
    }

    #[test]
    fn first_moment_keeps_its_ambient_value_under_rotations_of_both_bases() {
        // An S slot: rows in U, columns in V. Each new basis is the old one rotated by an
        // orthogonal Q and extended by fresh directions E ⊥ span(old): [B_old Q | E]. Then
        // U_new M′ V_newᵀ = U_old M V_oldᵀ, and M′ is zero on the fresh rows and columns.
        let (n, m, ru, rv, eu, ev) = (20, 15, 3, 4, 2, 3);
        let (u_old, v_old) = (orthonormal(n, ru, 20), orthonormal(m, rv, 21));
        let extend = |old: &Tensor<B, 2>, q: Tensor<B, 2>, e: Tensor<B, 2>| {
            let [rows, r] = old.dims();
            let fresh = crate::linalg::orth(&Tensor::cat(vec![old.clone(), e], 1));
            let width = fresh.dims()[1];
            Tensor::cat(vec![old.clone().matmul(q), fresh.slice([0..rows, r..width])], 1)
        };
        let u_new = extend(&u_old, orthonormal(ru, ru, 22), orthonormal(n, eu, 23));
        let v_new = extend(&v_old, orthonormal(rv, rv, 24), orthonormal(m, ev, 25));
        let mut rng = StdRng::seed_from_u64(26);
        let m1: Tensor<B, 2> =
            from_faer(crate::linalg::qr::tests::gaussian(ru, rv, &mut rng).as_ref(), &Default::default());
        let slot = Slot {
            state: Some(State {
                time: 5,
                moment_1: Some(m1.clone()),
                moment_2: Some(m1.clone() * m1.clone()),
            }),
            left: Some(u_old.clone()),
            right: Some(v_old.clone()),
        };
        let (state, fresh) = transport(slot.state.clone().unwrap(), &slot, Bases::both(&u_new, &v_new));
        let new_m1 = state.moment_1.unwrap();
        assert_eq!(new_m1.dims(), [ru + eu, rv + ev]);
        let ambient = |u: &Tensor<B, 2>, m: Tensor<B, 2>, v: &Tensor<B, 2>| {
            u.clone().matmul(m).matmul(v.clone().transpose())
        };
        let kept =
            (ambient(&u_old, m1, &v_old) - ambient(&u_new, new_m1.clone(), &v_new)).abs().max().into_scalar();
        assert!(kept < 1e-12, "U_new M′ V_newᵀ differs from U_old M V_oldᵀ by {kept:e}");
        let small = |t: Tensor<B, 2>| t.abs().max().into_scalar() < 1e-12;
        assert!(small(new_m1.clone().slice([ru..ru + eu, 0..rv + ev])), "history on fresh rows");
        assert!(small(new_m1.slice([0..ru + eu, rv..rv + ev])), "history on fresh columns");
        // Fresh fraction 1 − κ_left,i κ_right,j: 0 on the rotated block, 1 wherever a side is fresh.
        let fresh = fresh.expect("the bases changed");
        assert!(small(fresh.clone().slice([0..ru, 0..rv])));
        assert!(small(fresh.clone().slice([ru..ru + eu, 0..rv + ev]).sub_scalar(1.0)));
        assert!(small(fresh.slice([0..ru + eu, rv..rv + ev]).sub_scalar(1.0)));

        // Through a momentum step with g = 0 the transported velocity is all that moves x:
        // U_new (x − x1) V_newᵀ = λβ U_old M V_oldᵀ.
        let (lr, beta) = (0.5, 0.9);
        let opt = Optimizer::new(OptimizerConfig::Momentum { beta }, lr).unwrap();
        let mut slot = Slot { state: Some(State { moment_2: None, ..slot.state.unwrap() }), ..slot };
        let m1 = slot.state.as_ref().unwrap().moment_1.clone().unwrap();
        let x = Tensor::<B, 2>::zeros([ru + eu, rv + ev], &Default::default());
        let x1 = opt.step(x.clone(), x.clone(), &mut slot, Bases::both(&u_new, &v_new));
        let moved = ambient(&u_new, x - x1, &v_new) - ambient(&u_old, m1, &v_old).mul_scalar(lr * beta);
        assert!(moved.abs().max().into_scalar() < 1e-12, "the velocity was not carried");
    }

    #[test]
    fn second_moment_is_permuted_exactly_by_signed_permutation_bases() {
        // Coordinate bases: U_old = (e0, e1, e2), U_new = (−e2, e0, e1, e4); V_old = (e1, e3),
        // V_new = (e3, −e1, e0). T = B_oldᵀ B_new is a signed permutation padded with zeros, so
        // every transported entry is one old entry (the sign squared away for v), exactly.
        let u_old = unit_columns(6, &[(0, 1.0), (1, 1.0), (2, 1.0)]);
        let u_new = unit_columns(6, &[(2, -1.0), (0, 1.0), (1, 1.0), (4, 1.0)]);
        let v_old = unit_columns(5, &[(1, 1.0), (3, 1.0)]);
        let v_new = unit_columns(5, &[(3, 1.0), (1, -1.0), (0, 1.0)]);
        let m1 = matrix(&[&[1.0, -2.0], &[3.0, 4.0], &[-5.0, 6.0]]);
        let m2 = matrix(&[&[1.0, 4.0], &[9.0, 16.0], &[25.0, 36.0]]);
        let slot = Slot {
            state: Some(State { time: 7, moment_1: Some(m1), moment_2: Some(m2) }),
            left: Some(u_old),
            right: Some(v_old),
        };
        let (state, fresh) = transport(slot.state.clone().unwrap(), &slot, Bases::both(&u_new, &v_new));
        #[rustfmt::skip]
        let want_v = [36.0, 25.0, 0.0,   4.0, 1.0, 0.0,   16.0, 9.0, 0.0,   0.0, 0.0, 0.0];
        assert_eq!(values(state.moment_2.unwrap()), want_v, "second moment");
        #[rustfmt::skip]
        let want_m = [-6.0, -5.0, 0.0,   -2.0, -1.0, 0.0,   4.0, -3.0, 0.0,   0.0, 0.0, 0.0];
        assert_eq!(values(state.moment_1.unwrap()), want_m, "first moment");
        #[rustfmt::skip]
        let want_fresh = [0.0, 0.0, 1.0,   0.0, 0.0, 1.0,   0.0, 0.0, 1.0,   1.0, 1.0, 1.0];
        assert_eq!(values(fresh.unwrap()), want_fresh, "fresh fraction");
        assert_eq!(state.time, 7);
    }

    #[test]
    fn validate_names_the_field() {
        let err = OptimizerConfig::Momentum { beta: 1.5 }.validate().unwrap_err();
        assert!(err.to_string().contains("beta"));
        assert!(Optimizer::new(OptimizerConfig::Sgd, f64::NAN).is_err());
    }
}
