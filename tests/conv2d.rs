//! The low-rank convolution: equal to Burn's `nn::Conv2d` at full rank, and trained by every
//! integrator unchanged, with the properties of the notes that involve the loss (T1–T4) checked
//! in f64 on a least-squares convolution problem ℒ(W) = ½‖conv(x; W) − Y‖², W the matricised
//! kernel (n = C_in·k_h·k_w, m = C_out). Its gradient is G = Pᵀ(P W − Y) for the patch matrix P,
//! and it is L-smooth with L = σ_max(P)². T5–T7 are properties of the truncation and of the
//! factor updates on W alone, which the convolution shares with the linear layer
//! (`tests/properties.rs`).
#![allow(non_snake_case)]

mod common;

use burn::module::Module;
use burn::nn::conv::Conv2dConfig;
use burn::nn::PaddingConfig2d;
use burn::tensor::module::unfold4d;
use burn::tensor::ops::UnfoldOptions;
use burn::tensor::{Distribution, Tensor};
use common::*;
use dlrt::integrators::IntegratorKind;
use dlrt::layers::{Conv2dShape, DenseConv2d, DenseLinear, LowRankConv2d, Network};
use dlrt::linalg::{thin_svd, to_faer, TruncationConfig};
use dlrt::optim::Optimizer;
use dlrt::train::Trainer;
use dlrt::LowRankLinear;
use rand::{rngs::StdRng, SeedableRng};

const ROUND_OFF: f64 = 1e-12;
type T4 = Tensor<B, 4>;

/// ½‖conv(x; W) − Y‖² for one low-rank convolution.
struct ConvProblem {
    layer: LowRankConv2d<B>,
    x: T4,
    y: T4,
}

impl ConvProblem {
    fn new(shape: Conv2dShape, r: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let device = Default::default();
        let layer = LowRankConv2d::random(shape, r, false, 1.0, &mut rng, &device).unwrap();
        let x: T4 = gaussian(2 * shape.c_in * 6, 6, &mut rng).reshape([2, shape.c_in, 6, 6]);
        let [ho, wo] = shape.output_size("conv", [6, 6]).unwrap();
        let y: T4 = gaussian(2 * shape.c_out * ho, wo, &mut rng).reshape([2, shape.c_out, ho, wo]);
        Self { layer, x, y }
    }

    fn loss(&self) -> Tensor<B, 1> {
        (self.layer.forward(self.x.clone()) - self.y.clone()).powf_scalar(2.0).sum().mul_scalar(0.5)
    }

    fn loss_at(&self, w: &T2) -> f64 {
        let dense = self.dense(w);
        (dense.forward(self.x.clone()) - self.y.clone()).powf_scalar(2.0).sum().mul_scalar(0.5).into_scalar()
    }

    fn dense(&self, w: &T2) -> DenseConv2d<B> {
        DenseConv2d::from_core(*self.layer.shape(), DenseLinear::from_weights(w.clone(), None).unwrap())
            .unwrap()
    }

    /// G = ∇_W ℒ at `w`, by autodiff through the dense convolution (`tests/gradcheck.rs`
    /// checks that gradient against finite differences).
    fn gradient(&self, w: &T2) -> T2 {
        let mut dense = self.dense(w);
        dense.core_mut().begin_pass();
        let grads = (dense.forward(self.x.clone()) - self.y.clone())
            .powf_scalar(2.0)
            .sum()
            .mul_scalar(0.5)
            .backward();
        dense.core_mut().take_grads(&grads).0.unwrap()
    }

    /// L = σ_max(P)², P the patch matrix of x.
    fn smoothness(&self) -> f64 {
        let s = self.layer.shape();
        let p = unfold4d(self.x.clone(), s.kernel, UnfoldOptions::new(s.stride, s.padding, s.dilation));
        let [b, n, l] = p.dims();
        let rows: T2 = p.swap_dims(1, 2).reshape([b * l, n]);
        thin_svd(to_faer(&rows).as_ref(), "P").unwrap().sigma[0].powi(2)
    }
}

impl Network<B> for ConvProblem {
    fn low_rank_layers(&mut self) -> Vec<&mut LowRankLinear<B>> {
        vec![self.layer.core_mut()]
    }
    fn dense_layers(&mut self) -> Vec<&mut DenseLinear<B>> {
        Vec::new()
    }
}

fn shape() -> Conv2dShape {
    // n = 3·3·3 = 27, m = 8: padding and stride in play.
    Conv2dShape::new(3, 8, [3, 3]).with_padding([1, 1]).with_stride([1, 2])
}

fn trainer(kind: IntegratorKind, lr: f64) -> Trainer<B> {
    Trainer::new(kind, &TruncationConfig::relative(1e-14), Optimizer::sgd(lr)).unwrap()
}

#[test]
fn full_rank_equals_burns_nn_conv2d() {
    let device = Default::default();
    let conv = Conv2dConfig::new([3, 5], [3, 2])
        .with_stride([2, 1])
        .with_dilation([1, 2])
        .with_padding(PaddingConfig2d::Explicit(1, 2, 1, 2))
        .init::<B>(&device);
    let shape = Conv2dShape::new(3, 5, [3, 2]).with_stride([2, 1]).with_dilation([1, 2]).with_padding([1, 2]);
    let kernel = conv.weight.val();
    let bias = conv.bias.as_ref().map(|b| b.val());
    let layer =
        LowRankConv2d::from_kernel(shape, kernel, bias, Some(5), &TruncationConfig::default()).unwrap();
    let x = T4::random([2, 3, 9, 8], Distribution::Normal(0.0, 1.0), &device);
    let (got, expected) = (layer.forward(x.clone()), conv.forward(x));
    assert_eq!(got.dims(), expected.dims());
    assert!((got - expected).abs().max().into_scalar() < 1e-12);
    assert_eq!(conv.num_params(), 5 * 3 * 3 * 2 + 5);
}

#[test]
fn t1_t2_t3_abc_psi_step_on_a_convolution() {
    let lr = 0.5 / ConvProblem::new(shape(), 3, 1).smoothness();
    let mut p = ConvProblem::new(shape(), 3, 1);
    let (U0, V0, W0) = (p.layer.core().u().clone(), p.layer.core().v().clone(), p.layer.core().to_dense());
    let G = p.gradient(&W0);
    let mut integ = trainer(IntegratorKind::AbcPsi, lr);
    integ.prepare(&mut p).unwrap();
    integ.pass(&mut p, 0, &mut |p: &ConvProblem| p.loss()).unwrap();
    // T1: Û S̄ V0ᵀ = W0 with Û of width 2r.
    let U_hat = p.layer.core().u().clone();
    assert_eq!(U_hat.dims(), [27, 6]);
    assert!(fro(p.layer.core().to_dense() - W0.clone()) < ROUND_OFF * fro(W0.clone()));
    // T3: span(Û) ⊇ span(U0) + span(G V0).
    let outside = |X: T2| X.clone() - U_hat.clone().matmul(U_hat.clone().transpose().matmul(X));
    assert!(fro(outside(U0)) < ROUND_OFF);
    let GV0 = G.clone().matmul(V0);
    assert!(fro(outside(GV0.clone())) < ROUND_OFF * fro(GV0));
    integ.pass(&mut p, 1, &mut |p: &ConvProblem| p.loss()).unwrap();
    // T2: W1 = W0 − λ Û Ûᵀ G (ϑ = 1e-14 truncates nothing).
    let expected = W0 - U_hat.clone().matmul(U_hat.transpose().matmul(G)).mul_scalar(lr);
    let err = fro(p.layer.core().to_dense() - expected.clone()) / fro(expected);
    assert!(err < ROUND_OFF, "‖W1 − (W0 − λÛÛᵀG)‖/‖W1‖ = {err:e}");
}

#[test]
fn t4_descent_on_a_convolution_for_the_adaptive_integrators() {
    let L = ConvProblem::new(shape(), 2, 2).smoothness();
    for kind in [IntegratorKind::AbcPsi, IntegratorKind::Bug, IntegratorKind::ParallelBug] {
        for lr in [0.3 / L, 1.0 / L, 1.9 / L] {
            let mut p = ConvProblem::new(shape(), 2, 2);
            let mut integ = trainer(kind, lr);
            integ.prepare(&mut p).unwrap();
            let scale = p.loss().into_scalar();
            for step in 0..6 {
                let core = p.layer.core();
                let (U0, V0, W0) = (core.u().clone(), core.v().clone(), core.to_dense());
                let PG = fro(tangent_projection(&U0, &V0, &p.gradient(&W0))).powi(2);
                let l0 = integ.step(&mut p, |p: &ConvProblem| p.loss()).unwrap().loss;
                assert!((l0 - p.loss_at(&W0)).abs() < 1e-9 * scale);
                let l1 = p.loss().into_scalar();
                // T4: ℒ(W1) ≤ ℒ(W0) − λ(1 − Lλ/2)‖P(W0)G‖².
                let bound = l0 - lr * (1.0 - L * lr / 2.0) * PG;
                assert!(l1 <= bound + 1e-12 * scale, "{kind} λL={} step {step}: {l1} > {bound}", lr * L);
            }
        }
    }
}

#[test]
fn every_low_rank_integrator_trains_a_convolution_unchanged() {
    let L = ConvProblem::new(shape(), 2, 3).smoothness();
    for kind in IntegratorKind::ALL.into_iter().filter(|k| *k != IntegratorKind::Dense) {
        let mut p = ConvProblem::new(shape(), 2, 3);
        // LoRA-style factor descent is not scaled by the manifold's geometry: a smaller step.
        let lr = if kind == IntegratorKind::Lora { 0.1 / L } else { 0.5 / L };
        let mut integ = trainer(kind, lr);
        integ.prepare(&mut p).unwrap();
        let l0 = p.loss().into_scalar();
        for _ in 0..10 {
            integ.step(&mut p, |p: &ConvProblem| p.loss()).unwrap();
        }
        let l1 = p.loss().into_scalar();
        assert!(l1 < 0.9 * l0, "{kind}: loss {l0} → {l1}");
        let core = p.layer.core();
        assert!(orthonormality_error(core.u()) < 1e-10 || kind == IntegratorKind::Lora, "{kind}");
        assert_eq!(core.n(), 27);
        assert_eq!(p.layer.to_kernel().dims(), [8, 3, 3, 3]);
    }
}

#[test]
fn bad_kernels_and_ranks_are_errors_naming_the_layer() {
    let device = Default::default();
    let mut rng = StdRng::seed_from_u64(5);
    let err = LowRankConv2d::<B>::random(shape(), 9, true, 1.0, &mut rng, &device).unwrap_err().to_string();
    assert!(err.contains("LowRankConv2d.rank") && err.contains("min(27, 8) = 8"), "{err}");
    let kernel = T4::zeros([8, 3, 3, 2], &device);
    let err = LowRankConv2d::from_kernel(shape(), kernel, None, None, &TruncationConfig::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("kernel of LowRankConv2d") && err.contains("[8, 3, 3, 3]"), "{err}");
    let layer =
        LowRankConv2d::<B>::random(shape().with_padding([0, 0]), 2, true, 1.0, &mut rng, &device).unwrap();
    let err = layer.try_forward(T4::zeros([1, 3, 2, 9], &device)).unwrap_err().to_string();
    assert!(
        err.contains("LowRankConv2d") && err.contains("at least 3 pixels") && err.contains("2 + 2·0 = 2"),
        "{err}"
    );
    let core = LowRankLinear::<B>::random(26, 8, 2, false, 1.0, &mut rng, &device).unwrap();
    let err = LowRankConv2d::from_core(shape(), core).unwrap_err().to_string();
    assert!(err.contains("n×m = 27×8") && err.contains("26×8"), "{err}");
}
