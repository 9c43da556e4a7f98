//! A network mixing dlrt's low-rank layers with Burn's own modules: the integrator trains the
//! low-rank layers, and `Trainer::step_with` hands the first pass's gradients to a Burn
//! optimizer (with its state) for the Burn parameters. The low-rank layers are Burn modules: a
//! model written in Burn holds them, Burn's records save and load them (at the record's rank).
#![allow(non_snake_case)]

mod common;

use burn::module::{AutodiffModule, Module};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams, Optimizer as _, SgdConfig};
use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use dlrt::integrators::IntegratorKind;
use dlrt::layers::{DenseLinear, ModuleNetwork, Network};
use dlrt::linalg::TruncationConfig;
use dlrt::optim::Optimizer;
use dlrt::train::{loss::cross_entropy, Trainer};
use dlrt::LowRankLinear;
use rand::{rngs::StdRng, SeedableRng};

#[derive(Clone)]
struct Net {
    hidden: LowRankLinear<B>,
    head: Linear<B>,
}

impl Net {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let device = Default::default();
        let hidden = LowRankLinear::random(8, 6, 2, true, 1.0, &mut rng, &device).unwrap();
        Net { hidden, head: LinearConfig::new(6, 3).init(&device) }
    }
    fn forward(&self, x: T2) -> T2 {
        self.head.forward(self.hidden.forward(x).tanh())
    }
}

impl Network<B> for Net {
    fn low_rank_layers(&mut self) -> Vec<&mut LowRankLinear<B>> {
        vec![&mut self.hidden]
    }
    fn dense_layers(&mut self) -> Vec<&mut DenseLinear<B>> {
        Vec::new()
    }
}

fn data() -> (T2, Tensor<B, 1, Int>) {
    let x = gaussian(5, 8, &mut StdRng::seed_from_u64(9));
    (x, Tensor::from_data(TensorData::new(vec![0i64, 1, 2, 1, 0], [5]), &Default::default()))
}

fn trainer() -> Trainer<B> {
    Trainer::new(IntegratorKind::AbcPsi, &TruncationConfig::relative(1e-3), Optimizer::sgd(0.1)).unwrap()
}

#[test]
fn burns_sgd_steps_the_burn_head_with_the_gradient_at_w0() {
    let (x, y) = data();
    let mut net = Net::new(1);
    let (W0, hidden0) = (net.head.weight.val(), net.hidden.to_dense());
    // The head's gradient at the starting point, by plain autodiff.
    let grads = cross_entropy(net.forward(x.clone()), y.clone()).backward();
    let G = net.head.weight.grad(&grads).map(Tensor::<B, 2>::from_inner).unwrap();
    let mut sgd = SgdConfig::new().init::<B, Linear<B>>();
    let mut trainer = trainer();
    trainer.prepare(&mut net).unwrap();
    trainer
        .step_with(
            &mut net,
            |net| cross_entropy(net.forward(x.clone()), y.clone()),
            |net, grads| {
                let grads = GradientsParams::from_grads(grads, &net.head);
                net.head = sgd.step(0.5, net.head.clone(), grads);
            },
        )
        .unwrap();
    let expected = W0 - G.mul_scalar(0.5);
    assert!(max_abs(net.head.weight.val() - expected) < 1e-12, "W1 = W0 − λ ∇W ℒ(W0)");
    assert!(fro(net.hidden.to_dense() - hidden0) > 1e-3, "the integrator stepped the low-rank layer");
    assert_eq!(net.head.num_params(), 6 * 3 + 3);
}

#[test]
fn burns_adam_keeps_its_state_across_steps() {
    let (x, y) = data();
    let run = |fresh_each_step: bool| {
        let mut net = Net::new(2);
        let mut trainer = trainer();
        trainer.prepare(&mut net).unwrap();
        let mut adam = AdamConfig::new().init::<B, Linear<B>>();
        for _ in 0..3 {
            if fresh_each_step {
                adam = AdamConfig::new().init::<B, Linear<B>>();
            }
            trainer
                .step_with(
                    &mut net,
                    |net| cross_entropy(net.forward(x.clone()), y.clone()),
                    |net, grads| {
                        let grads = GradientsParams::from_grads(grads, &net.head);
                        net.head = adam.step(0.01, net.head.clone(), grads);
                    },
                )
                .unwrap();
        }
        (net.head.weight.val(), net.hidden.to_dense())
    };
    let (kept, hidden_kept) = run(false);
    let (fresh, hidden_fresh) = run(true);
    // Adam's first step moves every weight by about λ whatever its state; later steps depend on
    // the moments, so a reset optimizer ends elsewhere. The low-rank layer sees both heads.
    assert!(max_abs(kept - fresh) > 1e-4, "the moments were not carried");
    assert!(fro(hidden_kept - hidden_fresh) > 0.0);
}

/// A model written in Burn: dlrt's low-rank convolution and linear layer next to Burn's Linear.
/// (In its own module: `#[derive(Module)]` wants its backend parameter named `B`.)
mod user {
    use burn::module::{Module, Param};
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::{backend::Backend, Tensor, TensorData};
    use dlrt::layers::{Conv2dShape, LowRankConv2d};
    use dlrt::LowRankLinear;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    #[derive(Module, Debug)]
    pub struct UserNet<B: Backend> {
        pub conv: LowRankConv2d<B>,
        pub hidden: LowRankLinear<B>,
        pub head: Linear<B>,
    }

    impl<B: Backend> UserNet<B> {
        /// conv 1→4 (3×3) on 6×6 images → 64 → hidden 8 (rank `r`) → 3 classes.
        pub fn new(r: usize, seed: u64, device: &B::Device) -> Self {
            let mut rng = StdRng::seed_from_u64(seed);
            let shape = Conv2dShape::new(1, 4, [3, 3]);
            let conv = LowRankConv2d::random(shape, r, true, 1.0, &mut rng, device).unwrap();
            let hidden = LowRankLinear::random(64, 8, r, true, 1.0, &mut rng, device).unwrap();
            // Burn's own init draws from the backend's global generator, which tests running
            // side by side share: the head's weights come from `rng` instead.
            let mut head = LinearConfig::new(8, 3).init(device);
            let w: Vec<f64> = (0..24).map(|_| rng.random_range(-0.5..0.5)).collect();
            head.weight = Param::from_tensor(Tensor::from_data(TensorData::new(w, [8, 3]), device));
            head.bias = Some(Param::from_tensor(Tensor::zeros([3], device)));
            UserNet { conv, hidden, head }
        }
        pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
            self.head.forward(self.hidden.forward(self.conv.forward(x).flatten::<2>(1, 3)).tanh())
        }
    }
}
use user::{UserNet, UserNetRecord};

impl Network<B> for UserNet<B> {
    fn low_rank_layers(&mut self) -> Vec<&mut LowRankLinear<B>> {
        vec![self.conv.core_mut(), &mut self.hidden]
    }
    fn dense_layers(&mut self) -> Vec<&mut DenseLinear<B>> {
        Vec::new()
    }
}

fn images() -> (Tensor<B, 4>, Tensor<B, 1, Int>) {
    let x = gaussian(5 * 6, 6, &mut StdRng::seed_from_u64(3)).reshape([5, 1, 6, 6]);
    (x, Tensor::from_data(TensorData::new(vec![0i64, 1, 2, 1, 0], [5]), &Default::default()))
}

/// Three abc-PSI steps; Burn's Adam steps the whole module (`whole`) or only the head.
fn train_user_net(whole: bool) -> UserNet<B> {
    let (x, y) = images();
    let mut net = UserNet::<B>::new(2, 4, &Default::default());
    let mut trainer = trainer();
    trainer.prepare(&mut net).unwrap();
    let (mut adam_all, mut adam_head) =
        (AdamConfig::new().init::<B, UserNet<B>>(), AdamConfig::new().init::<B, Linear<B>>());
    for _ in 0..3 {
        let loss = |net: &UserNet<B>| cross_entropy(net.forward(x.clone()), y.clone());
        trainer
            .step_with(&mut net, loss, |net, grads| {
                if whole {
                    let grads = GradientsParams::from_grads(grads, net);
                    *net = adam_all.step(0.01, net.clone(), grads);
                } else {
                    let grads = GradientsParams::from_grads(grads, &net.head);
                    net.head = adam_head.step(0.01, net.head.clone(), grads);
                }
            })
            .unwrap();
    }
    net
}

#[test]
fn a_burn_model_with_low_rank_layers_trains_and_burns_optimizer_leaves_the_factors_alone() {
    let (whole, head_only) = (train_user_net(true), train_user_net(false));
    // The factors are parameters without gradients: Burn's Adam over the whole module steps
    // exactly what it steps over the head alone, and the integrator moved the rest.
    let (x, _) = images();
    assert_eq!(whole.hidden.to_dense().into_data(), head_only.hidden.to_dense().into_data());
    assert_eq!(whole.conv.to_kernel().into_data(), head_only.conv.to_kernel().into_data());
    assert!(max_abs(whole.forward(x.clone()) - head_only.forward(x.clone())) < 1e-12);
    let untrained = UserNet::<B>::new(2, 4, &Default::default());
    assert!(fro(whole.hidden.to_dense() - untrained.hidden.to_dense()) > 1e-3);
    // Burn's parameter count: U, S, V and bias of each low-rank layer, and the head.
    let r = |l: &LowRankLinear<B>| l.rank();
    let (rc, rh) = (r(whole.conv.core()), r(&whole.hidden));
    let expected = (9 + 4) * rc + rc * rc + 4 + (64 + 8) * rh + rh * rh + 8 + 8 * 3 + 3;
    assert_eq!(whole.num_params(), expected);
    // Inference without autodiff: the same logits on the inner backend.
    let inner = whole.valid();
    let logits = inner.forward(x.clone().inner());
    assert!(max_abs(Tensor::from_inner(logits) - whole.forward(x)) < 1e-12);
}

#[test]
fn records_save_and_load_at_their_own_rank_and_bad_records_name_the_layer() {
    use burn::record::{BinBytesRecorder, DoublePrecisionSettings, Recorder};
    let trained = train_user_net(false);
    let recorder = BinBytesRecorder::<DoublePrecisionSettings>::default();
    let bytes = recorder.record(trained.clone().into_record(), ()).unwrap();
    // A fresh model of another rank takes the ranks of the record.
    let device = Default::default();
    let fresh = UserNet::<B>::new(1, 99, &device);
    let loaded = fresh.load_record(recorder.load(bytes.clone(), &device).unwrap());
    assert_eq!(loaded.hidden.rank(), trained.hidden.rank());
    assert_eq!(loaded.conv.rank(), trained.conv.rank());
    loaded.hidden.validate("hidden").unwrap();
    let (x, _) = images();
    assert!(max_abs(loaded.forward(x.clone()) - trained.forward(x)) < 1e-12);
    // A layer's record checked against a layer of other sizes: an error naming the layer.
    let record: UserNetRecord<B> = recorder.load(bytes, &device).unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let other = LowRankLinear::<B>::random(63, 8, 2, true, 1.0, &mut rng, &device).unwrap();
    let err = other.load_checked(record.hidden, "hidden").unwrap_err().to_string();
    assert!(err.contains("record of hidden") && err.contains("63×8") && err.contains("U [64,"), "{err}");
    let record: UserNetRecord<B> =
        recorder.load(recorder.record(trained.clone().into_record(), ()).unwrap(), &device).unwrap();
    let no_bias = LowRankLinear::<B>::random(64, 8, 2, false, 1.0, &mut rng, &device).unwrap();
    let err = no_bias.load_checked(record.hidden, "hidden").unwrap_err().to_string();
    assert!(err.contains("record of hidden") && err.contains("no bias"), "{err}");
    let same = LowRankLinear::<B>::random(64, 8, 3, true, 1.0, &mut rng, &device).unwrap();
    let record: UserNetRecord<B> =
        recorder.load(recorder.record(trained.clone().into_record(), ()).unwrap(), &device).unwrap();
    assert_eq!(same.load_checked(record.hidden, "hidden").unwrap().rank(), trained.hidden.rank());
}

/// Three steps of `kind` on [`UserNet`], with Burn's Adam on the head: through the
/// [`Network`] impl above (`listed`) or through `step_module`, which finds the layers itself.
fn train_both_ways(kind: IntegratorKind, listed: bool) -> (UserNet<B>, Vec<f64>) {
    let (x, y) = images();
    let mut net = UserNet::<B>::new(2, 4, &Default::default());
    let mut trainer = Trainer::new(kind, &TruncationConfig::relative(1e-3), Optimizer::sgd(0.1)).unwrap();
    let mut adam = AdamConfig::new().init::<B, UserNet<B>>();
    let mut others = |net: &mut UserNet<B>, grads| {
        let grads = GradientsParams::from_grads(grads, net);
        *net = adam.step(0.01, net.clone(), grads);
    };
    let loss = |net: &UserNet<B>| cross_entropy(net.forward(x.clone()), y.clone());
    let mut losses = Vec::new();
    if listed {
        trainer.prepare(&mut net).unwrap();
    } else {
        trainer.prepare_module(&mut net).unwrap();
    }
    for _ in 0..3 {
        let report = if listed {
            trainer.step_with(&mut net, loss, &mut others)
        } else {
            trainer.step_module(&mut net, loss, &mut others)
        };
        losses.push(report.unwrap().loss);
    }
    (net, losses)
}

#[test]
fn the_trainer_finds_the_low_rank_layers_by_visiting_the_module() {
    let mut net = UserNet::<B>::new(2, 4, &Default::default());
    let found = ModuleNetwork::new(&mut net).unwrap();
    assert_eq!(found.paths(), ["conv.core", "hidden"]);
    assert_eq!(found.layers()[1].to_dense().into_data(), net.hidden.to_dense().into_data());
    // Every integrator trains the module exactly as it trains the same layers listed by hand.
    for kind in IntegratorKind::ALL.into_iter().filter(|k| *k != IntegratorKind::Dense) {
        let ((listed, listed_losses), (visited, visited_losses)) =
            (train_both_ways(kind, true), train_both_ways(kind, false));
        assert_eq!(listed_losses, visited_losses, "{kind:?}");
        assert_eq!(listed.hidden.rank(), visited.hidden.rank(), "{kind:?}");
        assert_eq!(listed.conv.rank(), visited.conv.rank(), "{kind:?}");
        assert!(max_abs(listed.hidden.to_dense() - visited.hidden.to_dense()) < 1e-12, "{kind:?}");
        let kernels = (listed.conv.to_kernel() - visited.conv.to_kernel()).abs().max().into_scalar();
        assert!(kernels < 1e-12, "{kind:?}");
        assert!(max_abs(listed.head.weight.val() - visited.head.weight.val()) < 1e-12, "{kind:?}");
        let untrained = UserNet::<B>::new(2, 4, &Default::default());
        assert!(fro(visited.hidden.to_dense() - untrained.hidden.to_dense()) > 1e-3, "{kind:?} trained");
        assert!(visited_losses[2] < visited_losses[0], "{kind:?}: {visited_losses:?}");
    }
}

/// One low-rank layer applied twice, as a Burn module holds it (two fields sharing parameters)
/// and as a [`Network`] lists it (once).
mod tied {
    use burn::module::Module;
    use burn::tensor::{backend::Backend, Tensor};
    use dlrt::LowRankLinear;

    #[derive(Module, Debug)]
    pub struct Tied<B: Backend> {
        pub first: LowRankLinear<B>,
        pub again: LowRankLinear<B>,
    }

    /// Layers inside Burn's containers.
    #[derive(Module, Debug)]
    pub struct Stack<B: Backend> {
        pub blocks: Vec<LowRankLinear<B>>,
        pub extra: Option<dlrt::LowRankConv2d<B>>,
    }

    impl<B: Backend> Tied<B> {
        pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
            self.again.forward(self.first.forward(x).tanh())
        }
    }
}
use tied::Tied;

struct Once(LowRankLinear<B>);

impl Network<B> for Once {
    fn low_rank_layers(&mut self) -> Vec<&mut LowRankLinear<B>> {
        vec![&mut self.0]
    }
    fn dense_layers(&mut self) -> Vec<&mut DenseLinear<B>> {
        Vec::new()
    }
}

#[test]
fn a_layer_used_twice_is_one_layer_and_a_failed_step_changes_nothing() {
    let mut rng = StdRng::seed_from_u64(6);
    let layer = LowRankLinear::<B>::random(8, 8, 3, true, 1.0, &mut rng, &Default::default()).unwrap();
    let x = gaussian(5, 8, &mut rng);
    let target = gaussian(5, 8, &mut rng);
    let mse = |z: T2| (z - target.clone()).powf_scalar(2.0).mean();
    let (mut tied, mut once) = (Tied { first: layer.clone(), again: layer.clone() }, Once(layer));
    assert_eq!(ModuleNetwork::new(&mut tied).unwrap().paths(), ["first"]);
    let shape = dlrt::layers::Conv2dShape::new(2, 3, [2, 2]);
    let extra = dlrt::LowRankConv2d::random(shape, 2, false, 1.0, &mut rng, &Default::default()).unwrap();
    // The third block is the first again.
    let other = LowRankLinear::random(8, 4, 2, false, 1.0, &mut rng, &Default::default()).unwrap();
    let blocks = vec![tied.first.clone(), other, tied.first.clone()];
    let mut stack = tied::Stack { blocks, extra: Some(extra) };
    assert_eq!(ModuleNetwork::new(&mut stack).unwrap().paths(), ["blocks.0", "blocks.1", "extra.core"]);
    let (mut by_module, mut by_list) = (trainer(), trainer());
    by_module.prepare_module(&mut tied).unwrap();
    by_list.prepare(&mut once).unwrap();
    for _ in 0..3 {
        let a = by_module.step_module(&mut tied, |m| mse(m.forward(x.clone())), |_, _| {}).unwrap();
        let b = by_list.step(&mut once, |n| mse(n.0.forward(n.0.forward(x.clone()).tanh()))).unwrap();
        assert_eq!(a.loss, b.loss);
    }
    assert_eq!(tied.first.to_dense().into_data(), once.0.to_dense().into_data());
    assert_eq!(tied.again.to_dense().into_data(), once.0.to_dense().into_data());
    // A NaN loss is an error, and the module keeps its factors; outside a step the module's
    // layers compute with their own factors again.
    let before = tied.first.to_dense();
    let err = by_module
        .step_module(&mut tied, |m| mse(m.forward(x.clone())).mul_scalar(f64::NAN), |_, _| {})
        .unwrap_err();
    assert!(err.to_string().contains("loss"), "{err}");
    assert_eq!(tied.first.to_dense().into_data(), before.into_data());
    let bias = tied.first.bias().unwrap().clone().unsqueeze::<2>();
    assert!(max_abs(tied.first.forward(x.clone()) - (x.matmul(tied.first.to_dense()) + bias)) < 1e-12);
}

#[test]
fn a_module_resumes_exactly_from_its_burn_record_and_the_trainers_state() {
    use burn::record::{BinBytesRecorder, DoublePrecisionSettings, Recorder};
    use dlrt::optim::OptimizerConfig;
    let (x, y) = images();
    let device = Default::default();
    let adam = || Optimizer::new(OptimizerConfig::adamw(0.0), 1e-2).unwrap();
    let trainer = |kind| Trainer::new(kind, &TruncationConfig::relative(1e-3), adam()).unwrap();
    let steps = |trainer: &mut Trainer<B>, net: &mut UserNet<B>, k: usize| {
        for _ in 0..k {
            trainer.step_module(net, |n| cross_entropy(n.forward(x.clone()), y.clone()), |_, _| {}).unwrap();
        }
    };
    let mut straight = UserNet::<B>::new(2, 4, &device);
    let mut t = trainer(IntegratorKind::AbcPsi);
    t.prepare_module(&mut straight).unwrap();
    steps(&mut t, &mut straight, 4);

    let mut first = UserNet::<B>::new(2, 4, &device);
    let mut t1 = trainer(IntegratorKind::AbcPsi);
    t1.prepare_module(&mut first).unwrap();
    steps(&mut t1, &mut first, 2);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("trainer.safetensors");
    t1.save_module_state(&state, &first).unwrap();
    let recorder = BinBytesRecorder::<DoublePrecisionSettings>::default();
    let bytes = recorder.record(first.clone().into_record(), ()).unwrap();
    let resume = |with_state: bool| {
        // A fresh model of another rank takes the record's ranks, and the trainer its state.
        let mut net =
            UserNet::<B>::new(1, 99, &device).load_record(recorder.load(bytes.clone(), &device).unwrap());
        let mut t2 = trainer(IntegratorKind::AbcPsi);
        if with_state {
            t2.load_module_state(&state, &net).unwrap();
        }
        steps(&mut t2, &mut net, 2);
        (net, t2.counters())
    };
    let (resumed, counters) = resume(true);
    assert_eq!(counters, t.counters());
    assert_eq!((resumed.hidden.rank(), resumed.conv.rank()), (straight.hidden.rank(), straight.conv.rank()));
    // The optimizer state is stored in f32.
    assert!(max_abs(resumed.hidden.to_dense() - straight.hidden.to_dense()) < 1e-5);
    let kernels = (resumed.conv.to_kernel() - straight.conv.to_kernel()).abs().max().into_scalar();
    assert!(kernels < 1e-5, "{kernels}");
    let (restarted, _) = resume(false);
    assert!(max_abs(restarted.hidden.to_dense() - straight.hidden.to_dense()) > 1e-3, "the state matters");

    // A module that is not the one the state was saved with, and another integrator: errors
    // naming the file and the field.
    let mut other = first.clone();
    let mut t3 = trainer(IntegratorKind::AbcPsi);
    other.hidden = LowRankLinear::random(
        64,
        8,
        first.hidden.rank() % 8 + 1,
        true,
        1.0,
        &mut StdRng::seed_from_u64(1),
        &device,
    )
    .unwrap();
    let err = t3.load_module_state(&state, &other).unwrap_err().to_string();
    assert!(err.contains("trainer.safetensors") && err.contains("metadata.ranks (hidden)"), "{err}");
    let err = trainer(IntegratorKind::Bug).load_module_state(&state, &first).unwrap_err().to_string();
    assert!(err.contains("metadata.integrator") && err.contains("bug"), "{err}");
    let err =
        t3.load_module_state(&state, &Tied { first: other.hidden.clone(), again: other.hidden }).unwrap_err();
    assert!(err.to_string().contains("metadata.paths"), "{err}");
}
