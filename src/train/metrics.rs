//! Per-epoch metrics of a training run, written to the run folder as JSON lines and CSV.

use serde::{Deserialize, Serialize};

/// What one epoch measured. One JSON line in `metrics.jsonl`, one row in `metrics.csv`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Optimizer steps taken so far.
    pub step: u64,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f64,
    /// Mean test loss.
    pub test_loss: f64,
    /// Test accuracy in [0, 1].
    pub test_accuracy: f64,
    /// Rank of each low-rank layer, in network order.
    pub ranks: Vec<usize>,
    /// `1 − Σ low-rank params / Σ dense params` over the factorized layers only.
    pub compression_low_rank: f64,
    /// The same ratio over the whole network (dense layers count in both sums).
    pub compression_network: f64,
    /// Inference parameters of the network now.
    pub params: usize,
    /// Wall time of the epoch's training, in seconds (evaluation excluded).
    pub wall_seconds: f64,
    /// Training samples per second over the epoch.
    pub samples_per_second: f64,
    /// Forward/backward passes so far.
    pub passes: u64,
    /// QR decompositions so far.
    pub qr: u64,
    /// SVDs so far.
    pub svd: u64,
}
