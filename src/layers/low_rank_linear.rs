//! `LowRankLinear`: `z = x U S Vᵀ + b`, optionally on a frozen base, `z = x W0 + x U S Vᵀ + b`.
//!
//! U (n×r_u) and V (m×r_v) have orthonormal columns; S (r_u×r_v) is small and need not be
//! diagonal or square: between the passes of a step an integrator may hold an augmented basis
//! (abc-PSI's `Û S̄ V0ᵀ` has S̄ of size 2r×r). W is never formed during training.
//!
//! # Forward parametrizations
//!
//! Each training pass evaluates the same W through different trainable leaves (K, L, S, the
//! free factors, or an activation probe), so that autodiff returns the factor gradient an
//! integrator needs; [`super::passes`] has the table. Sizes follow the current rank exactly:
//! there are no max-rank buffers; only a pass in a rank bucket multiplies with copies padded
//! by exact zeros ([`super::passes`], "Rank buckets").
//!
//! # Initialisation
//!
//! [`LowRankLinear::random`] draws U, V as the Q factors of Gaussian matrices and sets
//! S = s·I with s = gain·√(m/r). Then ‖W‖_F² = gain²·m, the expected squared norm of a dense
//! n×m matrix with entries of variance gain²/n (He/Kaiming-normal for gain = √2), so for
//! isotropic inputs the layer preserves the signal scale of the dense layer it replaces.

use std::fmt;

use burn::module::{Param, ParamId};
use burn::tensor::{backend::Backend, FloatDType, Tensor};
use faer::Mat;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

use super::bias::add_bias;
use super::cast::cast;
use super::compute::autocast;
use super::contiguous::contiguous;
use super::conv2d::Rows;
use super::matmul::matmul;
use super::passes::{Leaves, Pass, Probe};
use crate::linalg::{from_faer, thin_qr, truncated_svd, TruncationConfig};
use crate::{Error, Result};

/// A linear layer stored as `W = U S Vᵀ` (module docs).
///
/// A Burn [`Module`](burn::module::Module) ([`super::module`]): its factors, bias and base are
/// parameters without gradients (integrators, not Burn's optimizers, update them).
#[derive(Clone, Debug)]
pub struct LowRankLinear<B: Backend> {
    pub(super) u: Param<Tensor<B, 2>>,
    pub(super) s: Param<Tensor<B, 2>>,
    pub(super) v: Param<Tensor<B, 2>>,
    pub(super) bias: Option<Param<Tensor<B, 1>>>,
    pub(super) base: Option<Param<Tensor<B, 2>>>,
    pub(super) leaves: Option<Leaves<B>>,
    /// The type the products run in ([`Precision::Bf16`](super::Precision) from scratch);
    /// `None`: the factors' own, with no casts.
    pub(super) autocast: Option<FloatDType>,
}

/// A parameter holding `t`, detached: no Burn optimizer or autodiff pass trains it directly.
pub(super) fn param<B: Backend, const D: usize>(t: Tensor<B, D>) -> Param<Tensor<B, D>> {
    Param::initialized(ParamId::new(), t.detach())
}

/// `t` in place of `p`'s value, under the same parameter id.
fn replace<B: Backend, const D: usize>(p: &mut Param<Tensor<B, D>>, t: Tensor<B, D>) {
    *p = Param::initialized(p.id, t.detach());
}

fn dims<B: Backend, const D: usize>(t: &Tensor<B, D>) -> String {
    format!("{:?}", t.dims())
}

fn random_orthonormal(rows: usize, cols: usize, rng: &mut StdRng) -> Mat<f64> {
    let g = Mat::from_fn(rows, cols, |_, _| StandardNormal.sample(rng));
    thin_qr(g.as_ref()).Q
}

pub(crate) fn check_finite<B: Backend, const D: usize>(t: &Tensor<B, D>, context: &str) -> Result<()> {
    let data = t.to_data();
    crate::linalg::convert::note_host_read(data.bytes.len());
    // f32 (the training backends) is checked as stored, without a widened copy: LoRA checks
    // both factors every step (docs/performance-log.md).
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
        check_rank(r, n, m)?;
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
            // A fixed rank is the truncation with both bounds at r.
            Some(r) => {
                check_rank(r, n, m)?;
                truncation.clone().with_bounds(r, Some(r))
            }
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
        check_rank(r, n, m)?;
        let device = base.device();
        let mut layer = Self::from_factors(
            from_faer(random_orthonormal(n, r, rng).as_ref(), &device),
            Tensor::zeros([r, r], &device),
            from_faer(random_orthonormal(m, r, rng).as_ref(), &device),
            bias,
        )?;
        check_finite(&base, "adapter base W0")?;
        layer.base = Some(param(base));
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
            u: param(u.clone()),
            s: param(s.clone()),
            v: param(v.clone()),
            bias: None,
            base: None,
            leaves: None,
            autocast: None,
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
        layer.bias = bias.map(param);
        Ok(layer)
    }

    /// Replaces the factors; U n×r_u, S r_u×r_v, V m×r_v with n, m unchanged. Rejects
    /// mismatched shapes and a non-finite S (an integrator step that produced a NaN).
    pub fn set_factors(&mut self, u: Tensor<B, 2>, s: Tensor<B, 2>, v: Tensor<B, 2>) -> Result<()> {
        // Only S is checked here: it is small, and every integrator forms it from the new
        // bases (S̄ = ÛᵀU0S0, R of a QR, Σ of an SVD), so a NaN in U or V reaches S too.
        check_finite(&s, "factor S")?;
        self.set_factors_checked_elsewhere(u, s, v)
    }

    /// [`Self::set_factors`] without its finiteness read (a device→host copy per layer): for
    /// callers that have checked the values that made these factors themselves, such as a
    /// phase batched across layers, whose one read of every layer's Gram matrices sees a NaN.
    pub fn set_factors_checked_elsewhere(
        &mut self,
        u: Tensor<B, 2>,
        s: Tensor<B, 2>,
        v: Tensor<B, 2>,
    ) -> Result<()> {
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
        // Stored row-major, as a checkpoint loads them: a transposed view (PSI's S = Rᵀ) would
        // let a product read it in another order and round differently, so that a resumed run
        // left its uninterrupted twin (LeNet-5's convolutions did). A copy only for a view.
        replace(&mut self.u, contiguous(u));
        replace(&mut self.s, contiguous(s));
        replace(&mut self.v, contiguous(v));
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
        self.bias.as_deref()
    }
    /// The frozen base W0 of an adapter.
    pub fn base(&self) -> Option<&Tensor<B, 2>> {
        self.base.as_deref()
    }

    /// Stores the frozen base W0 in `dtype` (bf16 for mixed precision); U, S, V and the bias
    /// keep theirs. [`LowRankLinear::forward`] then multiplies by W0 in `dtype` and adds the
    /// product to the low-rank part in the factors' type.
    pub fn cast_base(&mut self, dtype: FloatDType) {
        self.base = self.base.take().map(|w0| w0.map(|t| cast(t, dtype)));
    }
    /// Runs this layer's products in `dtype` (`None`: in the factors' type, the default) and
    /// returns its output in the factors' type ([`super::Precision`], training from scratch):
    /// x and the factors are cast for the products, the bias is added after the cast back, and
    /// U, S, V, the bias and every gradient an integrator reads keep the factors' type. Set on
    /// dlrt's networks (`Net::set_precision`); the views `Trainer::step_module`
    /// evaluates for a layer of a user's Burn module compute in the factors' type.
    pub fn set_autocast(&mut self, dtype: Option<FloatDType>) {
        self.autocast = dtype;
    }
    /// The type set by [`Self::set_autocast`].
    pub fn autocast(&self) -> Option<FloatDType> {
        self.autocast
    }
    /// Parameters needed for inference, r(n + m) + r_u·r_v (U, S, V), plus the bias.
    pub fn num_params(&self) -> usize {
        let (ru, rv) = (self.u.dims()[1], self.v.dims()[1]);
        self.n() * ru + self.m() * rv + ru * rv + self.bias.as_ref().map_or(0, |_| self.m())
    }

    /// `U S Vᵀ` (n×m): the low-rank part; for an adapter, the update to the base.
    pub fn delta_weight(&self) -> Tensor<B, 2> {
        self.u.val().matmul(self.s.val()).matmul(self.v.val().transpose())
    }

    /// The effective n×m weight: `W0 + U S Vᵀ` for an adapter, `U S Vᵀ` otherwise.
    pub fn to_dense(&self) -> Tensor<B, 2> {
        let delta = self.delta_weight();
        match &self.base {
            Some(w0) => cast(w0.val(), delta.dtype()) + delta,
            None => delta,
        }
    }

    /// Folds an adapter into its base: returns the dense weight and bias.
    pub fn merge(&self) -> (Tensor<B, 2>, Option<Tensor<B, 1>>) {
        (self.to_dense(), self.bias.as_ref().map(|b| b.val()))
    }

    /// `z = x W + b` in the current pass's parametrization (module docs).
    ///
    /// The output has the factors' float type. x may have another (bf16 activations of a
    /// mixed-precision backbone): it is cast to the factors' type for the low-rank part, so
    /// their gradients come back in that type, and to the base's type for `x W0`.
    ///
    /// # Shapes
    /// - x: [batch, n]
    /// - output: [batch, m]
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.forward_rows(&x)
    }

    /// `z = x W + b` for any input that can be multiplied by an n×k factor: a batch of rows
    /// (this layer) or the patches of an image ([`super::conv2d`]), so that a convolution
    /// trains through exactly the parametrizations of a linear layer.
    pub(crate) fn forward_rows(&self, x: &impl Rows<B>) -> Tensor<B, 2> {
        // A layer of a user's Burn module in a training pass evaluates the pass's view of it
        // (`super::visit`).
        if self.leaves.is_none() {
            if let Some(view) = super::visit::published::<B>(self.u.id) {
                return view.forward_rows(x);
            }
        }
        // Every factor and leaf is cast where it enters a product (under autocast), so its
        // gradient comes back through the cast in the factors' type.
        let ac = |t: Tensor<B, 2>| autocast(t, self.autocast);
        let leaf = |t: &Option<Tensor<B, 2>>, default: &Tensor<B, 2>| {
            t.clone().map(ac).unwrap_or_else(|| default.clone())
        };
        let vt = |v: Tensor<B, 2>| v.transpose();
        let usv = |u: Tensor<B, 2>, s: Tensor<B, 2>, v: Tensor<B, 2>| matmul(matmul(x.times(u), s), vt(v));
        let (z, bias) = match &self.leaves {
            None => (
                usv(ac(self.u.val()), ac(self.s.val()), ac(self.v.val())),
                self.bias.as_ref().map(|b| b.val()),
            ),
            Some(l) => {
                // A pass in a rank bucket multiplies with its zero-padded factors (passes.rs).
                let (u, s, v) = match &l.padded {
                    Some(p) => (p.u.clone(), p.s.clone(), p.v.clone()),
                    None => (self.u.val(), self.s.val(), self.v.val()),
                };
                let (u, s, v) = (ac(u), ac(s), ac(v));
                let z = match l.pass {
                    Pass::K => matmul(x.times(leaf(&l.k, &u)), vt(v)),
                    Pass::L => matmul(x.times(u), vt(leaf(&l.l, &v))),
                    Pass::S | Pass::Factors | Pass::Dense | Pass::Activations => {
                        usv(leaf(&l.u, &u), leaf(&l.s, &s), leaf(&l.v, &v))
                    }
                    Pass::Tangent => {
                        // x(K Vᵀ + U Lᵀ − U S Vᵀ): equal to x U S Vᵀ in value, but its
                        // gradients are G V, Gᵀ U and −Uᵀ G V without inverting S.
                        let xu = x.times(u.clone());
                        let xk = x.times(leaf(&l.k, &u));
                        let first = matmul(xk - matmul(xu.clone(), leaf(&l.s, &s)), vt(v.clone()));
                        first + matmul(xu, vt(leaf(&l.l, &v)))
                    }
                };
                (z, l.bias.clone())
            }
        };
        let z = match self.autocast {
            Some(_) => cast(z, self.u.dtype()),
            None => z,
        };
        let z = match &self.base {
            // In bf16 (`Precision`) the frozen product runs in W0's type (`Rows::times` casts x)
            // and is added in the factors'.
            Some(w0) => {
                let dtype = z.dtype();
                z + cast(x.times(w0.val()), dtype)
            }
            None => z,
        };
        let z = match bias {
            Some(b) => add_bias(z, b),
            None => z,
        };
        match self.leaves.as_ref().and_then(|l| l.recorded.as_ref()) {
            Some(recorded) => {
                let (z, probe) = match super::capture::capture(z) {
                    Ok((z, slot)) => (z, Probe::Captured(slot)),
                    Err(z) => {
                        let probe = Tensor::<B, 2>::zeros(z.dims(), &z.device()).require_grad();
                        (z + probe.clone(), Probe::Leaf(probe))
                    }
                };
                let x = cast(x.rows(), self.u.val().dtype()).detach();
                recorded.lock().expect("no panic while recording").push((x, probe));
                z
            }
            None => z,
        }
    }

    /// Replaces the bias, if the layer has one, by `step(bias)` (an optimizer step). The bias
    /// is moved in, not copied, so the step may update its buffer in place.
    #[track_caller]
    pub fn map_bias(&mut self, step: impl FnOnce(Tensor<B, 1>) -> Tensor<B, 1>) {
        if let Some(b) = self.bias.take() {
            let (id, b) = (b.id, b.into_value());
            let b1 = step(b);
            assert_eq!(b1.dims(), [self.m()], "LowRankLinear: the bias keeps its shape");
            self.bias = Some(Param::initialized(id, b1.detach()));
        }
    }
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

/// An error unless 1 ≤ r ≤ min(n, m): the rank an n×m layer can have.
fn check_rank(r: usize, n: usize, m: usize) -> Result<()> {
    if r == 0 || r > n.min(m) {
        return Err(Error::config("rank", r, &format!("1 ≤ rank ≤ min(n, m) = {}", n.min(m))));
    }
    Ok(())
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
