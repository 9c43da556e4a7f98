//! Layer norm over the last axis, y = (x − mean) / √(var + ε) ⊙ w + b with the biased variance
//! (as PyTorch's and HF's `LayerNorm`), and its gradients with respect to x, w and b.
//!
//! On the CPU backend (Burn's `flex`, plain or under autodiff) in f32, [`layer_norm()`] runs
//! one fused kernel ([`kernel`]) forward and one backward, each a single parallel pass over the
//! rows; under autodiff it is one op with three parents that keeps x and three numbers per row
//! (not the normalised x̂). Everywhere else (CUDA, f64, halves, other backends) it is the chain
//! of Burn tensor ops in [`layer_norm_chain`].
//!
//! # Shapes
//! - x: `[.., d]`; weight, bias: `[d]`; the output has x's shape (contiguous for the fused kernel).

pub mod kernel;

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Tensor, TensorData, TensorMetadata, TensorPrimitive};
use burn_flex::FlexTensor;

use super::backends::{as_backend, in_dtype, owned_from_start, readable};

type AutodiffFlex = Autodiff<Flex, NoCheckpointing>;

/// Layer norm of `x` over its last axis with `weight` and `bias` of that axis's size: fused on
/// the CPU backend in f32 (x, weight and bias all f32), the chain of tensor ops otherwise.
pub fn layer_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    bias: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    let d = weight.dims()[0];
    let fits = d > 0 && x.dims()[D - 1] == d && bias.dims()[0] == d;
    if !fits || [x.dtype(), weight.dtype(), bias.dtype()] != [DType::F32; 3] {
        return layer_norm_chain(x, weight, bias, eps);
    }
    let (x, weight, bias) = match on::<B, Flex, D>(x, weight, bias) {
        Ok((x, w, b)) => {
            let y =
                Tensor::from_primitive(TensorPrimitive::Float(plain(prim(x), prim(w), prim(b), eps as f32)));
            return as_backend::<Flex, B, D>(y).expect("B is flex");
        }
        Err(inputs) => inputs,
    };
    match on::<B, AutodiffFlex, D>(x, weight, bias) {
        Ok((x, w, b)) => {
            let y = Tensor::from_primitive(TensorPrimitive::Float(fused_autodiff(
                prim(x),
                prim(w),
                prim(b),
                eps as f32,
            )));
            as_backend::<AutodiffFlex, B, D>(y).expect("B is Autodiff<flex>")
        }
        Err((x, w, b)) => layer_norm_chain(x, w, b, eps),
    }
}

/// Layer norm as Burn tensor ops: mean, centring, variance, division, scale and shift as
/// separate passes, differentiated by autodiff; exact in the backend's precision.
pub fn layer_norm_chain<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    bias: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    let centred = x.clone() - x.mean_dim(D - 1);
    let var = centred.clone().square().mean_dim(D - 1);
    centred / var.add_scalar(eps).sqrt() * weight.unsqueeze::<D>() + bias.unsqueeze::<D>()
}

type Inputs<A, const D: usize> = (Tensor<A, D>, Tensor<A, 1>, Tensor<A, 1>);

/// The three tensors as tensors of backend `A` when `B` is `A`; given back otherwise.
fn on<B: Backend, A: Backend, const D: usize>(
    x: Tensor<B, D>,
    w: Tensor<B, 1>,
    b: Tensor<B, 1>,
) -> Result<Inputs<A, D>, Inputs<B, D>> {
    match as_backend::<B, A, D>(x) {
        Ok(x) => {
            let same = "the three tensors share a backend";
            Ok((x, as_backend::<B, A, 1>(w).expect(same), as_backend::<B, A, 1>(b).expect(same)))
        }
        Err(x) => Err((x, w, b)),
    }
}

fn prim<A: Backend, const D: usize>(t: Tensor<A, D>) -> FloatTensor<A> {
    t.into_primitive().tensor()
}

/// The forward pass on plain flex, in x's buffer when x owns it.
fn plain(mut x: FlexTensor, w: FlexTensor, b: FlexTensor, eps: f32) -> FlexTensor {
    let (w, b) = (readable::<f32>(w), readable::<f32>(b));
    let (w, b) = (f32s(&w), f32s(&b));
    if let Some(buffer) = owned_from_start::<f32>(&mut x) {
        kernel::forward_in_place(buffer, w, b, eps);
        return x;
    }
    let x = readable::<f32>(x);
    let n = x.layout().num_elements();
    let mut y = vec![0f32; n];
    let mut stats = vec![0f32; n / w.len() * kernel::STATS];
    kernel::forward(f32s(&x), w, b, eps, &mut y, &mut stats);
    FlexTensor::from_data(TensorData::new(y, x.shape()))
}

/// The fused forward as an autodiff op with parents x, w, b; keeps x, w and each row's
/// statistics for the backward pass.
fn fused_autodiff(
    x: FloatTensor<AutodiffFlex>,
    w: FloatTensor<AutodiffFlex>,
    b: FloatTensor<AutodiffFlex>,
    eps: f32,
) -> FloatTensor<AutodiffFlex> {
    let nodes = [x.node.clone(), w.node.clone(), b.node.clone()];
    match FusedLayerNorm.prepare::<NoCheckpointing>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (x, w) = (readable::<f32>(x.primitive), readable::<f32>(w.primitive));
            let b = readable::<f32>(b.primitive);
            let n = x.layout().num_elements();
            let d = f32s(&w).len();
            let mut y = vec![0f32; n];
            let mut stats = vec![0f32; n / d * kernel::STATS];
            kernel::forward(f32s(&x), f32s(&w), f32s(&b), eps, &mut y, &mut stats);
            let y = FlexTensor::from_data(TensorData::new(y, x.shape()));
            prep.finish((x, w, stats), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(plain(x.primitive, w.primitive, b.primitive, eps)),
    }
}

/// The backward step of [`fused_autodiff`]; its state is x and w (contiguous) and each row's
/// m, c, rstd ([`kernel`]).
#[derive(Debug)]
struct FusedLayerNorm;

impl Backward<Flex, 3> for FusedLayerNorm {
    type State = (FlexTensor, FlexTensor, Vec<f32>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let g = grads.consume::<Flex>(&ops.node);
        let (x, w, stats) = ops.state;
        let wanted = [node_x.is_some(), node_w.is_some(), node_b.is_some()];
        let mut g = readable::<f32>(in_dtype(g, DType::F32));
        let (dw, db) = match owned_from_start::<f32>(&mut g) {
            Some(buffer) => kernel::backward(f32s(&x), f32s(&w), &stats, buffer, wanted),
            None => {
                let mut copy = f32s(&g).to_vec();
                let sums = kernel::backward(f32s(&x), f32s(&w), &stats, &mut copy, wanted);
                g = FlexTensor::from_data(TensorData::new(copy, x.shape()));
                sums
            }
        };
        let d = dw.len().max(db.len());
        let vector = |v: Vec<f32>| FlexTensor::from_data(TensorData::new(v, [d]));
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, g);
        }
        if let Some(node) = node_w {
            grads.register::<Flex>(node.id, vector(dw));
        }
        if let Some(node) = node_b {
            grads.register::<Flex>(node.id, vector(db));
        }
    }
}

/// The f32 elements of a contiguous tensor.
fn f32s(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("a contiguous f32 tensor")
}
