//! The truncation rule that chooses the rank after each rank-adaptive step.
//!
//! Given the singular values σ₁ ≥ … ≥ σ_k of the augmented core, keep the smallest r1 with
//!
//! ```text
//! ‖(σ_{r1+1}, …, σ_k)‖₂ < ϑ ‖σ‖₂        (relative, the default)
//! ‖(σ_{r1+1}, …, σ_k)‖₂ < ϑ             (absolute)
//! ```
//!
//! then clamp r1 to [r_min, r_max], where r_max never exceeds min(n, m) nor k. Dropping the
//! tail changes W by exactly ‖σ_{r1+1:}‖₂ in Frobenius norm (property T5 of the notes), so the
//! relative rule bounds the truncation error by ϑ‖W‖_F.

use burn::tensor::{backend::Backend, Tensor};
use faer::{Mat, MatRef};
use serde::{Deserialize, Serialize};

use super::convert::{from_faer, to_faer, HostClock};
use super::svd::thin_svd;
use crate::{Error, Result};

/// Tolerance and rank bounds of the truncation step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TruncationConfig {
    /// ϑ (`tau` in the paper's code): relative tolerance in (0, 1), or an absolute one when
    /// `absolute` is set.
    #[serde(default = "default_tol")]
    pub tol: f64,
    /// Read `tol` as an absolute bound on the discarded singular values' 2-norm.
    #[serde(default)]
    pub absolute: bool,
    /// Smallest rank the truncation may choose (at least 1).
    #[serde(default = "default_r_min")]
    pub r_min: usize,
    /// Largest rank; `None` means min(n, m) of the layer.
    #[serde(default)]
    pub r_max: Option<usize>,
}

fn default_tol() -> f64 {
    0.01
}

fn default_r_min() -> usize {
    1
}

impl Default for TruncationConfig {
    fn default() -> Self {
        Self { tol: default_tol(), absolute: false, r_min: default_r_min(), r_max: None }
    }
}

impl TruncationConfig {
    /// Relative tolerance ϑ with no rank bounds beyond the layer's size.
    pub fn relative(tol: f64) -> Self {
        Self { tol, ..Self::default() }
    }

    /// Sets the rank bounds.
    pub fn with_bounds(mut self, r_min: usize, r_max: Option<usize>) -> Self {
        self.r_min = r_min;
        self.r_max = r_max;
        self
    }

    /// Checks ranges: ϑ in (0, 1) (relative) or ϑ > 0 (absolute); 1 ≤ r_min ≤ r_max.
    pub fn validate(&self) -> Result<()> {
        if self.absolute {
            if !(self.tol.is_finite() && self.tol > 0.0) {
                return Err(Error::config("tol", self.tol, "a finite absolute tolerance > 0"));
            }
        } else if !(self.tol > 0.0 && self.tol < 1.0) {
            return Err(Error::config("tol", self.tol, "a relative tolerance in (0, 1)"));
        }
        if self.r_min == 0 {
            return Err(Error::config("r_min", self.r_min, "at least 1"));
        }
        if let Some(r_max) = self.r_max {
            if r_max < self.r_min {
                return Err(Error::config("r_max", r_max, &format!("at least r_min = {}", self.r_min)));
            }
        }
        Ok(())
    }

    /// The rank to keep for singular values `sigma` of a layer of size n×m.
    pub fn rank(&self, sigma: &[f64], n: usize, m: usize) -> usize {
        let r_max = self.r_max.unwrap_or(usize::MAX).min(n).min(m);
        let threshold = if self.absolute { self.tol } else { self.tol * norm2(sigma) };
        truncate(sigma, threshold, self.r_min, r_max)
    }
}

fn norm2(x: &[f64]) -> f64 {
    x.iter().map(|s| s * s).sum::<f64>().sqrt()
}

/// Smallest r1 with ‖σ_{r1+1:}‖₂ < `threshold`, clamped to [r_min, min(r_max, σ.len())].
///
/// `sigma` must be sorted nonincreasing (as an SVD returns it). A threshold ≤ 0 drops
/// nothing (no tail is below it); when every σ is zero, r_min is returned.
pub fn truncate(sigma: &[f64], threshold: f64, r_min: usize, r_max: usize) -> usize {
    let r_max = r_max.min(sigma.len());
    let r_min = r_min.min(r_max);
    // Accumulate the tail from the smallest value upwards: tail[r1] = ‖σ_{r1+1:}‖₂.
    let mut tail_sq = 0.0;
    let mut r1 = sigma.len();
    for (i, s) in sigma.iter().enumerate().rev() {
        let with_i = tail_sq + s * s;
        if with_i.sqrt() < threshold {
            tail_sq = with_i;
            r1 = i;
        } else {
            break;
        }
    }
    if norm2(sigma) == 0.0 {
        r1 = r_min;
    }
    r1.clamp(r_min, r_max)
}

/// A truncated SVD `A ≈ P Σ Qᵀ` of a small core, on the core's device.
pub struct TruncatedSvd<B: Backend> {
    /// p×r1, orthonormal columns.
    pub P: Tensor<B, 2>,
    /// r1×r1 diagonal.
    pub Sigma: Tensor<B, 2>,
    /// q×r1, orthonormal columns.
    pub Q: Tensor<B, 2>,
    /// All singular values before truncation, nonincreasing.
    pub sigma: Vec<f64>,
}

impl<B: Backend> TruncatedSvd<B> {
    /// The kept rank r1.
    pub fn rank(&self) -> usize {
        self.Sigma.dims()[0]
    }
}

/// SVD of `a` (p×q, on the host) truncated by `cfg` for a layer of size n×m.
///
/// One device→host copy of `a`; P, Σ, Q are copied back. When the backend computes in f32 or
/// less, tall and square matrices go through [`gram_svd`] if its accuracy check passes (its
/// error bound, 1e-8, is then below the factors' own round-off); otherwise, and always in f64,
/// through [`thin_svd`].
pub fn truncated_svd<B: Backend>(
    a: &Tensor<B, 2>,
    cfg: &TruncationConfig,
    n: usize,
    m: usize,
    context: &str,
) -> Result<TruncatedSvd<B>> {
    let _clock = HostClock::svd();
    let host = to_faer(a);
    let t = host_truncated_svd(host.as_ref(), cfg, n, m, super::single_precision::<B>(), context)?;
    let device = a.device();
    Ok(TruncatedSvd {
        P: from_faer(t.P.as_ref(), &device),
        Sigma: from_faer(t.Sigma.as_ref(), &device),
        Q: from_faer(t.Q.as_ref(), &device),
        sigma: t.sigma,
    })
}

/// [`truncated_svd`]'s host half, on a matrix already read: the same P, Σ, Q on the host.
pub struct HostTruncatedSvd {
    /// p×r1, orthonormal columns.
    pub P: Mat<f64>,
    /// r1×r1 diagonal.
    pub Sigma: Mat<f64>,
    /// q×r1, orthonormal columns.
    pub Q: Mat<f64>,
    /// All singular values before truncation, nonincreasing.
    pub sigma: Vec<f64>,
}

/// [`truncated_svd`] of `a` on the host; `f32_accuracy` when the factors are f32 or less (then
/// [`gram_svd`] may serve). A non-finite `a` is an error naming `context`.
pub fn host_truncated_svd(
    a: MatRef<'_, f64>,
    cfg: &TruncationConfig,
    n: usize,
    m: usize,
    f32_accuracy: bool,
    context: &str,
) -> Result<HostTruncatedSvd> {
    if !a.is_all_finite() {
        return Err(Error::NonFinite { context: context.to_string() });
    }
    let gram = if f32_accuracy { gram_svd(a, cfg, n, m) } else { None };
    let (P, sigma, Q, r1) = match gram {
        Some(g) => (g.P, g.sigma, g.Q, g.rank),
        None => {
            // All min(p, q) columns; only the first r1 are kept below.
            let svd = thin_svd(a, context)?;
            let r1 = cfg.rank(&svd.sigma, n, m);
            (svd.U, svd.sigma, svd.V, r1)
        }
    };
    Ok(HostTruncatedSvd {
        P: P.as_ref().subcols(0, r1).to_owned(),
        Sigma: Mat::from_fn(r1, r1, |i, j| if i == j { sigma[i] } else { 0.0 }),
        Q: Q.as_ref().subcols(0, r1).to_owned(),
        sigma,
    })
}

/// The kept part of an SVD computed by [`gram_svd`].
pub struct GramSvd {
    /// p×r1, orthonormal columns.
    pub P: Mat<f64>,
    /// All q singular values, nonincreasing.
    pub sigma: Vec<f64>,
    /// q×r1, orthonormal columns.
    pub Q: Mat<f64>,
    /// The kept rank r1 chosen by `cfg`.
    pub rank: usize,
}

/// Smallest ratio σ_{r1}/σ₁ that [`gram_svd`] accepts (see there).
pub const GRAM_SVD_MIN_RATIO: f64 = 1e-4;

/// Truncated SVD of a tall or square `a` (p×q, p ≥ q) from the eigendecomposition of its
/// q×q Gram matrix: `AᵀA = Z Λ Zᵀ`, σ = √λ, Q = Z and P = A Z Σ⁻¹ for the r1 kept columns.
///
/// At the sizes of a training step this is faster than a QR followed by an SVD of the small
/// factor, which is mostly faer's SVD of the 2r×2r matrix.
/// Squaring loses accuracy in the small singular values: λ is accurate to ε‖A‖², so σᵢ has
/// relative error ε(σ₁/σᵢ)² and P's columns lose orthonormality by the same amount. The
/// decomposition is therefore used only when every kept σᵢ ≥ 1e-4 σ₁ (errors ≤ 1e-8 in f64,
/// below the f32 round-off of the factors it produces) and returns `None` otherwise, as it
/// does for a zero matrix or a wide one. Σ⁻¹ is applied only to those kept values, so nothing
/// small is inverted. The discarded tail's norm, which picks r1, is a sum of eigenvalues and
/// accurate to about √(qε)‖A‖ (≈ 1e-7‖A‖ at q = 54) in any case, far below any useful ϑ‖A‖.
pub fn gram_svd(a: MatRef<'_, f64>, cfg: &TruncationConfig, n: usize, m: usize) -> Option<GramSvd> {
    let (p, q) = a.shape();
    if q == 0 || p < q {
        return None;
    }
    super::sequential();
    let t = super::gram::gram_truncation((a.transpose() * a).as_ref(), cfg, n, m, GRAM_SVD_MIN_RATIO)?;
    let (Q, sigma, r1) = (t.Z, t.sigma, t.rank);
    let mut P = a * &Q;
    for (j, s) in sigma.iter().take(r1).enumerate() {
        super::column(&mut P, j).iter_mut().for_each(|x| *x /= s);
    }
    Some(GramSvd { P, sigma, Q, rank: r1 })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn keeps_smallest_rank_with_tail_below_threshold() {
        let sigma = [4.0, 3.0, 0.3, 0.2, 0.1];
        // ‖(0.3, 0.2, 0.1)‖ = 0.374, ‖(0.2, 0.1)‖ = 0.224, ‖σ‖ = 5.0137
        assert_eq!(truncate(&sigma, 0.375, 1, 5), 2);
        assert_eq!(truncate(&sigma, 0.374, 1, 5), 3);
        assert_eq!(truncate(&sigma, 0.05, 1, 5), 5);
        assert_eq!(truncate(&sigma, 100.0, 1, 5), 1);
        assert_eq!(truncate(&sigma, 100.0, 0, 5), 0);
        // No tail is below a zero threshold: nothing is dropped (the strict rule's "keep 2r").
        assert_eq!(truncate(&sigma, 0.0, 1, 5), 5);
        assert_eq!(truncate(&[0.0; 4], 0.0, 2, 4), 2, "a zero matrix keeps r_min");
    }

    #[test]
    fn clamps_to_bounds_and_to_size() {
        let sigma = [4.0, 3.0, 0.3, 0.2, 0.1];
        assert_eq!(truncate(&sigma, 0.375, 3, 5), 3);
        assert_eq!(truncate(&sigma, 0.05, 1, 4), 4);
        assert_eq!(truncate(&sigma, 0.05, 1, 100), 5);
        let cfg = TruncationConfig::relative(1e-9).with_bounds(1, Some(50));
        assert_eq!(cfg.rank(&sigma, 100, 3), 3, "r_max is at most min(n, m)");
    }

    #[test]
    fn relative_rule_bounds_the_discarded_norm() {
        let sigma: Vec<f64> = (0..30).map(|i| 0.7f64.powi(i)).collect();
        for &tol in &[0.4, 0.2, 0.1, 0.05, 0.02, 0.01] {
            let cfg = TruncationConfig::relative(tol);
            let r1 = cfg.rank(&sigma, 100, 100);
            let tail = norm2(&sigma[r1..]);
            assert!(tail < tol * norm2(&sigma));
            assert!(norm2(&sigma[r1 - 1..]) >= tol * norm2(&sigma), "r1 = {r1} is not minimal");
        }
    }

    /// A p×q matrix with singular values `sigma` (q = its length) and random singular vectors.
    pub(crate) fn with_spectrum(p: usize, sigma: &[f64], seed: u64) -> Mat<f64> {
        use crate::linalg::qr::{tests::gaussian, thin_qr};
        use rand::{rngs::StdRng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(seed);
        let q = sigma.len();
        let (u, v) =
            (thin_qr(gaussian(p, q, &mut rng).as_ref()).Q, thin_qr(gaussian(q, q, &mut rng).as_ref()).Q);
        u * Mat::from_fn(q, q, |i, j| if i == j { sigma[i] } else { 0.0 }) * v.transpose()
    }

    #[test]
    fn gram_svd_agrees_with_the_svd_where_it_accepts() {
        let sigma: Vec<f64> = (0..40).map(|i| 3.0 * 0.8f64.powi(i)).collect();
        let a = with_spectrum(300, &sigma, 11);
        let cfg = TruncationConfig::relative(0.05);
        let g = gram_svd(a.as_ref(), &cfg, 300, 300).expect("kept values are ≥ 1e-4 σ₁");
        assert_eq!(g.rank, cfg.rank(&sigma, 300, 300));
        for (x, y) in g.sigma.iter().zip(&sigma).take(g.rank) {
            assert!((x - y).abs() < 1e-12 * sigma[0], "{x} vs {y}");
        }
        let r = g.rank;
        let eye = Mat::<f64>::identity(r, r);
        assert!((g.P.transpose() * &g.P - &eye).norm_max() < 1e-10);
        assert!((g.Q.transpose() * &g.Q - &eye).norm_max() < 1e-12);
        // P Σ Qᵀ is the best rank-r approximation: the error is the discarded tail (T5).
        let kept = &g.P * Mat::from_fn(r, r, |i, j| if i == j { g.sigma[i] } else { 0.0 }) * g.Q.transpose();
        let err = (&a - kept).norm_l2();
        assert!((err - norm2(&sigma[r..])).abs() < 1e-10 * sigma[0], "{err} vs {}", norm2(&sigma[r..]));
    }

    #[test]
    fn gram_svd_declines_small_kept_values_wide_and_zero_matrices() {
        // ϑ so small that σ down to 3e-6 σ₁ is kept: squaring would lose them.
        let sigma: Vec<f64> = (0..12).map(|i| 10f64.powf(-(i as f64) / 2.0)).collect();
        let a = with_spectrum(50, &sigma, 12);
        assert!(gram_svd(a.as_ref(), &TruncationConfig::relative(1e-9), 50, 50).is_none());
        assert!(gram_svd(a.transpose(), &TruncationConfig::relative(0.1), 50, 50).is_none());
        assert!(gram_svd(Mat::<f64>::zeros(5, 3).as_ref(), &TruncationConfig::relative(0.1), 5, 5).is_none());
    }

    #[test]
    fn zero_spectrum_gives_r_min() {
        assert_eq!(TruncationConfig::relative(0.1).with_bounds(2, None).rank(&[0.0; 6], 10, 10), 2);
    }

    #[test]
    fn validate_rejects_bad_values() {
        for tol in [0.0, 1.0, -0.5, f64::NAN] {
            assert!(TruncationConfig::relative(tol).validate().is_err(), "tol = {tol}");
        }
        let err = TruncationConfig::relative(0.1).with_bounds(5, Some(3)).validate().unwrap_err();
        assert!(err.to_string().contains("r_max"), "{err}");
        assert!(TruncationConfig::relative(0.1).with_bounds(0, None).validate().is_err());
        let abs = TruncationConfig { tol: 3.0, absolute: true, ..Default::default() };
        assert!(abs.validate().is_ok());
    }
}
