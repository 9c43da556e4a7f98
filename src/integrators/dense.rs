//! Dense training: the baseline every low-rank method is compared against.
//!
//! One pass per step; every layer of the network is a [`crate::layers::DenseLinear`] and takes
//! an ordinary optimizer step, which the training step does for dense layers under every
//! integrator. There is nothing low-rank to integrate, so handing this integrator a low-rank
//! layer is an error that says to build the network dense.

use burn::tensor::backend::AutodiffBackend;

use super::{Counters, Integrator, IntegratorKind, Pass};
use crate::layers::{FactorGrads, LowRankLinear};
use crate::optim::Optimizer;
use crate::{Error, Result};

/// Dense training.
#[derive(Debug, Default)]
pub struct Dense {
    counters: Counters,
}

fn low_rank_layer_error() -> Error {
    Error::Unsupported("dense training got a low-rank layer: build the network with dense layers only".into())
}

impl<B: AutodiffBackend> Integrator<B> for Dense {
    fn kind(&self) -> IntegratorKind {
        IntegratorKind::Dense
    }

    fn passes(&self) -> &'static [Pass] {
        &[Pass::Dense]
    }

    fn prepare(&self, _layer: &mut LowRankLinear<B>) -> Result<()> {
        Err(low_rank_layer_error())
    }

    fn after_pass(&self, _: usize, _: &mut LowRankLinear<B>, _: FactorGrads<B>, _: &Optimizer) -> Result<()> {
        Err(low_rank_layer_error())
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }
}
