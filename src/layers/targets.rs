//! [`AdapterTarget`]: the projections of a transformer block that can carry a low-rank
//! adapter, named as in peft's `target_modules`.
//!
//! It lives with the layers, below the models and the config, so that `config` can list
//! targets without importing a model.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A projection that can carry an adapter, named as in peft's `target_modules`.
/// Ordered as in [`AdapterTarget::ALL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdapterTarget {
    /// Q (D×D).
    Query,
    /// K (D×D).
    Key,
    /// V (D×D).
    Value,
    /// The attention output projection (D×D).
    AttentionOutput,
    /// The MLP's first projection (D×I).
    MlpFc1,
    /// The MLP's second projection (I×D).
    MlpFc2,
}

impl AdapterTarget {
    /// Every target, in the order of a block's low-rank layers (`ViT::low_rank_layers_mut`).
    pub const ALL: [Self; 6] =
        [Self::Query, Self::Key, Self::Value, Self::AttentionOutput, Self::MlpFc1, Self::MlpFc2];
    /// Q, K and V: the seed paper's (and LoRA's) choice.
    pub const DEFAULT: [Self; 3] = [Self::Query, Self::Key, Self::Value];

    /// The config / command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Query => "query",
            Self::Key => "key",
            Self::Value => "value",
            Self::AttentionOutput => "attention_output",
            Self::MlpFc1 => "mlp_fc1",
            Self::MlpFc2 => "mlp_fc2",
        }
    }
}

impl FromStr for AdapterTarget {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| {
            let names: Vec<_> = Self::ALL.iter().map(|t| t.name()).collect();
            Error::config("adapter target", s, &format!("one of {}", names.join(", ")))
        })
    }
}
