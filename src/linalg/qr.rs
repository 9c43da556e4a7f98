//! Thin QR decomposition `A = Q R` of a tall n×k matrix (Householder, faer).
//!
//! Shapes: A n×k, Q n×p, R p×k with p = min(n, k). Q has orthonormal columns even when A is
//! rank-deficient (for example `[K1 | U0]` with K1 in the span of U0): Householder reflections
//! are orthogonal whatever the data, so the extra columns are some orthonormal completion.

use burn::tensor::{backend::Backend, Tensor};
use faer::{Mat, MatRef};

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
    let qr = a.qr();
    ThinQr { Q: qr.compute_thin_Q(), R: qr.thin_R().to_owned() }
}

/// Orthonormal basis of the column space of a tensor (n×k ↦ n×min(n, k)), via the host.
///
/// One device→host copy of `a` and one host→device copy of Q.
pub fn orth<B: Backend>(a: &Tensor<B, 2>) -> Tensor<B, 2> {
    let f = thin_qr(to_faer(a).as_ref());
    from_faer(f.Q.as_ref(), &a.device())
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
}
