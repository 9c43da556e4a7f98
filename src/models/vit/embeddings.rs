//! Patch embedding, CLS token and position embeddings (interpolated to the image's grid).

use burn::tensor::{
    backend::Backend,
    module::interpolate,
    ops::{InterpolateMode, InterpolateOptions},
    Tensor,
};

use super::weights::{put, transposed, Init, Weights, SMALL};
use super::ViTConfig;
use crate::io::TensorMap;
use crate::layers::{cast, permute_contiguous, DenseLinear};
use crate::Result;

/// Patch embedding, CLS token and position embeddings.
#[derive(Clone, Debug)]
pub(super) struct Embeddings<B: Backend> {
    /// [1, 1, D].
    cls_token: Tensor<B, 3>,
    /// [1, 1 + g², D], for the stored g×g grid.
    position_embeddings: Tensor<B, 3>,
    /// The conv kernel [D, C, p, p] flattened to [D, C·p·p] and transposed, and its bias.
    pub(super) patch: DenseLinear<B>,
    patch_size: usize,
    grid: usize,
}

impl<B: Backend> Embeddings<B> {
    pub(super) const CLS: &'static str = "embeddings.cls_token";
    const POSITION: &'static str = "embeddings.position_embeddings";
    const PATCH: &'static str = "embeddings.patch_embeddings.projection";

    pub(super) fn new(cfg: &ViTConfig, prefix: &str, w: &mut Weights<B>) -> Result<Self> {
        let (d, c, p, g) = (cfg.hidden_size, cfg.num_channels, cfg.patch_size, cfg.grid());
        let kernel = w.tensor(
            &format!("{prefix}{}.weight", Self::PATCH),
            [d, c, p, p],
            Init { mean: 0.0, std: 1.0 / ((c * p * p) as f64).sqrt() },
        );
        let bias = w.tensor(&format!("{prefix}{}.bias", Self::PATCH), [d], SMALL);
        Ok(Self {
            cls_token: w.tensor(&format!("{prefix}{}", Self::CLS), [1, 1, d], SMALL),
            position_embeddings: w.tensor(&format!("{prefix}{}", Self::POSITION), [1, 1 + g * g, d], SMALL),
            patch: DenseLinear::from_weights(transposed(kernel.reshape([d, c * p * p])), Some(bias))?,
            patch_size: p,
            grid: g,
        })
    }

    pub(super) fn save(&self, prefix: &str, out: &mut TensorMap) {
        let [cpp, d] = self.patch.weight().dims();
        let p = self.patch_size;
        let kernel = self.patch.weight().clone().transpose().reshape([d, cpp / (p * p), p, p]);
        put(out, format!("{prefix}{}.weight", Self::PATCH), &kernel);
        if let Some(b) = self.patch.bias() {
            put(out, format!("{prefix}{}.bias", Self::PATCH), b);
        }
        put(out, format!("{prefix}{}", Self::CLS), &self.cls_token);
        put(out, format!("{prefix}{}", Self::POSITION), &self.position_embeddings);
    }

    /// [B, C, H, W] → [B, 1 + N, D].
    pub(super) fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 3> {
        let [b, c, h, w] = images.dims();
        let p = self.patch_size;
        let (gh, gw) = (h / p, w / p);
        // A conv with stride = kernel = p: every patch flattened in the kernel's (c, i, j) order,
        // then one matmul. Like the conv, it drops the last h mod p rows and w mod p columns.
        // The permutation copies (fast on the CPU, `permute_contiguous`), as the reshape would.
        let patches = images.narrow(2, 0, gh * p).narrow(3, 0, gw * p).reshape([b, c, gh, p, gw, p]);
        let patches = permute_contiguous(patches, [0, 2, 4, 1, 3, 5]).reshape([b * gh * gw, c * p * p]);
        // The patch matmul in the frozen weight's type, the tokens in the embeddings'.
        let patches = self.patch.forward(cast(patches, self.patch.weight().dtype()));
        let patches = cast(patches, self.cls_token.dtype());
        let d = patches.dims()[1];
        let tokens =
            Tensor::cat(vec![self.cls_token.clone().repeat_dim(0, b), patches.reshape([b, gh * gw, d])], 1);
        let position = if [gh, gw] == [self.grid, self.grid] {
            self.position_embeddings.clone()
        } else {
            interpolate_pos_encoding(self.position_embeddings.clone(), [self.grid, self.grid], [gh, gw])
        };
        tokens + position
    }
}

/// Resamples the patch part of position embeddings `[1, 1 + g0·g1, D]` from the `grid` g0×g1
/// to `new_grid`, keeping the CLS row: bicubic (a = −0.75) with half-pixel centres
/// (`align_corners = false`), as HF's `interpolate_pos_encoding`. Against transformers 5.17
/// in f64, whole forward passes at grids 6×5, 6×4 and 2×3 from a 4×4 grid agreed to 3e-15 for
/// ViT and 1.4e-7 for DINOv2 (which interpolates in f32).
///
/// # Panics
/// If the embeddings do not have 1 + g0·g1 rows.
#[track_caller]
pub fn interpolate_pos_encoding<B: Backend>(
    position_embeddings: Tensor<B, 3>,
    grid: [usize; 2],
    new_grid: [usize; 2],
) -> Tensor<B, 3> {
    let [_, t, d] = position_embeddings.dims();
    assert_eq!(t, 1 + grid[0] * grid[1], "position embeddings do not match the {grid:?} grid");
    let cls = position_embeddings.clone().narrow(1, 0, 1);
    // The grid as a D-channel image [1, D, g0, g1].
    let image = position_embeddings.narrow(1, 1, t - 1).reshape([1, grid[0], grid[1], d]);
    let image = permute_contiguous(image, [0, 3, 1, 2]);
    let options = InterpolateOptions::new(InterpolateMode::Bicubic).with_align_corners(false);
    let resized = permute_contiguous(interpolate(image, new_grid, options), [0, 2, 3, 1]);
    let resized = resized.reshape([1, new_grid[0] * new_grid[1], d]);
    Tensor::cat(vec![cls, resized], 1)
}
