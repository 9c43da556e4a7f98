//! The learning-rate schedule: λ at each step of a run.
//!
//! An optional linear warm-up of w steps takes λ_k = λ (k+1)/(w+1) for k < w (λ/(w+1) up to
//! λ w/(w+1), as nanoGPT does), so no step has λ = 0; step w is the first at λ. Then `constant`
//! keeps λ, and `cosine` decays it over the steps after the warm-up,
//! λ_k = λ/2 · (1 + cos(π (k − w) / (total − w))), as in nanoGPT's decay phase: 0 at step
//! `total`, one past the last.

use crate::config::Schedule;

/// λ at `step` (from 0) of a run of `total` steps, starting from `lr` under `schedule` after
/// `warmup` steps of linear warm-up.
pub fn learning_rate(lr: f64, schedule: Schedule, warmup: u64, step: u64, total: u64) -> f64 {
    if step < warmup {
        return lr * (step + 1) as f64 / (warmup + 1) as f64;
    }
    match schedule {
        Schedule::Constant => lr,
        Schedule::Cosine => {
            let decay = (step - warmup) as f64 / total.saturating_sub(warmup).max(1) as f64;
            0.5 * lr * (1.0 + (std::f64::consts::PI * decay.min(1.0)).cos())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_keeps_lr_and_cosine_decays_to_zero() {
        assert_eq!(learning_rate(0.01, Schedule::Constant, 0, 7, 10), 0.01);
        assert_eq!(learning_rate(0.4, Schedule::Cosine, 0, 0, 100), 0.4);
        assert!((learning_rate(0.4, Schedule::Cosine, 0, 50, 100) - 0.2).abs() < 1e-15);
        assert!(learning_rate(0.4, Schedule::Cosine, 0, 100, 100).abs() < 1e-15);
        // An empty run (total 0) does not divide by zero.
        assert_eq!(learning_rate(0.4, Schedule::Cosine, 0, 0, 0), 0.4);
    }

    #[test]
    fn warm_up_rises_linearly_to_lr_then_the_schedule_takes_over() {
        // 4 warm-up steps: λ/5, 2λ/5, 3λ/5, 4λ/5, then λ at step 4.
        for (k, expected) in [(0, 0.2), (1, 0.4), (2, 0.6), (3, 0.8), (4, 1.0), (9, 1.0)] {
            assert!((learning_rate(1.0, Schedule::Constant, 4, k, 10) - expected).abs() < 1e-15, "{k}");
        }
        // Cosine decays over the 100 − 20 steps after the warm-up: λ at 20, λ/2 at 60, 0 at 100.
        assert!((learning_rate(0.4, Schedule::Cosine, 20, 19, 100) - 0.4 * 20.0 / 21.0).abs() < 1e-15);
        assert_eq!(learning_rate(0.4, Schedule::Cosine, 20, 20, 100), 0.4);
        assert!((learning_rate(0.4, Schedule::Cosine, 20, 60, 100) - 0.2).abs() < 1e-15);
        assert!(learning_rate(0.4, Schedule::Cosine, 20, 100, 100).abs() < 1e-15);
        // A warm-up as long as the run never reaches λ, and never divides by zero.
        assert!((learning_rate(1.0, Schedule::Cosine, 10, 9, 10) - 10.0 / 11.0).abs() < 1e-15);
        assert_eq!(learning_rate(1.0, Schedule::Cosine, 10, 10, 10), 1.0);
    }
}
