//! [`Init`]: how a layer's weights start, a choice the configs name (`init = "he"` or
//! `"reference"`).
//!
//! It lives with the layers, below the models and the config, so that `config` can name it
//! without importing a model.

use serde::{Deserialize, Serialize};

/// How the weights of a network's layers start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// Variance-preserving: dense entries N(0, gain²/n); low-rank U, V orthonormal with
    /// S = gain·√(m/r)·I (the same ‖W‖²_F); zero biases.
    #[default]
    He,
    /// The authors' PyTorch code: U, V orthonormal, S with N(0, 1) entries (full r×r), dense
    /// weights and all biases N(0, 1), unscaled. Its large weights make the gradient steps at
    /// λ = 0.01 large enough for the rank to grow; needed to reproduce the paper's numbers.
    Reference,
}
