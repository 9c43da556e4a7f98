//! Helpers shared by the integration tests: f64 backend, random matrices, norms, the data folder.
#![allow(dead_code, non_snake_case)]

use burn::backend::{Autodiff, NdArray};
use burn::tensor::Tensor;
use dlrt::linalg::{from_faer, thin_qr, to_faer};
use dlrt::models::vit::{Variant, ViTConfig};
use faer::Mat;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

/// f64 autodiff backend: the properties hold to round-off in f64.
pub type B = Autodiff<NdArray<f64>>;
/// A rank-2 tensor on [`B`].
pub type T2 = Tensor<B, 2>;

pub fn gaussian(rows: usize, cols: usize, rng: &mut StdRng) -> T2 {
    let g = Mat::<f64>::from_fn(rows, cols, |_, _| StandardNormal.sample(rng));
    from_faer(g.as_ref(), &Default::default())
}

pub fn orthonormal(rows: usize, cols: usize, rng: &mut StdRng) -> T2 {
    let g = Mat::from_fn(rows, cols, |_, _| StandardNormal.sample(rng));
    from_faer(thin_qr(g.as_ref()).Q.as_ref(), &Default::default())
}

pub fn diag(values: &[f64]) -> T2 {
    let k = values.len();
    let d = Mat::from_fn(k, k, |i, j| if i == j { values[i] } else { 0.0 });
    from_faer(d.as_ref(), &Default::default())
}

/// A = U diag(σ) Vᵀ with random orthonormal U (n×k), V (m×k).
pub fn with_spectrum(n: usize, m: usize, sigma: &[f64], rng: &mut StdRng) -> T2 {
    let k = sigma.len();
    orthonormal(n, k, rng).matmul(diag(sigma)).matmul(orthonormal(m, k, rng).transpose())
}

/// Best rank-r approximation (truncated SVD) of A.
pub fn best_rank(a: &T2, r: usize) -> T2 {
    let svd = dlrt::linalg::thin_svd(to_faer(a).as_ref(), "test").unwrap();
    let d = Mat::from_fn(r, r, |i, j| if i == j { svd.sigma[i] } else { 0.0 });
    let w = svd.U.as_ref().subcols(0, r) * d * svd.V.as_ref().subcols(0, r).transpose();
    from_faer(w.as_ref(), &Default::default())
}

pub fn fro(t: T2) -> f64 {
    t.powf_scalar(2.0).sum().sqrt().into_scalar()
}

pub fn max_abs(t: T2) -> f64 {
    t.abs().max().into_scalar()
}

pub fn eye(k: usize) -> T2 {
    Tensor::eye(k, &Default::default())
}

/// ‖QᵀQ − I‖_max.
pub fn orthonormality_error(q: &T2) -> f64 {
    let k = q.dims()[1];
    max_abs(q.clone().transpose().matmul(q.clone()) - eye(k))
}

/// P(W)Z = UUᵀZ + ZVVᵀ − UUᵀZVVᵀ, the tangent-space projection at W = U S Vᵀ.
pub fn tangent_projection(U: &T2, V: &T2, Z: &T2) -> T2 {
    let uu = U.clone().matmul(U.clone().transpose());
    let vv = V.clone().matmul(V.clone().transpose());
    uu.clone().matmul(Z.clone()) + Z.clone().matmul(vv.clone()) - uu.matmul(Z.clone()).matmul(vv)
}

/// Matrix exponential by scaling and squaring of a Taylor series (small test matrices).
pub fn expm(a: &Mat<f64>) -> Mat<f64> {
    let n = a.nrows();
    let norm = a.norm_max() * n as f64;
    let squarings = if norm > 0.5 { (norm / 0.5).log2().ceil() as i32 } else { 0 };
    let scaled = a * faer::Scale(0.5f64.powi(squarings));
    let mut term = Mat::<f64>::identity(n, n);
    let mut sum = Mat::<f64>::identity(n, n);
    for k in 1..30 {
        term = &term * &scaled * faer::Scale(1.0 / k as f64);
        sum += &term;
    }
    for _ in 0..squarings {
        sum = &sum * &sum;
    }
    sum
}

/// A random skew-symmetric n×n matrix.
pub fn skew(n: usize, rng: &mut StdRng) -> Mat<f64> {
    let g = Mat::<f64>::from_fn(n, n, |_, _| StandardNormal.sample(rng));
    (&g - g.transpose()) * faer::Scale(0.5)
}

/// The folder holding the fetched data sets ($DLRT_DATA or ./data), if MNIST's test split loads
/// there; otherwise prints why the calling test skips.
pub fn mnist_dir() -> Option<std::path::PathBuf> {
    use dlrt::data::{self, DatasetName, Split};
    let dir = std::env::var_os("DLRT_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data"));
    match data::load(DatasetName::Mnist, Split::Test, &dir) {
        Ok(_) => Some(dir),
        Err(e) => {
            eprintln!("skipping: MNIST not available in {} ({e}); run `dlrt fetch mnist`", dir.display());
            None
        }
    }
}

/// Hidden 16, 2 layers, 2 heads, MLP 32, 28 px images in 7 px patches (a 4×4 grid).
pub fn tiny_vit(variant: Variant) -> ViTConfig {
    let base = match variant {
        Variant::ViT => ViTConfig::vit_base_patch16_224(),
        Variant::Dinov2 => ViTConfig { layerscale_value: 0.5, ..ViTConfig::dinov2_small() },
    };
    ViTConfig {
        hidden_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 32,
        image_size: 28,
        patch_size: 7,
        ..base
    }
}

/// A 2-block DINOv2 ([`tiny_vit`]) with random weights, saved as HF files
/// (`model.safetensors`, `config.json`) in `dir`; returns the weights' path.
pub fn tiny_backbone_files(dir: &std::path::Path) -> std::path::PathBuf {
    use rand::SeedableRng;
    let config = tiny_vit(Variant::Dinov2);
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let vit = dlrt::models::ViT::<dlrt::TrainBackend>::random(config.clone(), &mut rng, &Default::default())
        .unwrap();
    let weights = dir.join("model.safetensors");
    vit.save(&weights).unwrap();
    std::fs::write(dir.join("config.json"), config.to_json()).unwrap();
    weights
}

/// X − Q Qᵀ X: the part of X outside span(Q) (Q orthonormal).
pub fn outside_span(Q: &T2, X: &T2) -> T2 {
    X.clone() - Q.clone().matmul(Q.clone().transpose().matmul(X.clone()))
}

/// A bias vector from its entries.
pub fn vector(values: &[f64]) -> Tensor<B, 1> {
    Tensor::from_data(values, &Default::default())
}

/// Two classes of 6×6 grey PNGs, dark and bright, in `dir/train` and `dir/test`.
pub fn tiny_image_folder(dir: &std::path::Path) {
    let mut rng = <StdRng as rand::SeedableRng>::seed_from_u64(1);
    for (split, count) in [("train", 16), ("test", 4)] {
        for (c, base) in [("bright", 190u8), ("dark", 50)] {
            let folder = dir.join(split).join(c);
            std::fs::create_dir_all(&folder).unwrap();
            for i in 0..count {
                let img = image::GrayImage::from_fn(6, 6, |_, _| {
                    image::Luma([base.saturating_add(rand::Rng::random_range(&mut rng, 0..40))])
                });
                img.save(folder.join(format!("{i}.png"))).unwrap();
            }
        }
    }
}
