//! Softmax's row-wise maths on the CPU in f32, p = softmax(s·x) along each row: one parallel
//! pass over the rows forward and one backward, each row's loops vectorised as in the GELU
//! and layer-norm kernels ([`pulp::Arch::dispatch`] picks AVX2 or AVX-512 at run time).
//!
//! ```text
//! forward:   M = max x,  e = exp(s (x − M)),  p = e / Σe        (s > 0, so s (x − M) ≤ 0)
//! backward:  dx = s · p ⊙ (g − Σ g⊙p)
//! ```
//!
//! exp is the GELU kernel's Cephes `expf` for non-positive arguments (0 below −87, where it
//! leaves f32's normal range), so a row holds no overflow for any finite scores; −∞ gives 0.
//! Sums and the maximum run in independent lanes ([`crate::layers::layer_norm::kernel::LANES`]).

use rayon::prelude::*;

use crate::layers::gelu::kernel::exp_nonpositive;
use crate::layers::layer_norm::kernel::{fold, LANES};

/// Elements per parallel task: large enough that a task outweighs its scheduling.
const CHUNK: usize = 1 << 14;

/// p = softmax(s·x) along each row of `d` elements, in place.
#[track_caller]
pub fn forward_in_place(x: &mut [f32], d: usize, scale: f32) {
    assert!(d > 0 && x.len().is_multiple_of(d), "softmax: rows of {d} do not tile {} elements", x.len());
    x.par_chunks_mut(rows_per_task(d) * d).for_each(|x| pulp::Arch::new().dispatch(Forward { x, d, scale }));
}

/// g ← s · p ⊙ (g − Σ g⊙p) along each row of `d` elements: the gradient with respect to x.
#[track_caller]
pub fn backward_in_place(p: &[f32], g: &mut [f32], d: usize, scale: f32) {
    assert!(d > 0 && p.len() == g.len() && p.len().is_multiple_of(d), "softmax backward: shapes");
    let task = rows_per_task(d) * d;
    g.par_chunks_mut(task)
        .zip(p.par_chunks(task))
        .for_each(|(g, p)| pulp::Arch::new().dispatch(Backward { p, g, d, scale }));
}

fn rows_per_task(d: usize) -> usize {
    (CHUNK / d).max(1)
}

// One task's loops each, compiled inside pulp's `#[target_feature]` functions.

struct Forward<'a> {
    x: &'a mut [f32],
    d: usize,
    scale: f32,
}

impl pulp::WithSimd for Forward<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        for x in self.x.chunks_exact_mut(self.d) {
            softmax_row(x, self.scale);
        }
    }
}

struct Backward<'a> {
    p: &'a [f32],
    g: &'a mut [f32],
    d: usize,
    scale: f32,
}

impl pulp::WithSimd for Backward<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        for (g, p) in self.g.chunks_exact_mut(self.d).zip(self.p.chunks_exact(self.d)) {
            let dot = dot(g, p);
            for (g, p) in g.iter_mut().zip(p) {
                *g = self.scale * p * (*g - dot);
            }
        }
    }
}

/// One row's softmax(s·x), in place.
#[inline(always)]
pub fn softmax_row(x: &mut [f32], scale: f32) {
    let max = row_max(x);
    let mut sums = [0f32; LANES];
    let mut chunks = x.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for i in 0..LANES {
            let e = exp_nonpositive((chunk[i] - max) * scale);
            chunk[i] = e;
            sums[i] += e;
        }
    }
    for (i, v) in chunks.into_remainder().iter_mut().enumerate() {
        let e = exp_nonpositive((*v - max) * scale);
        *v = e;
        sums[i] += e;
    }
    let inv = 1.0 / fold(sums);
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// The row's largest element (NaNs are skipped here and propagate through exp).
#[inline(always)]
fn row_max(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for i in 0..LANES {
            lanes[i] = if chunk[i] > lanes[i] { chunk[i] } else { lanes[i] };
        }
    }
    for (i, &v) in tail.iter().enumerate() {
        lanes[i] = if v > lanes[i] { v } else { lanes[i] };
    }
    lanes.into_iter().fold(f32::NEG_INFINITY, |m, v| if v > m { v } else { m })
}

/// Σ a⊙b over one row.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut sums = [0f32; LANES];
    let chunks = a.chunks_exact(LANES).zip(b.chunks_exact(LANES));
    for (a, b) in chunks {
        for i in 0..LANES {
            sums[i] += a[i] * b[i];
        }
    }
    let start = a.len() / LANES * LANES;
    for (i, (a, b)) in a[start..].iter().zip(&b[start..]).enumerate() {
        sums[i] += a * b;
    }
    fold(sums)
}
