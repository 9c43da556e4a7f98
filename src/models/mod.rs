//! Models, one file each.

pub mod mlp;

pub use mlp::{Layer, Mlp};
