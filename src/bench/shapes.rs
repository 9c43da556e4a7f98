//! What a new shape costs: each step classed by whether its ranks or its passes' widths are new
//! in the run ([`NewShapes`]), and the `--log-steps` line.

use std::collections::HashSet;

use burn::tensor::backend::AutodiffBackend;

use super::median;
use crate::integrators::IntegratorKind;
use crate::train::StepTimes;
/// Steps classed by whether their shapes are new in the run (module docs). Kernels are
/// compiled per operation's shape, and layers of the same n×m share them, so a step is at new
/// ranks when some low-rank layer is at an (n, m, r) no layer was at before in the run, and at
/// new widths when some pass multiplied with an (n, m, U width, V width) not seen before. The
/// first step is left out: it compiles and allocates everything, whatever the ranks.
#[derive(Clone, Debug, Default)]
pub struct NewShapes {
    seen_ranks: HashSet<[usize; 3]>,
    seen_widths: HashSet<[usize; 4]>,
    recorded: usize,
    /// Times of steps at new ranks, at seen ones, at new widths, at seen widths.
    times: [Vec<f64>; 4],
}

/// What [`NewShapes`] found: counts and median step times (`None` where no step was).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ShapeSummary {
    /// Steps classed (all but the first).
    pub steps: usize,
    /// Steps at new ranks ([`NewShapes`]).
    pub new_ranks: usize,
    /// Steps whose passes multiplied with new widths.
    pub new_widths: usize,
    /// Median time of the steps at new ranks, at seen ones, at new widths, at seen widths.
    pub medians: [Option<f64>; 4],
}

impl NewShapes {
    /// Records a step that started with its layers at `ranks` (n, m, r) and whose passes
    /// multiplied with `widths` (n, m, U width, V width); returns whether either was new.
    pub fn add(&mut self, ranks: Vec<[usize; 3]>, widths: Vec<[usize; 4]>, time: f64) -> (bool, bool) {
        // `fold`, not `any`: every shape of the step is remembered.
        let new_ranks = ranks.into_iter().fold(false, |new, k| self.seen_ranks.insert(k) | new);
        let new_widths = widths.into_iter().fold(false, |new, k| self.seen_widths.insert(k) | new);
        if self.recorded > 0 {
            self.times[if new_ranks { 0 } else { 1 }].push(time);
            self.times[if new_widths { 2 } else { 3 }].push(time);
        }
        self.recorded += 1;
        (new_ranks, new_widths)
    }

    /// Counts and medians.
    pub fn summary(&self) -> ShapeSummary {
        let medians = self.times.clone().map(|t| median(t).ok());
        ShapeSummary {
            steps: self.recorded.saturating_sub(1),
            new_ranks: self.times[0].len(),
            new_widths: self.times[2].len(),
            medians,
        }
    }
}

/// The (n, m, r) of every low-rank layer.
pub(super) fn rank_keys<'a, B: AutodiffBackend>(
    layers: impl Iterator<Item = &'a crate::LowRankLinear<B>>,
) -> Vec<[usize; 3]> {
    layers.map(|l| [l.n(), l.m(), l.rank()]).collect()
}

/// The (n, m, U width, V width) every low-rank layer's current pass multiplies with, appended
/// to `out`.
pub(super) fn push_widths<'a, B: AutodiffBackend>(
    layers: impl Iterator<Item = &'a crate::LowRankLinear<B>>,
    out: &mut Vec<[usize; 4]>,
) {
    for l in layers {
        let (u, v) = l.pass_widths();
        out.push([l.n(), l.m(), u, v]);
    }
}

/// The per-step line of `--log-steps` for step `k` of `total` (`warmup`: an untimed one).
pub(super) fn log_step(
    method: IntegratorKind,
    (k, total, warmup): (usize, usize, bool),
    (time, unit): (f64, &str),
    parts: StepTimes,
    ranks: &[usize],
    (new_ranks, new_widths): (bool, bool),
) {
    let scale = if unit == "ms" { 1e3 } else { 1e6 };
    let new = |b: bool| if b { "new" } else { "seen" };
    eprintln!(
        "{method} step {}/{total} ({}): {time:.1} {unit} (forward {:.1}, backward {:.1}, update {:.1}); ranks {ranks:?} {}, widths {}",
        k + 1,
        if warmup { "warm-up" } else { "timed" },
        parts.forward * scale,
        parts.backward * scale,
        parts.update * scale,
        new(new_ranks),
        new(new_widths)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_shapes_are_told_from_seen_ones_and_the_first_step_is_left_out() {
        let mut shapes = NewShapes::default();
        let (a, b) = ([784, 500], [500, 500]);
        let step = |r: [usize; 2], w: [usize; 2]| {
            (
                vec![[a[0], a[1], r[0]], [b[0], b[1], r[1]]],
                vec![[a[0], a[1], w[0], w[0]], [b[0], b[1], w[1], w[1]]],
            )
        };
        let mut add = |r, w, t| {
            let (ranks, widths) = step(r, w);
            shapes.add(ranks, widths, t)
        };
        assert_eq!(add([20, 20], [24, 24], 1000.0), (true, true));
        assert_eq!(add([21, 20], [24, 24], 9.0), (true, false));
        assert_eq!(add([20, 20], [24, 24], 3.0), (false, false));
        assert_eq!(add([26, 20], [32, 24], 11.0), (true, true));
        // 26 and 32 are new for the second layer's shape, though the first had them.
        assert_eq!(add([21, 26], [24, 32], 5.0), (true, true));
        // Each layer's shape was seen before, if never together: nothing is new.
        assert_eq!(add([26, 26], [32, 32], 4.0), (false, false));
        let s = shapes.summary();
        assert_eq!((s.steps, s.new_ranks, s.new_widths), (5, 3, 2));
        assert_eq!(s.medians, [Some(9.0), Some(4.0), Some(11.0), Some(4.0)]);
        assert_eq!(NewShapes::default().summary(), ShapeSummary::default());
    }
}
