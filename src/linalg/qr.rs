//! Thin QR decomposition `A = Q R` of a tall n×k matrix, and orthonormal bases.
//!
//! Shapes: A n×k, Q n×p, R p×k with p = min(n, k). Q has orthonormal columns even when A is
//! rank-deficient (for example `[K1 | U0]` with K1 in the span of U0).
//!
//! Two algorithms, picked per call:
//! - CholeskyQR2 (Yamamoto, Nakatsukasa, Yanagisawa, Fukaya 2015) on the column-scaled matrix:
//!   two Gram–Cholesky passes, i.e. matrix products and a k×k Cholesky. At the sizes of a
//!   training step (784×54) it takes about half the time of faer's Householder QR, whose
//!   column-by-column updates dominate there (`cargo bench --bench linalg`).
//!   It is accurate to round-off when the scaled matrix has a condition number well below
//!   ε^{-1/2}; the first pass measures that (‖Q1ᵀQ1 − I‖_F) and gives up otherwise.
//! - Householder (faer) when CholeskyQR2 gives up, when a column is zero, or when n < k:
//!   backward stable whatever the data, and the columns beyond the rank are some orthonormal
//!   completion.

use burn::tensor::{backend::Backend, Tensor};
use faer::linalg::matmul::matmul;
use faer::linalg::triangular_inverse::invert_upper_triangular;
use faer::{Accum, Mat, MatMut, MatRef, Par, Side};

use super::column;
use super::convert::{from_faer, to_faer};

/// The factors of a thin QR decomposition.
pub struct ThinQr {
    /// n×p with orthonormal columns, p = min(n, k).
    pub Q: Mat<f64>,
    /// p×k upper triangular.
    pub R: Mat<f64>,
}

/// Thin QR of `a` (n×k): `a = Q R`, `QᵀQ = I`.
pub fn thin_qr(a: MatRef<'_, f64>) -> ThinQr {
    super::sequential();
    cholesky_qr2(a).unwrap_or_else(|| householder_qr(a))
}

/// Thin QR by Householder reflections (faer), for any input.
pub fn householder_qr(a: MatRef<'_, f64>) -> ThinQr {
    super::sequential();
    let qr = a.qr();
    ThinQr { Q: qr.compute_thin_Q(), R: qr.thin_R().to_owned() }
}

/// CholeskyQR2 of `a` with its columns scaled to unit norm, or `None` when it would not be
/// accurate (module docs).
pub fn cholesky_qr2(a: MatRef<'_, f64>) -> Option<ThinQr> {
    let (n, k) = a.shape();
    if k == 0 || n < k {
        return None;
    }
    // Scaling the columns leaves Q unchanged and removes the ill-conditioning that comes from
    // columns of different size (a small gradient step next to an orthonormal basis).
    // Sums of squares, not faer's overflow-safe norm_l2 (which cost more than the whole Gram
    // matrix here, measured): these values come from f32 data, far from overflow.
    let d: Vec<f64> = (0..k).map(|j| a.col(j).squared_norm_l2().sqrt()).collect();
    if d.iter().any(|&x| !(x.is_finite() && x > 0.0)) {
        return None;
    }
    let mut q = a.to_owned();
    for (j, &dj) in d.iter().enumerate() {
        column(&mut q, j).iter_mut().for_each(|x| *x /= dj);
    }
    let R1 = cholesky_pass(&mut q, None)?;
    // The second pass repairs orthogonality to round-off when Q1 is already close to it.
    let R2 = cholesky_pass(&mut q, Some(0.5))?;
    let mut R = R2 * R1;
    for (j, &dj) in d.iter().enumerate() {
        column(&mut R, j).iter_mut().for_each(|x| *x *= dj);
    }
    Some(ThinQr { Q: q, R })
}

/// One Gram–Cholesky pass: `G = QᵀQ = RᵀR`, `Q ← Q R⁻¹`; returns R. With `max_departure`,
/// refuses when ‖G − I‖_F exceeds it.
///
/// Q R⁻¹ is a matrix product with the k×k inverse rather than a triangular solve: faer's solve
/// against the row-major view Qᵀ took longer than inverting R and multiplying (measured at
/// 784×27); the accuracy of CholeskyQR is set by the Gram matrix either way.
fn cholesky_pass(q: &mut Mat<f64>, max_departure: Option<f64>) -> Option<Mat<f64>> {
    let g = q.transpose() * q.as_ref();
    if let Some(limit) = max_departure {
        let departure = departure(g.as_ref());
        // NaN compares false: refuse it too.
        if departure.is_nan() || departure > limit {
            return None;
        }
    }
    let llt = g.llt(Side::Lower).ok()?;
    let R = llt.L().transpose().to_owned();
    let mut R_inv = Mat::<f64>::zeros(R.nrows(), R.ncols());
    invert_upper_triangular(R_inv.as_mut(), R.as_ref(), Par::Seq);
    // Q has unit-scale columns, so with a finite inverse the product cannot overflow: checking
    // the k×k inverse replaces a scan of the n×k result.
    if !R_inv.is_all_finite() {
        return None;
    }
    *q = &*q * R_inv;
    Some(R)
}

/// Orthonormal basis of the column space of a tensor (n×k ↦ n×min(n, k)), via the host.
///
/// One device→host copy of `a` and one host→device copy of Q.
pub fn orth<B: Backend>(a: &Tensor<B, 2>) -> Tensor<B, 2> {
    let f = thin_qr(to_faer(a).as_ref());
    from_faer(f.Q.as_ref(), &a.device())
}

/// An orthonormal basis `[basis | N]` of span([basis | new]) (n×(r + k)), for an orthonormal
/// `basis` (n×r): the augmentation step `orth([K1 | U0])` of the rank-adaptive integrators.
/// The first r columns span `basis` and N is orthogonal to it.
///
/// The basis arrives orthonormal only to the backend's round-off (f32: ~1e-7), and the next
/// step's basis is built from this one, so it is repaired here rather than trusted: one
/// Newton–Schulz step of the polar iteration, `U ← U (3I − UᵀU)/2`, takes a departure δ from
/// orthonormality to O(δ²) at the cost of an r×r Gram matrix, so the error does not build up
/// over steps. `new` is then projected off the basis (twice, as classical Gram–Schmidt
/// needs), which removes the large part of K1 that lies inside span(U0), and only the n×k
/// remainder is orthonormalised (CholeskyQR2): a quarter of the Gram work of a QR of the whole
/// n×2r matrix (scratch timings at 784×(27 + 27): CholeskyQR2 of 784×27 0.19–0.30 ms, of
/// 784×54 0.52–0.70 ms).
/// When the remainder is rank-deficient or too ill-conditioned for CholeskyQR2 (for example
/// `new` inside span(basis), or n < r + k), the whole `[basis | N]` goes through
/// [`thin_qr`], whose Householder fallback completes it with orthonormal columns.
pub fn augment_basis<B: Backend>(new: &Tensor<B, 2>, basis: &Tensor<B, 2>) -> Tensor<B, 2> {
    let (k, r) = (new.dims()[1], basis.dims()[1]);
    // One device→host read of [U0 | K1] (a synchronisation point on a GPU), not two.
    let mut a = to_faer(&Tensor::cat(vec![basis.clone(), new.clone()], 1));
    let device = new.device();
    let gram = a.as_ref().subcols(0, r).transpose() * a.as_ref().subcols(0, r);
    // Outside this the polar step need not converge; the QR of the whole matrix repairs it.
    let nearly_orthonormal = departure(gram.as_ref()) < 0.1;
    if nearly_orthonormal {
        let correction = Mat::<f64>::from_fn(r, r, |i, j| if i == j { 1.5 } else { 0.0 }) - gram * 0.5;
        let repaired = a.as_ref().subcols(0, r) * correction;
        a.as_mut().subcols_mut(0, r).copy_from(&repaired);
    }
    let norms =
        |a: &Mat<f64>| -> Vec<f64> { (r..r + k).map(|j| a.col(j).squared_norm_l2().sqrt()).collect() };
    let before = norms(&a);
    {
        // U and the tail are borrowed side by side from `a`, not copied.
        let (U, mut tail) = a.as_mut().split_at_col_mut(r);
        for _ in 0..2 {
            let c = U.as_ref().transpose() * tail.as_ref();
            subtract_product(tail.as_mut(), U.as_ref(), c.as_ref());
        }
    }
    // A column that lost all but 1e-8 of its norm to the projection is round-off: normalised,
    // it would not be orthogonal to the basis. Such columns (and widths over n) need the QR of
    // the whole matrix, which completes the basis with genuinely orthogonal directions.
    let remainder_is_sound =
        r + k <= a.nrows() && norms(&a).iter().zip(&before).all(|(after, before)| *after > 1e-8 * before);
    if nearly_orthonormal && remainder_is_sound {
        super::sequential();
        if let Some(remainder) = cholesky_qr2(a.as_ref().subcols(r, k)) {
            // The remainder's round-off along U, ε‖N‖, is amplified by R⁻¹ (up to 1/σ_min of
            // the scaled remainder); one more projection takes it back to ε. The columns stay
            // unit to second order in that leak.
            let (U, mut tail) = a.as_mut().split_at_col_mut(r);
            let leak = U.as_ref().transpose() * &remainder.Q;
            tail.copy_from(&remainder.Q);
            subtract_product(tail, U.as_ref(), leak.as_ref());
            return from_faer(a.as_ref(), &device);
        }
    }
    let f = thin_qr(a.as_ref());
    from_faer(f.Q.as_ref(), &device)
}

/// `dst ← dst − a b`, accumulated in place (no temporary for the product).
fn subtract_product(dst: MatMut<'_, f64>, a: MatRef<'_, f64>, b: MatRef<'_, f64>) {
    matmul(dst, Accum::Add, a, b, -1.0, Par::Seq);
}

/// ‖G − I‖_F for a square Gram matrix G; NaN for non-finite input.
fn departure(g: MatRef<'_, f64>) -> f64 {
    let k = g.nrows();
    (0..k)
        .flat_map(|j| (0..k).map(move |i| (i, j)))
        .map(|(i, j)| (g[(i, j)] - if i == j { 1.0 } else { 0.0 }).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// Thin QR of a tensor; returns (Q, R) as tensors on the same device.
pub fn tensor_qr<B: Backend>(a: &Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let f = thin_qr(to_faer(a).as_ref());
    let device = a.device();
    (from_faer(f.Q.as_ref(), &device), from_faer(f.R.as_ref(), &device))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};
    use rand_distr::{Distribution, StandardNormal};

    pub(crate) fn gaussian(rows: usize, cols: usize, rng: &mut StdRng) -> Mat<f64> {
        Mat::from_fn(rows, cols, |_, _| StandardNormal.sample(rng))
    }

    fn max_abs(m: MatRef<'_, f64>) -> f64 {
        let mut worst = 0.0f64;
        for j in 0..m.ncols() {
            for i in 0..m.nrows() {
                worst = worst.max(m[(i, j)].abs());
            }
        }
        worst
    }

    fn orthonormality_error(q: MatRef<'_, f64>) -> f64 {
        let gram = q.transpose() * q;
        max_abs((gram - Mat::<f64>::identity(q.ncols(), q.ncols())).as_ref())
    }

    // Tolerance: Householder QR is backward stable, errors ~ eps·sqrt(n·k).
    fn tol(n: usize, k: usize) -> f64 {
        64.0 * f64::EPSILON * ((n * k) as f64).sqrt()
    }

    #[test]
    fn reconstructs_and_is_orthonormal_over_shapes() {
        let mut rng = StdRng::seed_from_u64(1);
        for &(n, k) in &[(1, 1), (3, 2), (8, 8), (150, 20), (500, 40), (20, 30)] {
            let a = gaussian(n, k, &mut rng);
            let f = thin_qr(a.as_ref());
            let p = n.min(k);
            assert_eq!((f.Q.nrows(), f.Q.ncols()), (n, p));
            assert_eq!((f.R.nrows(), f.R.ncols()), (p, k));
            assert!(orthonormality_error(f.Q.as_ref()) < tol(n, k), "QᵀQ ≠ I for {n}×{k}");
            let err = max_abs((&f.Q * &f.R - &a).as_ref());
            assert!(err < tol(n, k) * max_abs(a.as_ref()), "QR ≠ A for {n}×{k}: {err}");
        }
    }

    #[test]
    fn rank_deficient_input_still_gives_orthonormal_columns() {
        // [K1 | U0] with K1 = U0 M: rank r, 2r columns.
        let mut rng = StdRng::seed_from_u64(2);
        let (n, r) = (60, 5);
        let u0 = thin_qr(gaussian(n, r, &mut rng).as_ref()).Q;
        let k1 = &u0 * gaussian(r, r, &mut rng);
        let mut aug = Mat::<f64>::zeros(n, 2 * r);
        aug.as_mut().subcols_mut(0, r).copy_from(&k1);
        aug.as_mut().subcols_mut(r, r).copy_from(&u0);
        let q = thin_qr(aug.as_ref()).Q;
        assert_eq!(q.ncols(), 2 * r);
        assert!(orthonormality_error(q.as_ref()) < tol(n, 2 * r));
        // span(Q) ⊇ span(U0): the projection of U0 onto Q is U0 itself.
        let proj = &q * (q.transpose() * &u0);
        assert!(max_abs((proj - &u0).as_ref()) < tol(n, 2 * r));
    }

    #[test]
    fn nearly_rank_deficient_input_with_tiny_singular_values() {
        let mut rng = StdRng::seed_from_u64(3);
        let (n, k) = (80, 10);
        let u = thin_qr(gaussian(n, k, &mut rng).as_ref()).Q;
        let v = thin_qr(gaussian(k, k, &mut rng).as_ref()).Q;
        let sigma = Mat::from_fn(k, k, |i, j| if i == j { 10f64.powi(-(i as i32)) } else { 0.0 });
        let a = &u * sigma * v.transpose(); // σ from 1 down to 1e-9
        let q = thin_qr(a.as_ref()).Q;
        assert!(orthonormality_error(q.as_ref()) < tol(n, k));
    }

    #[test]
    fn cholesky_path_is_taken_and_accurate_on_well_conditioned_input() {
        let mut rng = StdRng::seed_from_u64(4);
        // Columns of very different size: scaling makes this well conditioned.
        let mut a = gaussian(784, 54, &mut rng);
        for j in 0..27 {
            a.col_mut(j).iter_mut().for_each(|x| *x *= 1e-6);
        }
        let f = cholesky_qr2(a.as_ref()).expect("well-conditioned after scaling");
        assert!(orthonormality_error(f.Q.as_ref()) < tol(784, 54));
        let err = max_abs((&f.Q * &f.R - &a).as_ref());
        assert!(err < tol(784, 54) * max_abs(a.as_ref()), "QR ≠ A: {err}");
        for i in 0..54 {
            for j in 0..i {
                assert_eq!(f.R[(i, j)], 0.0, "R is upper triangular");
            }
        }
    }

    #[test]
    fn cholesky_path_refuses_ill_conditioned_and_zero_columns() {
        let mut rng = StdRng::seed_from_u64(5);
        let (n, k) = (80, 10);
        let u = thin_qr(gaussian(n, k, &mut rng).as_ref()).Q;
        let v = thin_qr(gaussian(k, k, &mut rng).as_ref()).Q;
        let sigma = Mat::from_fn(k, k, |i, j| if i == j { 10f64.powi(-2 * i as i32) } else { 0.0 });
        let a = &u * sigma * v.transpose(); // condition number 1e18
        assert!(cholesky_qr2(a.as_ref()).is_none());
        let mut z = gaussian(n, k, &mut rng);
        z.col_mut(3).fill(0.0);
        assert!(cholesky_qr2(z.as_ref()).is_none());
        // The public entry point still returns an orthonormal Q through Householder.
        assert!(orthonormality_error(thin_qr(z.as_ref()).Q.as_ref()) < tol(n, k));
    }

    #[test]
    fn augment_basis_stays_orthonormal_for_a_small_ill_conditioned_step() {
        // The remainder N = (I − U0U0ᵀ)K1 is ~1e-4 of K1 and has condition number 1e5 after
        // column scaling: the projection's round-off, amplified by the remainder's R⁻¹, must not
        // leak into the result (without the final projection it departs from orthonormality by
        // 3e-12 here, and by 1e-9 in the abc-PSI one-pass/two-pass equality test).
        use burn::backend::NdArray;
        type B = NdArray<f64>;
        let mut rng = StdRng::seed_from_u64(7);
        let (n, r) = (200, 8);
        let u0 = thin_qr(gaussian(n, r, &mut rng).as_ref()).Q;
        // Nearly collinear columns: scaling them does not help.
        let d = Mat::from_fn(
            r,
            r,
            |i, j| if i == j { 10f64.powf(-5.0 * i as f64 / (r - 1) as f64) } else { 0.0 },
        );
        let mix = thin_qr(gaussian(r, r, &mut rng).as_ref()).Q;
        let k1 = &u0 * gaussian(r, r, &mut rng) * 100.0 + gaussian(n, r, &mut rng) * d * mix * 1e-2;
        let device = Default::default();
        let q =
            to_faer(&augment_basis::<B>(&from_faer(k1.as_ref(), &device), &from_faer(u0.as_ref(), &device)));
        assert_eq!(q.ncols(), 2 * r);
        assert!(orthonormality_error(q.as_ref()) < tol(n, 2 * r), "{:e}", orthonormality_error(q.as_ref()));
    }

    #[test]
    fn augment_basis_spans_both_and_is_orthonormal() {
        use burn::backend::NdArray;
        type B = NdArray<f64>;
        let mut rng = StdRng::seed_from_u64(6);
        let (n, r) = (100, 6);
        let u0 = thin_qr(gaussian(n, r, &mut rng).as_ref()).Q;
        let device = Default::default();
        // K1 = U0 M + a small step outside span(U0), and the degenerate K1 = U0 M.
        for step in [1e-3, 0.0] {
            let k1 = &u0 * gaussian(r, r, &mut rng) + gaussian(n, r, &mut rng) * step;
            let q = to_faer(&augment_basis::<B>(
                &from_faer(k1.as_ref(), &device),
                &from_faer(u0.as_ref(), &device),
            ));
            assert_eq!(q.ncols(), 2 * r);
            assert!(orthonormality_error(q.as_ref()) < tol(n, 2 * r), "step {step}");
            let lead = q.as_ref().subcols(0, r);
            assert!(max_abs((&u0 * (u0.transpose() * lead) - lead).as_ref()) < tol(n, 2 * r), "leading span");
            for b in [&u0, &k1] {
                let proj = &q * (q.transpose() * b);
                assert!(max_abs((proj - b).as_ref()) < tol(n, 2 * r) * max_abs(b.as_ref()).max(1.0));
            }
        }
    }
}
