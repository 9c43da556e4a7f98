//! Training: the step that drives an integrator over a network, and the one loop around it.
//!
//! - [`Trainer`]: one step is, for each pass the integrator lists, set every low-rank layer's
//!   parametrization, run the loss forward and backward, and hand all layers' gradients to the
//!   integrator; dense layers take their ordinary optimizer step from the first pass. There
//!   are no integrator-specific branches, and the trainer keeps the counters and the
//!   per-layer state ([`TrainState`]).
//! - [`fit`]: the loop (shuffle, step through the batches, evaluate, record, plot,
//!   checkpoint) that [`run`] (an MLP on MNIST) and [`finetune`] (adapters on a ViT) share.
//! - [`loss`], [`schedule`]: the loss and the learning-rate schedule; [`metrics`], [`plot`]:
//!   what a run writes.

pub mod eval;
pub mod finetune;
pub mod fit;
pub mod loss;
pub mod metrics;
pub mod plot;
pub mod predict;
pub mod report;
pub mod run;
pub mod schedule;

use std::num::NonZeroUsize;
use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::tensor::{backend::AutodiffBackend, ElementConversion, Tensor};

use crate::checkpoint;
use crate::integrators::{
    BatchedUpdate, CounterSnapshot, Integrator, IntegratorKind, LayerStep, Spec, TrainState,
};
use crate::layers::{low_rank_layers, DenseLinear, LowRankLinear, ModuleNetwork, Network, Pass};
use crate::linalg::TruncationConfig;
use crate::optim::{Bases, DenseSlots, Optimizer};
use crate::{Error, Result};

/// What one step measured.
#[derive(Clone, Copy, Debug)]
pub struct StepReport {
    /// The loss at the start of the step (from the first pass).
    pub loss: f64,
    /// The counters after the step.
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

/// The passes and decompositions of dense training.
const DENSE: Spec = Spec { kind: IntegratorKind::Dense, passes: &[Pass::Dense], qr: 0, svd: 0 };

/// An integrator (none for dense training), the optimizer, and what training carries between
/// steps: the per-layer state and the counters.
pub struct Trainer<B: AutodiffBackend> {
    integrator: Option<Box<dyn Integrator<B>>>,
    /// The optimizer; the training loop sets its learning rate before each step.
    pub opt: Optimizer,
    /// Optimizer slots and pending factors of every layer, in the network's order.
    pub state: TrainState<B>,
    counters: CounterSnapshot,
    /// The rank bucket of the passes' factors ([`Trainer::with_rank_bucket`]).
    rank_bucket: NonZeroUsize,
}

impl<B: AutodiffBackend> Trainer<B> {
    /// A trainer for `kind` with the truncation rule of the rank-adaptive methods, its update
    /// batched across layers where that is the default ([`BatchedUpdate::Auto`]).
    pub fn new(kind: IntegratorKind, truncation: &TruncationConfig, opt: Optimizer) -> Result<Self> {
        Self::from_integrator(kind.build(truncation, BatchedUpdate::Auto)?, opt)
    }

    /// A trainer for a given integrator (`None`: dense training); checks the optimizer.
    pub fn from_integrator(integrator: Option<Box<dyn Integrator<B>>>, opt: Optimizer) -> Result<Self> {
        opt.validate()?;
        Ok(Self {
            integrator,
            opt,
            state: TrainState::default(),
            counters: CounterSnapshot::default(),
            rank_bucket: NonZeroUsize::MIN,
        })
    }

    /// Continues from a checkpoint's state and counters.
    pub fn resume(mut self, state: TrainState<B>, counters: CounterSnapshot) -> Self {
        (self.state, self.counters) = (state, counters);
        self
    }

    /// Runs every pass with the low-rank factors zero-padded to widths that are multiples of
    /// `bucket` (`layers::passes`, "Rank buckets"), so a device sees a few shapes while the
    /// ranks change; the steps are the same to round-off. 1 (the default) pads nothing; 0 is
    /// an error naming `rank_bucket`.
    pub fn with_rank_bucket(mut self, bucket: usize) -> Result<Self> {
        self.rank_bucket = NonZeroUsize::new(bucket)
            .ok_or_else(|| Error::config("rank_bucket", bucket, "a rank bucket ≥ 1 (1: no padding)"))?;
        Ok(self)
    }

    /// What one step is: the integrator's passes and decompositions.
    pub fn spec(&self) -> Spec {
        self.integrator.as_ref().map_or(DENSE, |i| i.spec())
    }

    /// Passes, QRs and SVDs so far.
    pub fn counters(&self) -> CounterSnapshot {
        self.counters
    }

    /// Sets every low-rank layer up for the integrator; once, before the first step of a new
    /// run (not on resume). Dense training of a network with low-rank layers is an error.
    pub fn prepare<N: Network<B>>(&self, net: &mut N) -> Result<()> {
        let layers = net.low_rank_layers();
        match &self.integrator {
            Some(integrator) => layers.into_iter().try_for_each(|layer| integrator.prepare(layer)),
            None if layers.is_empty() => Ok(()),
            None => Err(Error::Unsupported(
                "dense training got a low-rank layer: build the network with dense layers only".into(),
            )),
        }
    }

    /// One training step: every pass, with `loss` evaluated on the network.
    ///
    /// A non-finite loss stops the step with [`Error::NonFinite`] before that pass updates
    /// anything; one loss value per pass is read back, a synchronisation point on the GPU.
    /// Earlier passes of that step have updated the network and the optimizer state (there is
    /// no copy to roll back to, which would double the memory): after an error, go back to a
    /// checkpoint, as [`fit`] does.
    pub fn step<N, F>(&mut self, net: &mut N, loss: F) -> Result<StepReport>
    where
        N: Network<B>,
        F: FnMut(&N) -> Tensor<B, 1>,
    {
        self.step_with(net, loss, |_, _| {})
    }

    /// [`Trainer::step`] for a network with parameters outside dlrt's layers (Burn modules such
    /// as `burn::nn::Linear`): `others` gets the gradients of the step's first pass, the pass in
    /// which dense layers step, after dlrt has read its own, to step them with a Burn optimizer
    /// (`GradientsParams::from_grads(grads, &module)`, then `optim.step(lr, module, grads)`).
    pub fn step_with<N, F, O>(&mut self, net: &mut N, mut loss: F, mut others: O) -> Result<StepReport>
    where
        N: Network<B>,
        F: FnMut(&N) -> Tensor<B, 1>,
        O: FnMut(&mut N, B::Gradients),
    {
        let (mut first_loss, mut times) = (f64::NAN, StepTimes::default());
        for i in 0..self.spec().passes.len() {
            let (value, pass_times) = self.timed_pass(net, i, &mut loss, &mut others)?;
            times += pass_times;
            if i == 0 {
                first_loss = value;
            }
        }
        Ok(StepReport { loss: first_loss, counters: self.counters, times })
    }

    /// [`Trainer::prepare`] for a Burn module whose low-rank layers are found by visiting it
    /// ([`ModuleNetwork`]): no [`Network`] impl is needed.
    pub fn prepare_module<M: Module<B>>(&self, model: &mut M) -> Result<()> {
        let mut net = ModuleNetwork::new(model)?;
        self.prepare(&mut net)?;
        net.finish();
        Ok(())
    }

    /// [`Trainer::step_with`] for any Burn module: the integrator trains the low-rank layers it
    /// finds by visiting `model` ([`ModuleNetwork`]), and `others` gets the first pass's
    /// gradients for the module's other parameters, to step them with a Burn optimizer:
    ///
    /// ```ignore
    /// trainer.step_module(&mut model, |m| loss(m.forward(x.clone())), |m, grads| {
    ///     let grads = GradientsParams::from_grads(grads, m);
    ///     *m = adam.step(lr, m.clone(), grads);
    /// })?;
    /// ```
    ///
    /// The module's layers take their new factors (and ranks) when the step ends; a step that
    /// fails leaves them as they were.
    pub fn step_module<M, F, O>(&mut self, model: &mut M, mut loss: F, mut others: O) -> Result<StepReport>
    where
        M: Module<B>,
        F: FnMut(&M) -> Tensor<B, 1>,
        O: FnMut(&mut M, B::Gradients),
    {
        let mut net = ModuleNetwork::new(model)?;
        let report = self.step_with(
            &mut net,
            |net| net.evaluate(&mut loss),
            |net, grads| others(net.model_mut(), grads),
        )?;
        net.finish();
        Ok(report)
    }

    /// Saves what this trainer carries between the steps of `model` (its factors' optimizer
    /// state and the counters) to `path`; with the module's Burn record saved at the same step,
    /// training resumes exactly ([`crate::checkpoint::trainer`]).
    pub fn save_module_state<M: Module<B>>(&self, path: &Path, model: &M) -> Result<()> {
        let layers = low_rank_layers(model)?;
        checkpoint::trainer::save(path, &layers, self.spec().kind, &self.state, self.counters)
    }

    /// Continues from a state [`Trainer::save_module_state`] wrote for `model` (loaded from the
    /// record saved with it); an error names the file and what does not fit.
    pub fn load_module_state<M: Module<B>>(&mut self, path: &Path, model: &M) -> Result<()> {
        let layers = low_rank_layers(model)?;
        let device = match layers.first() {
            Some((_, layer)) => layer.u().device(),
            None => Default::default(),
        };
        (self.state, self.counters) = checkpoint::trainer::load(path, &layers, self.spec().kind, &device)?;
        Ok(())
    }

    /// Pass number `i` of a step (see [`Trainer::step`]); returns the loss it evaluated.
    /// Exposed so tests can look at a layer between the passes of a step (property T1).
    pub fn pass<N, F>(&mut self, net: &mut N, i: usize, loss: &mut F) -> Result<f64>
    where
        N: Network<B>,
        F: FnMut(&N) -> Tensor<B, 1>,
    {
        self.timed_pass(net, i, loss, &mut |_, _| {}).map(|(value, _)| value)
    }

    fn timed_pass<N, F>(
        &mut self,
        net: &mut N,
        i: usize,
        loss: &mut F,
        others: &mut dyn FnMut(&mut N, B::Gradients),
    ) -> Result<(f64, StepTimes)>
    where
        N: Network<B>,
        F: FnMut(&N) -> Tensor<B, 1>,
    {
        let started = Instant::now();
        let spec = self.spec();
        let pass = spec.passes[i];
        let layers = net.low_rank_layers();
        let low_rank = layers.len();
        self.state.low_rank.resize_with(low_rank, Default::default);
        layers.into_iter().for_each(|layer| layer.begin_pass_bucketed(pass, self.rank_bucket));
        if i == 0 {
            let dense = net.dense_layers();
            self.state.dense.resize_with(dense.len(), Default::default);
            dense.into_iter().for_each(DenseLinear::begin_pass);
        }
        let value = loss(net);
        crate::linalg::convert::note_host_read(std::mem::size_of::<B::FloatElem>());
        let scalar: f64 = value.clone().into_scalar().elem();
        if !scalar.is_finite() {
            net.low_rank_layers().into_iter().for_each(LowRankLinear::abort_pass);
            net.dense_layers().into_iter().for_each(DenseLinear::end_pass);
            self.state.low_rank.iter_mut().for_each(|s| s.pending = None);
            return Err(Error::NonFinite { context: format!("loss ({scalar}) in pass {i} ({pass:?})") });
        }
        let forward_done = Instant::now();
        let grads = value.backward();
        let backward_done = Instant::now();
        self.counters.passes += 1;
        if let Some(integrator) = &self.integrator {
            let layers = net.low_rank_layers().into_iter().zip(&mut self.state.low_rank);
            let steps =
                layers.map(|(layer, state)| LayerStep { grads: layer.take_grads(&grads), layer, state });
            integrator.after_pass_all(pass, steps.collect(), &self.opt)?;
        }
        if i == 0 {
            for (layer, slots) in net.dense_layers().into_iter().zip(&mut self.state.dense) {
                dense_step(layer, slots, &grads, &self.opt);
            }
            others(net, grads);
        }
        if i + 1 == spec.passes.len() {
            self.counters.qr += spec.qr * low_rank as u64;
            self.counters.svd += spec.svd * low_rank as u64;
        }
        let times = StepTimes {
            forward: (forward_done - started).as_secs_f64(),
            backward: (backward_done - forward_done).as_secs_f64(),
            update: backward_done.elapsed().as_secs_f64(),
        };
        Ok((scalar, times))
    }
}

/// An ordinary optimizer step of a dense layer's W and b from this pass's gradients.
fn dense_step<B: AutodiffBackend>(
    layer: &mut DenseLinear<B>,
    slots: &mut DenseSlots<B>,
    grads: &B::Gradients,
    opt: &Optimizer,
) {
    let (grad_w, grad_b) = layer.take_grads(grads);
    if let Some(g) = grad_w {
        layer.map_weight(|w| opt.step(w, g, &mut slots.weight, Bases::none()));
    }
    if let Some(g) = grad_b {
        layer.map_bias(|b| opt.step_vector(b, g, &mut slots.bias));
    }
}
