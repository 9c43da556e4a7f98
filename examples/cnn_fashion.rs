//! A CNN of your own, an ordinary Burn module: low-rank convolutions and a low-rank linear
//! layer trained by abc-PSI, which finds them by visiting the module, and Burn's `nn::Linear`
//! head stepped by Burn's SGD, on Fashion-MNIST (fetched into ./data when missing): one epoch,
//! then the accuracy on 2 000 test images (81.7 % in a release build). `--max-batches N` stops
//! the epoch early (CI runs a few batches).
//!
//! cargo run --release --example cnn_fashion [-- --max-batches N]
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{GradientsParams, Optimizer as _, SgdConfig};
use burn::tensor::{activation::relu, backend::Backend, Int, Tensor, TensorData};
use dlrt::data::{self, DatasetName, ImageFormat, Split};
use dlrt::layers::{max_pool2d, Conv2dShape, LowRankConv2d};
use dlrt::train::{loss, Trainer};
use dlrt::{linalg::TruncationConfig, optim::Optimizer, IntegratorKind, LowRankLinear, TrainBackend};
use rand::{rngs::StdRng, SeedableRng};

/// conv 1→16 (5×5) → pool → conv 16→32 (5×5) → pool → 512→128 → 128→10.
#[derive(Module, Debug)]
struct Cnn<B: Backend> {
    conv1: LowRankConv2d<B>,
    conv2: LowRankConv2d<B>,
    fc: LowRankLinear<B>,
    out: Linear<B>,
}

impl<B: Backend> Cnn<B> {
    fn new(rng: &mut StdRng, device: &B::Device) -> dlrt::Result<Self> {
        let gain = 2f64.sqrt();
        Ok(Self {
            conv1: LowRankConv2d::random(Conv2dShape::new(1, 16, [5, 5]), 8, true, gain, rng, device)?,
            conv2: LowRankConv2d::random(Conv2dShape::new(16, 32, [5, 5]), 8, true, gain, rng, device)?,
            fc: LowRankLinear::random(512, 128, 16, true, gain, rng, device)?,
            out: LinearConfig::new(128, 10).init(device),
        })
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        // Burn's max pooling, in one fused pass each way on the CPU.
        let pool = |x| max_pool2d(x, [2, 2], [2, 2]);
        let x = pool(relu(self.conv1.forward(x)));
        let x = pool(relu(self.conv2.forward(x)));
        self.out.forward(relu(self.fc.forward(x.flatten::<2>(1, 3))))
    }
}

fn main() -> dlrt::Result<()> {
    let max_batches = match std::env::args().skip_while(|a| a != "--max-batches").nth(1) {
        Some(v) => v.parse().map_err(|_| dlrt::Error::config("--max-batches", v, "a number of batches"))?,
        None => usize::MAX,
    };
    let (dir, device) = (std::path::Path::new("data"), Default::default());
    TrainBackend::seed(&device, 0);
    data::fetch::ensure(DatasetName::FashionMnist, dir, &mut std::io::stderr())?;
    let load = |split| data::load(DatasetName::FashionMnist, split, dir);
    let (train, test) = (load(Split::Train)?, load(Split::Test)?);
    let batch = |d: &data::Dataset, idx: &[usize]| {
        let (pixels, shape, labels) = d.batch(idx, ImageFormat::AsStored);
        let x = Tensor::<TrainBackend, 4>::from_data(TensorData::new(pixels, shape), &device);
        (x, Tensor::<TrainBackend, 1, Int>::from_data(TensorData::new(labels, [idx.len()]), &device))
    };
    let mut net = Cnn::<TrainBackend>::new(&mut StdRng::seed_from_u64(0), &device)?;
    let mut trainer =
        Trainer::new(IntegratorKind::AbcPsi, &TruncationConfig::relative(0.1), Optimizer::sgd(0.05))?;
    let mut sgd = SgdConfig::new().init::<TrainBackend, Cnn<TrainBackend>>();
    trainer.prepare_module(&mut net)?;
    let indices: Vec<usize> = (0..train.len).collect();
    for (k, idx) in indices.chunks(64).take(max_batches).enumerate() {
        let (x, y) = batch(&train, idx);
        let report = trainer.step_module(
            &mut net,
            |net| loss::cross_entropy(net.forward(x.clone()), y.clone()),
            |net, grads| *net = sgd.step(0.05, net.clone(), GradientsParams::from_grads(grads, net)),
        )?;
        if k % 100 == 0 {
            let ranks = [net.conv1.rank(), net.conv2.rank(), net.fc.rank()];
            println!("step {k}: loss {:.3}, ranks {ranks:?}", report.loss);
        }
    }
    let (x, y) = batch(&test, &(0..2000).collect::<Vec<_>>());
    let accuracy = 100.0 * loss::correct(net.forward(x), y) as f64 / 2000.0;
    println!("test accuracy on 2 000 images: {accuracy:.1} %");
    Ok(())
}
