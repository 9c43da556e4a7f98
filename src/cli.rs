//! The `dlrt` command line: clap definitions and thin handlers over the library.

use std::io::Write;

use burn::tensor::Tensor;
use clap::{Parser, Subcommand};
use rand::{rngs::StdRng, SeedableRng};

use crate::integrators::IntegratorKind;
use crate::linalg::{from_faer, TruncationConfig};
use crate::optim::Optimizer;
use crate::problems::MatrixProblem;
use crate::{train, LowRankLinear, Result, TrainBackend};

/// Dynamical low-rank training of neural networks.
#[derive(Debug, Parser)]
#[command(name = "dlrt", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fit a random rank-k target with an integrator (least squares ½‖W − A‖²) and print the
    /// loss and rank after every step: a check of an integrator without a data set.
    Matrix(MatrixArgs),
}

/// Arguments of `dlrt matrix`.
#[derive(Debug, clap::Args)]
pub struct MatrixArgs {
    /// The integrator.
    #[arg(long, value_enum, default_value_t = IntegratorKind::AbcPsi)]
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
    /// Learning rate λ (the loss is 1-smooth: λ < 2 decreases it monotonically).
    #[arg(long, default_value_t = 0.5)]
    pub lr: f64,
    /// Number of steps.
    #[arg(long, default_value_t = 30)]
    pub steps: usize,
    /// Random seed for the target and the initial factors.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Runs `dlrt matrix`, writing one line per step to `out`.
pub fn matrix(args: &MatrixArgs, out: &mut impl Write) -> Result<()> {
    let device = Default::default();
    let mut rng = StdRng::seed_from_u64(args.seed);
    let k = args.target_rank;
    if k == 0 || k > args.n.min(args.m) {
        return Err(crate::Error::config("target-rank", k, "1 ≤ target rank ≤ min(n, m)"));
    }
    // A = X Yᵀ with Gaussian X (n×k), Y (m×k): rank k, norm O(√(nm k)).
    let gauss = |rows, cols, rng: &mut StdRng| {
        let g = faer::Mat::from_fn(rows, cols, |_, _| {
            rand_distr::Distribution::sample(&rand_distr::StandardNormal, rng)
        });
        from_faer::<TrainBackend>(g.as_ref(), &device)
    };
    let target: Tensor<TrainBackend, 2> =
        gauss(args.n, k, &mut rng).matmul(gauss(args.m, k, &mut rng).transpose());
    let truncation = TruncationConfig::relative(args.tau);
    let integrator = args.method.build::<TrainBackend>(&truncation)?;
    let opt = Optimizer::new(crate::optim::OptimizerConfig::Sgd, args.lr)?;
    let layer = LowRankLinear::random(args.n, args.m, args.rank, false, 1.0, &mut rng, &device)?;
    let mut problem = MatrixProblem::new(layer);
    train::prepare(&mut problem, integrator.as_ref())?;
    let io = |e| crate::Error::Io { path: "<stdout>".into(), source: e };
    writeln!(out, "step  loss          rank  passes  qr  svd").map_err(io)?;
    for step in 1..=args.steps {
        let report = train::step(&mut problem, integrator.as_ref(), &opt, |p| p.least_squares(&target))?;
        let c = report.counters;
        writeln!(
            out,
            "{step:>4}  {:<12.6e}  {:>4}  {:>6}  {:>2}  {:>3}",
            report.loss,
            problem.layer.rank(),
            c.passes,
            c.qr,
            c.svd
        )
        .map_err(io)?;
    }
    Ok(())
}
