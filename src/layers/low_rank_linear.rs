//! `LowRankLinear`: `z = x U S Vᵀ + b`, optionally on a frozen base, `z = x W0 + x U S Vᵀ + b`.
//!
//! U (n×r_u) and V (m×r_v) have orthonormal columns; S (r_u×r_v) is small and need not be
//! diagonal or square: between the passes of a step an integrator may hold an augmented basis
//! (abc-PSI's `Û S̄ V0ᵀ` has S̄ of size 2r×r). W is never formed during training.
//!
//! # Forward parametrizations
//!
//! Each training pass evaluates the same W through different trainable leaves, so autodiff
//! returns the factor gradient the integrator needs (with G = ∇_W ℒ):
//!
//! | [`Pass`] | forward | leaves | gradients |
//! |---|---|---|---|
//! | `K` | x K Vᵀ, K = U S | K (n×r_v) | ∇_K = G V |
//! | `L` | x U Lᵀ, L = V Sᵀ | L (m×r_u) | ∇_L = Gᵀ U |
//! | `S` | x U S Vᵀ | S | ∇_S = Uᵀ G V |
//! | `Tangent` | x (K Vᵀ + U Lᵀ − U S Vᵀ) | K, L, S | G V, Gᵀ U, −Uᵀ G V |
//! | `Factors` | x U S Vᵀ | U, V | G V Sᵀ, Gᵀ U S |
//! | `Activations` | x U S Vᵀ + P, P = 0 | P (batch×m) | x and δ = ∇_P ℒ, so G = xᵀ δ |
//!
//! The `Activations` pass trains no factor: it records the layer's input x and, through a zero
//! probe P added to the output, the output gradient δ. From them [`FactorGrads::g_times`] and
//! [`FactorGrads::gt_times`] give G V and Gᵀ U for *any* basis after the pass, which lets an
//! integrator take two factor steps at the same W from one forward/backward pass.
//!
//! The bias is a leaf in every pass; the integrator decides in which pass it steps. Sizes
//! follow the current rank exactly: there are no max-rank buffers.
//!
//! # Initialisation
//!
//! [`LowRankLinear::random`] draws U, V as the Q factors of Gaussian matrices and sets
//! S = s·I with s = gain·√(m/r). Then ‖W‖_F² = gain²·m, the expected squared norm of a dense
//! n×m matrix with entries of variance gain²/n (He/Kaiming-normal for gain = √2), so for
//! isotropic inputs the layer preserves the signal scale of the dense layer it replaces.

use std::fmt;

use burn::tensor::{
    backend::{AutodiffBackend, Backend},
    Tensor,
};
use faer::Mat;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

use crate::integrators::Pass;
use crate::linalg::{from_faer, thin_qr, truncated_svd, TruncationConfig};
use crate::optim::{Optimizer, Slot};
use crate::{Error, Result};

/// Optimizer state of each factor role of a layer.
#[derive(Clone, Debug, Default)]
pub struct FactorSlots<B: Backend> {
    /// K = U S, columns in V.
    pub k: Slot<B>,
    /// L = V Sᵀ, columns in U.
    pub l: Slot<B>,
    /// S, rows in U, columns in V.
    pub s: Slot<B>,
    /// U as a free factor (LoRA's A).
    pub u: Slot<B>,
    /// V as a free factor (LoRA's B).
    pub v: Slot<B>,
    /// The bias.
    pub bias: Slot<B>,
}

/// The gradients one pass produced for a layer's leaves (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct FactorGrads<B: Backend> {
    /// ∇_K ℒ.
    pub k: Option<Tensor<B, 2>>,
    /// ∇_L ℒ.
    pub l: Option<Tensor<B, 2>>,
    /// ∇_S ℒ.
    pub s: Option<Tensor<B, 2>>,
    /// ∇_U ℒ.
    pub u: Option<Tensor<B, 2>>,
    /// ∇_V ℒ.
    pub v: Option<Tensor<B, 2>>,
    /// ∇_b ℒ.
    pub bias: Option<Tensor<B, 1>>,
    /// The layer's input x (rows of every call in the pass, stacked), `Activations` pass.
    pub input: Option<Tensor<B, 2>>,
    /// The gradient δ = ∂ℒ/∂z of the layer's output, rows matching `input`.
    pub output_grad: Option<Tensor<B, 2>>,
}

impl<B: Backend> FactorGrads<B> {
    /// `G V = xᵀ (δ V)` (n×k) for an m×k `v`, from an `Activations` pass.
    pub fn g_times(&self, v: &Tensor<B, 2>) -> Option<Tensor<B, 2>> {
        let (x, delta) = (self.input.as_ref()?, self.output_grad.as_ref()?);
        Some(x.clone().transpose().matmul(delta.clone().matmul(v.clone())))
    }

    /// `Gᵀ U = δᵀ (x U)` (m×k) for an n×k `u`, from an `Activations` pass.
    pub fn gt_times(&self, u: &Tensor<B, 2>) -> Option<Tensor<B, 2>> {
        let (x, delta) = (self.input.as_ref()?, self.output_grad.as_ref()?);
        Some(delta.clone().transpose().matmul(x.clone().matmul(u.clone())))
    }

    /// ∇_K ℒ = G V for the current V: the K leaf's gradient, or [`Self::g_times`] after an
    /// `Activations` pass.
    pub fn grad_k(&self, v: &Tensor<B, 2>) -> Option<Tensor<B, 2>> {
        self.k.clone().or_else(|| self.g_times(v))
    }

    /// ∇_L ℒ = Gᵀ U for the current U: the L leaf's gradient, or [`Self::gt_times`] after an
    /// `Activations` pass.
    pub fn grad_l(&self, u: &Tensor<B, 2>) -> Option<Tensor<B, 2>> {
        self.l.clone().or_else(|| self.gt_times(u))
    }
}

/// What an `Activations` pass records in the forward: each call's input and zero probe.
/// Behind a mutex because `forward` takes `&self`.
type Recorded<B> = std::sync::Arc<std::sync::Mutex<Vec<(Tensor<B, 2>, Tensor<B, 2>)>>>;

/// Trainable leaves of the current pass.
#[derive(Clone, Debug)]
struct Leaves<B: Backend> {
    pass: Pass,
    k: Option<Tensor<B, 2>>,
    l: Option<Tensor<B, 2>>,
    s: Option<Tensor<B, 2>>,
    u: Option<Tensor<B, 2>>,
    v: Option<Tensor<B, 2>>,
    bias: Option<Tensor<B, 1>>,
    recorded: Option<Recorded<B>>,
}

/// A linear layer stored as `W = U S Vᵀ` (module docs).
#[derive(Clone, Debug)]
pub struct LowRankLinear<B: Backend> {
    u: Tensor<B, 2>,
    s: Tensor<B, 2>,
    v: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
    base: Option<Tensor<B, 2>>,
    leaves: Option<Leaves<B>>,
    /// Optimizer state per factor, carried across basis changes by [`Optimizer::step`].
    pub slots: FactorSlots<B>,
    /// Values an integrator carries from one pass of a step to the next (for example BUG's
    /// K1); empty between steps.
    pub scratch: Vec<Tensor<B, 2>>,
}

fn dims<B: Backend, const D: usize>(t: &Tensor<B, D>) -> String {
    format!("{:?}", t.dims())
}

fn random_orthonormal(rows: usize, cols: usize, rng: &mut StdRng) -> Mat<f64> {
    let g = Mat::from_fn(rows, cols, |_, _| StandardNormal.sample(rng));
    thin_qr(g.as_ref()).Q
}

pub(crate) fn check_finite<B: Backend, const D: usize>(t: &Tensor<B, D>, context: &str) -> Result<()> {
    crate::linalg::convert::note_host_read();
    let data = t.to_data();
    // f32 (the training backends) is checked as stored, without a widened copy: LoRA checks
    // both factors every step (its MNIST update 217–263 → 180–213 µs in paired runs).
    let finite = match data.as_slice::<f32>() {
        Ok(values) => values.iter().all(|v| v.is_finite()),
        Err(_) => data.convert::<f64>().as_slice::<f64>().is_ok_and(|x| x.iter().all(|v| v.is_finite())),
    };
    if finite {
        Ok(())
    } else {
        Err(Error::NonFinite { context: context.to_string() })
    }
}

impl<B: Backend> LowRankLinear<B> {
    /// Random orthonormal U (n×r), V (m×r), S = gain·√(m/r)·I, zero bias (module docs).
    pub fn random(
        n: usize,
        m: usize,
        r: usize,
        bias: bool,
        gain: f64,
        rng: &mut StdRng,
        device: &B::Device,
    ) -> Result<Self> {
        if r == 0 || r > n.min(m) {
            return Err(Error::config("rank", r, &format!("1 ≤ rank ≤ min(n, m) = {}", n.min(m))));
        }
        let u = random_orthonormal(n, r, rng);
        let v = random_orthonormal(m, r, rng);
        let s = Mat::<f64>::identity(r, r) * faer::Scale(gain * (m as f64 / r as f64).sqrt());
        Self::from_factors(
            from_faer(u.as_ref(), device),
            from_faer(s.as_ref(), device),
            from_faer(v.as_ref(), device),
            bias.then(|| Tensor::zeros([m], device)),
        )
    }

    /// Truncated SVD of a dense n×m `w`: keeps `rank` singular values if given, otherwise the
    /// rank that `truncation` chooses.
    pub fn from_dense(
        w: &Tensor<B, 2>,
        rank: Option<usize>,
        truncation: &TruncationConfig,
        bias: Option<Tensor<B, 1>>,
    ) -> Result<Self> {
        truncation.validate()?;
        let [n, m] = w.dims();
        let cfg = match rank {
            Some(r) if r == 0 || r > n.min(m) => {
                return Err(Error::config("rank", r, &format!("1 ≤ rank ≤ min(n, m) = {}", n.min(m))))
            }
            // A fixed rank is the truncation with both bounds at r.
            Some(r) => truncation.clone().with_bounds(r, Some(r)),
            None => truncation.clone(),
        };
        let t = truncated_svd(w, &cfg, n, m, "dense weight")?;
        Self::from_factors(t.P, t.Sigma, t.Q, bias)
    }

    /// An adapter of rank r on the frozen n×m `base`: `z = x W0 + x U S Vᵀ + b` with S = 0, so
    /// it starts as the base layer; U and V are random orthonormal.
    pub fn adapter(
        base: Tensor<B, 2>,
        r: usize,
        bias: Option<Tensor<B, 1>>,
        rng: &mut StdRng,
    ) -> Result<Self> {
        let [n, m] = base.dims();
        if r == 0 || r > n.min(m) {
            return Err(Error::config("rank", r, &format!("1 ≤ rank ≤ min(n, m) = {}", n.min(m))));
        }
        let device = base.device();
        let mut layer = Self::from_factors(
            from_faer(random_orthonormal(n, r, rng).as_ref(), &device),
            Tensor::zeros([r, r], &device),
            from_faer(random_orthonormal(m, r, rng).as_ref(), &device),
            bias,
        )?;
        check_finite(&base, "adapter base W0")?;
        layer.base = Some(base);
        Ok(layer)
    }

    /// A layer from given factors; checks that the shapes agree and the values are finite.
    pub fn from_factors(
        u: Tensor<B, 2>,
        s: Tensor<B, 2>,
        v: Tensor<B, 2>,
        bias: Option<Tensor<B, 1>>,
    ) -> Result<Self> {
        let mut layer = Self {
            u: u.clone(),
            s: s.clone(),
            v: v.clone(),
            bias: None,
            base: None,
            leaves: None,
            slots: FactorSlots::default(),
            scratch: Vec::new(),
        };
        layer.set_factors(u, s, v)?;
        check_finite(&layer.u, "factor U")?;
        check_finite(&layer.v, "factor V")?;
        if let Some(b) = &bias {
            let m = layer.m();
            if b.dims() != [m] {
                return Err(Error::shape("bias of LowRankLinear", format!("[{m}]"), dims(b)));
            }
            check_finite(b, "bias")?;
        }
        layer.bias = bias;
        Ok(layer)
    }

    /// Replaces the factors; U n×r_u, S r_u×r_v, V m×r_v with n, m unchanged. Rejects
    /// mismatched shapes and a non-finite S (an integrator step that produced a NaN).
    pub fn set_factors(&mut self, u: Tensor<B, 2>, s: Tensor<B, 2>, v: Tensor<B, 2>) -> Result<()> {
        let ([n, ru], [su, sv], [m, rv]) = (u.dims(), s.dims(), v.dims());
        if su != ru || sv != rv {
            return Err(Error::shape(
                "factors of LowRankLinear (S must be r_u×r_v)",
                format!("[{ru}, {rv}]"),
                format!("[{su}, {sv}]"),
            ));
        }
        if (n, m) != (self.n(), self.m()) {
            return Err(Error::shape(
                "factors of LowRankLinear (n×m is fixed)",
                format!("{}×{}", self.n(), self.m()),
                format!("{n}×{m}"),
            ));
        }
        if ru > n || rv > m {
            return Err(Error::shape(
                "factors of LowRankLinear",
                format!("rank ≤ {n}, {m}"),
                format!("{ru}, {rv}"),
            ));
        }
        // Only S is checked here: it is small, and every integrator forms it from the new
        // bases (S̄ = ÛᵀU0S0, R of a QR, Σ of an SVD), so a NaN in U or V reaches S too.
        check_finite(&s, "factor S")?;
        (self.u, self.s, self.v) = (u, s, v);
        Ok(())
    }

    /// Fan-in n.
    pub fn n(&self) -> usize {
        self.u.dims()[0]
    }
    /// Fan-out m.
    pub fn m(&self) -> usize {
        self.v.dims()[0]
    }
    /// Current rank (the width of U; equals V's width between steps).
    pub fn rank(&self) -> usize {
        self.u.dims()[1]
    }
    /// U (n×r_u), orthonormal columns.
    pub fn u(&self) -> &Tensor<B, 2> {
        &self.u
    }
    /// S (r_u×r_v).
    pub fn s(&self) -> &Tensor<B, 2> {
        &self.s
    }
    /// V (m×r_v), orthonormal columns.
    pub fn v(&self) -> &Tensor<B, 2> {
        &self.v
    }
    /// The bias, if any.
    pub fn bias(&self) -> Option<&Tensor<B, 1>> {
        self.bias.as_ref()
    }
    /// The frozen base W0 of an adapter.
    pub fn base(&self) -> Option<&Tensor<B, 2>> {
        self.base.as_ref()
    }
    /// Parameters needed for inference, r(n + m) + r_u·r_v (U, S, V), plus the bias.
    pub fn num_params(&self) -> usize {
        let (ru, rv) = (self.u.dims()[1], self.v.dims()[1]);
        self.n() * ru + self.m() * rv + ru * rv + self.bias.as_ref().map_or(0, |_| self.m())
    }

    /// `U S Vᵀ` (n×m): the low-rank part; for an adapter, the update to the base.
    pub fn delta_weight(&self) -> Tensor<B, 2> {
        self.u.clone().matmul(self.s.clone()).matmul(self.v.clone().transpose())
    }

    /// The effective n×m weight: `W0 + U S Vᵀ` for an adapter, `U S Vᵀ` otherwise.
    pub fn to_dense(&self) -> Tensor<B, 2> {
        match &self.base {
            Some(w0) => w0.clone() + self.delta_weight(),
            None => self.delta_weight(),
        }
    }

    /// Folds an adapter into its base: returns the dense weight and bias.
    pub fn merge(&self) -> (Tensor<B, 2>, Option<Tensor<B, 1>>) {
        (self.to_dense(), self.bias.clone())
    }

    /// `z = x W + b` in the current pass's parametrization (module docs).
    ///
    /// # Shapes
    /// - x: [batch, n]
    /// - output: [batch, m]
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let leaf =
            |t: &Option<Tensor<B, 2>>, default: &Tensor<B, 2>| t.clone().unwrap_or_else(|| default.clone());
        let vt = |v: Tensor<B, 2>| v.transpose();
        let (z, bias) = match &self.leaves {
            None => (self.low_rank_product(x.clone(), &self.u, &self.s, &self.v), self.bias.clone()),
            Some(l) => {
                let z = match l.pass {
                    Pass::K => x.clone().matmul(leaf(&l.k, &self.u)).matmul(vt(self.v.clone())),
                    Pass::L => x.clone().matmul(self.u.clone()).matmul(vt(leaf(&l.l, &self.v))),
                    Pass::S | Pass::Factors | Pass::Dense | Pass::Activations => self.low_rank_product(
                        x.clone(),
                        &leaf(&l.u, &self.u),
                        &leaf(&l.s, &self.s),
                        &leaf(&l.v, &self.v),
                    ),
                    Pass::Tangent => {
                        // x(K Vᵀ + U Lᵀ − U S Vᵀ): equal to x U S Vᵀ in value, but its
                        // gradients are G V, Gᵀ U and −Uᵀ G V without inverting S.
                        let xu = x.clone().matmul(self.u.clone());
                        let xk = x.clone().matmul(leaf(&l.k, &self.u));
                        let first = (xk - xu.clone().matmul(leaf(&l.s, &self.s))).matmul(vt(self.v.clone()));
                        first + xu.matmul(vt(leaf(&l.l, &self.v)))
                    }
                };
                (z, l.bias.clone())
            }
        };
        let z = match &self.base {
            Some(w0) => z + x.clone().matmul(w0.clone()),
            None => z,
        };
        let z = match bias {
            Some(b) => z + b.unsqueeze::<2>(),
            None => z,
        };
        match self.leaves.as_ref().and_then(|l| l.recorded.as_ref()) {
            Some(recorded) => {
                let probe = Tensor::<B, 2>::zeros(z.dims(), &z.device()).require_grad();
                recorded.lock().expect("no panic while recording").push((x.detach(), probe.clone()));
                z + probe
            }
            None => z,
        }
    }

    fn low_rank_product(
        &self,
        x: Tensor<B, 2>,
        u: &Tensor<B, 2>,
        s: &Tensor<B, 2>,
        v: &Tensor<B, 2>,
    ) -> Tensor<B, 2> {
        x.matmul(u.clone()).matmul(s.clone()).matmul(v.clone().transpose())
    }

    /// Steps the bias with its gradient from the current pass, if both exist.
    pub fn step_bias(&mut self, grad: Option<Tensor<B, 1>>, opt: &Optimizer) {
        if let Some(g) = grad {
            if let Some(b) = self.bias.take() {
                self.bias = Some(opt.step_vector(b, g, &mut self.slots.bias));
            }
        }
    }
}

impl<B: AutodiffBackend> LowRankLinear<B> {
    /// Makes the leaves of `pass` trainable (module docs); the next forward uses them.
    pub fn begin_pass(&mut self, pass: Pass) {
        let leaf = |t: Tensor<B, 2>| Some(t.detach().require_grad());
        let mut leaves =
            Leaves { pass, k: None, l: None, s: None, u: None, v: None, bias: None, recorded: None };
        match pass {
            Pass::K => leaves.k = leaf(self.u.clone().matmul(self.s.clone())),
            Pass::L => leaves.l = leaf(self.v.clone().matmul(self.s.clone().transpose())),
            Pass::S => leaves.s = leaf(self.s.clone()),
            Pass::Tangent => {
                leaves.k = leaf(self.u.clone().matmul(self.s.clone()));
                leaves.l = leaf(self.v.clone().matmul(self.s.clone().transpose()));
                leaves.s = leaf(self.s.clone());
            }
            Pass::Factors => {
                leaves.u = leaf(self.u.clone());
                leaves.v = leaf(self.v.clone());
            }
            Pass::Activations => leaves.recorded = Some(Recorded::default()),
            Pass::Dense => {}
        }
        leaves.bias = self.bias.clone().map(|b| b.detach().require_grad());
        self.leaves = Some(leaves);
    }

    /// Drops this pass's leaves and the step's scratch: the step was abandoned (a NaN loss).
    pub fn abort_step(&mut self) {
        self.leaves = None;
        self.scratch.clear();
    }

    /// The gradients of this pass's leaves, and the leaves' values (K0, L0, …) dropped.
    pub fn take_grads(&mut self, grads: &B::Gradients) -> FactorGrads<B> {
        let Some(l) = self.leaves.take() else {
            return FactorGrads::default();
        };
        let g2 = |t: Option<Tensor<B, 2>>| {
            t.and_then(|t| t.grad(grads)).map(|g| contiguous(Tensor::from_inner(g)))
        };
        let (mut input, mut output_grad) = (None, None);
        if let Some(recorded) = l.recorded {
            let calls = std::mem::take(&mut *recorded.lock().expect("no panic while recording"));
            // A layer called k times in the pass has G = Σ xᵢᵀ δᵢ = [x₁; …]ᵀ [δ₁; …].
            let (xs, deltas): (Vec<_>, Vec<_>) =
                calls.into_iter().filter_map(|(x, p)| Some((x, Tensor::from_inner(p.grad(grads)?)))).unzip();
            let stack = |mut t: Vec<Tensor<B, 2>>| match t.len() {
                0 => None,
                1 => t.pop(),
                _ => Some(Tensor::cat(t, 0)),
            };
            (input, output_grad) = (stack(xs), stack(deltas));
        }
        FactorGrads {
            input,
            output_grad,
            k: g2(l.k),
            l: g2(l.l),
            s: g2(l.s),
            u: g2(l.u),
            v: g2(l.v),
            bias: l.bias.and_then(|b| b.grad(grads)).map(Tensor::from_inner),
        }
    }
}

/// `t` with its elements stored in row-major order.
///
/// Autodiff hands back the gradient of a leaf used transposed in the forward (L in `x U Lᵀ`,
/// V in `x U S Vᵀ`) as a transposed view, and burn-flex applies element-wise ops to such a view
/// one strided index at a time: an SGD step on a 500×54 one took 184 µs against 28 µs for the
/// same step after this copy (measured). A flattening reshape copies a non-contiguous tensor
/// once and only relabels a contiguous one; the values, and so every step, are unchanged.
fn contiguous<B: Backend>(t: Tensor<B, 2>) -> Tensor<B, 2> {
    let dims = t.dims();
    t.reshape([dims[0] * dims[1]]).reshape(dims)
}

impl<B: Backend> fmt::Display for LowRankLinear<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "LowRankLinear {{n: {}, m: {}, r: {}, bias: {}, adapter: {}, params: {}}}",
            self.n(),
            self.m(),
            self.rank(),
            self.bias.is_some(),
            self.base.is_some(),
            self.num_params()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use rand::SeedableRng;

    type B = NdArray<f64>;

    fn max_abs(t: Tensor<B, 2>) -> f64 {
        t.abs().max().into_scalar()
    }

    #[test]
    fn contiguous_keeps_a_transposed_views_shape_and_values() {
        let device = Default::default();
        let t = Tensor::<crate::CpuBackend, 2>::from_data([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], &device);
        let view = t.clone().transpose();
        let copy = contiguous(view.clone());
        assert_eq!(copy.dims(), [3, 2]);
        assert_eq!(copy.to_data(), view.to_data());
        assert_eq!(contiguous(t.clone()).to_data(), t.to_data());
    }

    #[test]
    fn random_init_is_orthonormal_with_the_documented_scale() {
        let mut rng = StdRng::seed_from_u64(0);
        let layer =
            LowRankLinear::<B>::random(50, 30, 5, true, 2f64.sqrt(), &mut rng, &Default::default()).unwrap();
        let eye = Tensor::<B, 2>::eye(5, &Default::default());
        assert!(max_abs(layer.u().clone().transpose().matmul(layer.u().clone()) - eye.clone()) < 1e-13);
        assert!(max_abs(layer.v().clone().transpose().matmul(layer.v().clone()) - eye) < 1e-13);
        let fro2 = layer.to_dense().powf_scalar(2.0).sum().into_scalar();
        assert!((fro2 - 2.0 * 30.0).abs() < 1e-10, "‖W‖² = gain²·m, got {fro2}");
        assert_eq!(
            layer.to_string(),
            "LowRankLinear {n: 50, m: 30, r: 5, bias: true, adapter: false, params: 455}"
        );
    }

    #[test]
    fn from_dense_by_rank_is_the_best_approximation() {
        let device = Default::default();
        let w = Tensor::<B, 2>::from_data(
            [[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.5], [0.0, 0.0, 0.0]],
            &device,
        );
        let layer = LowRankLinear::from_dense(&w, Some(2), &TruncationConfig::default(), None).unwrap();
        assert_eq!(layer.rank(), 2);
        let err = (layer.to_dense() - w.clone()).powf_scalar(2.0).sum().sqrt().into_scalar();
        assert!((err - 0.5).abs() < 1e-12, "‖W − W_2‖_F = σ_3");
        let by_tol = LowRankLinear::from_dense(&w, None, &TruncationConfig::relative(0.2), None).unwrap();
        assert_eq!(by_tol.rank(), 2, "0.5 < 0.2·‖σ‖ = 0.73");
    }

    #[test]
    fn adapter_starts_as_its_base() {
        let device = Default::default();
        let mut rng = StdRng::seed_from_u64(1);
        let base = Tensor::<B, 2>::random([6, 4], burn::tensor::Distribution::Default, &device);
        let bias = Tensor::<B, 1>::from_data([0.1, 0.2, 0.3, 0.4], &device);
        let layer = LowRankLinear::adapter(base.clone(), 2, Some(bias.clone()), &mut rng).unwrap();
        let x = Tensor::<B, 2>::random([3, 6], burn::tensor::Distribution::Default, &device);
        let expected = x.clone().matmul(base) + bias.unsqueeze::<2>();
        assert!(max_abs(layer.forward(x) - expected) < 1e-14);
    }

    #[test]
    fn mismatched_shapes_and_nan_are_errors() {
        let device = Default::default();
        let u = Tensor::<B, 2>::zeros([5, 2], &device);
        let v = Tensor::<B, 2>::zeros([4, 2], &device);
        let err = LowRankLinear::from_factors(u.clone(), Tensor::zeros([3, 2], &device), v.clone(), None)
            .unwrap_err();
        assert!(matches!(err, Error::Shape { .. }), "{err}");
        let err = LowRankLinear::from_factors(
            u.clone(),
            Tensor::zeros([2, 2], &device),
            v.clone(),
            Some(Tensor::zeros([5], &device)),
        )
        .unwrap_err();
        assert!(err.to_string().contains("bias"), "{err}");
        let s = Tensor::<B, 2>::from_data([[1.0, f64::NAN], [0.0, 1.0]], &device);
        let err = LowRankLinear::from_factors(u, s, v, None).unwrap_err();
        assert!(matches!(err, Error::NonFinite { .. }), "{err}");
        let mut rng = StdRng::seed_from_u64(0);
        assert!(LowRankLinear::<B>::random(4, 3, 4, false, 1.0, &mut rng, &device).is_err());
    }
}
