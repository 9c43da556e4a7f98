//! How a model computes: the floating-point type of its frozen part or, for a network trained
//! from scratch, of its matrix products ([`Precision`] and `autocast`), and the attention kernel
//! ([`Attention`]).
//!
//! Both live with the layers, below the models and the config, so that `config` can name them
//! without importing a model. Each is written in configs and on the command line as its
//! lowercase name (`"f32"`, `"bf16"`; `"fused"`, `"explicit"`); any other name is an error
//! that names the setting and lists the valid ones.

use burn::tensor::{backend::Backend, FloatDType, Tensor};
use serde::{Deserialize, Serialize};

use super::cast::cast;

/// The floating-point type of a frozen backbone's weights and activations, or of the matrix
/// products of a network trained from scratch.
///
/// Fine-tuning: with `Bf16` the frozen weights are stored in bf16 and every matrix product of the backbone
/// runs in bf16, as PyTorch's bf16 autocast does; the trainable part (adapter factors, biases,
/// the head), the residual stream, layer norms, softmax, the loss, the optimizer state and all
/// host linear algebra stay in the backend's float type (f32). The casts sit at the adapters'
/// boundary, so the factors' gradients are f32.
///
/// Training from scratch (no frozen part): with `Bf16` each layer casts its input and its
/// factors (or dense weight) to bf16 for its products (convolutions included) and its output
/// back to f32 before the bias, as `torch.autocast(dtype=torch.bfloat16)` does; the master
/// factors, weights, biases, optimizer state, loss and host linear algebra stay f32, and the
/// casts pass the gradients back to them in f32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Precision {
    /// Everything in the backend's float type: no casts.
    #[default]
    F32,
    /// The frozen backbone's weights and matrix products in bf16.
    Bf16,
}

impl Precision {
    /// Every choice, in the order `--help` lists them.
    pub const ALL: [Self; 2] = [Self::F32, Self::Bf16];

    /// The config / command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        }
    }

    /// The type the frozen part computes in (fine-tuning), or every layer's products (training
    /// from scratch): `None` keeps the backend's float type.
    pub fn frozen_dtype(self) -> Option<FloatDType> {
        match self {
            Self::F32 => None,
            Self::Bf16 => Some(FloatDType::BF16),
        }
    }
}

/// How multi-head attention `softmax(Q Kᵀ / √d_h) V` is computed.
///
/// Both compute the same function and differ in round-off. The default is `Explicit`, which
/// keeps earlier runs bit for bit. `Fused` runs the backend's fused kernel; on the training
/// backends also under autodiff ([`crate::layers::attention`]: the backward recomputes the
/// [batch, heads, tokens, tokens] probabilities one block at a time instead of storing them),
/// elsewhere Burn 0.21's attention op, which under autodiff is its explicit fallback.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Attention {
    /// The backend's fused kernel (flash attention on CUDA, a tiled kernel on the CPU
    /// backend), in training through [`crate::layers::attention::fused`].
    Fused,
    /// The scores, their softmax and the product with V as three separate tensor operations.
    #[default]
    Explicit,
}

impl Attention {
    /// Every choice, in the order `--help` lists them.
    pub const ALL: [Self; 2] = [Self::Fused, Self::Explicit];

    /// The config / command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fused => "fused",
            Self::Explicit => "explicit",
        }
    }
}

/// `t` in `dtype` when one is given (a layer's products under [`Precision::Bf16`]); `t` itself
/// when it is `None`, so the f32 path is unchanged.
pub(crate) fn autocast<B: Backend, const D: usize>(
    t: Tensor<B, D>,
    dtype: Option<FloatDType>,
) -> Tensor<B, D> {
    match dtype {
        Some(d) => cast(t, d),
        None => t,
    }
}

/// `FromStr`, `Display` and the serde string forms from `ALL` and `name`, for a choice that
/// configs and the command line name (`$setting` is the key an error names).
macro_rules! named_choice {
    ($ty:ty, $setting:literal) => {
        impl std::str::FromStr for $ty {
            type Err = $crate::Error;
            fn from_str(s: &str) -> $crate::Result<Self> {
                Self::ALL.into_iter().find(|c| c.name() == s).ok_or_else(|| {
                    let names: Vec<_> = Self::ALL.iter().map(|c| format!("\"{}\"", c.name())).collect();
                    $crate::Error::config(
                        $setting,
                        format!("\"{s}\""),
                        &format!("one of {}", names.join(", ")),
                    )
                })
            }
        }
        impl TryFrom<String> for $ty {
            type Error = $crate::Error;
            fn try_from(s: String) -> $crate::Result<Self> {
                s.parse()
            }
        }
        impl From<$ty> for String {
            fn from(c: $ty) -> String {
                c.name().to_string()
            }
        }
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}
pub(crate) use named_choice;

named_choice!(Precision, "precision");
named_choice!(Attention, "attention");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_names_list_the_valid_ones() {
        for p in Precision::ALL {
            assert_eq!(p.name().parse::<Precision>().unwrap(), p);
        }
        for a in Attention::ALL {
            assert_eq!(a.to_string().parse::<Attention>().unwrap(), a);
        }
        let err = "fp8".parse::<Precision>().unwrap_err().to_string();
        assert!(err.contains("precision") && err.contains("fp8") && err.contains("\"bf16\""), "{err}");
        let err = "flash".parse::<Attention>().unwrap_err().to_string();
        assert!(err.contains("attention") && err.contains("\"explicit\""), "{err}");
        assert_eq!(Precision::F32.frozen_dtype(), None);
        assert_eq!(Precision::Bf16.frozen_dtype(), Some(FloatDType::BF16));
    }
}
