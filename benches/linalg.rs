//! Host decompositions at the sizes of one MNIST abc-PSI step (784-500-500-10, ranks ≈ 27, so
//! n×2r = 784×54 and m×2r = 500×54): CholeskyQR2 against faer's Householder QR, and the thin
//! SVD of an m×2r factor against the Gram-matrix SVD abc-PSI uses in f32; and the two host calls
//! of one abc-PSI layer update as the integrator makes them (Burn tensors in, Burn tensors out).
//! `cargo bench --bench linalg`.

#![allow(non_snake_case)]

use burn::tensor::{Distribution as TensorDistribution, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use dlrt::linalg::{
    augment_basis, cholesky_qr2, gram_svd, householder_qr, orth, thin_svd, truncated_svd, TruncationConfig,
};
use dlrt::TrainBackend;
use faer::Mat;
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

// The binary's allocator: with glibc's, every n×2r scratch matrix is a fresh mmap and its page
// faults, which the training run does not pay.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn gaussian(rows: usize, cols: usize, rng: &mut StdRng) -> Mat<f64> {
    Mat::from_fn(rows, cols, |_, _| StandardNormal.sample(rng))
}

fn decompositions(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(0);
    for (n, k) in [(784, 54), (500, 54), (784, 40)] {
        let a = gaussian(n, k, &mut rng);
        c.bench_function(&format!("householder_qr {n}x{k}"), |b| b.iter(|| householder_qr(a.as_ref())));
        c.bench_function(&format!("cholesky_qr2 {n}x{k}"), |b| b.iter(|| cholesky_qr2(a.as_ref())));
        c.bench_function(&format!("thin_svd {n}x{k}"), |b| b.iter(|| thin_svd(a.as_ref(), "bench")));
        let cfg = TruncationConfig::relative(0.01);
        c.bench_function(&format!("gram_svd {n}x{k}"), |b| b.iter(|| gram_svd(a.as_ref(), &cfg, n, n)));
    }
}

/// The two host calls of one abc-PSI layer update as the integrator makes them, on Burn
/// tensors of the training backend (f32), copies to and from the host included: the
/// augmentation `orth([K1 | U0])` (n×(r + r)) and the truncated SVD of L1 (m×2r).
fn layer_update_calls(c: &mut Criterion) {
    type B = TrainBackend;
    let device = Default::default();
    let r = 27;
    for (n, m) in [(784, 500), (500, 500)] {
        let U0: Tensor<B, 2> = orth(&Tensor::random([n, r], TensorDistribution::Normal(0.0, 1.0), &device));
        // K1 = U0 S0 + a gradient step: mostly inside span(U0), as in training.
        let S0: Tensor<B, 2> = Tensor::random([r, r], TensorDistribution::Normal(0.0, 1.0), &device);
        let step: Tensor<B, 2> = Tensor::random([n, r], TensorDistribution::Normal(0.0, 0.01), &device);
        let K1 = U0.clone().matmul(S0) + step;
        c.bench_function(&format!("augment_basis f32 {n}x({r}+{r})"), |b| b.iter(|| augment_basis(&K1, &U0)));
        let L1: Tensor<B, 2> = Tensor::random([m, 2 * r], TensorDistribution::Normal(0.0, 1.0), &device)
            .matmul(Tensor::random([2 * r, 2 * r], TensorDistribution::Uniform(0.0, 1.0), &device));
        let cfg = TruncationConfig::relative(0.01);
        c.bench_function(&format!("truncated_svd f32 {m}x{}", 2 * r), |b| {
            b.iter(|| truncated_svd(&L1, &cfg, n, m, "bench").map(|t| t.rank()))
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = decompositions, layer_update_calls
}
criterion_main!(benches);
