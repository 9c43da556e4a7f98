//! The learning-rate schedule: λ at each step of a run.
//!
//! `constant` keeps λ; `cosine` decays it from λ at step 0 to 0 at the last step,
//! λ_k = λ/2 · (1 + cos(π k / total)), as in nanoGPT's decay phase without warm-up.

use crate::config::Schedule;

/// λ at `step` (from 0) of a run of `total` steps, starting from `lr` under `schedule`.
pub fn learning_rate(lr: f64, schedule: Schedule, step: u64, total: u64) -> f64 {
    match schedule {
        Schedule::Constant => lr,
        Schedule::Cosine => {
            0.5 * lr * (1.0 + (std::f64::consts::PI * step as f64 / total.max(1) as f64).cos())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_keeps_lr_and_cosine_decays_to_zero() {
        assert_eq!(learning_rate(0.01, Schedule::Constant, 7, 10), 0.01);
        assert_eq!(learning_rate(0.4, Schedule::Cosine, 0, 100), 0.4);
        assert!((learning_rate(0.4, Schedule::Cosine, 50, 100) - 0.2).abs() < 1e-15);
        assert!(learning_rate(0.4, Schedule::Cosine, 100, 100).abs() < 1e-15);
        // An empty run (total 0) does not divide by zero.
        assert_eq!(learning_rate(0.4, Schedule::Cosine, 0, 0), 0.4);
    }
}
