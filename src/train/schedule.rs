//! The learning-rate schedule: λ at each step of a run.

use crate::config::Schedule;

/// λ at `step` (counted from 0) of `total` steps, starting from `lr`.
///
/// - constant: λ = lr;
/// - cosine: λ = lr · ½ (1 + cos(π · step / total)), from lr down to 0 at the end.
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
    fn cosine_runs_from_lr_to_zero_through_half() {
        assert_eq!(learning_rate(0.1, Schedule::Constant, 7, 10), 0.1);
        assert_eq!(learning_rate(0.1, Schedule::Cosine, 0, 10), 0.1);
        assert!((learning_rate(0.1, Schedule::Cosine, 5, 10) - 0.05).abs() < 1e-15);
        assert!(learning_rate(0.1, Schedule::Cosine, 10, 10).abs() < 1e-15);
        // No division by zero for an empty run.
        assert_eq!(learning_rate(0.1, Schedule::Cosine, 0, 0), 0.1);
    }
}
