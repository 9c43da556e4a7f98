//! A network mixing dlrt's low-rank layers with Burn's own modules: the integrator trains the
//! low-rank layers, and `Trainer::step_with` hands the first pass's gradients to a Burn
//! optimizer (with its state) for the Burn parameters.
#![allow(non_snake_case)]

mod common;

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams, Optimizer as _, SgdConfig};
use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use dlrt::integrators::IntegratorKind;
use dlrt::layers::{DenseLinear, Network};
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
