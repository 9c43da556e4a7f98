//! A bias added to every row, [`add_bias`]: `z + b` for z `[rows, m]` and b `[m]`, and its
//! gradients ∂z = g and ∂b = the column sums of g.
//!
//! On the CPU backend (Burn's `flex`, plain or under autodiff) in f32, bf16 and f16, the sum is
//! one parallel, vectorised pass over z, in z's buffer when z owns it (a product's fresh output
//! does). flex 0.21 adds a broadcast row on one thread, and in bf16 and f16 one element at a
//! time through a strided walk: the frozen layers' bias adds of a bf16 ViT step were the main
//! thread's largest cost once the casts were parallel (docs/performance-log.md). The values are
//! flex's: an f32 sum, rounded once to a half. ∂b sums g's columns in f32 over fixed blocks of
//! rows in parallel, adds the blocks' sums in order (so the value does not depend on the number
//! of threads) and rounds once to b's type. Small sums (an MLP's layers) stay on the calling
//! thread. Everywhere else (CUDA, f64, other backends, z and b
//! of two types) it is Burn's broadcast add, `z + b.unsqueeze()`.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{binary, Backward, Ops};
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{bf16, f16, DType, Tensor, TensorData};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::backends::{filled_in_parallel, on_flex, owned_from_start, readable};
use super::cast::{is_lane, Lane, CHUNK};

/// `z + b` on every row of z (`[rows, m] + [m]`): one parallel pass on the CPU backend (module
/// docs), Burn's broadcast add otherwise.
pub fn add_bias<B: Backend>(z: Tensor<B, 2>, b: Tensor<B, 1>) -> Tensor<B, 2> {
    let b = b.unsqueeze::<2>();
    if z.dtype() != b.dtype() || !is_lane(z.dtype()) || z.dims()[1] != b.dims()[1] {
        return z + b;
    }
    on_flex([z, b], |[z, b]| forward(z, &b), |[z, b]| forward_autodiff(z, b)).unwrap_or_else(|[z, b]| z + b)
}

/// The sum as an autodiff op; its backward pass needs no state.
fn forward_autodiff(
    z: FloatTensor<Autodiff<Flex>>,
    b: FloatTensor<Autodiff<Flex>>,
) -> FloatTensor<Autodiff<Flex>> {
    let y = forward(z.primitive, &b.primitive);
    AddBias.prepare::<NoCheckpointing>([z.node.clone(), b.node.clone()]).compute_bound().stateless(y)
}

/// The backward step of [`forward_autodiff`]: ∂z = g, ∂b = g's column sums (for b's [1, m]).
#[derive(Debug)]
struct AddBias;

impl Backward<Flex, 2> for AddBias {
    type State = ();

    fn backward(self, ops: Ops<(), 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        binary::<Flex, _, _>(ops.parents, ops.node, grads, |g| g, column_sums);
    }
}

/// `z + b` for a flex z [rows, m] and b [1, m] of one type, f32, bf16 or f16.
fn forward(z: FlexTensor, b: &FlexTensor) -> FlexTensor {
    match z.dtype() {
        DType::F32 => forward_typed::<f32>(z, b),
        DType::BF16 => forward_typed::<bf16>(z, b),
        DType::F16 => forward_typed::<f16>(z, b),
        other => unreachable!("add_bias: the kernel got {other:?}"),
    }
}

/// Whole rows per parallel task: about [`CHUNK`] elements, or all of them below
/// [`PARALLEL_MIN`] elements, which one thread does alone.
fn task_len(m: usize, n: usize) -> usize {
    match n < PARALLEL_MIN {
        true => n,
        false => m * (CHUNK / m).max(1),
    }
}

/// The fewest elements worth the pool: handing a smaller sum to rayon's workers (from the main
/// thread, which waits for them) costs more than it saves, as the MLP's layers showed.
const PARALLEL_MIN: usize = 1 << 17;

fn forward_typed<E: Lane>(mut z: FlexTensor, b: &FlexTensor) -> FlexTensor {
    let b = readable::<E>(b.clone());
    let b = b.as_slice::<E>().expect("contiguous");
    let m = b.len();
    if m == 0 || z.layout().num_elements() == 0 {
        return z;
    }
    let n = z.layout().num_elements();
    let task = task_len(m, n);
    let add = |rows: &mut [E]| pulp::Arch::new().dispatch(AddInPlace { rows, b });
    if let Some(buffer) = owned_from_start::<E>(&mut z) {
        match task == n {
            true => add(buffer),
            false => buffer.par_chunks_mut(task).for_each(add),
        }
        return z;
    }
    let z = readable::<E>(z);
    let source = z.as_slice::<E>().expect("contiguous");
    let y = match task == n {
        true => {
            let mut y = source.to_vec();
            add(&mut y);
            y
        }
        false => filled_in_parallel(n, task, |i, rows| {
            rows.copy_from_slice(&source[i * task..][..rows.len()]);
            add(rows)
        }),
    };
    FlexTensor::from_data(TensorData::new(y, z.layout().shape().clone()))
}

/// The column sums of g [rows, m] as [1, m], in g's type.
fn column_sums(g: FlexTensor) -> FlexTensor {
    match g.dtype() {
        DType::F32 => column_sums_typed::<f32>(g),
        DType::BF16 => column_sums_typed::<bf16>(g),
        DType::F16 => column_sums_typed::<f16>(g),
        other => unreachable!("add_bias: the gradient is {other:?}"),
    }
}

fn column_sums_typed<E: Lane>(g: FlexTensor) -> FlexTensor {
    let g = readable::<E>(g);
    let m = g.layout().shape()[1];
    let values = g.as_slice::<E>().expect("contiguous");
    let sum = |rows: &[E]| {
        let mut sums = vec![0f32; m];
        pulp::Arch::new().dispatch(SumRows { rows, sums: &mut sums });
        sums
    };
    let task = task_len(m, values.len());
    let total = match m == 0 || task == values.len() {
        true => sum(values),
        false => {
            let blocks: Vec<Vec<f32>> = values.par_chunks(task).map(sum).collect();
            let mut total = vec![0f32; m];
            for block in blocks {
                total.iter_mut().zip(block).for_each(|(t, s)| *t += s);
            }
            total
        }
    };
    let sums: Vec<E> = total.into_iter().map(E::from_f32).collect();
    FlexTensor::from_data(TensorData::new(sums, [1, m]))
}

// One task's loop each. As `WithSimd` methods marked `inline(always)` they are compiled inside
// pulp's `#[target_feature]` functions, for the CPU's widest vectors.

/// rows ← rows + b, row by row (`rows` holds whole rows of b's length).
struct AddInPlace<'a, E> {
    rows: &'a mut [E],
    b: &'a [E],
}

impl<E: Lane> pulp::WithSimd for AddInPlace<'_, E> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        for row in self.rows.chunks_exact_mut(self.b.len()) {
            for (y, c) in row.iter_mut().zip(self.b) {
                *y = E::from_f32(y.to_f32() + c.to_f32());
            }
        }
    }
}

/// sums ← sums + the sum of `rows`' rows, in f32.
struct SumRows<'a, E> {
    rows: &'a [E],
    sums: &'a mut [f32],
}

impl<E: Lane> pulp::WithSimd for SumRows<'_, E> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        for row in self.rows.chunks_exact(self.sums.len()) {
            for (s, x) in self.sums.iter_mut().zip(row) {
                *s += x.to_f32();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;
    use burn::tensor::FloatDType;
    use rand::{rngs::StdRng, SeedableRng};
    use rand_distr::{Distribution, Normal};

    use super::*;

    type Train = Autodiff<Flex>;

    /// Seeded normal values in f32, in a shape whose row length is no multiple of a SIMD width
    /// and whose rows span several parallel tasks.
    fn normal<Bk: Backend, const D: usize>(shape: [usize; D], seed: u64) -> Tensor<Bk, D> {
        let normal = Normal::new(0.0f32, 3.0).expect("finite");
        let mut rng = StdRng::seed_from_u64(seed);
        let data: Vec<f32> = (0..shape.iter().product()).map(|_| normal.sample(&mut rng)).collect();
        Tensor::from_data(TensorData::new(data, shape), &Default::default())
    }

    fn bits<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> (DType, Vec<u64>) {
        let dtype = t.dtype();
        let values = t.into_data().convert::<f64>().to_vec::<f64>().unwrap();
        (dtype, values.iter().map(|x| x.to_bits()).collect())
    }

    /// The sum equals Burn's broadcast add bit for bit in f32, bf16 and f16: z owned (written in
    /// place), z shared (a new buffer; z itself unchanged) and z a transposed view.
    #[test]
    fn the_sum_is_burns_bit_for_bit() {
        let (rows, m) = (700, 67);
        for dtype in [FloatDType::F32, FloatDType::BF16, FloatDType::F16] {
            let z = normal::<Flex, 2>([rows, m], 1).cast(dtype);
            let b = normal::<Flex, 1>([m], 2).cast(dtype);
            let burns = bits(z.clone() + b.clone().unsqueeze::<2>());
            assert_eq!(bits(add_bias(z.clone() * 1.0, b.clone())), burns, "{dtype:?}: owned");
            let before = bits(z.clone());
            assert_eq!(bits(add_bias(z.clone(), b.clone())), burns, "{dtype:?}: shared");
            assert_eq!(bits(z.clone()), before, "{dtype:?}: z is not written over");
            let zt = normal::<Flex, 2>([m, rows], 3).cast(dtype).transpose();
            assert_eq!(
                bits(add_bias(zt.clone(), b.clone())),
                bits(zt + b.unsqueeze::<2>()),
                "{dtype:?}: view"
            );
        }
    }

    /// Under autodiff: the value is Burn's, ∂z is g, and ∂b is g's column sums (against f64 sums,
    /// within the rounding of an f32 sum, then of b's type), each in its input's type; with z
    /// tracked alone, z still gets its gradient.
    #[test]
    fn the_gradients_are_g_and_its_column_sums() {
        let (rows, m) = (1500, 67);
        for (dtype, tolerance) in [(FloatDType::F32, 1e-5), (FloatDType::BF16, 8e-3), (FloatDType::F16, 1e-3)]
        {
            let z = normal::<Train, 2>([rows, m], 4).cast(dtype).require_grad();
            let b = normal::<Train, 1>([m], 5).cast(dtype).require_grad();
            let g = normal::<Train, 2>([rows, m], 6).cast(dtype);
            let y = add_bias(z.clone(), b.clone());
            assert_eq!(bits(y.clone()), bits(z.clone() + b.clone().unsqueeze::<2>()), "{dtype:?}");
            let grads = (y * g.clone()).sum().backward();
            let (dz, db) = (z.grad(&grads).expect("z is tracked"), b.grad(&grads).expect("b is tracked"));
            assert_eq!(bits(dz), bits(g.clone().inner()), "{dtype:?}: ∂z = g");
            assert_eq!(db.dtype(), DType::from(dtype));
            assert_eq!(db.dims(), [m]);
            let g = g.inner().into_data().convert::<f64>().to_vec::<f64>().unwrap();
            let db = db.into_data().convert::<f64>().to_vec::<f64>().unwrap();
            for (j, got) in db.iter().enumerate() {
                let exact: f64 = (0..rows).map(|i| g[i * m + j]).sum();
                let scale: f64 = (0..rows).map(|i| g[i * m + j].abs()).sum();
                assert!((got - exact).abs() <= tolerance * scale, "{dtype:?}: ∂b[{j}] = {got}, not {exact}");
            }
            let z = z.detach().require_grad();
            let grads = add_bias(z.clone(), b.detach()).sum().backward();
            assert_eq!(z.grad(&grads).expect("z is tracked").dims(), [rows, m]);
        }
    }

    /// Off flex (f64 on NdArray) it is Burn's broadcast add.
    #[test]
    fn off_flex_it_is_burns_add() {
        type D = NdArray<f64>;
        let (z, b) = (normal::<D, 2>([5, 3], 7), normal::<D, 1>([3], 8));
        assert_eq!(bits(add_bias(z.clone(), b.clone())), bits(z + b.unsqueeze::<2>()));
    }
}
