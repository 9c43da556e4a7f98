//! Host decompositions at the sizes of one MNIST abc-PSI step (784-500-500-10, ranks ≈ 27, so
//! n×2r = 784×54 and m×2r = 500×54): CholeskyQR2 against faer's Householder QR, and the thin
//! SVD of an m×2r factor against the Gram-matrix SVD abc-PSI uses in f32. `cargo bench --bench
//! linalg`.

use criterion::{criterion_group, criterion_main, Criterion};
use dlrt::linalg::{cholesky_qr2, gram_svd, householder_qr, thin_svd, TruncationConfig};
use faer::Mat;
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

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

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = decompositions
}
criterion_main!(benches);
