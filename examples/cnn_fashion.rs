//! A CNN of your own with low-rank convolutions and a low-rank linear layer, trained by
//! abc-PSI on Fashion-MNIST (fetched into ./data when missing): one epoch, then the accuracy on
//! 2 000 test images (81.6 % in a release build). `--max-batches N` stops the epoch early (CI
//! runs a few batches).
//!
//! cargo run --release --example cnn_fashion [-- --max-batches N]
use burn::tensor::{activation::relu, backend::Backend, module::max_pool2d, Int, Tensor, TensorData};
use dlrt::data::{self, DatasetName, ImageFormat, Split};
use dlrt::layers::{Conv2dShape, DenseLinear, LowRankConv2d, Network};
use dlrt::train::{loss, Trainer};
use dlrt::{linalg::TruncationConfig, optim::Optimizer, IntegratorKind, LowRankLinear, TrainBackend};
use rand::{rngs::StdRng, SeedableRng};

/// conv 1→16 (5×5) → pool → conv 16→32 (5×5) → pool → 512→128 → 128→10.
struct Cnn<B: Backend> {
    conv1: LowRankConv2d<B>,
    conv2: LowRankConv2d<B>,
    fc: LowRankLinear<B>,
    out: DenseLinear<B>,
}

impl<B: Backend> Cnn<B> {
    fn new(rng: &mut StdRng, device: &B::Device) -> dlrt::Result<Self> {
        let gain = 2f64.sqrt();
        Ok(Self {
            conv1: LowRankConv2d::random(Conv2dShape::new(1, 16, [5, 5]), 8, true, gain, rng, device)?,
            conv2: LowRankConv2d::random(Conv2dShape::new(16, 32, [5, 5]), 8, true, gain, rng, device)?,
            fc: LowRankLinear::random(512, 128, 16, true, gain, rng, device)?,
            out: DenseLinear::random(128, 10, true, gain, rng, device),
        })
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let pool = |x| max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], false);
        let x = pool(relu(self.conv1.forward(x)));
        let x = pool(relu(self.conv2.forward(x)));
        self.out.forward(relu(self.fc.forward(x.flatten::<2>(1, 3))))
    }
}

/// What the integrator trains: the cores of the low-rank layers; the rest takes an optimizer step.
impl<B: burn::tensor::backend::AutodiffBackend> Network<B> for Cnn<B> {
    fn low_rank_layers(&mut self) -> Vec<&mut LowRankLinear<B>> {
        vec![self.conv1.core_mut(), self.conv2.core_mut(), &mut self.fc]
    }
    fn dense_layers(&mut self) -> Vec<&mut DenseLinear<B>> {
        vec![&mut self.out]
    }
}

fn main() -> dlrt::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let max_batches = match args.iter().position(|a| a == "--max-batches") {
        Some(i) => args.get(i + 1).and_then(|v| v.parse().ok()).expect("--max-batches N"),
        None => usize::MAX,
    };
    let (dir, device) = (std::path::Path::new("data"), Default::default());
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
    trainer.prepare(&mut net)?;
    let indices: Vec<usize> = (0..train.len).collect();
    for (k, idx) in indices.chunks(64).take(max_batches).enumerate() {
        let (x, y) = batch(&train, idx);
        let report = trainer.step(&mut net, |net| loss::cross_entropy(net.forward(x.clone()), y.clone()))?;
        if k % 100 == 0 {
            println!(
                "step {k}: loss {:.3}, ranks {:?}",
                report.loss,
                [net.conv1.rank(), net.conv2.rank(), net.fc.rank()]
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
