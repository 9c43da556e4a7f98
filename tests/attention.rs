//! Attention through the backend's fused kernel under autodiff (`dlrt::layers::attention`):
//! its output and the gradients of Q, K, V against the explicit chain
//! `softmax(Q Kᵀ/√d) V` (matmul, softmax, matmul, differentiated by Burn), for the loss
//! `sum(O ⊙ G)` with a random upstream gradient G. In f64 (on NdArray, and on the CPU
//! training backend with f64 tensors) they agree to 1e-12 relative, in f32 to 1e-5, and in bf16
//! (against the f32 chain) to 2⁻⁷.

use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::activation::softmax;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, Tensor, TensorData};
use dlrt::layers::attention::{fused, fused_autodiff};
use dlrt::TrainBackend as F;
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

/// [batch, heads, tokens, d]: tokens prime (17, 37), a single token, and 530 tokens (T² above
/// 2¹⁸), where the CPU backend's kernel switches from the whole score matrix to KV tiles.
const SHAPES: [[usize; 4]; 4] = [[2, 3, 17, 8], [1, 2, 37, 5], [3, 1, 1, 4], [1, 2, 530, 8]];

fn random<A: AutodiffBackend>(shape: [usize; 4], dtype: DType, rng: &mut StdRng) -> Tensor<A, 4> {
    let values: Vec<f64> = (0..shape.iter().product()).map(|_| StandardNormal.sample(rng)).collect();
    Tensor::from_data(TensorData::new(values, shape), (&Default::default(), dtype))
}

/// The reference: Burn differentiates the three operations.
fn explicit<A: AutodiffBackend>(q: Tensor<A, 4>, k: Tensor<A, 4>, v: Tensor<A, 4>) -> Tensor<A, 4> {
    let scale = 1.0 / (q.dims()[3] as f64).sqrt();
    softmax(q.matmul(k.swap_dims(2, 3)).mul_scalar(scale), 3).matmul(v)
}

/// [O, dQ, dK, dV] of `op` for the loss `sum(O ⊙ G)`, as f64 values.
fn value_and_grads<A: AutodiffBackend>(
    [q, k, v, g]: &[Tensor<A, 4>; 4],
    op: impl Fn(Tensor<A, 4>, Tensor<A, 4>, Tensor<A, 4>) -> Tensor<A, 4>,
) -> [Vec<f64>; 4] {
    let [q, k, v] = [q, k, v].map(|t| t.clone().require_grad());
    let o = op(q.clone(), k.clone(), v.clone());
    let grads = (o.clone() * g.clone()).sum().backward();
    let grad = |t: &Tensor<A, 4>| {
        let g = t.grad(&grads).expect("Q, K and V need gradients");
        assert_eq!(g.dtype(), t.dtype(), "a gradient's float type is its tensor's");
        g
    };
    [o.inner(), grad(&q), grad(&k), grad(&v)].map(|t| t.into_data().convert::<f64>().to_vec().unwrap())
}

/// max |a − b| / max |b|; 0 when a = b (with a single token dQ = dK = 0).
fn relative(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let diff = a.iter().zip(b).fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
    if diff == 0.0 {
        0.0
    } else {
        diff / scale
    }
}

/// The fused op against the explicit chain on `A`, each shape, to `tol` relative.
fn agrees_with_explicit<A: AutodiffBackend>(
    dtype: DType,
    tol: f64,
    op: impl Fn(Tensor<A, 4>, Tensor<A, 4>, Tensor<A, 4>) -> Tensor<A, 4>,
) {
    let mut rng = StdRng::seed_from_u64(7);
    for shape in SHAPES {
        let inputs = [0; 4].map(|_| random::<A>(shape, dtype, &mut rng));
        // bf16 against the f32 chain on the same (rounded) inputs.
        let exact = if dtype == DType::BF16 { DType::F32 } else { dtype };
        let reference = value_and_grads(&inputs.clone().map(|t| t.cast(exact)), explicit);
        let fused = value_and_grads(&inputs, &op);
        for (name, (a, b)) in ["O", "dQ", "dK", "dV"].iter().zip(fused.iter().zip(&reference)) {
            let err = relative(a, b);
            assert!(
                err <= tol,
                "{shape:?} {dtype:?}: {name} differs by {err:e} relative (tolerance {tol:e})"
            );
        }
    }
}

#[test]
fn the_fused_op_matches_the_explicit_chain_in_f64_on_ndarray() {
    agrees_with_explicit::<Autodiff<NdArray<f64>>>(DType::F64, 1e-12, fused_autodiff);
}

#[test]
fn the_cpu_training_backend_runs_the_fused_op_in_f64_f32_and_bf16() {
    agrees_with_explicit::<F>(DType::F64, 1e-12, fused);
    agrees_with_explicit::<F>(DType::F32, 1e-5, fused);
    // Two bf16 roundings (2⁻⁷): the op returns O and its gradients in bf16.
    agrees_with_explicit::<F>(DType::BF16, 2f64.powi(-7), fused);
}

/// `fused` on the training backend is the custom op (bit for bit), not Burn's `attention`,
/// which under autodiff is its explicit fallback and rounds differently.
#[test]
fn fused_dispatches_to_the_custom_op_on_the_cpu_training_backend() {
    let mut rng = StdRng::seed_from_u64(8);
    let inputs = [0; 4].map(|_| random::<F>([2, 3, 17, 8], DType::F32, &mut rng));
    let custom = value_and_grads(&inputs, fused_autodiff::<Flex, NoCheckpointing>);
    assert!(value_and_grads(&inputs, fused) == custom, "`fused` did not run the custom op");
    let burn =
        value_and_grads(&inputs, |q, k, v| attention(q, k, v, None, None, AttentionModuleOptions::default()));
    assert_ne!(burn, custom, "Burn's op and the custom one round alike: this test cannot tell them apart");
}
