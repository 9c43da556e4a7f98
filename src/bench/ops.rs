//! `dlrt bench-ops`: the operations of one ViT block, timed one by one at the shapes and float
//! types of an adapter fine-tuning step, forward and forward + backward. Beside PyTorch's
//! numbers for the same list (`bench/torch_ops.py`, same shapes and types) it says where a
//! step's time goes on a device: matrix products, attention or element-wise work.
//!
//! The operations and their types follow the ViT ([`crate::models::vit`]) under
//! [`Precision`]: the frozen projections and the MLP's activation in the backbone's type (bf16
//! or f32); layer norms, the residual stream and the adapter's factors in f32; attention's
//! Q, K, V in the backbone's type with the explicit softmax in f32. Inputs require gradients (a
//! backbone with adapters backpropagates through every block); frozen weights do not, and the
//! adapter's S does. The backward pass starts from `sum(output)`.

use std::io::Write;
use std::time::Instant;

use burn::tensor::{backend::AutodiffBackend, DType, Distribution, FloatDType, Tensor};

use super::{check_steps, median, sync};
use crate::layers::{cast, gelu, permute_contiguous, Attention, Precision};
use crate::models::vit::{attend, layer_norm};
use crate::{Error, Result};

/// What `dlrt bench-ops` times (its command-line arguments, less the device).
#[derive(Clone, Debug, PartialEq, clap::Args)]
pub struct OpsBenchArgs {
    /// The backbone's shape.
    #[arg(long, value_enum, default_value_t = super::vit::VitShape::VitB16)]
    pub model: super::vit::VitShape,
    /// Image side in pixels (the tokens are the patches and the class token).
    #[arg(long, default_value_t = 224)]
    pub image: usize,
    /// Images per step.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// The adapter's rank.
    #[arg(long, default_value_t = 32)]
    pub rank: usize,
    /// The backbone's float type.
    #[arg(long, default_value_t = Precision::default(), value_parser = crate::config::overrides::parse_name::<Precision>)]
    pub precision: Precision,
    /// Untimed repetitions of each operation first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Timed repetitions; the table shows their median.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
}

/// One operation's times.
#[derive(Clone, Debug, PartialEq)]
pub struct OpTime {
    /// What it computes.
    pub op: &'static str,
    /// Its input's shape and float type.
    pub shape: String,
    /// Median forward time, ms.
    pub forward_ms: f64,
    /// Median forward + backward time, ms (`None`: timed without autodiff, forward only).
    pub backward_ms: Option<f64>,
}

/// Times every operation (module docs).
pub fn run_ops<B: AutodiffBackend>(args: &OpsBenchArgs, device: &B::Device) -> Result<Vec<OpTime>> {
    let config = args.model.config();
    let total = check_steps(args.warmup, args.steps)?;
    super::vit::check_batch(args.batch, args.image, &config)?;
    let (d, f, h) = (config.hidden_size, config.intermediate_size, config.num_attention_heads);
    if args.rank == 0 || args.rank > d {
        return Err(Error::config("rank", args.rank, &format!("1 ≤ rank ≤ {d}")));
    }
    let tokens = (args.image / config.patch_size).pow(2) + 1;
    let (b, t, r) = (args.batch, args.batch * tokens, args.rank);
    let frozen = args.precision.frozen_dtype().unwrap_or(FloatDType::F32);
    B::seed(device, 0);
    let normal = |shape: [usize; 2], dtype: FloatDType| {
        Tensor::<B, 2>::random(shape, Distribution::Normal(0.0, 1.0), device).cast(dtype)
    };
    let input = |shape: [usize; 2], dtype: FloatDType| normal(shape, dtype).require_grad();
    let name = |dtype: FloatDType| if dtype == FloatDType::BF16 { "bf16" } else { "f32" };
    let (wd, wf, wb) = (normal([d, d], frozen), normal([d, f], frozen), normal([f, d], frozen));
    let (u, v) = (normal([d, r], FloatDType::F32), normal([d, r], FloatDType::F32));
    let s = normal([r, r], FloatDType::F32).require_grad();
    let (gamma, beta) = (normal([1, d], FloatDType::F32), normal([1, d], FloatDType::F32));
    let heads = |x: Tensor<B, 2>| permute_contiguous(x.reshape([b, tokens, h, d / h]), [0, 2, 1, 3]);
    let softmax_dtype = DType::F32;

    // An operation, and whether it runs under autodiff (and so has a backward to time).
    type Op<'a, B> = (Box<dyn Fn() -> Tensor<B, 2> + 'a>, bool);
    let (fz, f32) = (name(frozen), name(FloatDType::F32));
    let x_d = input([t, d], frozen);
    let x_f = input([t, f], frozen);
    let x32 = input([t, d], FloatDType::F32);
    let (q, k, val) = (input([t, d], frozen), input([t, d], frozen), input([t, d], frozen));
    let attention = |kernel: Attention| {
        let (q, k, val) = (q.clone(), k.clone(), val.clone());
        move || {
            let context =
                attend(heads(q.clone()), heads(k.clone()), heads(val.clone()), kernel, softmax_dtype);
            permute_contiguous(context, [0, 2, 1, 3]).reshape([t, d])
        }
    };
    let att = format!("[{b}, {h}, {tokens}, {}] {fz}", d / h);
    let ops: Vec<(&'static str, String, Op<'_, B>)> = vec![
        ("linear D→D (query, key, value, output)", format!("[{t}, {d}]×[{d}, {d}] {fz}"), {
            let (x, w) = (x_d.clone(), wd.clone());
            (Box::new(move || x.clone().matmul(w.clone())), true)
        }),
        ("linear D→4D (MLP up)", format!("[{t}, {d}]×[{d}, {f}] {fz}"), {
            let (x, w) = (x_d.clone(), wf.clone());
            (Box::new(move || x.clone().matmul(w.clone())), true)
        }),
        ("linear 4D→D (MLP down)", format!("[{t}, {f}]×[{f}, {d}] {fz}"), {
            let (x, w) = (x_f.clone(), wb.clone());
            (Box::new(move || x.clone().matmul(w.clone())), true)
        }),
        ("adapter x U S Vᵀ (S trained)", format!("[{t}, {d}], r = {r}, {f32}"), {
            let (x, u, s, v) = (x_d.clone(), u.clone(), s.clone(), v.clone());
            (
                Box::new(move || {
                    cast(x.clone(), FloatDType::F32)
                        .matmul(u.clone())
                        .matmul(s.clone())
                        .matmul(v.clone().transpose())
                }),
                true,
            )
        }),
        ("attention, explicit", att.clone(), (Box::new(attention(Attention::Explicit)), true)),
        ("attention, fused op", att.clone(), (Box::new(attention(Attention::Fused)), true)),
        // The kernel alone, without the autodiff bookkeeping (and the saving of Q, K, V and O)
        // of the row above.
        ("attention, fused op without autodiff", att.clone(), {
            let inner = |x: &Tensor<B, 2>| heads(x.clone()).inner();
            let (q, k, val) = (inner(&q), inner(&k), inner(&val));
            let run = move || {
                let context = attend(q.clone(), k.clone(), val.clone(), Attention::Fused, softmax_dtype);
                Tensor::from_inner(permute_contiguous(context, [0, 2, 1, 3]).reshape([t, d]))
            };
            (Box::new(run), false)
        }),
        ("layer norm", format!("[{t}, {d}] {f32}"), {
            let (x, g, be) = (x32.clone(), gamma.clone(), beta.clone());
            (
                Box::new(move || {
                    layer_norm(
                        x.clone().unsqueeze::<3>(),
                        g.clone().reshape([d]),
                        be.clone().reshape([d]),
                        1e-12,
                    )
                    .squeeze::<2>()
                }),
                true,
            )
        }),
        ("GELU (exact)", format!("[{t}, {f}] {fz}"), {
            let x = x_f.clone();
            (Box::new(move || gelu(x.clone().unsqueeze::<3>()).squeeze::<2>()), true)
        }),
        ("residual add", format!("[{t}, {d}] {f32}"), {
            let (x, y) = (x32.clone(), input([t, d], FloatDType::F32));
            (Box::new(move || x.clone() + y.clone()), true)
        }),
    ];
    let mut rows = Vec::with_capacity(ops.len());
    for (op, shape, (run, autodiff)) in ops {
        let (mut forward, mut backward) = (Vec::new(), Vec::new());
        for i in 0..total {
            sync::<B>(device)?;
            let started = Instant::now();
            drop(run());
            sync::<B>(device)?;
            let forward_s = started.elapsed().as_secs_f64();
            let started = Instant::now();
            if autodiff {
                drop(cast(run(), FloatDType::F32).sum().backward());
                sync::<B>(device)?;
            }
            let backward_s = started.elapsed().as_secs_f64();
            if i >= args.warmup {
                forward.push(forward_s * 1e3);
                backward.push(backward_s * 1e3);
            }
        }
        let backward_ms = if autodiff { Some(median(backward)?) } else { None };
        rows.push(OpTime { op, shape, forward_ms: median(forward)?, backward_ms });
    }
    Ok(rows)
}

/// Writes the table of [`run_ops`].
pub fn write_ops_table(
    out: &mut impl Write,
    args: &OpsBenchArgs,
    rows: &[OpTime],
    device: impl std::fmt::Display,
) -> Result<()> {
    let io = Error::Output;
    writeln!(
        out,
        "{} block operations, {} px, batch {}, r = {}, {} backbone; device {device}; median of {} runs",
        args.model, args.image, args.batch, args.rank, args.precision, args.steps
    )
    .map_err(io)?;
    writeln!(out, "| op | input | forward ms | forward + backward ms |").map_err(io)?;
    writeln!(out, "|---|---|---|---|").map_err(io)?;
    for r in rows {
        let backward = r.backward_ms.map_or("—".to_string(), |ms| format!("{ms:.3}"));
        writeln!(out, "| {} | {} | {:.3} | {backward} |", r.op, r.shape, r.forward_ms).map_err(io)?;
    }
    Ok(())
}
