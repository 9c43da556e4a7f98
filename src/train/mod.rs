//! Training: one step of an integrator over a network.
//!
//! [`step`] is the batch body of every training loop in dlrt. For each pass the integrator
//! lists, it sets every low-rank layer's parametrization, runs the loss forward and backward,
//! and hands each layer's gradients to the integrator; dense layers take their ordinary
//! optimizer step from the first pass. There are no integrator-specific branches here.

pub mod finetune;
pub mod metrics;
pub mod plot;
pub mod report;
pub mod run;
pub mod schedule;

use std::time::Instant;

use burn::tensor::{backend::AutodiffBackend, ElementConversion, Tensor};
use rayon::prelude::*;

use crate::integrators::{CounterSnapshot, Integrator};
use crate::layers::{DenseLinear, LowRankLinear};
use crate::optim::Optimizer;
use crate::{Error, Result};

/// A network an integrator can train: it exposes its low-rank and its dense layers.
pub trait Network<B: AutodiffBackend> {
    /// The low-rank layers, in a fixed order.
    fn low_rank_layers(&mut self) -> Vec<&mut LowRankLinear<B>>;
    /// The dense layers, in a fixed order.
    fn dense_layers(&mut self) -> Vec<&mut DenseLinear<B>>;
}

/// What one step measured.
#[derive(Clone, Copy, Debug)]
pub struct StepReport {
    /// The loss at the start of the step (from the first pass).
    pub loss: f64,
    /// The integrator's counters after the step.
    pub counters: CounterSnapshot,
    /// Where the step's wall time went.
    pub times: StepTimes,
}

/// Wall time of the parts of a step, in seconds, summed over its passes. On an asynchronous
/// device a part ends when the host has queued it, except where it reads a value back (the
/// loss, the host decompositions).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepTimes {
    /// The loss forward, up to reading its value.
    pub forward: f64,
    /// Backpropagation.
    pub backward: f64,
    /// The integrator's work on every low-rank layer and the dense layers' optimizer step.
    pub update: f64,
}

impl std::ops::AddAssign for StepTimes {
    fn add_assign(&mut self, other: Self) {
        self.forward += other.forward;
        self.backward += other.backward;
        self.update += other.update;
    }
}

/// Calls [`Integrator::prepare`] on every low-rank layer; once, before the first step.
pub fn prepare<B: AutodiffBackend, N: Network<B>>(net: &mut N, integrator: &dyn Integrator<B>) -> Result<()> {
    net.low_rank_layers().into_iter().try_for_each(|layer| integrator.prepare(layer))
}

/// One training step: every pass of `integrator`, with `loss` evaluated on the network.
///
/// A non-finite loss stops the step with [`Error::NonFinite`] before that pass updates
/// anything; one loss value per pass is read back, a synchronisation point on the GPU.
pub fn step<B, N, F>(
    net: &mut N,
    integrator: &dyn Integrator<B>,
    opt: &Optimizer,
    mut loss: F,
) -> Result<StepReport>
where
    B: AutodiffBackend,
    N: Network<B>,
    F: FnMut(&N) -> Tensor<B, 1>,
{
    let mut first_loss = f64::NAN;
    let mut times = StepTimes::default();
    for i in 0..integrator.passes().len() {
        let (value, pass_times) = timed_pass(net, integrator, opt, i, &mut loss)?;
        times += pass_times;
        if i == 0 {
            first_loss = value;
        }
    }
    Ok(StepReport { loss: first_loss, counters: integrator.counters().snapshot(), times })
}

/// Pass number `i` of a step (see [`step`]); returns the loss it evaluated.
///
/// Exposed so tests can look at a layer between the passes of a step (property T1).
pub fn pass<B, N, F>(
    net: &mut N,
    integrator: &dyn Integrator<B>,
    opt: &Optimizer,
    i: usize,
    loss: &mut F,
) -> Result<f64>
where
    B: AutodiffBackend,
    N: Network<B>,
    F: FnMut(&N) -> Tensor<B, 1>,
{
    timed_pass(net, integrator, opt, i, loss).map(|(value, _)| value)
}

/// [`pass`], and where its time went.
fn timed_pass<B, N, F>(
    net: &mut N,
    integrator: &dyn Integrator<B>,
    opt: &Optimizer,
    i: usize,
    loss: &mut F,
) -> Result<(f64, StepTimes)>
where
    B: AutodiffBackend,
    N: Network<B>,
    F: FnMut(&N) -> Tensor<B, 1>,
{
    let started = Instant::now();
    let pass = integrator.passes()[i];
    for layer in net.low_rank_layers() {
        layer.begin_pass(pass);
    }
    if i == 0 {
        net.dense_layers().into_iter().for_each(DenseLinear::begin_pass);
    }
    let value = loss(net);
    crate::linalg::convert::note_host_read();
    let scalar: f64 = value.clone().into_scalar().elem();
    if !scalar.is_finite() {
        net.low_rank_layers().into_iter().for_each(LowRankLinear::abort_step);
        net.dense_layers().into_iter().for_each(DenseLinear::end_pass);
        return Err(Error::NonFinite { context: format!("loss ({scalar}) in pass {i} ({pass:?})") });
    }
    let forward_done = Instant::now();
    let grads = value.backward();
    let backward_done = Instant::now();
    integrator.counters().pass();
    // The layers' updates are independent; their host decompositions are sequential in faer,
    // so running layers side by side uses the cores that a single small QR cannot.
    // On a GPU the updates are queued from this thread only: CubeCL's behaviour with kernels
    // from several threads has not been measured here.
    let layers: Vec<_> = net.low_rank_layers().into_iter().map(|l| (l.take_grads(&grads), l)).collect();
    let on_host = layers.first().is_some_and(|(_, l)| !B::name(&l.u().device()).contains("cubecl"));
    let update = |(g, layer): (_, &mut LowRankLinear<B>)| integrator.after_pass(i, layer, g, opt);
    if on_host {
        layers.into_par_iter().try_for_each(update)?;
    } else {
        layers.into_iter().try_for_each(update)?;
    }
    if i == 0 {
        for layer in net.dense_layers() {
            layer.step(&grads, opt);
        }
    }
    let times = StepTimes {
        forward: (forward_done - started).as_secs_f64(),
        backward: (backward_done - forward_done).as_secs_f64(),
        update: backward_done.elapsed().as_secs_f64(),
    };
    Ok((scalar, times))
}
