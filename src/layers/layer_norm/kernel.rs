//! Layer norm's row-wise maths on the CPU in f32: one parallel pass over the rows forward and
//! one backward, each row's loops vectorised ([`pulp::Arch::dispatch`] compiles them for AVX2
//! and AVX-512 and picks the widest at run time, as the GELU kernel does).
//!
//! Per row x of length d, the statistics are the corrected two-pass ones: m = Σx/d rounded to
//! f32, then s₁ = Σ(x − m), s₂ = Σ(x − m)², c = s₁/d and σ² = (s₂ − s₁ c)/d. The centred value
//! is x − m − c, evaluated as (x − m) − c: x − m is exact when x is near m (Sterbenz), so a row
//! whose mean is far larger than its spread loses nothing to the rounding of m, and a constant
//! row gives exactly 0 (where x − fl(Σx/d) need not).
//!
//! ```text
//! x̂ = ((x − m) − c) · rstd,  rstd = 1/√(σ² + ε),  y = x̂ ⊙ w + b
//! dx = rstd · (g⊙w − mean(g⊙w) − x̂ · mean(g⊙w⊙x̂)),  dw = Σ_rows g⊙x̂,  db = Σ_rows g
//! ```
//!
//! Sums run in [`LANES`] independent accumulators, which LLVM keeps in vector registers (a
//! single running sum would be a serial chain it may not reorder).

use rayon::prelude::*;

/// Independent partial sums per reduction: a multiple of every SIMD width in f32.
pub const LANES: usize = 16;

/// Elements per parallel task: large enough that a task outweighs its scheduling.
const CHUNK: usize = 1 << 14;

/// Per-row values the backward pass needs: m, c and rstd (module docs).
pub const STATS: usize = 3;

/// y = x̂ ⊙ w + b for each row of `x` (rows of `w.len()`), into `y`; each row's m, c, rstd into
/// `stats` (`STATS` per row).
#[track_caller]
pub fn forward(x: &[f32], w: &[f32], b: &[f32], eps: f32, y: &mut [f32], stats: &mut [f32]) {
    let d = w.len();
    assert!(d > 0 && b.len() == d && x.len() == y.len() && x.len().is_multiple_of(d), "layer norm: shapes");
    assert_eq!(stats.len(), x.len() / d * STATS, "layer norm: one set of statistics per row");
    let rows = rows_per_task(d);
    y.par_chunks_mut(rows * d)
        .zip(x.par_chunks(rows * d))
        .zip(stats.par_chunks_mut(rows * STATS))
        .for_each(|((y, x), stats)| pulp::Arch::new().dispatch(Forward { x, w, b, eps, y, stats }));
}

/// y = x̂ ⊙ w + b for each row, in place (no statistics kept: nothing to differentiate).
#[track_caller]
pub fn forward_in_place(x: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    let d = w.len();
    assert!(d > 0 && b.len() == d && x.len().is_multiple_of(d), "layer norm: shapes");
    x.par_chunks_mut(rows_per_task(d) * d)
        .for_each(|x| pulp::Arch::new().dispatch(ForwardInPlace { x, w, b, eps }));
}

/// The gradients from the upstream `g` (overwritten with dx when `want_dx`): returns
/// (dw, db), each empty unless wanted.
#[track_caller]
pub fn backward(
    x: &[f32],
    w: &[f32],
    stats: &[f32],
    g: &mut [f32],
    [want_dx, want_dw, want_db]: [bool; 3],
) -> (Vec<f32>, Vec<f32>) {
    let d = w.len();
    assert!(d > 0 && x.len() == g.len() && x.len().is_multiple_of(d), "layer norm backward: shapes");
    assert_eq!(stats.len(), x.len() / d * STATS, "layer norm backward: statistics");
    let rows = rows_per_task(d);
    let sizes = (if want_dw { d } else { 0 }, if want_db { d } else { 0 });
    let zeros = || (vec![0f32; sizes.0], vec![0f32; sizes.1]);
    g.par_chunks_mut(rows * d)
        .zip(x.par_chunks(rows * d))
        .zip(stats.par_chunks(rows * STATS))
        .map(|((g, x), stats)| {
            let (mut dw, mut db) = zeros();
            pulp::Arch::new().dispatch(Backward { x, w, stats, g, want_dx, dw: &mut dw, db: &mut db });
            (dw, db)
        })
        .reduce(zeros, |(mut dw, mut db), (dw2, db2)| {
            dw.iter_mut().zip(dw2).for_each(|(a, b)| *a += b);
            db.iter_mut().zip(db2).for_each(|(a, b)| *a += b);
            (dw, db)
        })
}

fn rows_per_task(d: usize) -> usize {
    (CHUNK / d).max(1)
}

// One task's loops each, compiled inside pulp's `#[target_feature]` functions (as in the GELU
// kernel: a closure passed to `dispatch` would be compiled for the baseline only).

struct Forward<'a> {
    x: &'a [f32],
    w: &'a [f32],
    b: &'a [f32],
    eps: f32,
    y: &'a mut [f32],
    stats: &'a mut [f32],
}

impl pulp::WithSimd for Forward<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let d = self.w.len();
        let rows = self.y.chunks_exact_mut(d).zip(self.x.chunks_exact(d));
        for ((y, x), stats) in rows.zip(self.stats.chunks_exact_mut(STATS)) {
            let [m, c, rstd] = row_stats(x, self.eps);
            stats.copy_from_slice(&[m, c, rstd]);
            for (((y, x), w), b) in y.iter_mut().zip(x).zip(self.w).zip(self.b) {
                *y = ((x - m) - c) * rstd * w + b;
            }
        }
    }
}

struct ForwardInPlace<'a> {
    x: &'a mut [f32],
    w: &'a [f32],
    b: &'a [f32],
    eps: f32,
}

impl pulp::WithSimd for ForwardInPlace<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        for x in self.x.chunks_exact_mut(self.w.len()) {
            let [m, c, rstd] = row_stats(x, self.eps);
            for ((x, w), b) in x.iter_mut().zip(self.w).zip(self.b) {
                *x = ((*x - m) - c) * rstd * w + b;
            }
        }
    }
}

struct Backward<'a> {
    x: &'a [f32],
    w: &'a [f32],
    stats: &'a [f32],
    g: &'a mut [f32],
    want_dx: bool,
    dw: &'a mut [f32],
    db: &'a mut [f32],
}

impl pulp::WithSimd for Backward<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let d = self.w.len();
        let inv_d = 1.0 / d as f32;
        let rows = self.g.chunks_exact_mut(d).zip(self.x.chunks_exact(d));
        for ((g, x), stats) in rows.zip(self.stats.chunks_exact(STATS)) {
            let [m, c, rstd] = [stats[0], stats[1], stats[2]];
            if !self.dw.is_empty() {
                for ((dw, g), x) in self.dw.iter_mut().zip(g.iter()).zip(x) {
                    *dw += g * (((x - m) - c) * rstd);
                }
            }
            if !self.db.is_empty() {
                for (db, g) in self.db.iter_mut().zip(g.iter()) {
                    *db += g;
                }
            }
            if !self.want_dx {
                continue;
            }
            let (sum_gw, sum_gw_xhat) = gw_sums(g, x, self.w, m, c, rstd);
            let (mean_gw, mean_gw_xhat) = (sum_gw * inv_d, sum_gw_xhat * inv_d);
            for ((g, x), w) in g.iter_mut().zip(x).zip(self.w) {
                let x_hat = ((x - m) - c) * rstd;
                *g = rstd * (*g * w - mean_gw - x_hat * mean_gw_xhat);
            }
        }
    }
}

/// [m, c, rstd] of one row (module docs).
#[inline(always)]
pub fn row_stats(x: &[f32], eps: f32) -> [f32; STATS] {
    let d = x.len() as f32;
    let m = sum(x) / d;
    let (mut s1, mut s2) = ([0f32; LANES], [0f32; LANES]);
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for i in 0..LANES {
            let e = chunk[i] - m;
            s1[i] += e;
            s2[i] += e * e;
        }
    }
    for (i, v) in tail.iter().enumerate() {
        let e = v - m;
        s1[i] += e;
        s2[i] += e * e;
    }
    let (s1, s2) = (fold(s1), fold(s2));
    let c = s1 / d;
    // s₂ ≥ s₁²/d in exact arithmetic; rounding may cross zero when the row is constant.
    let var = ((s2 - s1 * c) / d).max(0.0);
    [m, c, 1.0 / (var + eps).sqrt()]
}

/// (Σ g⊙w, Σ g⊙w⊙x̂) over one row.
#[inline(always)]
fn gw_sums(g: &[f32], x: &[f32], w: &[f32], m: f32, c: f32, rstd: f32) -> (f32, f32) {
    let (mut a, mut b) = ([0f32; LANES], [0f32; LANES]);
    let chunks = g.chunks_exact(LANES).zip(x.chunks_exact(LANES)).zip(w.chunks_exact(LANES));
    for ((g, x), w) in chunks {
        for i in 0..LANES {
            let gw = g[i] * w[i];
            a[i] += gw;
            b[i] += gw * (((x[i] - m) - c) * rstd);
        }
    }
    let start = g.len() / LANES * LANES;
    for (i, ((g, x), w)) in g[start..].iter().zip(&x[start..]).zip(&w[start..]).enumerate() {
        let gw = g * w;
        a[i] += gw;
        b[i] += gw * (((x - m) - c) * rstd);
    }
    (fold(a), fold(b))
}

/// Σ x in `LANES` partial sums.
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for i in 0..LANES {
            acc[i] += chunk[i];
        }
    }
    for (i, v) in tail.iter().enumerate() {
        acc[i] += v;
    }
    fold(acc)
}

/// The sum of the partial sums, pairwise.
#[inline(always)]
pub fn fold(mut acc: [f32; LANES]) -> f32 {
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            acc[i] += acc[i + width];
        }
    }
    acc[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of length 37 (no multiple of `LANES`) with a large offset, and a constant row: the
    /// statistics against f64, and the parallel forward equal to the in-place one.
    #[test]
    fn statistics_are_exact_to_rounding_and_both_forwards_agree() {
        let d = 37;
        let x: Vec<f32> = (0..3 * d).map(|i| 1e4 + (i as f32 * 0.618).sin()).collect();
        let mut x = x;
        x[2 * d..].fill(0.1);
        for row in x.chunks(d) {
            let [m, c, rstd] = row_stats(row, 1e-5);
            let exact: Vec<f64> = row.iter().map(|&v| v as f64).collect();
            let mean = exact.iter().sum::<f64>() / d as f64;
            let var = exact.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
            for (v, e) in row.iter().zip(&exact) {
                let centred = (v - m) - c;
                assert!((centred as f64 - (e - mean)).abs() <= 1e-6 * (1.0 + var.sqrt()), "{centred}");
            }
            let exact_rstd = 1.0 / (var + 1e-5).sqrt();
            assert!((rstd as f64 - exact_rstd).abs() <= 1e-6 * exact_rstd, "{rstd} vs {exact_rstd}");
        }
        let [m, c, _] = row_stats(&x[2 * d..], 1e-5);
        assert_eq!((0.1 - m) - c, 0.0, "a constant row's centred values are exactly 0");
        let (w, b): (Vec<f32>, Vec<f32>) = (0..d).map(|i| (1.0 + i as f32 * 0.01, i as f32)).unzip();
        let (mut y, mut stats) = (vec![0f32; x.len()], vec![0f32; 3 * STATS]);
        forward(&x, &w, &b, 1e-5, &mut y, &mut stats);
        assert_eq!(&y[2 * d..], &b[..], "a constant row normalises to exactly 0");
        let mut in_place = x.clone();
        forward_in_place(&mut in_place, &w, &b, 1e-5);
        assert_eq!(in_place, y);
    }
}
