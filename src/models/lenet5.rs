//! LeNet-5 as DLRT-Net benchmarks it (Schotthöfer, Zangrando, Kusch, Ceruti, Tudisco,
//! "Low-rank lottery tickets", NeurIPS 2022, §6): for `[C, H, W]` images,
//!
//! ```text
//! conv1 C→20, 5×5 → ReLU → max-pool 2 → conv2 20→50, 5×5 → ReLU → max-pool 2
//!   → flatten (50·4·4 = 800 for 28×28) → fc1 800→500 → ReLU → fc2 500→classes
//! ```
//!
//! Every layer but the last may be low-rank: the convolutions as [`crate::layers::conv2d`]
//! kernels `U S Vᵀ` of their matricised form (n = C_in·5·5, m = C_out: 25×20 and 500×50),
//! the linear layers as [`crate::LowRankLinear`]. The layers are kept as one list of
//! [`Layer`]s (conv1, conv2, fc1, fc2), as the MLP keeps its own, so that training, the
//! checkpoints and the metrics treat both networks alike.

use burn::tensor::{
    activation::relu,
    backend::{AutodiffBackend, Backend},
    Tensor,
};
use rand::rngs::StdRng;

use super::mlp::{self, Layer};
use crate::layers::conv2d::{conv_dense, conv_low_rank};
use crate::layers::{max_pool2d, Conv2dShape, DenseLinear, LowRankLinear, Network};
use crate::{Error, Result};

/// The layers' names, in order: what errors and reports call them.
pub const LAYER_NAMES: [&str; 4] = ["conv1", "conv2", "fc1", "fc2"];
/// Output channels of conv1 and conv2.
pub const CHANNELS: [usize; 2] = [20, 50];
/// Kernel size of both convolutions.
pub const KERNEL: usize = 5;
/// Width of the hidden linear layer fc1.
pub const HIDDEN: usize = 500;

/// LeNet-5 (module docs).
#[derive(Clone, Debug)]
pub struct LeNet5<B: Backend> {
    /// conv1, conv2 (matricised kernels), fc1, fc2.
    pub layers: Vec<Layer<B>>,
    convs: [Conv2dShape; 2],
    image: [usize; 3],
}

/// The sizes of LeNet-5's layers for one image size ([`geometry`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// conv1 and conv2.
    pub convs: [Conv2dShape; 2],
    /// (n, m) of conv1, conv2 (matricised kernels), fc1, fc2.
    pub shapes: Vec<(usize, usize)>,
    /// Rows per image each layer multiplies: H'·W' for a convolution, 1 for a linear layer.
    pub positions: Vec<usize>,
}

/// The smallest and largest image side LeNet-5 takes.
pub const MIN_SIDE: usize = 16;
/// See [`MIN_SIDE`].
pub const MAX_SIDE: usize = 256;

/// The layer sizes for `[C, H, W]` images and `classes` classes; an error when the images are
/// smaller or larger than LeNet-5 takes.
pub fn geometry(image: [usize; 3], classes: usize) -> Result<Geometry> {
    let [c, h, w] = image;
    // Below 16 pixels the second max-pool has nothing left; above 256, conv1's activations and
    // fc1 (50·61² inputs at 256) outgrow a workstation's memory at batch 64.
    if !(MIN_SIDE..=MAX_SIDE).contains(&h) || !(MIN_SIDE..=MAX_SIDE).contains(&w) {
        return Err(Error::shape(
            "LeNet-5's input (train.dataset.image_size)",
            format!("images of {MIN_SIDE} to {MAX_SIDE} pixels a side"),
            format!("{h}×{w}"),
        ));
    }
    let conv1 = Conv2dShape::new(c, CHANNELS[0], [KERNEL, KERNEL]);
    let [h1, w1] = conv1.output_size("conv1", [h, w])?;
    let conv2 = Conv2dShape::new(CHANNELS[0], CHANNELS[1], [KERNEL, KERNEL]);
    let [h2, w2] = conv2.output_size("conv2", [h1 / 2, w1 / 2])?;
    let (h3, w3) = (h2 / 2, w2 / 2);
    let flat = CHANNELS[1] * h3 * w3;
    let shapes = vec![(conv1.n(), conv1.m()), (conv2.n(), conv2.m()), (flat, HIDDEN), (HIDDEN, classes)];
    Ok(Geometry { convs: [conv1, conv2], shapes, positions: vec![h1 * w1, h2 * w2, 1, 1] })
}

impl<B: Backend> LeNet5<B> {
    /// Random initialisation for `[C, H, W]` images: layer i low-rank where `low_rank[i]`
    /// (four flags), with initial rank `rank` clamped to ⌊min(n, m)/2⌋ so that the augmented
    /// bases (2r) fit the smallest layer, conv1; He init with `gain`.
    pub fn new(
        image: [usize; 3],
        classes: usize,
        low_rank: &[bool],
        rank: usize,
        gain: f64,
        rng: &mut StdRng,
        device: &B::Device,
    ) -> Result<Self> {
        let Geometry { convs, shapes, .. } = geometry(image, classes)?;
        if low_rank.len() != shapes.len() {
            return Err(Error::config(
                "model.low_rank",
                format!("{low_rank:?}"),
                "one flag per layer (4 layers)",
            ));
        }
        let layers = shapes
            .iter()
            .zip(low_rank)
            .map(|(&(n, m), &lr)| {
                Ok(if lr {
                    let r = rank.min((n.min(m) / 2).max(1));
                    Layer::LowRank(LowRankLinear::random(n, m, r, true, gain, rng, device)?)
                } else {
                    Layer::Dense(DenseLinear::random(n, m, true, gain, rng, device))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers, convs, image })
    }

    /// A network from its four layers (a checkpoint's); an error names the layer whose shape
    /// does not fit `[C, H, W]` images and `classes`.
    pub fn from_layers(image: [usize; 3], classes: usize, layers: Vec<Layer<B>>) -> Result<Self> {
        let Geometry { convs, shapes, .. } = geometry(image, classes)?;
        if layers.len() != shapes.len() {
            return Err(Error::shape("LeNet-5", "4 layers", layers.len().to_string()));
        }
        for ((layer, &(n, m)), name) in layers.iter().zip(&shapes).zip(LAYER_NAMES) {
            if layer.shape() != (n, m) {
                return Err(Error::shape(
                    format!("LeNet-5 layer {name}"),
                    format!("{n}×{m}"),
                    format!("{:?}", layer.shape()),
                ));
            }
        }
        Ok(Self { layers, convs, image })
    }

    /// The `[C, H, W]` of the images the network was built for.
    pub fn image(&self) -> [usize; 3] {
        self.image
    }

    /// Logits.
    ///
    /// # Shapes
    /// - x: `[batch, C, H, W]`, the image size the network was built for
    /// - output: `[batch, classes]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let conv = |i: usize, x: Tensor<B, 4>| {
            let z = match &self.layers[i] {
                Layer::LowRank(l) => conv_low_rank(&self.convs[i], l, x),
                Layer::Dense(l) => conv_dense(&self.convs[i], l, x),
            };
            // `new` and `from_layers` checked the geometry for this image size.
            z.unwrap_or_else(|e| panic!("LeNet-5 {}: {e}", LAYER_NAMES[i]))
        };
        let pool = |x: Tensor<B, 4>| max_pool2d(x, [2, 2], [2, 2]);
        let x = pool(relu(conv(0, x)));
        let x = pool(relu(conv(1, x)));
        let [batch, c, h, w] = x.dims();
        let x = relu(self.layers[2].forward(x.reshape([batch, c * h * w])));
        self.layers[3].forward(x)
    }
}

impl<B: AutodiffBackend> super::Classifier<B> for LeNet5<B> {
    fn logits(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward(images)
    }
    fn ranks(&self) -> Vec<usize> {
        mlp::ranks(&self.layers)
    }
    fn compression(&self) -> (f64, f64) {
        mlp::compression(&self.layers)
    }
    fn params(&self) -> usize {
        self.layers.iter().map(Layer::num_params).sum()
    }
}

impl<B: AutodiffBackend> Network<B> for LeNet5<B> {
    fn low_rank_layers(&mut self) -> Vec<&mut LowRankLinear<B>> {
        mlp::low_rank_layers(&mut self.layers)
    }
    fn dense_layers(&mut self) -> Vec<&mut DenseLinear<B>> {
        mlp::dense_layers(&mut self.layers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use rand::SeedableRng;

    type B = NdArray<f64>;

    #[test]
    fn dlrt_net_shapes_for_mnist_and_errors_for_small_images() {
        let g = geometry([1, 28, 28], 10).unwrap();
        assert_eq!(g.shapes, vec![(25, 20), (500, 50), (800, 500), (500, 10)]);
        assert_eq!(g.convs[1].n(), 500);
        assert_eq!(g.positions, vec![24 * 24, 8 * 8, 1, 1]);
        let mut rng = StdRng::seed_from_u64(0);
        let flags = [true, true, true, false];
        let net = LeNet5::<B>::new([1, 28, 28], 10, &flags, 20, 2f64.sqrt(), &mut rng, &Default::default())
            .unwrap();
        assert_eq!(mlp::ranks(&net.layers), vec![10, 20, 20]);
        let x = Tensor::<B, 4>::zeros([3, 1, 28, 28], &Default::default());
        assert_eq!(net.forward(x).dims(), [3, 10]);
        // Dense LeNet-5: 500 + 20 + 25 000 + 50 + 400 000 + 500 + 5 000 + 10 parameters.
        let dense =
            LeNet5::<B>::new([1, 28, 28], 10, &[false; 4], 20, 1.0, &mut rng, &Default::default()).unwrap();
        assert_eq!(dense.layers.iter().map(Layer::num_params).sum::<usize>(), 431_080);
        // 16 and 256 pixels are the limits; beyond them, errors naming the config key.
        assert_eq!(geometry([1, 16, 16], 10).unwrap().shapes[2], (50, 500));
        assert_eq!(geometry([3, 256, 256], 10).unwrap().shapes[2], (50 * 61 * 61, 500));
        for image in [[1, 15, 28], [1, 4, 28], [1, 28, 257], [1, 2048, 2048]] {
            let err = geometry(image, 10).unwrap_err().to_string();
            assert!(
                err.contains("train.dataset.image_size") && err.contains("16 to 256"),
                "{image:?}: {err}"
            );
        }
        let err = LeNet5::<B>::from_layers([1, 32, 32], 10, dense.layers).unwrap_err().to_string();
        assert!(err.contains("fc1") && err.contains("1250×500"), "{err}");
    }
}
