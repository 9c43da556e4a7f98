//! Models, one file each.

pub mod mlp;
pub mod vit;

pub use mlp::{Init, Layer, Mlp};
pub use vit::{AdapterTarget, ViT, ViTConfig};
