//! Thin QR decomposition `A = Q R` of a tall n×k matrix, and orthonormal bases.
//!
//! Shapes: A n×k, Q n×p, R p×k with p = min(n, k). Q has orthonormal columns even when A is
//! rank-deficient (for example `[K1 | U0]` with K1 in the span of U0).
//!
//! Two algorithms, picked per call (CholeskyQR2 in f32 or f64, Householder in f64):
//! - CholeskyQR2 (Yamamoto, Nakatsukasa, Yanagisawa, Fukaya 2015) on the column-scaled matrix:
//!   two Gram–Cholesky passes, i.e. matrix products and a k×k Cholesky. At the sizes of a
//!   training step it is faster than faer's Householder QR, whose column-by-column updates
//!   dominate there (`cargo bench --bench linalg`).
//!   It is accurate to round-off when the scaled matrix has a condition number well below
//!   ε^{-1/2}; the first pass measures that (‖Q1ᵀQ1 − I‖_F) and gives up otherwise.
//! - Householder (faer) when CholeskyQR2 gives up, when a column is zero, or when n < k:
//!   backward stable whatever the data, and the columns beyond the rank are some orthonormal
//!   completion.

use burn::tensor::{backend::Backend, Tensor};
use faer::linalg::matmul::matmul;
use faer::linalg::triangular_inverse::invert_upper_triangular;
use faer::{Accum, Mat, MatMut, MatRef, Par, Side};

use super::convert::{f32_matrix, f64_matrix, from_faer, read, to_faer, HostClock};
use super::{column, HostFloat};

/// The factors of a thin QR decomposition.
pub struct ThinQr<T = f64> {
    /// n×p with orthonormal columns, p = min(n, k).
    pub Q: Mat<T>,
    /// p×k upper triangular.
    pub R: Mat<T>,
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
pub fn cholesky_qr2<T: HostFloat>(a: MatRef<'_, T>) -> Option<ThinQr<T>> {
    let (n, k) = a.shape();
    if k == 0 || n < k {
        return None;
    }
    // Scaling the columns leaves Q unchanged and removes the ill-conditioning that comes from
    // columns of different size (a small gradient step next to an orthonormal basis).
    // Sums of squares, not faer's overflow-safe norm_l2 (slower than the whole Gram matrix
    // here): these values come from f32 data, far from overflow.
    let d: Vec<T> = (0..k).map(|j| T::of(a.col(j).squared_norm_l2().into().sqrt())).collect();
    if d.iter().any(|&x| !(x.into().is_finite() && x.into() > 0.0)) {
        return None;
    }
    let scaled = || {
        let mut q = a.to_owned();
        for (j, &dj) in d.iter().enumerate() {
            column(&mut q, j).iter_mut().for_each(|x| *x /= dj);
        }
        q
    };
    let (q, mut R) = match two_passes(scaled()) {
        Some(qr) => qr,
        // In f32 (ε ≈ 1e-7) CholeskyQR2 gives up from κ ≈ 1e3, which gradient steps reach
        // (in a fair share of an MNIST run's augmentations): shifted CholeskyQR3
        // (Fukaya, Kannan, Nakatsukasa, Yamamoto, Yanagisawa 2020) first takes the Cholesky
        // factor of QᵀQ + sI, s = 11(nk + k(k + 1))ε‖Q‖², which exists for any input and
        // brings κ down by about 1/√s, into the range of the two passes after it (tested at
        // κ = 1e4; beyond about 1e5 they refuse and the caller's f64 path takes over). In f64
        // a remainder that needs this goes to Householder instead, as before. The scaled copy
        // is made again rather than kept: the retry is rare, the copy would be per call.
        None if T::SHIFTED_RETRY => {
            let shift = 11.0 * ((n * k + k * (k + 1)) as f64) * T::EPSILON * k as f64;
            let mut q = scaled();
            let R0 = cholesky_pass(&mut q, None, shift)?;
            let (q, R) = two_passes(q)?;
            (q, R * R0)
        }
        None => return None,
    };
    for (j, &dj) in d.iter().enumerate() {
        column(&mut R, j).iter_mut().for_each(|x| *x *= dj);
    }
    Some(ThinQr { Q: q, R })
}

/// Two Gram–Cholesky passes on `q`: (Q, R2 R1), or `None` when either refuses. The second
/// pass repairs orthogonality to round-off when Q1 is already close to it.
fn two_passes<T: HostFloat>(mut q: Mat<T>) -> Option<(Mat<T>, Mat<T>)> {
    let R1 = cholesky_pass(&mut q, None, 0.0)?;
    let R2 = cholesky_pass(&mut q, Some(0.5), 0.0)?;
    Some((q, R2 * R1))
}

/// One Gram–Cholesky pass: `G = QᵀQ + shift·I = RᵀR`, `Q ← Q R⁻¹`; returns R, or `None`
/// with `q` untouched. With `max_departure`, refuses when ‖QᵀQ − I‖_F exceeds it.
///
/// Q R⁻¹ is a matrix product with the k×k inverse rather than a triangular solve: faer's solve
/// against the row-major view Qᵀ is slower than inverting R and multiplying at these sizes;
/// the accuracy of CholeskyQR is set by the Gram matrix either way.
fn cholesky_pass<T: HostFloat>(q: &mut Mat<T>, max_departure: Option<f64>, shift: f64) -> Option<Mat<T>> {
    let mut g = q.transpose() * q.as_ref();
    if let Some(limit) = max_departure {
        let departure = departure(g.as_ref());
        // NaN compares false: refuse it too.
        if departure.is_nan() || departure > limit {
            return None;
        }
    }
    if shift > 0.0 {
        for j in 0..g.ncols() {
            g[(j, j)] += T::of(shift);
        }
    }
    let llt = g.llt(Side::Lower).ok()?;
    let R = llt.L().transpose().to_owned();
    let mut R_inv = Mat::<T>::zeros(R.nrows(), R.ncols());
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
    let _clock = HostClock::qr();
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
/// n×2r matrix.
///
/// Backends that compute in f32 get these steps in f32 first: faer's products run faster in
/// f32 and nothing is widened (docs/performance-log.md). Their round-off is that of the f32 data itself, and the result is checked
/// (orthonormal new columns to 1e-5); what the check or CholeskyQR2 declines is done again in
/// f64, from the same host copy. There, and for f64 backends, a remainder that is
/// rank-deficient or too ill-conditioned for CholeskyQR2 (for example `new` inside
/// span(basis), or n < r + k) sends the whole `[basis | N]` through [`thin_qr`], whose
/// Householder fallback completes it with orthonormal columns.
pub fn augment_basis<B: Backend>(new: &Tensor<B, 2>, basis: &Tensor<B, 2>) -> Tensor<B, 2> {
    let _clock = HostClock::qr();
    let r = basis.dims()[1];
    let device = new.device();
    // One device→host read of [U0 | K1] (a synchronisation point on a GPU), shared by both
    // precisions.
    let data = read(&Tensor::cat(vec![basis.clone(), new.clone()], 1));
    // f32 backends: the same steps in f32 first (no widening, twice the product rate), with
    // the f64 path below for what they decline.
    let f32_host = if super::single_precision::<B>() { f32_matrix(&data) } else { None };
    if let Some(mut a) = f32_host {
        if augment_in_place(&mut a, r, &F32) {
            return from_faer(a.as_ref(), &device);
        }
    }
    let mut a = f64_matrix(&data);
    if augment_in_place(&mut a, r, &F64) {
        return from_faer(a.as_ref(), &device);
    }
    let f = thin_qr(a.as_ref());
    from_faer(f.Q.as_ref(), &device)
}

/// [`augment_basis`]'s f32 host steps on `a = [U | new]` (n×(r + k)), in place, as f32
/// backends run them before anything else; false when they decline, where `augment_basis`
/// redoes the step in f64. Public for the benchmark of a layer update without Burn
/// (`benches/linalg.rs`), so that it times this code rather than a copy of it.
pub fn augment_f32_in_place(a: &mut Mat<f32>, r: usize) -> bool {
    augment_in_place(a, r, &F32)
}

/// How [`augment_in_place`] judges its result in each precision.
struct Acceptance {
    /// A column of `new` that keeps less than this fraction of its norm after the projection
    /// off the basis is taken for round-off.
    sound_remainder: f64,
    /// Largest ‖NᵀN − I‖_F accepted for the new columns, if checked.
    max_departure: Option<f64>,
}

/// f64: the projection leaves about ε‖column‖ along the basis, so 1e-8 is far from noise, and
/// the result (narrowed to the backend's type afterwards) needs no check.
const F64: Acceptance = Acceptance { sound_remainder: 1e-8, max_departure: None };

/// f32: the projection leaves about √n ε ≈ 2e-6 of a column's norm along the basis, and
/// normalising the remainder amplifies that by 1/(kept fraction) and by the remainder's
/// conditioning. The last projection removes it, but the columns then depart from unit length
/// to second order in it. So rather than guess from the kept fraction (only columns at 1e-6,
/// pure round-off, are refused up front), the result is checked (k² n flops, a few percent of
/// the augmentation) and anything beyond 1e-5 goes to the f64 path. The next step's polar
/// repair squares whatever departure is accepted here, so it does not build up.
const F32: Acceptance = Acceptance { sound_remainder: 1e-6, max_departure: Some(1e-5) };

/// The host part of [`augment_basis`] on `a = [U | new]` (n×(r + k)), in place: repairs U,
/// projects `new` off it and orthonormalises the remainder. Returns false when the QR of the
/// whole matrix (or, from f32, the f64 path) is needed instead; `a` may then hold the repaired
/// U and the projected remainder, column operations that keep span([U | new]) and span(U) in
/// its first r columns, which is all the caller's [`thin_qr`] fallback needs. That happens for U
/// too far from orthonormal for the polar step, a remainder column that lost all but
/// a fraction `accept.sound_remainder` of its norm to the projection (round-off, which
/// normalised would not be orthogonal to U), r + k > n, a remainder too ill-conditioned for
/// CholeskyQR2 in the precision T, or new columns further than `accept.max_departure` from
/// orthonormal.
fn augment_in_place<T: HostFloat>(a: &mut Mat<T>, r: usize, accept: &Acceptance) -> bool {
    let (n, k) = (a.nrows(), a.ncols() - r);
    if r + k > n {
        return false;
    }
    super::sequential();
    let gram = a.as_ref().subcols(0, r).transpose() * a.as_ref().subcols(0, r);
    // Outside this the polar step need not converge.
    if departure(gram.as_ref()) >= 0.1 {
        return false;
    }
    let (one_and_half, half) = (T::of(1.5), T::of(0.5));
    let correction = Mat::<T>::from_fn(r, r, |i, j| {
        if i == j {
            one_and_half - half * gram[(i, j)]
        } else {
            -half * gram[(i, j)]
        }
    });
    let repaired = a.as_ref().subcols(0, r) * correction;
    a.as_mut().subcols_mut(0, r).copy_from(&repaired);
    let norms =
        |a: &Mat<T>| -> Vec<f64> { (r..r + k).map(|j| a.col(j).squared_norm_l2().into().sqrt()).collect() };
    let before = norms(a);
    {
        // U and the tail are borrowed side by side from `a`, not copied.
        let (U, mut tail) = a.as_mut().split_at_col_mut(r);
        for _ in 0..2 {
            let c = U.as_ref().transpose() * tail.as_ref();
            subtract_product(tail.as_mut(), U.as_ref(), c.as_ref());
        }
    }
    if !norms(a).iter().zip(&before).all(|(after, before)| *after > accept.sound_remainder * before) {
        return false;
    }
    let Some(remainder) = cholesky_qr2(a.as_ref().subcols(r, k)) else {
        return false;
    };
    // The remainder's round-off along U, ε‖N‖, is amplified by R⁻¹ (up to 1/σ_min of the
    // scaled remainder); one more projection takes it back to ε. The columns stay unit to
    // second order in that leak.
    let (U, mut tail) = a.as_mut().split_at_col_mut(r);
    let leak = U.as_ref().transpose() * &remainder.Q;
    tail.copy_from(&remainder.Q);
    subtract_product(tail.as_mut(), U.as_ref(), leak.as_ref());
    match accept.max_departure {
        Some(limit) => departure((tail.as_ref().transpose() * tail.as_ref()).as_ref()) <= limit,
        None => true,
    }
}

/// `dst ← dst − a b`, accumulated in place (no temporary for the product).
fn subtract_product<T: HostFloat>(dst: MatMut<'_, T>, a: MatRef<'_, T>, b: MatRef<'_, T>) {
    matmul(dst, Accum::Add, a, b, T::of(-1.0), Par::Seq);
}

/// ‖G − I‖_F for a square Gram matrix G; NaN for non-finite input.
pub(crate) fn departure<T: HostFloat>(g: MatRef<'_, T>) -> f64 {
    let k = g.nrows();
    (0..k)
        .flat_map(|j| (0..k).map(move |i| (i, j)))
        .map(|(i, j)| (g[(i, j)].into() - if i == j { 1.0 } else { 0.0 }).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// Thin QR of a tensor; returns (Q, R) as tensors on the same device.
pub fn tensor_qr<B: Backend>(a: &Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let _clock = HostClock::qr();
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
    fn f32_cholesky_qr2_shifts_when_the_plain_passes_give_up() {
        // κ = 1e4 after scaling: plain CholeskyQR2 in f32 breaks down (κ² ε ≫ 1), the shifted
        // CholeskyQR3 fallback must still give Q R = A with Q orthonormal to f32 round-off.
        let (n, k) = (300, 12);
        let sigma: Vec<f64> = (0..k).map(|i| 10f64.powf(-4.0 * i as f64 / (k - 1) as f64)).collect();
        let a64 = crate::linalg::truncate::tests::with_spectrum(n, &sigma, 11);
        let a = Mat::<f32>::from_fn(n, k, |i, j| a64[(i, j)] as f32);
        assert!(two_passes(a.clone()).is_none(), "plain CholeskyQR2 was expected to give up here");
        let f = cholesky_qr2(a.as_ref()).expect("the shifted form applies at this conditioning");
        let q = Mat::<f64>::from_fn(n, k, |i, j| f.Q[(i, j)] as f64);
        assert!(orthonormality_error(q.as_ref()) < 1e-5, "{:e}", orthonormality_error(q.as_ref()));
        let qr =
            Mat::<f64>::from_fn(n, k, |i, j| (0..k).map(|l| f.Q[(i, l)] as f64 * f.R[(l, j)] as f64).sum());
        let a32 = Mat::<f64>::from_fn(n, k, |i, j| a[(i, j)] as f64);
        assert!(max_abs((qr - &a32).as_ref()) < 1e-5 * max_abs(a32.as_ref()), "Q R ≠ A");
    }

    #[test]
    fn augment_basis_in_f32_spans_both_and_is_orthonormal() {
        // The f32 form (Flex backend): a training-like step, K1 = U0 M + a small gradient step,
        // one with an ill-conditioned step, and K1 inside span(U0) (declined, the f64 path).
        use crate::CpuBackend as B;
        let mut rng = StdRng::seed_from_u64(12);
        let (n, r) = (400, 10);
        let u0 = thin_qr(gaussian(n, r, &mut rng).as_ref()).Q;
        let device = Default::default();
        let graded =
            Mat::from_fn(
                r,
                r,
                |i, j| if i == j { 10f64.powf(-4.0 * i as f64 / (r - 1) as f64) } else { 0.0 },
            );
        let steps =
            [gaussian(n, r, &mut rng) * 1e-2, gaussian(n, r, &mut rng) * graded * 1e-2, Mat::zeros(n, r)];
        for (case, step) in steps.iter().enumerate() {
            let k1 = &u0 * gaussian(r, r, &mut rng) * 10.0 + step;
            let q = to_faer(&augment_basis::<B>(
                &from_faer(k1.as_ref(), &device),
                &from_faer(u0.as_ref(), &device),
            ));
            assert_eq!(q.ncols(), 2 * r);
            // f32 storage: 1e-5 is a few hundred units of f32 round-off at these sizes.
            assert!(
                orthonormality_error(q.as_ref()) < 1e-5,
                "case {case}: {:e}",
                orthonormality_error(q.as_ref())
            );
            let lead = q.as_ref().subcols(0, r);
            assert!(
                max_abs((&u0 * (u0.transpose() * lead) - lead).as_ref()) < 1e-5,
                "case {case}: leading span"
            );
            let proj = &q * (q.transpose() * &k1);
            assert!(
                max_abs((proj - &k1).as_ref()) < 1e-5 * max_abs(k1.as_ref()),
                "case {case}: K1 outside the span"
            );
        }
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
