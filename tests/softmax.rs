//! The fused softmax (`dlrt::layers::softmax`), p = softmax(s·x) along the last axis, on the
//! CPU training backend in f32: p and the gradient of x for the loss `sum(p ⊙ G)` with a
//! random upstream gradient G, against the chain of Burn ops (product with s, Burn's softmax)
//! in f32 and in f64 (the reference), for contiguous and transposed x with rows of 37 (no
//! multiple of a SIMD width), and scores of ±10⁴. Errors are max |a − b| / max |b| per tensor.

use burn::backend::Flex;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor, TensorData};
use dlrt::layers::softmax::{kernel, softmax, softmax_chain};
use dlrt::TrainBackend as F;
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

const SHAPE: [usize; 3] = [3, 17, 37];
/// Attention's 1/√d_h for d_h = 8.
const SCALE: f64 = 0.353_553_390_593_273_8;

type Op = fn(Tensor<F, 3>, f64) -> Tensor<F, 3>;

fn normal(n: usize, sigma: f32, rng: &mut StdRng) -> Vec<f32> {
    (0..n).map(|_| sigma * Distribution::<f32>::sample(&StandardNormal, rng)).collect()
}

fn tensor<B: Backend, const N: usize>(v: &[f32], shape: [usize; N], dtype: DType) -> Tensor<B, N> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), (&Default::default(), dtype))
}

fn values<B: Backend, const N: usize>(t: Tensor<B, N>) -> Vec<f64> {
    t.into_data().convert::<f64>().to_vec::<f64>().unwrap()
}

/// [p, dx] of `op` in `dtype` as f64 values (in SHAPE's order), checking dx's float type. With
/// `transposed`, x enters as the transpose of a [3, 37, 17] leaf (a non-contiguous view).
fn run(op: Op, x: &[f32], g: &[f32], dtype: DType, transposed: bool) -> [Vec<f64>; 2] {
    let leaf = match transposed {
        false => tensor::<F, 3>(x, SHAPE, dtype),
        true => Tensor::from_data(
            tensor::<F, 3>(x, SHAPE, dtype).swap_dims(1, 2).into_data(),
            (&Default::default(), dtype),
        ),
    }
    .require_grad();
    let input = if transposed { leaf.clone().swap_dims(1, 2) } else { leaf.clone() };
    let p = op(input, SCALE);
    let grads = (p.clone() * tensor(g, SHAPE, dtype)).sum().backward();
    let dx = leaf.grad(&grads).expect("x needs its gradient");
    assert_eq!(dx.dtype(), dtype, "the gradient's float type is x's");
    let dx = if transposed { dx.swap_dims(1, 2) } else { dx };
    [values(p), values(dx)]
}

/// max |a − b| / max |b|.
fn relative(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0.0f64, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// Scores of spread 4 (p from about 10⁻⁴ to near 1): the fused op and the f32 chain agree to
/// 1e-6 in p and dx, the fused op is within 1e-6 of f64, and every row of p sums to 1 within
/// 1e-6.
#[test]
fn the_fused_op_matches_the_chain_and_f64_in_value_and_gradient() {
    let mut rng = StdRng::seed_from_u64(1);
    let n = SHAPE.iter().product();
    let (x, g) = (normal(n, 4.0, &mut rng), normal(n, 1.0, &mut rng));
    for transposed in [false, true] {
        let exact = run(softmax_chain, &x, &g, DType::F64, transposed);
        let chain = run(softmax_chain, &x, &g, DType::F32, transposed);
        let fused = run(softmax, &x, &g, DType::F32, transposed);
        for (i, name) in ["p", "dx"].into_iter().enumerate() {
            let (to_chain, to_exact) = (relative(&fused[i], &chain[i]), relative(&fused[i], &exact[i]));
            let chain_error = relative(&chain[i], &exact[i]);
            println!("transposed {transposed} {name}: fused−chain {to_chain:e}, fused−f64 {to_exact:e}, chain−f64 {chain_error:e}");
            assert!(
                to_chain <= 1e-6,
                "transposed {transposed}: {name} differs from the chain by {to_chain:e}"
            );
            assert!(to_exact <= 1e-6, "transposed {transposed}: {name} differs from f64 by {to_exact:e}");
        }
        let worst =
            fused[0].chunks(SHAPE[2]).map(|row| (row.iter().sum::<f64>() - 1.0).abs()).fold(0.0, f64::max);
        assert!(worst <= 1e-6, "a row of p sums to 1 ± {worst:e}");
    }
}

/// Scores of ±10⁴ (s·x up to 3.5·10³, far beyond exp's range in f32): p and dx stay finite,
/// rows sum to 1 and agree with f64 to 1e-6; a score of −∞ gets weight 0.
#[test]
fn scores_of_ten_thousand_do_not_overflow() {
    let mut rng = StdRng::seed_from_u64(2);
    let n = SHAPE.iter().product();
    let mut x: Vec<f32> = normal(n, 1.0, &mut rng).into_iter().map(|v| v.signum() * 1e4 + v).collect();
    let g = normal(n, 1.0, &mut rng);
    let exact = run(softmax_chain, &x, &g, DType::F64, false);
    let fused = run(softmax, &x, &g, DType::F32, false);
    for (i, name) in ["p", "dx"].into_iter().enumerate() {
        assert!(fused[i].iter().all(|v| v.is_finite()), "{name} is not finite");
        let error = relative(&fused[i], &exact[i]);
        println!("{name}: fused−f64 {error:e}");
        assert!(error <= 1e-6, "{name} differs from f64 by {error:e}");
    }
    for row in fused[0].chunks(SHAPE[2]) {
        assert!((row.iter().sum::<f64>() - 1.0).abs() <= 1e-6, "a row sums to {}", row.iter().sum::<f64>());
    }
    x[0] = f32::NEG_INFINITY;
    let p = run(softmax, &x, &g, DType::F32, false)[0].clone();
    assert_eq!(p[0], 0.0, "exp(−∞) is 0");
    assert!((p[..SHAPE[2]].iter().sum::<f64>() - 1.0).abs() <= 1e-6);
}

/// On `Autodiff<flex>` and on plain flex p is the kernel's, bit for bit (so the fused path
/// ran), and not the chain's; f64 takes the chain unchanged.
#[test]
fn flex_in_f32_dispatches_to_the_kernel_and_f64_to_the_chain() {
    let mut rng = StdRng::seed_from_u64(3);
    let n = SHAPE.iter().product();
    let (x, g) = (normal(n, 4.0, &mut rng), normal(n, 1.0, &mut rng));
    let mut expected = x.clone();
    kernel::forward_in_place(&mut expected, SHAPE[2], SCALE as f32);
    let expected: Vec<f64> = expected.into_iter().map(f64::from).collect();
    assert_eq!(run(softmax, &x, &g, DType::F32, false)[0], expected, "Autodiff<flex>: not the kernel's p");
    assert_ne!(run(softmax_chain, &x, &g, DType::F32, false)[0], expected, "the chain rounds alike");
    let plain = tensor::<Flex, 3>(&x, SHAPE, DType::F32);
    assert_eq!(values(softmax(plain.clone(), SCALE)), expected, "plain flex: not the kernel's p");
    let plain = plain.cast(FloatDType::F64);
    assert_eq!(values(softmax(plain.clone(), SCALE)), values(softmax_chain(plain, SCALE)), "f64");
}
