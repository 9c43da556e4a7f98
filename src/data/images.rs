//! A data set's images as a ViT's input: resized, in 3 channels, normalised.
//!
//! Pretrained ViTs expect RGB images normalised with ImageNet's per-channel mean and standard
//! deviation. [`rgb_batch`] undoes the data set's MNIST normalisation, resizes bilinearly
//! (half-pixel centres, `align_corners = false`, as PyTorch's `interpolate(mode="bilinear",
//! antialias=False)`; PIL's bilinear differs when shrinking, where it averages over the
//! source pixels an output pixel covers), copies a grey value to the three channels and
//! applies the ImageNet normalisation.

use super::{Dataset, MEAN, STD};

/// ImageNet's per-channel mean (R, G, B) of pixels in [0, 1], as HF image processors use.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet's per-channel standard deviation; see [`IMAGENET_MEAN`].
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Bilinear resize of one `rows×cols` image (row-major) to `size×size`.
pub fn resize_bilinear(pixels: &[f32], rows: usize, cols: usize, size: usize) -> Vec<f32> {
    resize_to(pixels, rows, cols, size, size)
}

/// Bilinear resize of one `rows×cols` image (row-major) to `out_rows×out_cols`.
pub fn resize_to(pixels: &[f32], rows: usize, cols: usize, out_rows: usize, out_cols: usize) -> Vec<f32> {
    assert_eq!(pixels.len(), rows * cols, "a {rows}×{cols} image");
    // Source coordinate of output index i: (i + ½)·in/out − ½, clamped to the image.
    let taps = |n_in: usize, size: usize| -> Vec<(usize, usize, f32)> {
        (0..size)
            .map(|i| {
                let x = ((i as f32 + 0.5) * n_in as f32 / size as f32 - 0.5).max(0.0);
                let x0 = (x.floor() as usize).min(n_in - 1);
                let x1 = (x0 + 1).min(n_in - 1);
                (x0, x1, x - x0 as f32)
            })
            .collect()
    };
    let (ys, xs) = (taps(rows, out_rows), taps(cols, out_cols));
    let mut out = Vec::with_capacity(out_rows * out_cols);
    for &(y0, y1, fy) in &ys {
        for &(x0, x1, fx) in &xs {
            let p = |y: usize, x: usize| pixels[y * cols + x];
            let top = p(y0, x0) * (1.0 - fx) + p(y0, x1) * fx;
            let bottom = p(y1, x0) * (1.0 - fx) + p(y1, x1) * fx;
            out.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    out
}

/// The images `indices` of `data` as a `[indices.len(), 3, size, size]` row-major batch with
/// the ImageNet normalisation, and their labels.
///
/// # Panics
/// If an index is `data.len` or more.
pub fn rgb_batch(data: &Dataset, indices: &[usize], size: usize) -> (Vec<f32>, Vec<i64>) {
    let (pixels, labels) = data.gather(indices);
    let plane = data.rows * data.cols;
    let mut out = Vec::with_capacity(indices.len() * 3 * size * size);
    for image in pixels.chunks_exact(data.features().max(1)) {
        let planes: Vec<Vec<f32>> = image
            .chunks_exact(plane)
            .map(|p| {
                // Back to [0, 1] from the data set's (x − MEAN) / STD.
                let unit: Vec<f32> = p.iter().map(|&x| x * STD + MEAN).collect();
                resize_bilinear(&unit, data.rows, data.cols, size)
            })
            .collect();
        for c in 0..3 {
            let resized = &planes[c.min(planes.len() - 1)];
            out.extend(resized.iter().map(|&p| (p - IMAGENET_MEAN[c]) / IMAGENET_STD[c]));
        }
    }
    (out, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_matches_half_pixel_centres() {
        // 2×2 → 4×4: corners replicate, inner samples interpolate at ¼ and ¾.
        let out = resize_bilinear(&[0.0, 1.0, 2.0, 3.0], 2, 2, 4);
        let row0 = [0.0, 0.25, 0.75, 1.0];
        assert_eq!(&out[..4], &row0);
        assert_eq!(&out[12..], &row0.map(|v| v + 2.0));
        // (1, 1) samples the source at (¼, ¼): ¾·(¾·0 + ¼·1) + ¼·(¾·2 + ¼·3).
        assert_eq!(out[5], 0.75);
        // Same size is the identity; a constant image stays constant.
        let img: Vec<f32> = (0..12).map(|v| v as f32).collect();
        assert_eq!(resize_bilinear(&img, 3, 4, 3).len(), 9);
        assert_eq!(resize_bilinear(&img[..9], 3, 3, 3), img[..9].to_vec());
        assert!(resize_bilinear(&[0.5; 784], 28, 28, 56).iter().all(|&v| v == 0.5));
    }

    #[test]
    fn batch_is_three_normalised_channels() {
        let data = Dataset {
            images: [0.0f32, 1.0, 1.0, 0.0].iter().map(|p| (p - MEAN) / STD).collect(),
            labels: vec![7],
            len: 1,
            channels: 1,
            rows: 2,
            cols: 2,
            classes: (0..8).map(|c| c.to_string()).collect(),
        };
        let (x, y) = rgb_batch(&data, &[0], 2);
        assert_eq!(y, vec![7]);
        assert_eq!(x.len(), 12);
        for c in 0..3 {
            let expect = [0.0f32, 1.0, 1.0, 0.0].map(|p| (p - IMAGENET_MEAN[c]) / IMAGENET_STD[c]);
            let got = &x[4 * c..4 * c + 4];
            assert!(got.iter().zip(expect).all(|(g, e)| (g - e).abs() < 1e-5), "{got:?} vs {expect:?}");
        }
    }
}
