//! Host decompositions at the sizes of one MNIST abc-PSI step (784-500-500-10, ranks ≈ 27, so
//! n×2r = 784×54 and m×2r = 500×54): CholeskyQR2 against faer's Householder QR, and the thin
//! SVD of an m×2r factor against the Gram-matrix SVD abc-PSI uses in f32; and the two host calls
//! of one abc-PSI layer update as the integrator makes them (Burn tensors in, Burn tensors out);
//! and, as a floor, a whole one-pass abc-PSI layer update done on the host in faer without
//! Burn. `cargo bench --bench linalg`.

#![allow(non_snake_case)]

use burn::tensor::{Distribution as TensorDistribution, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use dlrt::linalg::{
    augment_basis, augment_f32_in_place, cholesky_qr2, gram_svd, householder_qr, orth, thin_svd,
    truncated_svd, TruncationConfig,
};
use dlrt::TrainBackend;
use faer::{Mat, Scale};
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
        c.bench_function(&format!("truncated_svd f32 {m}x{} (layer {n}x{m})", 2 * r), |b| {
            b.iter(|| truncated_svd(&L1, &cfg, n, m, "bench").map(|t| t.rank()))
        });
    }
}

/// The one-pass abc-PSI update of one layer (SGD) done wholly on the host in faer, with the
/// arithmetic of dlrt's (f32 products and augmentation, f64 Gram SVD) and none of Burn's
/// per-operation cost: what the update could cost if it bypassed Burn on the CPU. Returns
/// the new U so that nothing is optimised away.
fn host_only_update(x: &Mat<f32>, delta: &Mat<f32>, U0: &Mat<f32>, S0: &Mat<f32>, V0: &Mat<f32>) -> Mat<f32> {
    let (n, m, r, lr) = (U0.nrows(), V0.nrows(), U0.ncols(), 0.01f32);
    // (1) K1 = U0 S0 − λ xᵀ(δ V0)
    let K1 = U0 * S0 - (x.transpose() * (delta * V0)) * Scale(lr);
    // (2) Û = [Ur | N], by the f32 path of `augment_basis`: polar repair of U0, K1 projected
    // off it twice, CholeskyQR2 of the remainder, the last projection and the check.
    let mut U_hat = Mat::<f32>::zeros(n, 2 * r);
    U_hat.as_mut().subcols_mut(0, r).copy_from(U0);
    U_hat.as_mut().subcols_mut(r, r).copy_from(&K1);
    assert!(augment_f32_in_place(&mut U_hat, r), "a gradient step the f32 path accepts");
    // (3) S̄ = (Ûᵀ U0) S0; (4) L1 = V0 S̄ᵀ − λ δᵀ(x Û)
    let S_bar = U_hat.transpose() * U0 * S0;
    let L1 = V0 * S_bar.transpose() - (delta.transpose() * (x * &U_hat)) * Scale(lr);
    // (5) truncation from the f64 Gram matrix, U ← Û Z
    let L1_f64 = Mat::<f64>::from_fn(m, 2 * r, |i, j| L1[(i, j)] as f64);
    let t = gram_svd(L1_f64.as_ref(), &TruncationConfig::relative(0.01), n, m)
        .expect("kept σ well above 1e-4 σ₁");
    U_hat * Mat::<f32>::from_fn(2 * r, t.rank, |i, j| t.Q[(i, j)] as f32)
}

fn host_only_layer_update(c: &mut Criterion) {
    faer::set_global_parallelism(faer::Par::Seq);
    let mut rng = StdRng::seed_from_u64(2);
    let mut f32_gaussian = |rows, cols, scale: f32| {
        Mat::<f32>::from_fn(rows, cols, |_, _| {
            let v: f64 = StandardNormal.sample(&mut rng);
            scale * v as f32
        })
    };
    let (batch, r) = (64, 27);
    for (n, m) in [(784, 500), (500, 500)] {
        let (x, delta) = (f32_gaussian(batch, n, 1.0), f32_gaussian(batch, m, 0.01));
        let (U0, V0) = (f32_gaussian(n, r, 1.0), f32_gaussian(m, r, 1.0));
        let orthonormal = |a: Mat<f32>| cholesky_qr2(a.as_ref()).expect("a Gaussian matrix").Q;
        let (U0, V0) = (orthonormal(U0), orthonormal(V0));
        let S0 = Mat::<f32>::from_fn(r, r, |i, j| if i == j { 10.0 * 0.85f32.powi(i as i32) } else { 0.0 });
        c.bench_function(&format!("host-only abc-PSI one-pass update {n}x{m} r={r}"), |b| {
            b.iter(|| host_only_update(&x, &delta, &U0, &S0, &V0))
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = decompositions, layer_update_calls, host_only_layer_update
}
criterion_main!(benches);
