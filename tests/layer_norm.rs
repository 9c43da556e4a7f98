//! The fused layer norm (`dlrt::layers::layer_norm`) on the CPU training backend in f32:
//! its output and the gradients of x, w and b, for the loss `sum(y ⊙ G)` with a random
//! upstream gradient G, against the chain of Burn ops in f32 and against the chain in f64 (the
//! reference): contiguous and transposed x, a strided weight, rows of 37 (no multiple of a
//! SIMD width), constant rows (variance 0) and rows whose mean is 10⁴ times their spread.
//! Errors are max |a − b| / max |b| per tensor.

use burn::backend::Flex;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor, TensorData};
use dlrt::layers::layer_norm::{kernel, layer_norm, layer_norm_chain};
use dlrt::TrainBackend as F;
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

const D: usize = 37;
/// DINOv2's ε; with constant rows rstd = 10³.
const EPS: f64 = 1e-6;

type Op = fn(Tensor<F, 3>, Tensor<F, 1>, Tensor<F, 1>, f64) -> Tensor<F, 3>;

/// The inputs of one case: x [3, 17, D] (as f32 values), w, b, G.
struct Case {
    x: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
    g: Vec<f32>,
}

fn normal(n: usize, rng: &mut StdRng) -> Vec<f32> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}

/// `offset` added to every x; with `constant_rows`, every fifth row constant.
fn case(offset: f32, constant_rows: bool, seed: u64) -> Case {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut x: Vec<f32> = normal(3 * 17 * D, &mut rng).into_iter().map(|v| v + offset).collect();
    for (i, row) in x.chunks_mut(D).enumerate().filter(|(i, _)| constant_rows && i % 5 == 0) {
        row.fill(offset + 0.1 * (i as f32 + 1.0));
    }
    let w = normal(D, &mut rng).into_iter().map(|v| 1.0 + 0.5 * v).collect();
    Case { x, w, b: normal(D, &mut rng), g: normal(3 * 17 * D, &mut rng) }
}

/// [y, dx, dw, db] of `op` in `dtype` as f64 values (x and y in [3, 17, D] order), checking
/// that each gradient has its tensor's float type. With `strided`, x enters as the transpose of
/// a [3, D, 17] leaf and w as a column of a [D, 2] leaf (both non-contiguous views).
fn run(op: Op, c: &Case, dtype: DType, strided: bool) -> [Vec<f64>; 4] {
    let (x_leaf, w_leaf) = match strided {
        false => (tensor::<F, 3>(&c.x, [3, 17, D], dtype), tensor(&c.w, [D], dtype)),
        true => {
            let xt = tensor::<F, 3>(&c.x, [3, 17, D], dtype).swap_dims(1, 2).into_data();
            let w2: Vec<f32> = c.w.iter().flat_map(|&w| [w, -7.0]).collect();
            (Tensor::from_data(xt, (&Default::default(), dtype)), tensor(&w2, [D * 2], dtype))
        }
    };
    let (x_leaf, w_leaf, b) =
        (x_leaf.require_grad(), w_leaf.require_grad(), tensor::<F, 1>(&c.b, [D], dtype).require_grad());
    let (x, w): (Tensor<F, 3>, Tensor<F, 1>) = match strided {
        false => (x_leaf.clone(), w_leaf.clone().reshape([D])),
        true => (x_leaf.clone().swap_dims(1, 2), w_leaf.clone().reshape([D, 2]).narrow(1, 0, 1).reshape([D])),
    };
    let y = op(x, w, b.clone(), EPS);
    let grads = (y.clone() * tensor(&c.g, [3, 17, D], dtype)).sum().backward();
    let values = |t: Tensor<F, 3>| t.into_data().convert::<f64>().to_vec::<f64>().unwrap();
    let grad = |g: Option<Tensor<Flex, 3>>| {
        let g = g.expect("x, w and b need gradients");
        assert_eq!(g.dtype(), dtype, "a gradient's float type is its tensor's");
        values(Tensor::from_inner(g))
    };
    let dx = x_leaf.grad(&grads).map(|g| if strided { g.swap_dims(1, 2) } else { g });
    let dw = w_leaf.grad(&grads).map(|g| match strided {
        true => g.reshape([D, 2]).narrow(1, 0, 1).reshape([1, 1, D]),
        false => g.reshape([1, 1, D]),
    });
    [values(y), grad(dx), grad(dw), grad(b.grad(&grads).map(|g| g.reshape([1, 1, D])))]
}

fn tensor<B: Backend, const N: usize>(v: &[f32], shape: [usize; N], dtype: DType) -> Tensor<B, N> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), (&Default::default(), dtype))
}

/// max |a − b| / max |b|.
fn relative(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0.0f64, |m, (x, y)| m.max((x - y).abs())) / scale
}

const NAMES: [&str; 4] = ["y", "dx", "dw", "db"];

/// Rows of moderate values: the fused op and the f32 chain agree to 1e-6 in the output and
/// every gradient, and the fused op is within 1e-6 of f64, also with constant rows, where
/// rstd = 10³ magnifies the chain's rounding of the mean (it is not compared there).
#[test]
fn the_fused_op_matches_the_chain_and_f64_in_value_and_all_gradients() {
    for (constant_rows, strided) in [(false, false), (false, true), (true, false), (true, true)] {
        let c = case(0.0, constant_rows, 1);
        let exact = run(layer_norm_chain, &c, DType::F64, strided);
        let chain = run(layer_norm_chain, &c, DType::F32, strided);
        let fused = run(layer_norm, &c, DType::F32, strided);
        let label = format!("constant rows {constant_rows}, strided {strided}");
        for i in 0..4 {
            let (to_chain, to_exact) = (relative(&fused[i], &chain[i]), relative(&fused[i], &exact[i]));
            let chain_error = relative(&chain[i], &exact[i]);
            let name = NAMES[i];
            println!(
                "{label} {name}: fused−chain {to_chain:e}, fused−f64 {to_exact:e}, chain−f64 {chain_error:e}"
            );
            assert!(to_exact <= 1e-6, "{label}: {name} differs from f64 by {to_exact:e}");
            if !constant_rows {
                assert!(to_chain <= 1e-6, "{label}: {name} differs from the chain by {to_chain:e}");
            }
        }
    }
}

/// Rows of mean 10⁴ and spread 1 (x carries 4 fewer significant digits than x̂ needs): the
/// fused op is still within 1e-6 of f64, where the chain, which rounds the mean once, is not;
/// its constant rows normalise to exactly b.
#[test]
fn a_mean_far_above_the_spread_costs_the_fused_op_no_accuracy() {
    let c = case(1e4, true, 2);
    let exact = run(layer_norm_chain, &c, DType::F64, false);
    let chain = run(layer_norm_chain, &c, DType::F32, false);
    let fused = run(layer_norm, &c, DType::F32, false);
    for i in 0..4 {
        let (fused_error, chain_error) = (relative(&fused[i], &exact[i]), relative(&chain[i], &exact[i]));
        println!("{}: fused−f64 {fused_error:e}, chain−f64 {chain_error:e}", NAMES[i]);
        assert!(fused_error <= 1e-6, "{} differs from f64 by {fused_error:e}", NAMES[i]);
    }
    let chain_y = relative(&chain[0], &exact[0]);
    assert!(chain_y > 1e-4, "the chain is accurate here ({chain_y:e}): the case is not hard");
    for row in fused[0].chunks(D).step_by(5) {
        assert!(row.iter().zip(&c.b).all(|(y, b)| *y == *b as f64), "a constant row is not b");
    }
}

/// On `Autodiff<flex>` and on plain flex the output is the kernel's, bit for bit (so the fused
/// path ran), and not the chain's; f64 takes the chain unchanged.
#[test]
fn flex_in_f32_dispatches_to_the_kernel_and_f64_to_the_chain() {
    let c = case(0.5, true, 3);
    let (rows, eps) = (c.x.len() / D, EPS as f32);
    let (mut expected, mut stats) = (vec![0f32; c.x.len()], vec![0f32; rows * kernel::STATS]);
    kernel::forward(&c.x, &c.w, &c.b, eps, &mut expected, &mut stats);
    let expected: Vec<f64> = expected.into_iter().map(f64::from).collect();
    let fused = run(layer_norm, &c, DType::F32, false);
    assert_eq!(fused[0], expected, "Autodiff<flex>: not the kernel's output");
    assert_ne!(run(layer_norm_chain, &c, DType::F32, false)[0], expected, "the chain rounds alike");
    let (x, w, b) = (
        tensor::<Flex, 3>(&c.x, [3, 17, D], DType::F32),
        tensor::<Flex, 1>(&c.w, [D], DType::F32),
        tensor::<Flex, 1>(&c.b, [D], DType::F32),
    );
    let y = layer_norm::<Flex, 3>(x.clone(), w.clone(), b.clone(), EPS);
    assert_eq!(y.into_data().convert::<f64>().to_vec::<f64>().unwrap(), expected, "plain flex");
    let (x, w, b) = (x.cast(FloatDType::F64), w.cast(FloatDType::F64), b.cast(FloatDType::F64));
    let fused = layer_norm::<Flex, 3>(x.clone(), w.clone(), b.clone(), EPS).into_data();
    assert_eq!(fused, layer_norm_chain::<Flex, 3>(x, w, b, EPS).into_data(), "f64");
}
