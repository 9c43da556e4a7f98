//! The backbone's configuration: HuggingFace's `config.json` (ViT or DINOv2), validated.

use std::path::Path;

use serde::Deserialize;

use crate::{Error, Result};

/// Which HuggingFace architecture, and so which tensor names and whether there is layer scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// `ViTModel` (`model_type = "vit"`), e.g. `google/vit-base-patch16-224`.
    ViT,
    /// `Dinov2Model` (`model_type = "dinov2"`): layer scale on both residual branches.
    Dinov2,
}

/// The architecture, read from a HuggingFace `config.json` (unknown keys are ignored).
///
/// Mirrors `ViTConfig` / `Dinov2Config` of transformers. The variant is `model_type`, or
/// DINOv2 when only `layerscale_value` is there; DINOv2's MLP width is
/// `hidden_size · mlp_ratio` (it has no `intermediate_size`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "HfConfig")]
pub struct ViTConfig {
    /// ViT or DINOv2.
    pub variant: Variant,
    /// D, the width of every token.
    pub hidden_size: usize,
    /// L, the number of blocks.
    pub num_hidden_layers: usize,
    /// H; D must be a multiple of it.
    pub num_attention_heads: usize,
    /// I, the MLP width.
    pub intermediate_size: usize,
    /// Pretraining image side; `image_size / patch_size` is the stored position grid.
    pub image_size: usize,
    /// p, the patch side.
    pub patch_size: usize,
    /// C, channels of the input images.
    pub num_channels: usize,
    /// ε of every layer norm.
    pub layer_norm_eps: f64,
    /// The MLP activation; only `"gelu"` (exact, erf) is supported.
    pub hidden_act: String,
    /// Whether Q, K and V have biases.
    pub qkv_bias: bool,
    /// DINOv2: the value layer scales start at in [`ViT::random`](super::ViT::random); unused by ViT.
    pub layerscale_value: f64,
}

/// `config.json` as transformers writes it; resolved into [`ViTConfig`].
#[derive(Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: Option<usize>,
    mlp_ratio: Option<f64>,
    image_size: usize,
    patch_size: usize,
    num_channels: Option<usize>,
    layer_norm_eps: Option<f64>,
    hidden_act: Option<String>,
    qkv_bias: Option<bool>,
    layerscale_value: Option<f64>,
    #[serde(default)]
    use_swiglu_ffn: bool,
}

impl TryFrom<HfConfig> for ViTConfig {
    type Error = Error;
    fn try_from(hf: HfConfig) -> Result<Self> {
        let variant = match (hf.model_type.as_deref(), hf.layerscale_value) {
            (Some("vit"), _) | (None, None) => Variant::ViT,
            (Some("dinov2"), _) | (None, Some(_)) => Variant::Dinov2,
            (Some(other), _) => return Err(Error::config("model_type", other, "\"vit\" or \"dinov2\"")),
        };
        if hf.use_swiglu_ffn {
            return Err(Error::config("use_swiglu_ffn", true, "false (SwiGLU MLPs are not supported)"));
        }
        let intermediate_size = match variant {
            Variant::ViT => hf.intermediate_size.ok_or_else(|| {
                Error::config("intermediate_size", "missing", "the MLP width of a ViT config")
            })?,
            // transformers: int(hidden_size * mlp_ratio).
            Variant::Dinov2 => (hf.hidden_size as f64 * hf.mlp_ratio.unwrap_or(4.0)) as usize,
        };
        let config = ViTConfig {
            variant,
            hidden_size: hf.hidden_size,
            num_hidden_layers: hf.num_hidden_layers,
            num_attention_heads: hf.num_attention_heads,
            intermediate_size,
            image_size: hf.image_size,
            patch_size: hf.patch_size,
            num_channels: hf.num_channels.unwrap_or(3),
            // transformers' defaults differ between the two classes.
            layer_norm_eps: hf.layer_norm_eps.unwrap_or(if variant == Variant::ViT { 1e-12 } else { 1e-6 }),
            hidden_act: hf.hidden_act.unwrap_or_else(|| "gelu".into()),
            qkv_bias: hf.qkv_bias.unwrap_or(true),
            layerscale_value: hf.layerscale_value.unwrap_or(1.0),
        };
        config.validate()?;
        Ok(config)
    }
}

impl ViTConfig {
    /// `google/vit-base-patch16-224` (its `config.json` on the HF hub).
    pub fn vit_base_patch16_224() -> Self {
        Self {
            variant: Variant::ViT,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            image_size: 224,
            patch_size: 16,
            num_channels: 3,
            layer_norm_eps: 1e-12,
            hidden_act: "gelu".into(),
            qkv_bias: true,
            layerscale_value: 1.0,
        }
    }

    /// `facebook/dinov2-small` (ViT-S/14, 37×37 position grid).
    pub fn dinov2_small() -> Self {
        Self {
            variant: Variant::Dinov2,
            hidden_size: 384,
            num_attention_heads: 6,
            intermediate_size: 1536,
            image_size: 518,
            patch_size: 14,
            layer_norm_eps: 1e-6,
            ..Self::vit_base_patch16_224()
        }
    }

    /// Reads and validates a HuggingFace `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::not_found(
                path,
                "no such file: the backbone's config.json (next to its weights, or backbone.config)",
            ),
            _ => Error::io(path, e),
        })?;
        serde_json::from_str(&text).map_err(|e| Error::bad_file(path, "config", "a ViT or DINOv2 config", e))
    }

    /// The config as a HuggingFace `config.json` that [`ViTConfig::from_file`] reads back.
    pub fn to_json(&self) -> String {
        let mut json = serde_json::json!({
            "model_type": match self.variant { Variant::ViT => "vit", Variant::Dinov2 => "dinov2" },
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "num_channels": self.num_channels,
            "layer_norm_eps": self.layer_norm_eps,
            "hidden_act": self.hidden_act,
            "qkv_bias": self.qkv_bias,
        });
        let extra = match self.variant {
            Variant::ViT => serde_json::json!({ "intermediate_size": self.intermediate_size }),
            // transformers 5 requires an integer ratio; a fractional one is written as it is.
            Variant::Dinov2 => serde_json::json!({
                "mlp_ratio": if self.intermediate_size.is_multiple_of(self.hidden_size) {
                    serde_json::json!(self.intermediate_size / self.hidden_size)
                } else {
                    serde_json::json!(self.intermediate_size as f64 / self.hidden_size as f64)
                },
                "layerscale_value": self.layerscale_value,
            }),
        };
        json.as_object_mut().expect("an object").extend(extra.as_object().expect("an object").clone());
        serde_json::to_string_pretty(&json).expect("JSON values serialise")
    }

    /// Rejects sizes the network cannot have; errors name the field.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("patch_size", self.patch_size),
            ("num_channels", self.num_channels),
        ];
        if let Some((field, v)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(Error::config(field, v, "≥ 1"));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            let expected = format!("a divisor of hidden_size = {}", self.hidden_size);
            return Err(Error::config("num_attention_heads", self.num_attention_heads, &expected));
        }
        if self.image_size < self.patch_size {
            return Err(Error::config("image_size", self.image_size, "≥ patch_size"));
        }
        if !(self.layer_norm_eps > 0.0 && self.layer_norm_eps.is_finite()) {
            return Err(Error::config("layer_norm_eps", self.layer_norm_eps, "a positive number"));
        }
        if self.hidden_act != "gelu" {
            return Err(Error::config("hidden_act", &self.hidden_act, "\"gelu\" (exact, erf-based)"));
        }
        Ok(())
    }

    /// g, the side of the stored position grid.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    pub(super) fn describe(&self) -> String {
        let (d, l, i, g) = (self.hidden_size, self.num_hidden_layers, self.intermediate_size, self.grid());
        format!("the tensors of a {:?} with D = {d}, {l} layers, I = {i}, {g}×{g} grid", self.variant)
    }
}
