//! The matrix product `dlrt::layers::matmul` on the CPU backend in f32 (gemm into a fresh
//! buffer) against Burn's `matmul`: bit for bit in value and in both gradients (the same gemm
//! kernel on the same strides), for contiguous, transposed and narrowed operands, products
//! below and above the size where gemm goes parallel, an empty inner dimension (a zero
//! product) and empty outer ones, on the plain and the training backend; with one operand
//! frozen, only the other gets a gradient. Stacks of products (attention's [batch, heads, T,
//! d]) likewise, side by side and one after the other, with permuted views; leading dimensions
//! that broadcast take Burn's product. In bf16 (computed in f32, rounded to bf16) likewise bit for
//! bit Burn's, in value and gradients. Off flex (NdArray f64) it is Burn's product.

use burn::backend::NdArray;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use dlrt::layers::matmul::matmul;
use dlrt::{CpuBackend, TrainBackend as F};
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

fn normal<B: Backend>(shape: [usize; 2], rng: &mut StdRng) -> Tensor<B, 2> {
    let v: Vec<f32> = (0..shape[0] * shape[1]).map(|_| StandardNormal.sample(rng)).collect();
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

fn bits<B: Backend>(t: Tensor<B, 2>) -> (Vec<usize>, Vec<u32>) {
    let data = t.into_data();
    (data.shape.to_vec(), data.to_vec::<f32>().unwrap().iter().map(|x| x.to_bits()).collect())
}

/// The shapes (m, k, n): one thread, all threads, and the empty cases.
const SHAPES: [(usize, usize, usize); 5] = [(3, 5, 4), (37, 19, 1), (200, 300, 250), (7, 0, 3), (0, 4, 2)];

/// `(a, b)` of shape [m, k], [k, n] as the given kind of view: 0 contiguous, 1 transposes of
/// stored transposes, 2 narrowed out of larger matrices.
fn operands<B: Backend>(
    (m, k, n): (usize, usize, usize),
    view: usize,
    rng: &mut StdRng,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    match view {
        0 => (normal([m, k], rng), normal([k, n], rng)),
        1 => (normal::<B>([k, m], rng).transpose(), normal::<B>([n, k], rng).transpose()),
        _ => (
            normal::<B>([m + 2, k + 3], rng).slice([1..m + 1, 2..k + 2]),
            normal::<B>([k + 1, n + 4], rng).slice([1..k + 1, 3..n + 3]),
        ),
    }
}

#[test]
fn the_product_equals_burns_bit_for_bit() {
    let mut rng = StdRng::seed_from_u64(3);
    for shape in SHAPES {
        for view in 0..3 {
            let (a, b) = operands::<CpuBackend>(shape, view, &mut rng);
            let want = a.clone().matmul(b.clone());
            assert_eq!(bits(matmul(a, b)), bits(want), "{shape:?}, view {view}");
        }
    }
    let (a, b) = operands::<CpuBackend>((4, 0, 3), 0, &mut rng);
    assert!(matmul(a, b).into_data().to_vec::<f32>().unwrap().iter().all(|&x| x == 0.0), "k = 0 gives zeros");
}

#[test]
fn the_gradients_equal_burns_bit_for_bit() {
    let mut rng = StdRng::seed_from_u64(4);
    for shape in SHAPES {
        for view in 0..3 {
            // Both trainable, then a frozen (no state kept for it, no gradient) and b frozen.
            for (train_a, train_b) in [(true, true), (false, true), (true, false)] {
                let (a0, b0) = operands::<F>(shape, view, &mut rng);
                let g = normal::<F>([shape.0, shape.2], &mut rng);
                let run = |ours: bool| {
                    let a = if train_a { a0.clone().require_grad() } else { a0.clone() };
                    let b = if train_b { b0.clone().require_grad() } else { b0.clone() };
                    let c = if ours { matmul(a.clone(), b.clone()) } else { a.clone().matmul(b.clone()) };
                    let grads = (c.clone() * g.clone()).sum().backward();
                    let (da, db) = (a.grad(&grads), b.grad(&grads));
                    assert_eq!((da.is_some(), db.is_some()), (train_a, train_b), "{shape:?}");
                    (bits(c.inner()), da.map(bits), db.map(bits))
                };
                assert_eq!(run(true), run(false), "{shape:?}, view {view}, trained ({train_a}, {train_b})");
            }
        }
    }
}

#[test]
fn off_flex_it_is_burns_product() {
    type D = NdArray<f64>;
    let mut rng = StdRng::seed_from_u64(5);
    let (a, b) = (normal::<D>([6, 5], &mut rng), normal::<D>([5, 4], &mut rng));
    let (got, want) = (matmul(a.clone(), b.clone()).into_data(), a.matmul(b).into_data());
    assert_eq!(got.to_vec::<f64>().unwrap(), want.to_vec::<f64>().unwrap());
}

fn normal4<B: Backend>(shape: [usize; 4], rng: &mut StdRng) -> Tensor<B, 4> {
    let v: Vec<f32> = (0..shape.iter().product()).map(|_| StandardNormal.sample(rng)).collect();
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

fn bits4<B: Backend>(t: Tensor<B, 4>) -> (Vec<usize>, Vec<u32>) {
    let data = t.into_data();
    (data.shape.to_vec(), data.to_vec::<f32>().unwrap().iter().map(|x| x.to_bits()).collect())
}

/// Stacks [s0, s1, m, k] × [s0, s1, k, n]: many small products (side by side), two large ones
/// (one after the other, each on all threads), one small one; Q Kᵀ as attention forms it, from
/// a [B, T, H, d] tensor permuted to [B, H, T, d] and a key transposed in its last two axes.
#[test]
fn stacks_of_products_equal_burns_in_value_and_gradient() {
    let mut rng = StdRng::seed_from_u64(6);
    for (stack, (m, k, n)) in [([4, 6], (17, 64, 17)), ([2, 1], (200, 210, 220)), ([1, 1], (3, 4, 5))] {
        let [s0, s1] = stack;
        for view in 0..2 {
            let (a0, b0) = match view {
                0 => (normal4::<F>([s0, s1, m, k], &mut rng), normal4::<F>([s0, s1, k, n], &mut rng)),
                _ => (
                    normal4::<F>([s0, m, s1, k], &mut rng).swap_dims(1, 2),
                    normal4::<F>([s0, s1, n, k], &mut rng).swap_dims(2, 3),
                ),
            };
            let g = normal4::<F>([s0, s1, m, n], &mut rng);
            let run = |ours: bool| {
                let (a, b) = (a0.clone().require_grad(), b0.clone().require_grad());
                let c = if ours { matmul(a.clone(), b.clone()) } else { a.clone().matmul(b.clone()) };
                let grads = (c.clone() * g.clone()).sum().backward();
                (bits4(c.inner()), a.grad(&grads).map(bits4), b.grad(&grads).map(bits4))
            };
            assert_eq!(run(true), run(false), "{stack:?} ({m}, {k}, {n}), view {view}");
        }
    }
    // [2, 3, ..] × [1, 3, ..] broadcasts: Burn's product, with its value.
    let (a, b) =
        (normal4::<CpuBackend>([2, 3, 4, 5], &mut rng), normal4::<CpuBackend>([1, 3, 5, 2], &mut rng));
    assert_eq!(bits4(matmul(a.clone(), b.clone())), bits4(a.matmul(b)));
}

fn bits_bf16<B: Backend>(t: Tensor<B, 2>) -> (Vec<usize>, Vec<u16>) {
    assert_eq!(t.dtype(), DType::BF16, "the product stays in bf16");
    let data = t.into_data();
    (data.shape.to_vec(), data.to_vec::<burn::tensor::bf16>().unwrap().iter().map(|x| x.to_bits()).collect())
}

/// bf16 operands (mixed precision's frozen products): value and both gradients bit for bit
/// Burn's, for contiguous, transposed and narrowed views, below and above gemm's parallel size.
#[test]
fn bf16_products_equal_burns_bit_for_bit() {
    let mut rng = StdRng::seed_from_u64(9);
    for shape in [(3, 5, 4), (200, 300, 250), (7, 0, 3)] {
        for view in 0..3 {
            let (a, b) = operands::<F>(shape, view, &mut rng);
            let (a0, b0) = (a.cast(DType::BF16), b.cast(DType::BF16));
            let g = normal::<F>([shape.0, shape.2], &mut rng).cast(DType::BF16);
            let run = |ours: bool| {
                let (a, b) = (a0.clone().require_grad(), b0.clone().require_grad());
                let c = if ours { matmul(a.clone(), b.clone()) } else { a.clone().matmul(b.clone()) };
                let grads = (c.clone() * g.clone()).sum().backward();
                let grad = |x: &Tensor<F, 2>| bits_bf16(x.grad(&grads).expect("a gradient"));
                (bits_bf16(c.inner()), grad(&a), grad(&b))
            };
            assert_eq!(run(true), run(false), "{shape:?}, view {view}");
        }
    }
}
