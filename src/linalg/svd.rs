//! Thin singular value decomposition `A = U Σ Vᵀ` (faer).
//!
//! Shapes: A p×q, U p×k, Σ k (nonincreasing, nonnegative), V q×k with k = min(p, q).

use faer::{Mat, MatRef};

use crate::{Error, Result};

/// The factors of a thin SVD.
pub struct Svd {
    /// p×k, orthonormal columns.
    pub U: Mat<f64>,
    /// The k singular values, nonincreasing.
    pub sigma: Vec<f64>,
    /// q×k, orthonormal columns.
    pub V: Mat<f64>,
}

/// Thin SVD of `a`; `context` names the matrix in the error if the iteration does not converge.
pub fn thin_svd(a: MatRef<'_, f64>, context: &str) -> Result<Svd> {
    if a.nrows() == 0 || a.ncols() == 0 {
        return Ok(Svd { U: Mat::zeros(a.nrows(), 0), sigma: Vec::new(), V: Mat::zeros(a.ncols(), 0) });
    }
    for j in 0..a.ncols() {
        for i in 0..a.nrows() {
            if !a[(i, j)].is_finite() {
                return Err(Error::NonFinite { context: context.to_string() });
            }
        }
    }
    super::sequential();
    let no_convergence = |_| Error::SvdNoConvergence { context: context.to_string() };
    if a.nrows() > a.ncols() {
        // Tall (an m×2r factor): A = Q R, R = U_R Σ Vᵀ  ⇒  U = Q U_R. Our QR is faster than
        // the bidiagonalisation faer would start with at these sizes.
        let qr = super::qr::thin_qr(a);
        let svd = qr.R.thin_svd().map_err(no_convergence)?;
        let sigma = svd.S().column_vector().iter().copied().collect();
        return Ok(Svd { U: &qr.Q * svd.U(), sigma, V: svd.V().to_owned() });
    }
    let svd = a.thin_svd().map_err(no_convergence)?;
    let sigma = svd.S().column_vector().iter().copied().collect();
    Ok(Svd { U: svd.U().to_owned(), sigma, V: svd.V().to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::qr::tests::gaussian;
    use rand::{rngs::StdRng, SeedableRng};

    #[test]
    fn reconstructs_sorted_over_shapes() {
        let mut rng = StdRng::seed_from_u64(7);
        for &(p, q) in &[(1, 1), (3, 2), (2, 3), (40, 40), (150, 20), (20, 150), (500, 54)] {
            let a = gaussian(p, q, &mut rng);
            let f = thin_svd(a.as_ref(), "test").unwrap();
            let k = p.min(q);
            assert_eq!(f.sigma.len(), k);
            assert!(f.sigma.windows(2).all(|w| w[0] >= w[1]));
            let s = Mat::from_fn(k, k, |i, j| if i == j { f.sigma[i] } else { 0.0 });
            let rec = &f.U * s * f.V.transpose();
            let err = (rec - &a).norm_max();
            // Tolerance eps·sqrt(8·max(p, q)) relative to ‖A‖, as in faer's own tests (×100 margin).
            assert!(err < 100.0 * f64::EPSILON * (8.0 * p.max(q) as f64).sqrt() * a.norm_max() * k as f64);
        }
    }

    #[test]
    fn nan_is_an_error_not_a_panic() {
        let mut a = Mat::<f64>::identity(3, 3);
        a[(1, 2)] = f64::NAN;
        assert!(matches!(thin_svd(a.as_ref(), "S of layer 0"), Err(Error::NonFinite { .. })));
    }
}
