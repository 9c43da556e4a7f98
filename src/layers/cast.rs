//! A float tensor in another float type, [`cast()`] (`Tensor::cast`), and its gradient: the
//! incoming gradient cast back to the input's type.
//!
//! Mixed precision ([`super::Precision`]) casts at every boundary between the bf16 backbone and
//! the f32 adapters and residual stream, forward and backward. On the CPU backend (Burn's
//! `flex`, plain or under autodiff) between f32, bf16 and f16, [`cast()`] is one parallel,
//! vectorised pass from one type straight to the other. flex 0.21's `float_cast` first copies
//! every value into a `Vec<f64>` and then into the target type, one element at a time on one
//! thread; in a bf16 ViT step its casts were half of the main thread's samples
//! (docs/performance-log.md). A half widens to f32 exactly, and f32 rounds to a half once, to
//! nearest, ties to even (as PyTorch and `half`'s `from_f32`). flex's values are the same but
//! for one case: from f32 to bf16 its route through f64 meets `half`'s f64 → bf16, which reads
//! only the f64's upper 32 bits and so drops the f32's lowest three mantissa bits; a value just
//! above a tie by those bits alone (1 + 2⁻⁸ + 2⁻²³, say) rounds down there, up here. Everywhere
//! else (CUDA, f64, other backends) it is Burn's `cast`.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, FloatTensorOps};
use burn::tensor::{bf16, f16, DType, Element, FloatDType, Tensor, TensorData};
use burn_flex::FlexTensor;

use super::backends::{filled_in_parallel, on_flex};
use super::contiguous;

/// Elements per parallel task: large enough that a task outweighs its scheduling.
pub(crate) const CHUNK: usize = 1 << 14;

/// A float type the CPU kernels read and write, computed in f32: f32 itself, bf16 and f16.
pub trait Lane: Element + bytemuck::Pod + Send + Sync {
    /// The value in f32 (exact).
    fn to_f32(self) -> f32;
    /// The nearest value to `v` (round to nearest, ties to even).
    fn from_f32(v: f32) -> Self;
}

impl Lane for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl Lane for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    /// `bf16::from_f32`'s result without its branches, so that the loop stays vectorised.
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        let bits = v.to_bits();
        // Ties to even: adding 0x7FFF and the lowest kept bit carries into the kept bits exactly
        // when the dropped half is above one half ulp, or equal to it with an odd lowest bit.
        let rounded = bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16;
        let quiet_nan = (bits >> 16) | 0x0040;
        bf16::from_bits(if v.is_nan() { quiet_nan } else { rounded } as u16)
    }
}

impl Lane for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
}

/// `t` in `dtype`: one parallel pass on the CPU backend between f32, bf16 and f16 (module docs),
/// Burn's `cast` otherwise; `t` itself when it already is in `dtype`.
pub fn cast<B: Backend, const D: usize>(t: Tensor<B, D>, dtype: impl Into<FloatDType>) -> Tensor<B, D> {
    let dtype: FloatDType = dtype.into();
    let to = DType::from(dtype);
    if t.dtype() == to {
        return t;
    }
    if !(is_lane(t.dtype()) && is_lane(to)) {
        return t.cast(dtype);
    }
    on_flex([t], |[t]| convert(t, to), |[t]| cast_autodiff(t, to)).unwrap_or_else(|[t]| t.cast(dtype))
}

pub(crate) fn is_lane(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::BF16 | DType::F16)
}

/// The cast as an autodiff op; its state is the input's type, which the gradient is cast to.
fn cast_autodiff(t: FloatTensor<Autodiff<Flex>>, to: DType) -> FloatTensor<Autodiff<Flex>> {
    let from = t.primitive.dtype();
    match Cast.prepare::<NoCheckpointing>([t.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(from, convert(t.primitive, to)),
        OpsKind::UnTracked(prep) => prep.finish(convert(t.primitive, to)),
    }
}

/// The backward step of [`cast_autodiff`]: the gradient in the input's type.
#[derive(Debug)]
struct Cast;

impl Backward<Flex, 1> for Cast {
    type State = DType;

    fn backward(self, ops: Ops<DType, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let from = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| convert(grad, from));
    }
}

/// A flex tensor in `to`: row-major, converted in one parallel pass between f32, bf16 and f16;
/// `t` itself when it is in `to` already, flex's `float_cast` for any other pair of types.
pub(crate) fn convert(t: FlexTensor, to: DType) -> FlexTensor {
    match (t.dtype(), to) {
        (from, to) if from == to => t,
        (DType::F32, DType::BF16) => typed::<f32, bf16>(t),
        (DType::F32, DType::F16) => typed::<f32, f16>(t),
        (DType::BF16, DType::F32) => typed::<bf16, f32>(t),
        (DType::BF16, DType::F16) => typed::<bf16, f16>(t),
        (DType::F16, DType::F32) => typed::<f16, f32>(t),
        (DType::F16, DType::BF16) => typed::<f16, bf16>(t),
        (_, to) => Flex::float_cast(t, to.into()),
    }
}

fn typed<S: Lane, T: Lane>(t: FlexTensor) -> FlexTensor {
    let t = match t.as_slice::<S>() {
        Some(_) => t,
        None => contiguous::copy(t),
    };
    let source = t.as_slice::<S>().expect("a row-major copy");
    let values = filled_in_parallel(source.len(), CHUNK, |task, part: &mut [T]| {
        pulp::Arch::new().dispatch(Convert { source: &source[task * CHUNK..][..part.len()], part })
    });
    FlexTensor::from_data(TensorData::new(values, t.layout().shape().clone()))
}

/// One task's loop. As a `WithSimd` method marked `inline(always)` it is compiled inside pulp's
/// `#[target_feature]` functions, for the CPU's widest vectors.
struct Convert<'a, S, T> {
    source: &'a [S],
    part: &'a mut [T],
}

impl<S: Lane, T: Lane> pulp::WithSimd for Convert<'_, S, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<Simd: pulp::Simd>(self, _: Simd) {
        for (y, x) in self.part.iter_mut().zip(self.source) {
            *y = T::from_f32(x.to_f32());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Train = Autodiff<Flex>;

    /// Values that reach every branch of a rounding: ties both ways (odd and even kept bits),
    /// just above and below a tie, subnormals of f32 and of the halves, the largest finite
    /// values and overflow to ±∞, ±0, ±∞ and ordinary numbers of both signs.
    fn awkward_f32() -> Vec<f32> {
        let mut v = vec![0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, f32::MIN, 1e-45, -1e-40];
        v.extend([f32::MIN_POSITIVE, 65504.0, 65520.0, 65519.0, 6e-8, 3e-8, 1e-5, 3.3895e38, 3.3896e38]);
        // bf16 ties: bit 15 set and nothing below, around an even and an odd kept bit.
        for base in [0x3F80_0000u32, 0x3F81_0000, 0xC0A3_0000, 0x0001_0000] {
            for low in [0x8000u32, 0x7FFF, 0x8001, 0x0001, 0xFFFF] {
                v.push(f32::from_bits(base | low));
            }
        }
        // A spread over many binades, seeded.
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..70_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            v.push(f32::from_bits(state as u32) % 1e6);
        }
        v.retain(|x| !x.is_nan());
        v
    }

    fn flex_tensor<E: Element>(values: Vec<E>, shape: [usize; 2]) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(values, shape))
    }

    fn bits(t: FlexTensor) -> Vec<u32> {
        let data = t.into_data();
        match data.dtype {
            DType::F32 => data.to_vec::<f32>().unwrap().iter().map(|x| x.to_bits()).collect(),
            DType::BF16 => data.to_vec::<bf16>().unwrap().iter().map(|x| x.to_bits() as u32).collect(),
            DType::F16 => data.to_vec::<f16>().unwrap().iter().map(|x| x.to_bits() as u32).collect(),
            other => panic!("{other:?}"),
        }
    }

    /// `x` rounded once to `to`, to nearest, ties to even: `half`'s scalar conversions from f32.
    fn rounded(x: f32, to: DType) -> u32 {
        match to {
            DType::F32 => x.to_bits(),
            DType::BF16 => bf16::from_f32(x).to_bits() as u32,
            DType::F16 => f16::from_f32(x).to_bits() as u32,
            other => panic!("{other:?}"),
        }
    }

    /// Every conversion between f32, bf16 and f16, from a row-major tensor and from a transposed
    /// view, keeps the shape and rounds each value once, to nearest, ties to even. flex's own cast
    /// agrees everywhere except from f32 to bf16 at a near-tie whose bits beyond the tie are all
    /// among the f32's lowest three (module docs), where flex rounds down.
    #[test]
    fn every_conversion_rounds_once_to_nearest() {
        let values = awkward_f32();
        let n = values.len() / 4 * 4;
        let source = flex_tensor(values[..n].to_vec(), [n / 4, 4]);
        let lanes = [DType::F32, DType::BF16, DType::F16];
        for from in lanes {
            let t = Flex::float_cast(source.clone(), from.into());
            for to in lanes {
                for view in [t.clone(), t.clone().transpose(0, 1)] {
                    let ours = convert(view.clone(), to);
                    assert_eq!(ours.dtype(), to);
                    assert_eq!(ours.layout().shape(), view.layout().shape(), "{from:?} → {to:?}");
                    let ours = bits(ours);
                    // Widening is exact, so the view's values in f32 are its values.
                    let x =
                        Flex::float_cast(view.clone(), FloatDType::F32).into_data().to_vec::<f32>().unwrap();
                    let expected: Vec<u32> = x.iter().map(|&x| rounded(x, to)).collect();
                    assert!(ours == expected, "{from:?} → {to:?}: not rounded once to nearest");
                    let flex = bits(Flex::float_cast(view, to.into()));
                    for ((ours, flex), x) in ours.iter().zip(&flex).zip(&x) {
                        let low = x.to_bits() & 0xFFFF;
                        let flex_truncates =
                            (from, to) == (DType::F32, DType::BF16) && low > 0x8000 && low <= 0x8007;
                        assert!(ours == flex || flex_truncates, "{from:?} → {to:?}: {x:e} differs from flex");
                    }
                }
            }
        }
        // 1 + 2⁻⁸ + 2⁻²³ is above the tie between 1 and 1 + 2⁻⁷: it rounds up.
        let near_tie = convert(flex_tensor(vec![f32::from_bits(0x3F80_8001)], [1, 1]), DType::BF16);
        assert_eq!(bits(near_tie), vec![0x3F81]);
    }

    /// NaN stays NaN through every conversion.
    #[test]
    fn nan_stays_nan() {
        for from in [DType::F32, DType::BF16, DType::F16] {
            let t = Flex::float_cast(flex_tensor(vec![f32::NAN, -f32::NAN, 1.0, 2.0], [2, 2]), from.into());
            for to in [DType::F32, DType::BF16, DType::F16] {
                let out = Flex::float_cast(convert(t.clone(), to), FloatDType::F32);
                let out = out.into_data().to_vec::<f32>().unwrap();
                assert!(
                    out[0].is_nan() && out[1].is_nan() && out[2] == 1.0 && out[3] == 2.0,
                    "{from:?} → {to:?}"
                );
            }
        }
    }

    /// Under autodiff the values are Burn's cast's and the gradient reaches the input in its own
    /// type, equal to Burn's: y = cast(x) · w, summed, so ∂x = w rounded through both casts.
    #[test]
    fn the_gradient_is_burns_and_in_the_inputs_type() {
        let device = Default::default();
        let values = awkward_f32();
        // The lowest three bits cleared: where flex's cast rounds as ours (module docs).
        let finite: Vec<f32> = values
            .iter()
            .filter(|x| x.abs() < 1e4)
            .map(|x| f32::from_bits(x.to_bits() & !7))
            .take(4096)
            .collect();
        let shape = [64, 64];
        for (from, to) in [(DType::F32, DType::BF16), (DType::BF16, DType::F32), (DType::F16, DType::BF16)] {
            let x0 =
                Tensor::<Train, 2>::from_data(TensorData::new(finite.clone(), shape), &device).cast(from);
            let w = Tensor::<Train, 2>::from_data(TensorData::new(finite[..4096].to_vec(), shape), &device)
                .div_scalar(7.0)
                .cast(to);
            let run = |ours: bool| {
                let x = x0.clone().detach().require_grad();
                let y = match ours {
                    true => cast(x.clone(), to),
                    false => x.clone().cast(FloatDType::from(to)),
                };
                assert_eq!(y.dtype(), to);
                let forward = y.clone().into_data();
                let grads = (y * w.clone()).sum().backward();
                let grad = x.grad(&grads).expect("x is tracked");
                (forward, grad.dtype(), grad.into_data())
            };
            let (ours, burns) = (run(true), run(false));
            assert_eq!(ours.1, from, "{from:?} → {to:?}: the gradient's type");
            assert!(ours.0 == burns.0, "{from:?} → {to:?}: forward values");
            assert!(ours.2 == burns.2, "{from:?} → {to:?}: gradient values");
        }
    }

    /// Off the CPU kernels' types (f64 here) it is Burn's cast.
    #[test]
    fn other_types_take_burns_cast() {
        let device = Default::default();
        let x = Tensor::<Flex, 1>::from_data(TensorData::new(vec![1.5f32, -2.25, 1e-3], [3]), &device);
        let wide = cast(x, FloatDType::F64);
        assert_eq!(wide.dtype(), DType::F64);
        assert_eq!(wide.into_data().to_vec::<f64>().unwrap(), vec![1.5, -2.25, 1e-3f32 as f64]);
    }
}
