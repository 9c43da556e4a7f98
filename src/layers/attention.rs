//! Fused attention that can be trained: `O = softmax(Q Kᵀ / √d) V` per head, with Q, K, V
//! `[batch, heads, tokens, d]`, through the backend's fused kernel in the forward pass also
//! under autodiff.
//!
//! Burn 0.21's `Autodiff` backend runs `burn::tensor::module::attention` as its explicit
//! fallback (matmul, softmax, matmul), which stores the `[batch, heads, tokens, tokens]`
//! probabilities of every block for the backward pass and never runs the inner backend's
//! kernel. [`fused_autodiff`] is an autodiff op whose forward is the inner backend's fused
//! `attention` (the tiled kernel of the CPU backend, flash attention on CUDA) and which saves
//! only Q, K, V and O. Its backward recomputes the probabilities of one block at a time (as
//! flash attention's backward does, here as whole tensors):
//!
//! ```text
//! S = Q Kᵀ/√d,  P = softmax(S),  dV = Pᵀ dO,  dP = dO Vᵀ,  D = rowsum(dO ⊙ O) (= rowsum(P ⊙ dP)),
//! dS = P ⊙ (dP − D),  dQ = dS K/√d,  dK = dSᵀ Q/√d
//! ```
//!
//! The models are generic over `B: Backend`, and a backward can only be written for the
//! concrete `Autodiff<I, C>`; [`fused`] therefore recognises the training backends at run time
//! ([`super::backends`]) and falls back to Burn's op everywhere else.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{CheckpointStrategy, NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::{AttentionModuleOptions, FloatTensor};
use burn::tensor::{DType, Tensor, TensorPrimitive};

use super::backends::as_backend;
use super::cast::cast;
use super::matmul::matmul;

/// `softmax(Q Kᵀ / √d) V` per head, [batch, heads, tokens, d] each, by the backend's fused
/// kernel. On the training backends (`crate::TrainBackend`, autodiff over the CPU backend,
/// and with the `cuda` feature `crate::CudaTrainBackend`) this is [`fused_autodiff`]; on any
/// other backend it is Burn's `attention` op, which under autodiff is the explicit chain.
pub fn fused<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> Tensor<B, 4> {
    if let Some(o) = run_as::<B, Flex, NoCheckpointing>(&q, &k, &v) {
        return o;
    }
    #[cfg(feature = "cuda")]
    if let Some(o) = run_as::<B, burn::backend::Cuda, NoCheckpointing>(&q, &k, &v) {
        return o;
    }
    attention(q, k, v, None, None, AttentionModuleOptions::default())
}

/// [`fused_autodiff`] on `q`, `k`, `v` when `B` is `Autodiff<I, C>`; `None` (and nothing run)
/// otherwise.
fn run_as<B: Backend, I: Backend, C: CheckpointStrategy>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
) -> Option<Tensor<B, 4>> {
    let [q, k, v] = [q, k, v].map(|t| as_backend::<B, Autodiff<I, C>, 4>(t.clone()).ok());
    as_backend::<Autodiff<I, C>, B, 4>(fused_autodiff(q?, k?, v?)).ok()
}

/// `softmax(Q Kᵀ / √d) V` per head on `Autodiff<I, C>`, [batch, heads, tokens, d] each: the
/// forward is `I`'s fused `attention`, the backward recomputes the probabilities from Q and K
/// (the module doc). Saves Q, K, V and O, not the [batch, heads, tokens, tokens] probabilities.
pub fn fused_autodiff<I: Backend, C: CheckpointStrategy>(
    q: Tensor<Autodiff<I, C>, 4>,
    k: Tensor<Autodiff<I, C>, 4>,
    v: Tensor<Autodiff<I, C>, 4>,
) -> Tensor<Autodiff<I, C>, 4> {
    let [q, k, v] = [q, k, v].map(|t| t.into_primitive().tensor());
    let nodes = [q.node.clone(), k.node.clone(), v.node.clone()];
    let forward = |q, k, v| I::attention(q, k, v, None, None, AttentionModuleOptions::default());
    let o = match FusedAttention.prepare::<C>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let o = forward(q.primitive.clone(), k.primitive.clone(), v.primitive.clone());
            prep.finish((q.primitive, k.primitive, v.primitive, o.clone()), o)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(q.primitive, k.primitive, v.primitive)),
    };
    Tensor::from_primitive(TensorPrimitive::Float(o))
}

/// The backward step of [`fused_autodiff`]; its state is (Q, K, V, O) on the inner backend.
#[derive(Debug)]
struct FusedAttention;

impl<I: Backend> Backward<I, 3> for FusedAttention {
    type State = (FloatTensor<I>, FloatTensor<I>, FloatTensor<I>, FloatTensor<I>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_q, node_k, node_v] = ops.parents;
        let d_o = grads.consume::<I>(&ops.node);
        let (q, k, v, o) = ops.state;
        let tensor = |t| Tensor::<I, 4>::from_primitive(TensorPrimitive::Float(t));
        let (q, k, v, o, d_o) = (tensor(q), tensor(k), tensor(v), tensor(o), tensor(d_o));
        let g = backward(q, k, v, o, d_o, [node_q.is_some(), node_k.is_some(), node_v.is_some()]);
        for (node, grad) in [node_q, node_k, node_v].into_iter().zip(g) {
            if let (Some(node), Some(grad)) = (node, grad) {
                grads.register::<I>(node.id, grad.into_primitive().tensor());
            }
        }
    }
}

/// [dQ, dK, dV] from the upstream gradient dO, each only where `wanted`, in the dtype of Q, K,
/// V. Half-precision inputs are computed in f32, as the fused kernels accumulate in f32.
fn backward<I: Backend>(
    q: Tensor<I, 4>,
    k: Tensor<I, 4>,
    v: Tensor<I, 4>,
    o: Tensor<I, 4>,
    d_o: Tensor<I, 4>,
    wanted: [bool; 3],
) -> [Option<Tensor<I, 4>>; 3] {
    let dtype = q.dtype();
    let compute = match dtype {
        DType::F16 | DType::BF16 => DType::F32,
        other => other,
    };
    let [q, k, v, o, d_o] = [q, k, v, o, d_o].map(|t| cast(t, compute));
    // The fused op's default scale, d the last axis of Q. It multiplies Q and dQ ([.., T, d])
    // rather than S and dS ([.., T, T]): dK = dSᵀ (Q/√d).
    let scale = 1.0 / (q.dims()[3] as f64).sqrt();
    let q = q.mul_scalar(scale);
    // Burn's softmax subtracts the row maximum first (numerically stable).
    let p = softmax(matmul(q.clone(), k.clone().swap_dims(2, 3)), 3);
    let [want_q, want_k, want_v] = wanted;
    let d_v = want_v.then(|| matmul(p.clone().swap_dims(2, 3), d_o.clone()));
    let (mut d_q, mut d_k) = (None, None);
    if want_q || want_k {
        let d_p = matmul(d_o.clone(), v.swap_dims(2, 3));
        let d = (d_o * o).sum_dim(3);
        let d_s = p * (d_p - d);
        d_k = want_k.then(|| matmul(d_s.clone().swap_dims(2, 3), q));
        d_q = want_q.then(|| matmul(d_s, k).mul_scalar(scale));
    }
    [d_q, d_k, d_v].map(|g| g.map(|g| cast(g, dtype)))
}
