//! Low-rank against dense convolution at the same shapes (`dlrt bench --model lenet5`).
//!
//! One layer's forward and backward, timed as a training pass runs them: the dense kernel
//! with W and b as leaves, the low-rank kernel in the K-pass parametrization `x K Vᵀ` (the
//! patch matrix times K on the CPU, a convolution into r channels elsewhere; then the product
//! with Vᵀ), with K and b as leaves, at r = C_out/4 and C_out/8. The shapes are LeNet-5's two
//! convolutions at batch 64 and a wider 3×3 layer (64 → 128 channels on 16×16 images), where
//! C_out/4 is far below C_in·k·k.

use std::time::Instant;

use burn::tensor::{backend::AutodiffBackend, Distribution, Tensor};
use rand::{rngs::StdRng, SeedableRng};

use crate::layers::{Conv2dShape, DenseConv2d, LowRankConv2d, Pass};
use crate::Result;

/// One shape of the table.
#[derive(Clone, Debug)]
pub struct ConvRow {
    /// What the layer is (`LeNet-5 conv2`, …).
    pub name: &'static str,
    /// The geometry.
    pub shape: Conv2dShape,
    /// `[H, W]` of the input images.
    pub image: [usize; 2],
    /// Median µs of the dense kernel's forward and backward.
    pub dense_us: f64,
    /// (r, median µs) of the low-rank kernel.
    pub low_rank_us: Vec<(usize, f64)>,
}

/// The shapes of the table (module docs).
pub fn shapes() -> Vec<(&'static str, Conv2dShape, [usize; 2])> {
    vec![
        ("LeNet-5 conv1", Conv2dShape::new(1, 20, [5, 5]), [28, 28]),
        ("LeNet-5 conv2", Conv2dShape::new(20, 50, [5, 5]), [12, 12]),
        ("3×3, 64 → 128", Conv2dShape::new(64, 128, [3, 3]).with_padding([1, 1]), [16, 16]),
    ]
}

fn median_us(mut f: impl FnMut() -> Result<()>, warmup: usize, steps: usize) -> Result<f64> {
    let mut times = Vec::with_capacity(steps);
    for k in 0..warmup + steps {
        let started = Instant::now();
        f()?;
        if k >= warmup {
            times.push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    super::median(times)
}

/// Times every shape of [`shapes`] at batch `batch`, `warmup` untimed and `steps` timed
/// repetitions each.
pub fn run_conv<B: AutodiffBackend>(
    batch: usize,
    warmup: usize,
    steps: usize,
    device: &B::Device,
) -> Result<Vec<ConvRow>> {
    super::check_steps(warmup, steps)?;
    let mut rng = StdRng::seed_from_u64(0);
    let mut rows = Vec::new();
    for (name, shape, image) in shapes() {
        let x =
            Tensor::<B, 4>::random([batch, shape.c_in, image[0], image[1]], Distribution::Default, device);
        let mut dense = DenseConv2d::<B>::random(shape, true, 1.0, &mut rng, device)?;
        let dense_us = median_us(
            || {
                dense.core_mut().begin_pass();
                let grads = dense.try_forward(x.clone())?.sum().backward();
                dense.core_mut().take_grads(&grads);
                super::sync::<B>(device)
            },
            warmup,
            steps,
        )?;
        let mut low_rank_us = Vec::new();
        for r in [shape.c_out / 4, shape.c_out / 8].into_iter().filter(|&r| r >= 1) {
            let mut layer = LowRankConv2d::<B>::random(shape, r, true, 1.0, &mut rng, device)?;
            let us = median_us(
                || {
                    layer.core_mut().begin_pass(Pass::K);
                    let grads = layer.try_forward(x.clone())?.sum().backward();
                    layer.core_mut().take_grads(&grads);
                    super::sync::<B>(device)
                },
                warmup,
                steps,
            )?;
            low_rank_us.push((r, us));
        }
        rows.push(ConvRow { name, shape, image, dense_us, low_rank_us });
    }
    Ok(rows)
}

/// The table: one line per shape and rank, with the ratio to dense.
pub fn write_conv_table(out: &mut impl std::io::Write, rows: &[ConvRow], batch: usize) -> Result<()> {
    let io = crate::Error::Output;
    writeln!(out).map_err(io)?;
    writeln!(out, "One convolution's forward + backward at batch {batch} (median µs; low-rank in the K-pass parametrization):").map_err(io)?;
    writeln!(out, "| layer | kernel | image | dense µs | r | low-rank µs | vs dense |").map_err(io)?;
    writeln!(out, "|---|---|---|---|---|---|---|").map_err(io)?;
    for row in rows {
        let s = &row.shape;
        let kernel = format!("{}×{}×{}×{}", s.c_out, s.c_in, s.kernel[0], s.kernel[1]);
        for &(r, us) in &row.low_rank_us {
            writeln!(
                out,
                "| {} | {kernel} | {}×{} | {:.0} | {r} | {us:.0} | {:.2} |",
                row.name,
                row.image[0],
                row.image[1],
                row.dense_us,
                us / row.dense_us
            )
            .map_err(io)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_gets_a_dense_time_and_two_ranks() {
        let rows = run_conv::<crate::TrainBackend>(2, 0, 1, &Default::default()).unwrap();
        assert_eq!(rows.len(), 3);
        for row in &rows {
            let ranks: Vec<usize> = row.low_rank_us.iter().map(|(r, _)| *r).collect();
            assert_eq!(ranks, vec![row.shape.c_out / 4, row.shape.c_out / 8], "{}", row.name);
            assert!(row.dense_us > 0.0 && row.low_rank_us.iter().all(|(_, us)| *us > 0.0));
        }
        let mut text = Vec::new();
        write_conv_table(&mut text, &rows, 2).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert_eq!(
            text.lines().filter(|l| l.starts_with("| LeNet-5 conv2 | 50×20×5×5 | 12×12 |")).count(),
            2,
            "{text}"
        );
    }
}
