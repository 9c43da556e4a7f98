//! The output gradient δ of an `Activations` pass: caught by the identity op of
//! `layers::capture` on the training backend, by a zero leaf elsewhere; both give the same δ.
#![allow(non_snake_case)]

use burn::backend::{Autodiff, NdArray};
use burn::tensor::{backend::AutodiffBackend, Tensor};
use dlrt::layers::capture::capture;
use dlrt::layers::{FactorGrads, LowRankLinear, Pass};
use dlrt::linalg::{from_faer, thin_qr, to_faer};
use dlrt::{CpuBackend, TrainBackend};
use faer::Mat;
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

/// The zero-leaf path: an f32 autodiff backend that `capture` does not know.
type Probed = Autodiff<NdArray<f32>>;

fn gaussian(rows: usize, cols: usize, rng: &mut StdRng) -> Mat<f64> {
    Mat::from_fn(rows, cols, |_, _| StandardNormal.sample(rng))
}

/// An `Activations` pass of a layer without bias (nothing before its output is trainable, so
/// only the capture's own leaf makes the backward reach it), called on x1 and then on x2, with
/// ℒ = Σ tanh(z1) ⊙ C1 + Σ z2 ⊙ C2. Returns the layer's gradients and (δ1, δ2) in closed form.
fn activations_pass<A: AutodiffBackend>(data: &[Mat<f64>; 7]) -> (FactorGrads<A>, Mat<f64>, Mat<f64>) {
    let device = Default::default();
    let t = |m: &Mat<f64>| from_faer::<A, f64>(m.as_ref(), &device);
    let [U, S, V, x1, x2, C1, C2] = data;
    let mut layer = LowRankLinear::<A>::from_factors(t(U), t(S), t(V), None).unwrap();
    layer.begin_pass(Pass::Activations);
    let (z1, z2) = (layer.forward(t(x1)), layer.forward(t(x2)));
    let tanh = z1.clone().tanh();
    let loss = (tanh.clone() * t(C1)).sum() + (z2 * t(C2)).sum();
    let grads = loss.backward();
    let delta1 = (tanh.clone() * tanh).neg().add_scalar(1.0) * t(C1);
    (layer.take_grads(&grads), to_faer(&delta1), C2.clone())
}

#[test]
fn the_training_backend_catches_delta_and_others_take_the_zero_leaf() {
    let z = Tensor::<TrainBackend, 2>::ones([3, 2], &Default::default());
    assert!(capture(z).is_ok(), "autodiff over the CPU backend uses the identity op");
    let z = Tensor::<Probed, 2>::ones([3, 2], &Default::default());
    assert!(capture(z).is_err(), "an unknown backend keeps the zero leaf");
    let z = Tensor::<CpuBackend, 2>::ones([3, 2], &Default::default());
    let back = capture(z).expect_err("no autodiff, nothing to catch");
    assert_eq!(back.into_data().to_vec::<f32>().unwrap(), vec![1.0; 6], "z comes back unchanged");
}

#[test]
fn caught_and_probed_output_gradients_agree_and_equal_the_closed_form() {
    let mut rng = StdRng::seed_from_u64(5);
    let (n, m, r) = (9, 6, 3);
    let U = thin_qr(gaussian(n, r, &mut rng).as_ref()).Q;
    let V = thin_qr(gaussian(m, r, &mut rng).as_ref()).Q;
    let S = Mat::from_fn(r, r, |i, j| if i == j { 2.0 - i as f64 * 0.5 } else { 0.0 });
    let data = [
        U,
        S,
        V,
        gaussian(5, n, &mut rng),
        gaussian(4, n, &mut rng),
        gaussian(5, m, &mut rng),
        gaussian(4, m, &mut rng),
    ];
    let (caught, d1, d2) = activations_pass::<TrainBackend>(&data);
    let (probed, ..) = activations_pass::<Probed>(&data);
    // Both calls' rows, stacked: x = [x1; x2], δ = [δ1; δ2].
    let expected_delta = faer::concat![[d1], [d2]];
    let expected_x = faer::concat![[data[3].clone()], [data[4].clone()]];
    let caught_delta = to_faer(caught.output_grad.as_ref().expect("caught δ"));
    let probed_delta = to_faer(probed.output_grad.as_ref().expect("probed δ"));
    for (label, delta) in [("caught", &caught_delta), ("probed", &probed_delta)] {
        let err = (delta - &expected_delta).norm_max() / expected_delta.norm_max();
        assert!(err < 1e-6, "{label} δ differs from the closed form by {err:e}");
    }
    let gap = (&caught_delta - &probed_delta).norm_max() / probed_delta.norm_max();
    assert!(gap < 1e-6, "caught and probed δ differ by {gap:e}");
    let x = to_faer(caught.input.as_ref().expect("x recorded"));
    assert!((&x - &expected_x).norm_max() < 1e-6 * expected_x.norm_max(), "x recorded as given");
}
