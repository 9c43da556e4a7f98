//! An MLP of your own, an ordinary Burn module: two low-rank hidden layers trained by abc-PSI,
//! which finds them by visiting the module, and a Burn `nn::Linear` head, the whole model given to Burn's own Adam (`burn::optim`, with
//! its state), which steps the head (the low-rank factors have no gradient for it), on MNIST
//! (fetched into ./data when missing): one epoch, then the accuracy on 2 000 test images
//! (89.3 % in a release build).
//! `--max-batches N` stops the epoch early.
//!
//! cargo run --release --example mlp_burn_adam [-- --max-batches N]
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams, Optimizer as _};
use burn::tensor::backend::Backend;
use burn::tensor::{activation::relu, Int, Tensor, TensorData};
use dlrt::data::{self, DatasetName, ImageFormat, Split};
use dlrt::optim::{Optimizer, OptimizerConfig};
use dlrt::train::{loss, Trainer};
use dlrt::{linalg::TruncationConfig, IntegratorKind, LowRankLinear, TrainBackend};
use rand::{rngs::StdRng, SeedableRng};

/// 784 → 256 → 256 (low-rank, ReLU) → 10 (Burn's Linear).
#[derive(Module, Debug)]
struct Mlp<B: Backend> {
    hidden: Vec<LowRankLinear<B>>,
    head: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.head.forward(self.hidden.iter().fold(x, |x, layer| relu(layer.forward(x))))
    }
}

fn main() -> dlrt::Result<()> {
    let max_batches = match std::env::args().skip_while(|a| a != "--max-batches").nth(1) {
        Some(v) => v.parse().map_err(|_| dlrt::Error::config("--max-batches", v, "a number of batches"))?,
        None => usize::MAX,
    };
    let (dir, device, rng) =
        (std::path::Path::new("data"), Default::default(), &mut StdRng::seed_from_u64(0));
    TrainBackend::seed(&device, 0);
    data::fetch::ensure(DatasetName::Mnist, dir, &mut std::io::stderr())?;
    let (train, test) = (
        data::load(DatasetName::Mnist, Split::Train, dir)?,
        data::load(DatasetName::Mnist, Split::Test, dir)?,
    );
    let batch = |d: &data::Dataset, idx: &[usize]| {
        let (pixels, _, labels) = d.batch(idx, ImageFormat::AsStored);
        let x = Tensor::<TrainBackend, 2>::from_data(TensorData::new(pixels, [idx.len(), 784]), &device);
        (x, Tensor::<TrainBackend, 1, Int>::from_data(TensorData::new(labels, [idx.len()]), &device))
    };
    let hidden = vec![
        LowRankLinear::random(784, 256, 16, true, 2f64.sqrt(), rng, &device)?,
        LowRankLinear::random(256, 256, 16, true, 2f64.sqrt(), rng, &device)?,
    ];
    let mut net = Mlp { hidden, head: LinearConfig::new(256, 10).init(&device) };
    let factors = Optimizer::new(OptimizerConfig::adamw(0.0), 1e-3)?;
    let mut trainer = Trainer::new(IntegratorKind::AbcPsi, &TruncationConfig::relative(0.05), factors)?;
    let mut adam = AdamConfig::new().init::<TrainBackend, Mlp<TrainBackend>>();
    trainer.prepare_module(&mut net)?;
    let indices: Vec<usize> = (0..train.len).collect();
    for (k, idx) in indices.chunks(64).take(max_batches).enumerate() {
        let (x, y) = batch(&train, idx);
        let report = trainer.step_module(
            &mut net,
            |net| loss::cross_entropy(net.forward(x.clone()), y.clone()),
            |net, grads| {
                let grads = GradientsParams::from_grads(grads, net);
                *net = adam.step(1e-3, net.clone(), grads);
            },
        )?;
        if k % 100 == 0 {
            println!(
                "step {k}: loss {:.3}, ranks {:?}",
                report.loss,
                net.hidden.iter().map(|l| l.rank()).collect::<Vec<_>>()
            );
        }
    }
    let (x, y) = batch(&test, &(0..2000).collect::<Vec<_>>());
    println!(
        "test accuracy on 2 000 images: {:.1} %",
        100.0 * loss::correct(net.forward(x), y) as f64 / 2000.0
    );
    Ok(())
}
