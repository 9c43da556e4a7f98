//! The exact GELU, y = x Φ(x) = x/2 · (1 + erf(x/√2)) (HF's `"gelu"`), and its gradient
//! dy/dx = Φ(x) + x φ(x), with Φ and φ the standard normal cdf and pdf.
//!
//! On the CPU backend (Burn's `flex`, plain or under autodiff) in f32, bf16 or f16, [`gelu`]
//! runs one fused kernel ([`kernel`]) forward and one backward, each a single parallel,
//! vectorised pass. Everywhere else (CUDA, f64, other backends) it is the chain of Burn tensor
//! ops in [`gelu_chain`], exact in the backend's precision. Burn 0.21's own `gelu` is not used:
//! its default backward pass (CUDA's) is the derivative of the tanh approximation, off by up to
//! 9e-4.
//!
//! # Shapes
//! - x: any shape; the output has the same shape (always contiguous for the fused kernel).

pub mod kernel;

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::Tensor;
use burn::tensor::{bf16, f16, DType, TensorData, TensorMetadata};
use burn_flex::FlexTensor;

use super::backends::{filled_in_parallel, in_dtype, on_flex, owned_from_start, readable};
use super::cast::{is_lane, Lane};

/// A float tensor of `Autodiff<flex>`: flex's tensor and its autodiff node.
type AutodiffTensor = FloatTensor<Autodiff<Flex>>;

/// The exact GELU, x Φ(x), elementwise: fused on the CPU backend in f32, bf16 and f16, the
/// exact chain of tensor ops otherwise.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if !is_lane(x.dtype()) {
        return gelu_chain(x);
    }
    on_flex([x], |[x]| fused_forward(x), |[x]| fused_autodiff(x)).unwrap_or_else(|[x]| gelu_chain(x))
}

/// The exact GELU as Burn tensor ops, x · (erf(x/√2) + 1) · ½: five passes forward and
/// autodiff's chain backward, exact in the backend's precision.
pub fn gelu_chain<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.clone() * x.div_scalar(std::f64::consts::SQRT_2).erf().add_scalar(1.0).mul_scalar(0.5)
}

/// The fused forward pass as an autodiff op: x is kept for the backward pass.
fn fused_autodiff(x: AutodiffTensor) -> AutodiffTensor {
    match ExactGelu.prepare::<NoCheckpointing>([x.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let y = fused_forward(x.primitive.clone());
            prep.finish(x.primitive, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(fused_forward(x.primitive)),
    }
}

/// The backward step of [`fused_autodiff`]; its state is the input x.
#[derive(Debug)]
struct ExactGelu;

impl Backward<Flex, 1> for ExactGelu {
    type State = FlexTensor;

    fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let x = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| fused_backward(&x, grad));
    }
}

/// y = x Φ(x) on a flex tensor of f32, bf16 or f16, in x's buffer when x owns it.
fn fused_forward(x: FlexTensor) -> FlexTensor {
    match x.dtype() {
        DType::F32 => forward_typed::<f32>(x),
        DType::BF16 => forward_typed::<bf16>(x),
        DType::F16 => forward_typed::<f16>(x),
        other => unreachable!("gelu: the fused kernel got {other:?}"),
    }
}

fn forward_typed<E: Lane>(mut x: FlexTensor) -> FlexTensor {
    let n = x.layout().num_elements();
    if let Some(buffer) = owned_from_start::<E>(&mut x) {
        kernel::forward_in_place(buffer);
        return x;
    }
    let x = readable::<E>(x);
    let values = x.as_slice::<E>().expect("contiguous");
    let y = filled_in_parallel(n, kernel::CHUNK, |task, y| {
        kernel::forward(&values[task * kernel::CHUNK..][..y.len()], y)
    });
    FlexTensor::from_data(TensorData::new(y, x.shape()))
}

/// dx = g (Φ(x) + x φ(x)) in g's buffer when g owns it; in x's float type.
fn fused_backward(x: &FlexTensor, grad: FlexTensor) -> FlexTensor {
    let grad = in_dtype(grad, x.dtype());
    match x.dtype() {
        DType::F32 => backward_typed::<f32>(x, grad),
        DType::BF16 => backward_typed::<bf16>(x, grad),
        DType::F16 => backward_typed::<f16>(x, grad),
        other => unreachable!("gelu: the fused kernel got {other:?}"),
    }
}

fn backward_typed<E: Lane>(x: &FlexTensor, mut grad: FlexTensor) -> FlexTensor {
    let x = readable::<E>(x.clone());
    let x = x.as_slice::<E>().expect("contiguous");
    if let Some(buffer) = owned_from_start::<E>(&mut grad) {
        kernel::backward_in_place(x, buffer);
        return grad;
    }
    let mut grad = grad.to_contiguous().into_data();
    kernel::backward_in_place(x, grad.as_mut_slice::<E>().expect("the checked dtype"));
    FlexTensor::from_data(grad)
}

#[cfg(test)]
mod tests {
    use burn::tensor::FloatDType;
    use rand::{rngs::StdRng, SeedableRng};
    use rand_distr::{Distribution, Normal};

    use super::*;

    type Train = Autodiff<Flex>;

    /// Gaussian values of standard deviation 4 (GELU's whole curved part and both tails), in
    /// f32, seeded, in a shape whose element count is no multiple of a SIMD width.
    fn input<Bk: Backend>(shape: [usize; 3], seed: u64) -> Tensor<Bk, 3> {
        let normal = Normal::new(0.0f32, 4.0).expect("finite");
        let mut rng = StdRng::seed_from_u64(seed);
        let data: Vec<f32> = (0..shape.iter().product()).map(|_| normal.sample(&mut rng)).collect();
        Tensor::from_data(TensorData::new(data, shape), &Default::default())
    }

    fn values<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f64> {
        t.into_data().convert::<f64>().to_vec().unwrap()
    }

    /// max |a − b| / max(1, |x|) over the elements.
    fn scaled_gap(a: &[f64], b: &[f64], x: &[f64]) -> f64 {
        a.iter().zip(b).zip(x).map(|((a, b), x)| (a - b).abs() / x.abs().max(1.0)).fold(0.0, f64::max)
    }

    /// The output and ∂(Σ w ⊙ gelu(x))/∂x, for `x` given contiguous or as its transpose.
    fn value_and_grad(
        op: fn(Tensor<Train, 3>) -> Tensor<Train, 3>,
        x: &Tensor<Train, 3>,
        w: &Tensor<Train, 3>,
        transposed: bool,
    ) -> (Vec<f64>, Vec<f64>) {
        let leaf = x.clone().require_grad();
        let input = if transposed { leaf.clone().swap_dims(1, 2) } else { leaf.clone() };
        let y = op(input);
        let y = if transposed { y.swap_dims(1, 2) } else { y };
        let grads = (y.clone() * w.clone()).sum().backward();
        (values(y), values(leaf.grad(&grads).expect("x requires its gradient")))
    }

    /// On `Autodiff<flex>` in f32 the fused op is the kernel's (bit for bit, so it ran) and
    /// within 3e-7·max(1, |x|) of the tensor-op chain (libm's erff) in value and gradient,
    /// for a contiguous and a transposed input.
    #[test]
    fn the_fused_op_matches_the_chain_in_value_and_gradient_on_autodiff_flex() {
        let (x, w) = (input::<Train>([3, 17, 37], 1), input::<Train>([3, 17, 37], 2));
        let (xs, ws) = (values(x.clone()), values(w.clone()));
        for transposed in [false, true] {
            let (y, dx) = value_and_grad(gelu, &x, &w, transposed);
            let (y_chain, dx_chain) = value_and_grad(gelu_chain, &x, &w, transposed);
            let kernel_y: Vec<f64> = xs.iter().map(|&x| kernel::gelu(x as f32) as f64).collect();
            assert_eq!(y, kernel_y, "transposed {transposed}: not the fused kernel's output");
            let kernel_dx: Vec<f64> = xs
                .iter()
                .zip(&ws)
                .map(|(&x, &w)| (w as f32 * kernel::gelu_derivative(x as f32)) as f64)
                .collect();
            assert_eq!(dx, kernel_dx, "transposed {transposed}: not the fused kernel's gradient");
            let gap = scaled_gap(&y, &y_chain, &xs);
            assert!(gap < 3e-7, "transposed {transposed}: value gap {gap:e}");
            let w_scale: Vec<f64> =
                xs.iter().zip(&ws).map(|(x, w)| x.abs().max(1.0) * w.abs().max(1.0)).collect();
            let gap = scaled_gap(&dx, &dx_chain, &w_scale);
            assert!(gap < 3e-7, "transposed {transposed}: gradient gap {gap:e}");
        }
    }

    /// bf16 on `Autodiff<flex>`: the output and gradient are the f32 kernel's, rounded to
    /// nearest once, so within half a bf16 ulp (2⁻⁸ relative) of x Φ(x) and g (Φ + x φ) plus
    /// the kernel's 3e-7·max(1, |x|).
    #[test]
    fn bf16_is_the_f32_result_rounded_once() {
        let x = input::<Train>([2, 5, 67], 3).cast(FloatDType::BF16);
        let w = input::<Train>([2, 5, 67], 4).cast(FloatDType::BF16);
        let (y, dx) = value_and_grad(gelu, &x, &w, false);
        for ((x, w), (y, dx)) in values(x).into_iter().zip(values(w)).zip(y.into_iter().zip(dx)) {
            let cdf = 0.5 * libm::erfc(-x / std::f64::consts::SQRT_2);
            let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
            let (exact_y, exact_dx) = (x * cdf, w * (cdf + x * pdf));
            let bound = |v: f64, s: f64| v.abs() * 2f64.powi(-8) + 3e-7 * s;
            assert!((y - exact_y).abs() <= bound(exact_y, x.abs().max(1.0)), "y({x}) = {y}, exact {exact_y}");
            let s = x.abs().max(1.0) * w.abs();
            assert!((dx - exact_dx).abs() <= bound(exact_dx, s), "dx({x}, {w}) = {dx}, exact {exact_dx}");
        }
    }

    /// Plain flex (no autodiff) runs the kernel too; f64 takes the exact chain unchanged.
    #[test]
    fn plain_flex_is_fused_and_f64_is_the_chain() {
        let x = input::<Flex>([1, 7, 129], 5);
        let expected: Vec<f64> = values(x.clone()).iter().map(|&x| kernel::gelu(x as f32) as f64).collect();
        assert_eq!(values(gelu(x.clone())), expected);
        let x = x.cast(FloatDType::F64);
        assert_eq!(values(gelu(x.clone())), values(gelu_chain(x)));
    }
}
