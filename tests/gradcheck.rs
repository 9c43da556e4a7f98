//! Finite-difference checks of the gradients autodiff returns in every forward
//! parametrization of `LowRankLinear` and `LowRankConv2d` (and of `DenseLinear`), in f64.
//!
//! The loss is nonlinear in W, ℒ(W, b) = Σ C ∘ tanh(x W + b), or Σ C ∘ tanh(conv(x; W) + b)
//! for a convolution, W its matricised kernel. Its gradient G = ∇_W ℒ and
//! ∇_b ℒ are taken by central differences on the dense W (step 1e-6, error O(1e-10)); each
//! parametrization's autodiff gradients must then equal the formulas of the layer's docs
//! (∇_K = G V, ∇_L = Gᵀ U, ∇_S = Uᵀ G V, …; G V and Gᵀ U from the recorded x and δ of the
//! `Activations` pass) to 1e-7 relative.
#![allow(non_snake_case)]

mod common;

use burn::tensor::Tensor;
use common::*;
use dlrt::layers::conv2d::{conv_dense, conv_low_rank};
use dlrt::layers::Conv2dShape;
use dlrt::{DenseLinear, LowRankLinear, Pass};
use rand::{rngs::StdRng, SeedableRng};

const H: f64 = 1e-6;
const TOL: f64 = 1e-7;

/// What the layer is applied to: a batch of rows, or images through a convolution.
enum Input {
    Rows(T2),
    Image(Tensor<B, 4>, Conv2dShape),
}

impl Input {
    /// The layer's output as a matrix (images: `[batch, C_out·H'·W']`).
    fn low_rank(&self, layer: &LowRankLinear<B>) -> T2 {
        match self {
            Input::Rows(x) => layer.forward(x.clone()),
            Input::Image(x, shape) => flat(conv_low_rank(shape, layer, x.clone()).unwrap()),
        }
    }

    fn dense(&self, layer: &DenseLinear<B>) -> T2 {
        match self {
            Input::Rows(x) => layer.forward(x.clone()),
            Input::Image(x, shape) => flat(conv_dense(shape, layer, x.clone()).unwrap()),
        }
    }
}

fn flat(z: Tensor<B, 4>) -> T2 {
    let [b, c, h, w] = z.dims();
    z.reshape([b, c * h * w])
}

struct Setup {
    x: Input,
    c: T2,
}

impl Setup {
    fn loss(&self, z: T2) -> Tensor<B, 1> {
        (z.tanh() * self.c.clone()).sum()
    }

    /// (G, ∇_b) by central differences on a dense copy of the layer's effective weight.
    fn finite_differences(&self, w: &T2, b: &Tensor<B, 1>) -> (T2, Tensor<B, 1>) {
        let [n, m] = w.dims();
        let eval = |w: T2, b: Tensor<B, 1>| -> f64 {
            let layer = DenseLinear::from_weights(w, Some(b)).unwrap();
            self.loss(self.x.dense(&layer)).into_scalar()
        };
        let mut g = vec![0.0; n * m];
        for i in 0..n {
            for j in 0..m {
                let mut e = vec![0.0; n * m];
                e[i * m + j] = H;
                let e: T2 = Tensor::<B, 1>::from_floats(e.as_slice(), &Default::default()).reshape([n, m]);
                g[i * m + j] =
                    (eval(w.clone() + e.clone(), b.clone()) - eval(w.clone() - e, b.clone())) / (2.0 * H);
            }
        }
        let mut gb = vec![0.0; m];
        for (j, gj) in gb.iter_mut().enumerate() {
            let mut e = vec![0.0; m];
            e[j] = H;
            let e = Tensor::<B, 1>::from_floats(e.as_slice(), &Default::default());
            *gj = (eval(w.clone(), b.clone() + e.clone()) - eval(w.clone(), b.clone() - e)) / (2.0 * H);
        }
        let dev = Default::default();
        (
            Tensor::<B, 1>::from_floats(g.as_slice(), &dev).reshape([n, m]),
            Tensor::from_floats(gb.as_slice(), &dev),
        )
    }
}

fn assert_close(got: Option<T2>, expected: T2, what: &str) {
    let got = got.unwrap_or_else(|| panic!("{what}: no gradient"));
    assert_eq!(got.dims(), expected.dims(), "{what}");
    let err = fro(got - expected.clone()) / fro(expected).max(1e-12);
    assert!(err < TOL, "{what}: relative error {err:e}");
}

fn check_layer(layer: LowRankLinear<B>, label: &str, rng: &mut StdRng) {
    let (n, m) = (layer.n(), layer.m());
    let setup = Setup { x: Input::Rows(gaussian(4, n, rng)), c: gaussian(4, m, rng) };
    check_passes(layer, setup, label, rng);
}

fn check_passes(mut layer: LowRankLinear<B>, setup: Setup, label: &str, rng: &mut StdRng) {
    let (n, m) = (layer.n(), layer.m());
    let (G, gb) = setup.finite_differences(&layer.to_dense(), layer.bias().unwrap());
    let (U, S, V) = (layer.u().clone(), layer.s().clone(), layer.v().clone());
    for pass in [Pass::K, Pass::L, Pass::S, Pass::Tangent, Pass::Factors, Pass::Activations] {
        layer.begin_pass(pass);
        let z = setup.x.low_rank(&layer);
        // Every parametrization evaluates the same W.
        let dense =
            setup.x.dense(&DenseLinear::from_weights(layer.to_dense(), layer.bias().cloned()).unwrap());
        assert!(max_abs(z.clone() - dense) < 1e-12, "{label} {pass:?}: forward differs from x W + b");
        let grads = setup.loss(z).backward();
        let g = layer.take_grads(&grads);
        let what = |f: &str| format!("{label} {pass:?} ∇{f}");
        let (GV, GtU, UtGV) = (
            G.clone().matmul(V.clone()),
            G.clone().transpose().matmul(U.clone()),
            U.clone().transpose().matmul(G.clone()).matmul(V.clone()),
        );
        match pass {
            Pass::K => assert_close(g.k, GV, &what("K")),
            Pass::L => assert_close(g.l, GtU, &what("L")),
            Pass::S => assert_close(g.s, UtGV, &what("S")),
            Pass::Tangent => {
                assert_close(g.k, GV, &what("K"));
                assert_close(g.l, GtU, &what("L"));
                assert_close(g.s, UtGV.neg(), &what("S"));
            }
            Pass::Factors => {
                assert_close(g.u, GV.matmul(S.clone().transpose()), &what("U"));
                assert_close(g.v, GtU.matmul(S.clone()), &what("V"));
            }
            Pass::Activations => {
                assert_close(g.g_times(&V), GV, &what("K from x, δ"));
                assert_close(g.gt_times(&U), GtU, &what("L from x, δ"));
                // Any basis after the pass, as abc-PSI's Û: G Y and Gᵀ X for random X, Y.
                let (X, Y) = (gaussian(n, 3, rng), gaussian(m, 2, rng));
                assert_close(g.g_times(&Y), G.clone().matmul(Y), &what("G Y"));
                assert_close(g.gt_times(&X), G.clone().transpose().matmul(X), &what("Gᵀ X"));
            }
            Pass::Dense => unreachable!(),
        }
        let gb_auto = g.bias.expect("bias gradient").unsqueeze::<2>();
        assert_close(Some(gb_auto), gb.clone().unsqueeze::<2>(), &what("b"));
    }
}

#[test]
fn every_parametrization_matches_finite_differences() {
    let mut rng = StdRng::seed_from_u64(1);
    let bias = |m: usize, rng: &mut StdRng| gaussian(1, m, rng).reshape([m]);
    // Square core at rank 3.
    let b = bias(5, &mut rng);
    let layer = LowRankLinear::from_factors(
        orthonormal(7, 3, &mut rng),
        gaussian(3, 3, &mut rng),
        orthonormal(5, 3, &mut rng),
        Some(b),
    )
    .unwrap();
    check_layer(layer, "square S", &mut rng);
    // Rectangular core, as between abc-PSI's passes (Û n×2r, S̄ 2r×r).
    let b = bias(5, &mut rng);
    let layer = LowRankLinear::from_factors(
        orthonormal(7, 4, &mut rng),
        gaussian(4, 2, &mut rng),
        orthonormal(5, 2, &mut rng),
        Some(b),
    )
    .unwrap();
    check_layer(layer, "rectangular S", &mut rng);
    // Adapter on a frozen base, after its core has left zero.
    let b = bias(5, &mut rng);
    let mut adapter = LowRankLinear::adapter(gaussian(7, 5, &mut rng), 2, Some(b), &mut rng).unwrap();
    let (u, v) = (adapter.u().clone(), adapter.v().clone());
    adapter.set_factors(u, gaussian(2, 2, &mut rng), v).unwrap();
    check_layer(adapter, "adapter", &mut rng);
}

#[test]
fn dense_layer_gradient_matches_finite_differences() {
    let mut rng = StdRng::seed_from_u64(2);
    let w = gaussian(6, 4, &mut rng);
    let b = gaussian(1, 4, &mut rng).reshape([4]);
    let setup = Setup { x: Input::Rows(gaussian(3, 6, &mut rng)), c: gaussian(3, 4, &mut rng) };
    let (G, gb) = setup.finite_differences(&w, &b);
    let mut layer = DenseLinear::from_weights(w.clone(), Some(b.clone())).unwrap();
    layer.begin_pass();
    let grads = setup.loss(setup.x.dense(&layer)).backward();
    let (g_w, g_b) = layer.take_grads(&grads);
    assert_close(g_w, G, "dense ∇W");
    assert_close(g_b.map(|g| g.unsqueeze::<2>()), gb.unsqueeze::<2>(), "dense ∇b");
}

#[test]
fn every_parametrization_of_a_low_rank_convolution_matches_finite_differences() {
    let mut rng = StdRng::seed_from_u64(3);
    // Stride, padding and dilation all in play; n = 2·3·3 = 18, m = 4.
    let shape = Conv2dShape::new(2, 4, [3, 3]).with_stride([2, 1]).with_padding([1, 1]).with_dilation([1, 2]);
    let x: Tensor<B, 4> = gaussian(2 * 2 * 6, 7, &mut rng).reshape([2, 2, 6, 7]);
    let [ho, wo] = shape.output_size("conv", [6, 7]).unwrap();
    let image =
        |rng: &mut StdRng| Setup { x: Input::Image(x.clone(), shape), c: gaussian(2, 4 * ho * wo, rng) };
    let (n, m) = (shape.n(), shape.m());
    let b = gaussian(1, m, &mut rng).reshape([m]);
    let layer = LowRankLinear::from_factors(
        orthonormal(n, 3, &mut rng),
        gaussian(3, 3, &mut rng),
        orthonormal(m, 3, &mut rng),
        Some(b),
    )
    .unwrap();
    let setup = image(&mut rng);
    check_passes(layer, setup, "conv, square S", &mut rng);
    let b = gaussian(1, m, &mut rng).reshape([m]);
    let layer = LowRankLinear::from_factors(
        orthonormal(n, 4, &mut rng),
        gaussian(4, 2, &mut rng),
        orthonormal(m, 2, &mut rng),
        Some(b),
    )
    .unwrap();
    let setup = image(&mut rng);
    check_passes(layer, setup, "conv, rectangular S", &mut rng);
}

#[test]
fn dense_convolution_gradient_matches_finite_differences() {
    let mut rng = StdRng::seed_from_u64(4);
    let shape = Conv2dShape::new(3, 2, [2, 2]).with_padding([1, 0]);
    let x: Tensor<B, 4> = gaussian(3 * 5, 4, &mut rng).reshape([1, 3, 5, 4]);
    let [ho, wo] = shape.output_size("conv", [5, 4]).unwrap();
    let (w, b) = (gaussian(shape.n(), 2, &mut rng), gaussian(1, 2, &mut rng).reshape([2]));
    let setup = Setup { x: Input::Image(x, shape), c: gaussian(1, 2 * ho * wo, &mut rng) };
    let (G, gb) = setup.finite_differences(&w, &b);
    let mut layer = DenseLinear::from_weights(w, Some(b)).unwrap();
    layer.begin_pass();
    let grads = setup.loss(setup.x.dense(&layer)).backward();
    let (g_w, g_b) = layer.take_grads(&grads);
    assert_close(g_w, G, "dense conv ∇W");
    assert_close(g_b.map(|g| g.unsqueeze::<2>()), gb.unsqueeze::<2>(), "dense conv ∇b");
}
