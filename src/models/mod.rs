//! Models, one file each.

pub mod mlp;

pub use mlp::{Init, Layer, Mlp};
