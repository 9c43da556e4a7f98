//! The host halves of decompositions whose tall factors stay on the device.
//!
//! A tall X (p×k, p ≫ k) stays where it is: only its k×k Gram matrix G = XᵀX comes to the
//! host, and only a small transform goes back, the product with X being formed on the device.
//! That is what lets a phase of the update batch every layer into one read and one upload
//! (`integrators::batched`).
//!
//! - [`cholesky_step`]: one CholeskyQR pass, D⁻¹GD⁻¹ = RᵀR with D = diag(G)^{1/2}, so that
//!   X = (X T) R̃ with T = D⁻¹R⁻¹, R̃ = R D, and X T orthonormal to about ε κ² (κ of the
//!   column-scaled X, ε that of the arithmetic that formed G). Two passes (CholeskyQR2)
//!   reach ε while κ stays well below ε^{-1/2}; the second pass checks that the first got
//!   close (‖D⁻¹GD⁻¹ − I‖_F ≤ 0.5), as [`super::cholesky_qr2`] does.
//! - [`next_pass`]: the passes of an orthonormalisation that reads one Gram matrix per round,
//!   for κ up to about ε^{-1}: a first pass that CholeskyQR could not trust factors
//!   D⁻¹GD⁻¹ + sI instead (shifted CholeskyQR, Fukaya, Kannan, Nakatsukasa, Yamamoto,
//!   Yanagisawa 2020), which exists for any X and leaves X T with κ about √s·κ(X); CholeskyQR2
//!   finishes (shifted CholeskyQR3: three rounds, four when κ(X) nears ε^{-1}).
//! - [`gram_truncation`]: G = Z Λ Zᵀ, σ = √λ, the rank r1 the truncation rule picks and the
//!   kept eigenvectors Z_k. λ is accurate to about ε‖X‖², so σᵢ has relative error ε(σ₁/σᵢ)²:
//!   the caller names the smallest σ_{r1}/σ₁ it accepts.
#![allow(non_snake_case)]

use faer::linalg::triangular_inverse::invert_upper_triangular;
use faer::{Mat, MatRef, Par, Side};

use super::qr::departure;
use super::truncate::TruncationConfig;

/// One CholeskyQR pass from a Gram matrix: `X = (X T) R`.
pub struct CholeskyStep {
    /// k×k, applied on the right of X: X T has orthonormal columns.
    pub T: Mat<f64>,
    /// k×k upper triangular, T⁻¹.
    pub R: Mat<f64>,
}

/// CholeskyQR of X from G = XᵀX (module docs), or `None` for a zero or non-finite column, a
/// Gram matrix that is not positive definite in f64, or (with `max_departure`) a scaled Gram
/// matrix further than that from I.
pub fn cholesky_step(G: MatRef<'_, f64>, max_departure: Option<f64>) -> Option<CholeskyStep> {
    factor(G, max_departure, 0.0).map(|(step, _)| step)
}

/// The pass [`next_pass`] picks for one round.
pub struct GramPass {
    /// X ← X T.
    pub step: CholeskyStep,
    /// Whether this is the last pass (X T orthonormal to round-off) or another round follows.
    pub last: bool,
}

/// Largest estimate k·u·‖R̃⁻¹‖_F² ([`next_pass`]) of the departure from orthonormality that a
/// plain pass may leave. The estimate runs high (the F-norm, and Gram errors of f32 device
/// products below k·u), so the bound is above the next round's 0.5: in `dlrt bench`'s f32 MLP
/// on MNIST, 8, 32 and no bound at all left the same augmentations needing a third round, 2
/// half as many again and 0.5 almost three times as many. A plain pass that misses is caught
/// by the next round's check, which then takes another pass.
const PLAIN_PASS_MAX_ESTIMATE: f64 = 8.0;

/// The pass of round `round` (from 1) of orthonormalising X (p×k) from its current Gram
/// matrix G, when G was formed in arithmetic of unit round-off `u`; `None` when G has a zero
/// or non-finite column, or when X would not be orthonormal within `max_rounds`.
///
/// A round after the first whose G is within 0.5 of I (scaled) takes the last pass, as
/// CholeskyQR2's second does. Otherwise a plain pass, where the departure it leaves, about
/// ‖ΔG‖‖R̃⁻¹‖² for the error ΔG of G, is estimated small enough (`PLAIN_PASS_MAX_ESTIMATE`).
/// Otherwise a shifted pass on D⁻¹GD⁻¹ + sI, after which κ(X T) ≈ √(s/‖X̃‖²)·κ(X̃). The
/// paper's s = 11(pk + k(k+1))·u·‖X̃‖² bounds the worst case of ΔG; in f32 at these sizes it
/// is about 1 % of ‖X̃‖², which brings κ down only tenfold per round. Rounding errors of
/// random sign grow like √p rather than p (Higham and Mary 2019), so s = √p·u·‖X̃‖_F² is
/// tried first and the paper's s only where that Cholesky fails.
pub fn next_pass(G: MatRef<'_, f64>, p: usize, u: f64, round: usize, max_rounds: usize) -> Option<GramPass> {
    let k = G.nrows() as f64;
    if round >= 2 {
        if let Some(step) = cholesky_step(G, Some(0.5)) {
            return Some(GramPass { step, last: true });
        }
    }
    if round >= max_rounds {
        return None;
    }
    if let Some((step, inverse_norm2)) = factor(G, None, 0.0) {
        if k * u * inverse_norm2 <= PLAIN_PASS_MAX_ESTIMATE {
            return Some(GramPass { step, last: false });
        }
    }
    // ‖X̃‖_F² = k: the scaled columns have unit norm.
    let probable = (p as f64).sqrt() * u * k;
    let worst = 11.0 * (p as f64 * k + k * (k + 1.0)) * u * k;
    let (step, _) = factor(G, None, probable).or_else(|| factor(G, None, worst))?;
    Some(GramPass { step, last: false })
}

/// CholeskyQR pass on G + shift·I after the column scaling (module docs), with ‖R⁻¹‖_F² of the
/// scaled factor; `None` as for [`cholesky_step`].
fn factor(G: MatRef<'_, f64>, max_departure: Option<f64>, shift: f64) -> Option<(CholeskyStep, f64)> {
    let k = G.nrows();
    if k == 0 || G.ncols() != k || !G.is_all_finite() {
        return None;
    }
    super::sequential();
    let d: Vec<f64> = (0..k).map(|j| G[(j, j)].sqrt()).collect();
    if d.iter().any(|&x| !(x.is_finite() && x > 0.0)) {
        return None;
    }
    let mut scaled = Mat::from_fn(k, k, |i, j| G[(i, j)] / (d[i] * d[j]));
    if let Some(limit) = max_departure {
        let departure = departure(scaled.as_ref());
        if departure.is_nan() || departure > limit {
            return None;
        }
    }
    for j in 0..k {
        scaled[(j, j)] += shift;
    }
    let R = scaled.llt(Side::Lower).ok()?.L().transpose().to_owned();
    let mut R_inv = Mat::<f64>::zeros(k, k);
    invert_upper_triangular(R_inv.as_mut(), R.as_ref(), Par::Seq);
    if !R_inv.is_all_finite() {
        return None;
    }
    let step = CholeskyStep {
        T: Mat::from_fn(k, k, |i, j| R_inv[(i, j)] / d[i]),
        R: Mat::from_fn(k, k, |i, j| R[(i, j)] * d[j]),
    };
    Some((step, R_inv.squared_norm_l2()))
}

/// The truncation of X (p×q) read from its Gram matrix.
pub struct GramTruncation {
    /// q×r1, the eigenvectors of G for the r1 largest eigenvalues, orthonormal.
    pub Z: Mat<f64>,
    /// All q singular values √λ, nonincreasing.
    pub sigma: Vec<f64>,
    /// The kept rank r1.
    pub rank: usize,
}

/// Eigendecomposition of G = XᵀX (q×q) and the truncation `cfg` picks for a layer of size
/// n×m; `None` when G is not finite, X is zero, or σ_{r1} < `min_ratio`·σ₁ (module docs).
pub fn gram_truncation(
    G: MatRef<'_, f64>,
    cfg: &TruncationConfig,
    n: usize,
    m: usize,
    min_ratio: f64,
) -> Option<GramTruncation> {
    let q = G.nrows();
    if q == 0 || G.ncols() != q || !G.is_all_finite() {
        return None;
    }
    super::sequential();
    let eig = G.self_adjoint_eigen(Side::Lower).ok()?;
    let (lambda, Z) = (eig.S().column_vector(), eig.U());
    let mut order: Vec<usize> = (0..q).collect();
    order.sort_by(|&i, &j| lambda[j].total_cmp(&lambda[i]));
    let sigma: Vec<f64> = order.iter().map(|&i| lambda[i].max(0.0).sqrt()).collect();
    let r1 = cfg.rank(&sigma, n, m);
    // σ is never NaN here (f64::max returns 0 for a NaN λ): a zero matrix has σ₁ = 0.
    if r1 == 0 || sigma[0] <= 0.0 || sigma[r1 - 1] < min_ratio * sigma[0] {
        return None;
    }
    Some(GramTruncation { Z: Mat::from_fn(q, r1, |i, j| Z[(i, order[j])]), sigma, rank: r1 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::truncate::tests::with_spectrum;

    #[test]
    fn two_cholesky_steps_orthonormalise_a_graded_matrix() {
        // κ = 1e5 after scaling: one pass leaves about ε κ² = 1e-6, the second repairs it.
        let sigma: Vec<f64> = (0..10).map(|i| 10f64.powf(-5.0 * i as f64 / 9.0)).collect();
        let x = with_spectrum(300, &sigma, 3);
        let first = cholesky_step((x.transpose() * &x).as_ref(), None).expect("positive definite");
        let x1 = &x * &first.T;
        let second = cholesky_step((x1.transpose() * &x1).as_ref(), Some(0.5)).expect("close to I");
        let q = &x1 * &second.T;
        let eye = Mat::<f64>::identity(10, 10);
        assert!((q.transpose() * &q - &eye).norm_max() < 1e-13);
        let back = &q * (&second.R * &first.R);
        assert!((back - &x).norm_max() < 1e-13, "X = Q R2 R1");
    }

    #[test]
    fn a_shifted_first_pass_orthonormalises_beyond_cholesky_qr2() {
        // κ = 1e13 after scaling: G = XᵀX (κ² = 1e26) is not positive definite in f64, so
        // CholeskyQR2 refuses; shifted CholeskyQR3 gets there in three rounds.
        let sigma: Vec<f64> = (0..10).map(|i| 10f64.powf(-13.0 * i as f64 / 9.0)).collect();
        let x = with_spectrum(300, &sigma, 5);
        let gram = |x: &Mat<f64>| x.transpose() * x;
        let u = f64::EPSILON / 2.0;
        let cholesky_qr2 = cholesky_step(gram(&x).as_ref(), None)
            .and_then(|s| cholesky_step(gram(&(&x * &s.T)).as_ref(), Some(0.5)));
        assert!(cholesky_qr2.is_none(), "the case must be beyond CholeskyQR2");
        let (mut q, mut R, mut rounds) = (x.clone(), Mat::<f64>::identity(10, 10), 0);
        for round in 1..=4 {
            let pass = next_pass(gram(&q).as_ref(), 300, u, round, 4).expect("a pass within 4 rounds");
            q = &q * &pass.step.T;
            R = &pass.step.R * &R;
            rounds = round;
            if pass.last {
                break;
            }
        }
        assert_eq!(rounds, 3, "a shifted pass, then CholeskyQR2");
        let eye = Mat::<f64>::identity(10, 10);
        assert!((q.transpose() * &q - &eye).norm_max() < 1e-14, "Q orthonormal");
        let back = (&q * &R - &x).norm_max();
        assert!(back < 1e-14, "X = Q R3 R2 R1: {back:e}");
        assert!(next_pass(gram(&x).as_ref(), 300, u, 1, 1).is_none(), "no pass beyond max_rounds");
    }

    #[test]
    fn cholesky_step_refuses_zero_columns_and_far_gram_matrices() {
        let mut g = Mat::<f64>::identity(3, 3);
        g[(1, 1)] = 0.0;
        assert!(cholesky_step(g.as_ref(), None).is_none());
        let far = Mat::from_fn(3, 3, |i, j| if i == j { 1.0 } else { 0.9 });
        assert!(cholesky_step(far.as_ref(), Some(0.5)).is_none());
        assert!(cholesky_step(far.as_ref(), None).is_some());
    }

    #[test]
    fn gram_truncation_keeps_the_leading_eigenvectors() {
        let sigma: Vec<f64> = (0..12).map(|i| 2.0 * 0.6f64.powi(i)).collect();
        let x = with_spectrum(80, &sigma, 4);
        let cfg = TruncationConfig::relative(0.05);
        let t = gram_truncation((x.transpose() * &x).as_ref(), &cfg, 80, 80, 1e-4).unwrap();
        assert_eq!(t.rank, cfg.rank(&sigma, 80, 80));
        for (a, b) in t.sigma.iter().zip(&sigma) {
            assert!((a - b).abs() < 1e-12 * sigma[0]);
        }
        // X Z_k Z_kᵀ is the best rank-r1 approximation: its error is the discarded tail (T5).
        let err = (&x - &x * &t.Z * t.Z.transpose()).norm_l2();
        let tail = sigma[t.rank..].iter().map(|s| s * s).sum::<f64>().sqrt();
        assert!((err - tail).abs() < 1e-12);
        assert!(gram_truncation(Mat::<f64>::zeros(4, 4).as_ref(), &cfg, 9, 9, 1e-4).is_none());
    }
}
