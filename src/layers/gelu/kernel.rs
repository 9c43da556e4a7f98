//! The exact GELU's element-wise maths on the CPU: y = x Φ(x) and y' = Φ(x) + x φ(x), with
//! Φ the standard normal cdf and φ its pdf, in one parallel, vectorised pass over a slice.
//!
//! Hand-written because Burn's CPU backend evaluates `erf` with scalar `libm::erff`, one element
//! at a time on one core, and no maintained crate offers a vectorised erf on stable Rust that
//! fits. Everything inside the loop is inlined polynomial code without branches or library
//! calls, so LLVM vectorises it, and [`pulp::Arch::dispatch`] compiles the loop for AVX2 and
//! AVX-512 and picks the widest the CPU has at run time.
//!
//! - Φ(x) = ½ erfc(|x|/√2) for x < 0 and 1 − ½ erfc(|x|/√2) otherwise, with erfc from
//!   Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7, the form PyTorch's CPU erf uses), so the
//!   lower tail carries no cancellation.
//! - e^{−x²/2} is computed once and serves both erfc (e^{−z²}, z = x/√2) and φ.
//! - exp is Cephes' `expf`: n = round(a·log₂e) by the 1.5·2²³ trick, r = a − n ln 2 in two
//!   parts, a degree-7 polynomial for eʳ and 2ⁿ built from the exponent bits.
//!
//! Limits: y(+∞) = +∞, y(−∞) = −0 and y'(±∞) = 1 or 0 (the limits, where the written-out
//! formula gives NaN); NaN stays NaN. Halves ([`Lane`]) are computed in f32 and rounded back.

use rayon::prelude::*;

use crate::layers::cast::Lane;
pub(crate) use crate::layers::cast::CHUNK;

/// y = x Φ(x), elementwise, in place.
pub fn forward_in_place<E: Lane>(x: &mut [E]) {
    x.par_chunks_mut(CHUNK).for_each(|x| pulp::Arch::new().dispatch(ForwardInPlace(x)));
}

/// y = x Φ(x), elementwise, from `x` into `y` (same length).
#[track_caller]
pub fn forward<E: Lane>(x: &[E], y: &mut [E]) {
    assert_eq!(x.len(), y.len(), "gelu: input and output lengths differ");
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(y, x)| pulp::Arch::new().dispatch(Forward { x, y }));
}

/// g ← g · (Φ(x) + x φ(x)), elementwise, in place: the gradient with respect to x.
#[track_caller]
pub fn backward_in_place<E: Lane>(x: &[E], g: &mut [E]) {
    assert_eq!(x.len(), g.len(), "gelu backward: input and gradient lengths differ");
    g.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(g, x)| pulp::Arch::new().dispatch(BackwardInPlace { x, g }));
}

// One chunk's loop each. As `WithSimd` methods marked `inline(always)` they are compiled inside
// pulp's `#[target_feature]` functions, for the CPU's widest vectors; a closure passed to
// `dispatch` was compiled apart, for the baseline SSE2 only.

struct ForwardInPlace<'a, E>(&'a mut [E]);

impl<E: Lane> pulp::WithSimd for ForwardInPlace<'_, E> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        for v in self.0.iter_mut() {
            *v = E::from_f32(gelu(v.to_f32()));
        }
    }
}

struct Forward<'a, E> {
    x: &'a [E],
    y: &'a mut [E],
}

impl<E: Lane> pulp::WithSimd for Forward<'_, E> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        for (y, x) in self.y.iter_mut().zip(self.x) {
            *y = E::from_f32(gelu(x.to_f32()));
        }
    }
}

struct BackwardInPlace<'a, E> {
    x: &'a [E],
    g: &'a mut [E],
}

impl<E: Lane> pulp::WithSimd for BackwardInPlace<'_, E> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        for (g, x) in self.g.iter_mut().zip(self.x) {
            *g = E::from_f32(g.to_f32() * gelu_derivative(x.to_f32()));
        }
    }
}

/// x Φ(x).
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    let (cdf, _) = cdf_and_gauss(x);
    // Below −20, Φ is 0 in f32; clamping keeps −∞ · 0 from making a NaN.
    let x = if x < -20.0 { -20.0 } else { x };
    x * cdf
}

/// d/dx x Φ(x) = Φ(x) + x φ(x).
#[inline(always)]
pub fn gelu_derivative(x: f32) -> f32 {
    let (cdf, gauss) = cdf_and_gauss(x);
    // Beyond ±20, φ is 0 in f32; clamping keeps ±∞ · 0 from making a NaN (NaN stays NaN).
    cdf + x.clamp(-20.0, 20.0) * (gauss * FRAC_1_SQRT_2PI)
}

const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// (Φ(x), e^{−x²/2}).
#[inline(always)]
fn cdf_and_gauss(x: f32) -> (f32, f32) {
    // Abramowitz & Stegun 7.1.26: erfc(z) ≈ t (a1 + t (a2 + … + t a5)) e^{−z²}, t = 1/(1 + p z).
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_8, -1.453_152_1, 1.061_405_4];
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + P * z);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let gauss = exp_nonpositive(-0.5 * x * x);
    let lower_tail = 0.5 * poly * gauss;
    let cdf = if x < 0.0 { lower_tail } else { 1.0 - lower_tail };
    (cdf, gauss)
}

/// eᵃ for a ≤ 0 (Cephes `expf`, relative error about 1e-7); 0 below −87, where eᵃ leaves f32's
/// normal range. NaN gives NaN. Shared with the softmax kernel.
#[inline(always)]
pub(crate) fn exp_nonpositive(a: f32) -> f32 {
    const LOWEST: f32 = -87.0;
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2²³ rounds to an integer, which then sits in the low mantissa bits.
    const SHIFT: f32 = 12_582_912.0;
    let clamped = if a < LOWEST { LOWEST } else { a };
    let shifted = clamped * LOG2E + SHIFT;
    let n = shifted - SHIFT;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 0.166_666_65;
    let p = p * r + 0.5;
    let p = p * (r * r) + r + 1.0;
    let n_int = (shifted.to_bits() as i32).wrapping_sub(SHIFT.to_bits() as i32);
    let scale = f32::from_bits(((n_int + 127) as u32) << 23);
    if a < LOWEST {
        0.0
    } else {
        p * scale
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{bf16, f16};

    use super::*;

    fn exact(x: f64) -> (f64, f64) {
        let cdf = 0.5 * libm::erfc(-x / std::f64::consts::SQRT_2);
        let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
        (x * cdf, cdf + x * pdf)
    }

    /// The grid −10..10 in steps of 1e-3 plus the far tails, against erfc in f64: |Δy| stays
    /// within 2e-7·max(1, |x|) and |Δy'| within 3e-7·max(1, |x|). A&S's 1.5e-7 on erf is
    /// 7.5e-8 on Φ; the rest is f32 rounding, mostly of the alternating-sign polynomial near
    /// x = 0, where x Φ(x) scales it down and Φ + x φ does not.
    #[test]
    fn gelu_and_its_derivative_match_f64_erf_over_a_dense_grid() {
        let grid = (-10_000..=10_000).map(|i| i as f32 * 1e-3);
        let tails = [-1e30f32, -1e4, -100.0, -30.0, -20.5, -13.5, 13.5, 20.5, 30.0, 100.0, 1e4, 1e30];
        let (mut worst_y, mut worst_d) = ((0f64, 0f32), (0f64, 0f32));
        for x in grid.chain(tails) {
            let (y, d) = exact(x as f64);
            let scale = (x.abs() as f64).max(1.0);
            let (gap_y, gap_d) =
                ((gelu(x) as f64 - y).abs() / scale, (gelu_derivative(x) as f64 - d).abs() / scale);
            worst_y = if gap_y > worst_y.0 { (gap_y, x) } else { worst_y };
            worst_d = if gap_d > worst_d.0 { (gap_d, x) } else { worst_d };
        }
        assert!(worst_y.0 < 2e-7, "max |Δy|/max(1,|x|) = {:e} at x = {}", worst_y.0, worst_y.1);
        assert!(worst_d.0 < 3e-7, "max |Δy'|/max(1,|x|) = {:e} at x = {}", worst_d.0, worst_d.1);
    }

    #[test]
    fn zeros_infinities_and_nan_give_the_limits() {
        assert_eq!(gelu(0.0).to_bits(), 0f32.to_bits());
        assert_eq!(gelu(-0.0).to_bits(), (-0f32).to_bits());
        assert!((gelu_derivative(0.0) - 0.5).abs() < 1e-7);
        assert_eq!(gelu(f32::INFINITY), f32::INFINITY);
        assert_eq!(gelu(f32::NEG_INFINITY), 0.0);
        assert_eq!(gelu_derivative(f32::INFINITY), 1.0);
        assert_eq!(gelu_derivative(f32::NEG_INFINITY), 0.0);
        assert!(gelu(f32::NAN).is_nan() && gelu_derivative(f32::NAN).is_nan());
    }

    /// The slice functions (parallel chunks, run-time dispatch, a tail shorter than the SIMD
    /// width) give the scalar functions' values bit for bit, and halves are the f32 result
    /// rounded to nearest.
    #[test]
    fn slices_agree_with_the_scalar_functions_and_halves_round_the_f32_result() {
        let x: Vec<f32> = (0..3 * CHUNK + 13).map(|i| (i as f32 * 0.618).sin() * 6.0).collect();
        let mut y = vec![0f32; x.len()];
        forward(&x, &mut y);
        assert!(x.iter().zip(&y).all(|(x, y)| gelu(*x).to_bits() == y.to_bits()));
        let mut in_place = x.clone();
        forward_in_place(&mut in_place);
        assert_eq!(in_place, y);
        let mut g: Vec<f32> = x.iter().map(|v| v.cos()).collect();
        let expected: Vec<f32> = x.iter().zip(&g).map(|(x, g)| g * gelu_derivative(*x)).collect();
        backward_in_place(&x, &mut g);
        assert_eq!(g, expected);

        let specials =
            [0.0, -0.0, 1.0 + f32::EPSILON * 128.0, 1.0 + f32::EPSILON * 384.0, f32::MAX, f32::INFINITY];
        let halves = [f32::NAN, -f32::NAN, f32::from_bits(1), 3.0e-39, -1.0019531];
        for v in specials.into_iter().chain(halves).chain(x.iter().copied()) {
            assert_eq!(<bf16 as Lane>::from_f32(v).to_bits(), bf16::from_f32(v).to_bits(), "{v:e}");
        }
        let xb: Vec<bf16> = x.iter().map(|v| bf16::from_f32(*v)).collect();
        let mut yb = xb.clone();
        forward_in_place(&mut yb);
        assert!(xb.iter().zip(&yb).all(|(x, y)| *y == bf16::from_f32(gelu(x.to_f32()))));
        let xh: Vec<f16> = x.iter().map(|v| f16::from_f32(*v)).collect();
        let mut gh = vec![f16::ONE; xh.len()];
        backward_in_place(&xh, &mut gh);
        assert!(xh.iter().zip(&gh).all(|(x, g)| *g == f16::from_f32(gelu_derivative(x.to_f32()))));
    }
}
