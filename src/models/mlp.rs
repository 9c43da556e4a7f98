//! The seed paper's MNIST network: an MLP `784 → 500 → … → 10` with ReLU between layers.
//!
//! The hidden layers are [`LowRankLinear`] (the paper factorizes them), the output layer is a
//! [`DenseLinear`]; for dense training every layer is dense. Inputs are flattened 28×28 images
//! normalised with the paper's mean 0.1307 and std 0.3081; outputs are logits over 10 classes.

use burn::tensor::{
    activation::relu,
    backend::{AutodiffBackend, Backend},
    FloatDType, Tensor,
};
use faer::Mat;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

use crate::layers::{DenseLinear, Init, LowRankLinear, Network};
use crate::linalg::from_faer;
use crate::Result;

/// One layer of the MLP.
#[derive(Clone, Debug)]
// Burn parameters make a LowRankLinear large; a network holds one per layer, built once.
#[allow(clippy::large_enum_variant)]
pub enum Layer<B: Backend> {
    /// A factorized layer trained by the integrator.
    LowRank(LowRankLinear<B>),
    /// A dense layer trained by the optimizer.
    Dense(DenseLinear<B>),
}

impl<B: Backend> Layer<B> {
    /// `z = x W + b` of either kind.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            Layer::LowRank(l) => l.forward(x),
            Layer::Dense(l) => l.forward(x),
        }
    }

    /// Runs the layer's products in `dtype` (`None`: its parameters' type), see
    /// [`LowRankLinear::set_autocast`].
    pub fn set_autocast(&mut self, dtype: Option<FloatDType>) {
        match self {
            Layer::LowRank(l) => l.set_autocast(dtype),
            Layer::Dense(l) => l.set_autocast(dtype),
        }
    }

    /// The type set by [`Self::set_autocast`].
    pub fn autocast(&self) -> Option<FloatDType> {
        match self {
            Layer::LowRank(l) => l.autocast(),
            Layer::Dense(l) => l.autocast(),
        }
    }

    /// (n, m) of the layer.
    pub fn shape(&self) -> (usize, usize) {
        match self {
            Layer::LowRank(l) => (l.n(), l.m()),
            Layer::Dense(l) => {
                let [n, m] = l.weight().dims();
                (n, m)
            }
        }
    }

    /// Inference parameters: r(n + m) + r² (+ m) for a low-rank layer, n·m (+ m) for a dense one.
    pub fn num_params(&self) -> usize {
        match self {
            Layer::LowRank(l) => l.num_params(),
            Layer::Dense(l) => l.num_params(),
        }
    }
}

/// The MLP.
#[derive(Clone, Debug)]
pub struct Mlp<B: Backend> {
    /// The layers, input first.
    pub layers: Vec<Layer<B>>,
}

impl<B: Backend> Mlp<B> {
    /// Random initialisation: layer i maps `widths[i] → widths[i+1]`, low-rank where
    /// `low_rank[i]`, with initial rank `rank` (clamped to the layer's size), by `init` (the
    /// He scheme uses `gain`).
    pub fn new(
        widths: &[usize],
        low_rank: &[bool],
        rank: usize,
        init: Init,
        gain: f64,
        rng: &mut StdRng,
        device: &B::Device,
    ) -> Result<Self> {
        let layers = widths
            .windows(2)
            .zip(low_rank)
            .map(|(w, &lr)| {
                let (n, m) = (w[0], w[1]);
                Ok(if lr {
                    Layer::LowRank(LowRankLinear::random(n, m, rank.min(n).min(m), true, gain, rng, device)?)
                } else {
                    Layer::Dense(DenseLinear::random(n, m, true, gain, rng, device))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if init == Init::He {
            return Ok(Self { layers });
        }
        let mut gaussian = |rows: usize, cols: usize| {
            let g = Mat::from_fn(rows, cols, |_, _| Distribution::<f64>::sample(&StandardNormal, rng));
            from_faer::<B, f64>(g.as_ref(), device)
        };
        let layers = layers
            .into_iter()
            .map(|layer| {
                let (n, m) = layer.shape();
                let bias = Some(gaussian(1, m).reshape([m]));
                Ok(match layer {
                    Layer::LowRank(l) => {
                        let s = gaussian(l.rank(), l.rank());
                        Layer::LowRank(LowRankLinear::from_factors(l.u().clone(), s, l.v().clone(), bias)?)
                    }
                    Layer::Dense(_) => Layer::Dense(DenseLinear::from_weights(gaussian(n, m), bias)?),
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self { layers })
    }

    /// Logits for a batch of flattened images.
    ///
    /// # Shapes
    /// - x: `[batch, widths[0]]`
    /// - output: `[batch, widths[last]]`
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let last = self.layers.len() - 1;
        self.layers.iter().enumerate().fold(x, |x, (i, layer)| {
            let z = layer.forward(x);
            if i < last {
                relu(z)
            } else {
                z
            }
        })
    }

    /// The rank of each low-rank layer, in order.
    pub fn ranks(&self) -> Vec<usize> {
        ranks(&self.layers)
    }

    /// Inference parameters of the whole network.
    pub fn num_params(&self) -> usize {
        self.layers.iter().map(Layer::num_params).sum()
    }

    /// Compression rates `1 − Σ low-rank params / Σ dense params`: (over the factorized
    /// layers' weights only, over the whole network with biases and dense layers).
    pub fn compression(&self) -> (f64, f64) {
        compression(&self.layers)
    }
}

/// The rank of each low-rank layer of `layers`, in order.
pub fn ranks<B: Backend>(layers: &[Layer<B>]) -> Vec<usize> {
    layers
        .iter()
        .filter_map(|l| match l {
            Layer::LowRank(l) => Some(l.rank()),
            Layer::Dense(_) => None,
        })
        .collect()
}

/// Compression rates of `layers` (see [`Mlp::compression`]); a convolution counts as its
/// matricised kernel, which has the kernel's parameters.
pub fn compression<B: Backend>(layers: &[Layer<B>]) -> (f64, f64) {
    let (mut lr, mut lr_dense, mut all, mut all_dense) = (0usize, 0usize, 0usize, 0usize);
    for layer in layers {
        let (n, m) = layer.shape();
        all += layer.num_params();
        all_dense += n * m + m;
        if let Layer::LowRank(l) = layer {
            let r = l.rank();
            lr += r * (n + m) + r * r;
            lr_dense += n * m;
        }
    }
    let rate = |a: usize, b: usize| if b == 0 { 0.0 } else { 1.0 - a as f64 / b as f64 };
    (rate(lr, lr_dense), rate(all, all_dense))
}

/// The low-rank layers of `layers`, in order ([`Network::low_rank_layers`]).
pub fn low_rank_layers<B: Backend>(layers: &mut [Layer<B>]) -> Vec<&mut LowRankLinear<B>> {
    layers
        .iter_mut()
        .filter_map(|l| match l {
            Layer::LowRank(l) => Some(l),
            Layer::Dense(_) => None,
        })
        .collect()
}

/// The dense layers of `layers`, in order ([`Network::dense_layers`]).
pub fn dense_layers<B: Backend>(layers: &mut [Layer<B>]) -> Vec<&mut DenseLinear<B>> {
    layers
        .iter_mut()
        .filter_map(|l| match l {
            Layer::Dense(l) => Some(l),
            Layer::LowRank(_) => None,
        })
        .collect()
}

impl<B: AutodiffBackend> super::Classifier<B> for Mlp<B> {
    /// Flattens `[batch, C, H, W]` to the first layer's `[batch, C·H·W]`.
    fn logits(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let [batch, c, h, w] = images.dims();
        self.forward(images.reshape([batch, c * h * w]))
    }
    fn ranks(&self) -> Vec<usize> {
        Mlp::ranks(self)
    }
    fn compression(&self) -> (f64, f64) {
        Mlp::compression(self)
    }
    fn params(&self) -> usize {
        self.num_params()
    }
}

impl<B: AutodiffBackend> Network<B> for Mlp<B> {
    fn low_rank_layers(&mut self) -> Vec<&mut LowRankLinear<B>> {
        low_rank_layers(&mut self.layers)
    }

    fn dense_layers(&mut self) -> Vec<&mut DenseLinear<B>> {
        dense_layers(&mut self.layers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use rand::SeedableRng;

    type B = NdArray<f64>;

    #[test]
    fn shapes_ranks_and_compression() {
        let mut rng = StdRng::seed_from_u64(0);
        let mlp = Mlp::<B>::new(
            &[784, 500, 500, 10],
            &[true, true, false],
            20,
            Init::He,
            1.4,
            &mut rng,
            &Default::default(),
        )
        .unwrap();
        assert_eq!(mlp.ranks(), vec![20, 20]);
        let x = Tensor::<B, 2>::zeros([3, 784], &Default::default());
        assert_eq!(mlp.forward(x).dims(), [3, 10]);
        let (lr, net) = mlp.compression();
        // rank 20: 20·1284 + 400 = 26 080 of 392 000, and 20·1000 + 400 = 20 400 of 250 000.
        let expected = 1.0 - (26_080.0 + 20_400.0) / (392_000.0 + 250_000.0);
        assert!((lr - expected).abs() < 1e-12, "{lr} vs {expected}");
        assert!(net < lr && net > 0.0);
    }

    #[test]
    fn reference_init_has_unit_gaussian_cores_and_biases() {
        let mut rng = StdRng::seed_from_u64(1);
        let mlp = Mlp::<B>::new(
            &[784, 500, 500, 10],
            &[true, true, false],
            20,
            Init::Reference,
            1.4,
            &mut rng,
            &Default::default(),
        )
        .unwrap();
        let Layer::LowRank(l) = &mlp.layers[0] else { panic!("layer 0 is low-rank") };
        let s2: f64 = l.s().clone().powf_scalar(2.0).mean().into_scalar();
        assert!((s2 - 1.0).abs() < 0.3, "E[S²] = {s2}");
        let Layer::Dense(d) = &mlp.layers[2] else { panic!("layer 2 is dense") };
        let w2: f64 = d.weight().clone().powf_scalar(2.0).mean().into_scalar();
        assert!((w2 - 1.0).abs() < 0.1, "E[W²] = {w2}");
    }
}
