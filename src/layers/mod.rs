//! Layers: the low-rank linear layer (also used as an adapter on a frozen base), the dense
//! linear layer that low-rank networks keep for their output, convolutions with low-rank and
//! dense kernels ([`conv2d`]), the training passes that make their factors trainable, and the
//! choices configs name for layers: how weights start ([`Init`]), which projections carry
//! adapters ([`AdapterTarget`]), and how a model computes ([`Precision`], [`Attention`]; the
//! fused attention that autodiff trains through is [`attention`]), plus the exact GELU
//! ([`gelu()`]), layer norm ([`layer_norm()`]), a scaled softmax ([`softmax()`]) and max
//! pooling ([`max_pool2d()`]), each one fused pass on the CPU, layout copies that stay fast on the CPU ([`contiguous()`],
//! [`permute_contiguous()`]), the matrix product the layers use ([`matmul()`]: gemm into a
//! fresh buffer on the CPU), and the casts between float types ([`cast()`]) and bias adds
//! ([`add_bias()`]) of mixed precision and the linear layers, parallel on the CPU. A network is trained either through the [`Network`] trait, which
//! lists its layers, or as any Burn module, whose low-rank layers [`ModuleNetwork`] finds by
//! visiting it.
//!
//! Orientation everywhere: `z = x W + b`, W is n×m (n = fan-in, m = fan-out), as Burn's
//! `Linear` stores `[d_input, d_output]`.

pub mod attention;
pub mod backends;
pub mod bias;
pub mod capture;
pub mod cast;
pub mod compute;
pub mod contiguous;
pub mod conv2d;
pub mod dense_linear;
pub mod gelu;
pub mod init;
pub mod layer_norm;
pub mod low_rank_linear;
pub mod matmul;
pub mod module;
pub mod passes;
pub mod pool;
pub mod softmax;
pub mod targets;
pub mod visit;

pub use bias::add_bias;
pub use cast::cast;
pub use compute::{Attention, Precision};
pub use contiguous::{contiguous, permute_contiguous};
pub use conv2d::{Conv2dShape, DenseConv2d, LowRankConv2d};
pub use dense_linear::DenseLinear;
pub use gelu::gelu;
pub use init::Init;
pub use layer_norm::layer_norm;
pub use low_rank_linear::LowRankLinear;
pub use matmul::matmul;
pub use module::LowRankLinearRecord;
pub use passes::{bucket_width, FactorGrads, Network, Pass};
pub use pool::max_pool2d;
pub use softmax::softmax;
pub use targets::AdapterTarget;
pub use visit::{low_rank_layers, ModuleNetwork};
