//! Layers: the low-rank linear layer (also used as an adapter on a frozen base), the dense
//! linear layer that low-rank networks keep for their output, and the training passes that
//! make their factors trainable.
//!
//! Orientation everywhere: `z = x W + b`, W is n×m (n = fan-in, m = fan-out), as Burn's
//! `Linear` stores `[d_input, d_output]`.

pub mod dense_linear;
pub mod low_rank_linear;
pub mod passes;

pub use dense_linear::DenseLinear;
pub use low_rank_linear::LowRankLinear;
pub use passes::{FactorGrads, Network, Pass};
