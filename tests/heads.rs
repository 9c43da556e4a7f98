//! Attention's head split and merge (`dlrt::layers::heads`), [B, T, H·d_h] ↔ [B, H, T, d_h]:
//! on the CPU training backend they are contiguous copies whose values and gradients equal the
//! reshape-and-swap chain's bit for bit (they move values, never round them), in f32 and bf16,
//! for a contiguous and a transposed input; f64 takes the chain.

use burn::backend::Flex;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};
use dlrt::layers::heads::{merge_heads, merge_heads_chain, split_heads, split_heads_chain};
use dlrt::TrainBackend as F;
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

/// B, T, H, d_h: T prime and d_h odd, so no run lines up with a SIMD width.
const DIMS: [usize; 4] = [2, 17, 3, 5];

fn random<B: Backend, const N: usize>(shape: [usize; N], dtype: DType, seed: u64) -> Tensor<B, N> {
    let mut rng = StdRng::seed_from_u64(seed);
    let v: Vec<f32> = (0..shape.iter().product()).map(|_| StandardNormal.sample(&mut rng)).collect();
    Tensor::from_data(TensorData::new(v, shape), (&Default::default(), dtype))
}

fn values<B: Backend, const N: usize>(t: Tensor<B, N>) -> Vec<f64> {
    t.into_data().convert::<f64>().to_vec::<f64>().unwrap()
}

/// Whether flex holds `t`'s elements in row-major order (a view made by a swap does not).
fn contiguous<const N: usize>(t: Tensor<Flex, N>) -> bool {
    match t.into_primitive() {
        TensorPrimitive::Float(t) => t.layout().is_contiguous(),
        TensorPrimitive::QFloat(_) => false,
    }
}

/// [out, dx] of split then merge-with-a-weight: `split(x) ⊙ G1` summed, plus
/// `merge(split(x) ⊙ G1) ⊙ G2` summed, so both ops' backward passes carry a gradient.
fn run(
    split: fn(Tensor<F, 3>, usize) -> Tensor<F, 4>,
    merge: fn(Tensor<F, 4>) -> Tensor<F, 3>,
    dtype: DType,
    transposed: bool,
) -> [Vec<f64>; 3] {
    let [b, t, h, d_h] = DIMS;
    let leaf = match transposed {
        false => random::<F, 3>([b, t, h * d_h], dtype, 1),
        true => random::<F, 3>([b, h * d_h, t], dtype, 1),
    }
    .require_grad();
    let x = if transposed { leaf.clone().swap_dims(1, 2) } else { leaf.clone() };
    let heads = split(x, h) * random::<F, 4>([b, h, t, d_h], dtype, 2);
    let merged = merge(heads.clone());
    let loss = heads.clone().sum() + (merged.clone() * random::<F, 3>([b, t, h * d_h], dtype, 3)).sum();
    let dx = leaf.grad(&loss.backward()).expect("x needs its gradient");
    assert_eq!(dx.dtype(), dtype, "the gradient's float type is x's");
    [values(heads), values(merged), values(dx)]
}

#[test]
fn the_copies_equal_the_chain_bit_for_bit_in_value_and_gradient() {
    for dtype in [DType::F32, DType::BF16] {
        for transposed in [false, true] {
            let fused = run(split_heads, merge_heads, dtype, transposed);
            let chain = run(split_heads_chain, merge_heads_chain, dtype, transposed);
            assert_eq!(fused, chain, "{dtype:?}, transposed {transposed}");
        }
    }
}

/// On flex the results are contiguous (the copies ran; the chain's split is a strided view),
/// merge undoes split exactly, and f64 keeps the chain's view.
#[test]
fn flex_copies_into_row_major_order_and_f64_takes_the_chain() {
    let [b, t, h, d_h] = DIMS;
    let x = random::<Flex, 3>([b, t, h * d_h], DType::F32, 4);
    assert!(!contiguous(split_heads_chain(x.clone(), h)), "the chain's split is a view");
    let heads = split_heads(x.clone(), h);
    assert!(contiguous(heads.clone()), "plain flex: the split is not a copy");
    assert_eq!(values(merge_heads(heads)), values(x.clone()), "merge ∘ split is not the identity");
    let leaf = random::<F, 3>([b, t, h * d_h], DType::F32, 5);
    assert!(contiguous(split_heads(leaf, h).inner()), "Autodiff<flex>: the split is not a copy");
    let x64 = random::<Flex, 3>([b, t, h * d_h], DType::F64, 6);
    assert!(!contiguous(split_heads(x64, h)), "f64 does not take the chain");
}
