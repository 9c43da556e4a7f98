//! `dlrt matrix`: an integrator fitting a random rank-k target, a check without a data set.
//!
//! The problem is [`MatrixProblem`]'s least squares ½‖W − A‖²_F with A = X Yᵀ, X (n×k) and
//! Y (m×k) Gaussian, so A has rank k. From a random rank-r start a rank-adaptive integrator
//! should find rank k and drive the loss to round-off; [`matrix`] writes the loss, the rank and
//! the cumulative passes, QRs and SVDs after every step.

use std::io::Write;

use burn::tensor::Tensor;
use rand::{rngs::StdRng, SeedableRng};

use crate::integrators::IntegratorKind;
use crate::linalg::{from_faer, TruncationConfig};
use crate::optim::{Optimizer, OptimizerConfig};
use crate::problems::MatrixProblem;
use crate::train::Trainer;
use crate::{Error, LowRankLinear, Result, TrainBackend};

/// The largest n and m: a 16 384 × 16 384 target is 2 GiB in f64.
const MAX_SIDE: usize = 16_384;

/// The problem and the integrator of `dlrt matrix` (its command-line arguments).
#[derive(Clone, Debug, PartialEq, clap::Args)]
pub struct MatrixArgs {
    /// The integrator: abc_psi, abc_psi_one_pass, bc_psi, psi, bug, parallel_bug or lora.
    #[arg(long, value_parser = crate::integrators::parse_low_rank_method, default_value = "abc_psi")]
    pub method: IntegratorKind,
    /// Rows of W (fan-in n).
    #[arg(long, default_value_t = 60)]
    pub n: usize,
    /// Columns of W (fan-out m).
    #[arg(long, default_value_t = 40)]
    pub m: usize,
    /// Rank of the target A.
    #[arg(long, default_value_t = 7)]
    pub target_rank: usize,
    /// Initial rank of W.
    #[arg(long, default_value_t = 3)]
    pub rank: usize,
    /// Relative truncation tolerance ϑ.
    #[arg(long, default_value_t = 1e-4)]
    pub tau: f64,
    /// Learning rate λ. The loss is 1-smooth in W, so λ < 2 decreases it monotonically for the
    /// integrators on the manifold; `lora` steps its two factors, which is not 1-smooth, and
    /// needs a much smaller λ (0.01 at the default sizes; it diverges at the default λ).
    #[arg(long, default_value_t = 0.5)]
    pub lr: f64,
    /// Number of steps.
    #[arg(long, default_value_t = 30)]
    pub steps: usize,
    /// Random seed for the target and the initial factors.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Runs the problem of `args` on the CPU, writing a header and one line per step to `out`.
pub fn matrix(args: &MatrixArgs, out: &mut impl Write) -> Result<()> {
    let device = Default::default();
    let mut rng = StdRng::seed_from_u64(args.seed);
    if args.method == IntegratorKind::Dense {
        return Err(Error::config(
            "method",
            "dense",
            "a low-rank method: the problem trains one low-rank layer",
        ));
    }
    if args.steps == 0 {
        return Err(Error::config("steps", 0, "at least 1"));
    }
    for (name, side) in [("n", args.n), ("m", args.m)] {
        if side == 0 || side > MAX_SIDE {
            return Err(Error::config(name, side, &format!("1 to {MAX_SIDE}")));
        }
    }
    let k = args.target_rank;
    if k == 0 || k > args.n.min(args.m) {
        return Err(Error::config("target-rank", k, "1 ≤ target rank ≤ min(n, m)"));
    }
    // A = X Yᵀ with Gaussian X (n×k), Y (m×k): rank k, norm O(√(nm k)).
    let gauss = |rows, cols, rng: &mut StdRng| {
        let g = faer::Mat::from_fn(rows, cols, |_, _| {
            rand_distr::Distribution::sample(&rand_distr::StandardNormal, rng)
        });
        from_faer::<TrainBackend, f64>(g.as_ref(), &device)
    };
    let target: Tensor<TrainBackend, 2> =
        gauss(args.n, k, &mut rng).matmul(gauss(args.m, k, &mut rng).transpose());
    let opt = Optimizer::new(OptimizerConfig::Sgd, args.lr)?;
    let mut trainer = Trainer::<TrainBackend>::new(args.method, &TruncationConfig::relative(args.tau), opt)?;
    let layer = LowRankLinear::random(args.n, args.m, args.rank, false, 1.0, &mut rng, &device)?;
    let mut problem = MatrixProblem::new(layer);
    trainer.prepare(&mut problem)?;
    writeln!(out, "step  loss          rank  passes  qr  svd").map_err(Error::Output)?;
    for k in 1..=args.steps {
        let report = trainer.step(&mut problem, |p| p.least_squares(&target))?;
        let c = report.counters;
        writeln!(
            out,
            "{k:>4}  {:<12.6e}  {:>4}  {:>6}  {:>2}  {:>3}",
            report.loss,
            problem.layer.rank(),
            c.passes,
            c.qr,
            c.svd
        )
        .map_err(Error::Output)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: MatrixArgs,
    }

    fn args(line: &[&str]) -> MatrixArgs {
        Cli::try_parse_from([&["matrix"], line].concat()).unwrap().args
    }

    #[test]
    fn writes_a_line_per_step_and_finds_the_rank() {
        let mut out = Vec::new();
        matrix(
            &args(&["--n", "12", "--m", "10", "--target-rank", "3", "--rank", "1", "--steps", "12"]),
            &mut out,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 13, "{text}");
        assert_eq!(lines[12].split_whitespace().nth(2), Some("3"), "{text}");
    }

    #[test]
    fn bad_sizes_are_errors() {
        for line in [
            &["--target-rank", "0"][..],
            &["--target-rank", "41"],
            &["--rank", "0"],
            &["--rank", "41"],
            &["--n", "0"],
            &["--lr", "0"],
            &["--tau=-1"],
            &["--steps", "0"],
            &["--m", "16385"],
        ] {
            let mut out = Vec::new();
            assert!(matrix(&args(line), &mut out).is_err(), "{line:?}");
            assert!(out.is_empty(), "{line:?}: nothing is written before the check");
        }
        // Dense is refused by the parser, and by the library for a caller that builds the args.
        let err = Cli::try_parse_from(["matrix", "--method", "dense"]).err().expect("dense is refused");
        assert!(err.to_string().contains("a low-rank method"), "{err}");
        let dense = MatrixArgs { method: IntegratorKind::Dense, ..args(&[]) };
        assert!(matrix(&dense, &mut Vec::new()).is_err());
    }
}
