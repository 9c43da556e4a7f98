//! Rank buckets (`Trainer::with_rank_bucket`, `layers::passes`): padding the factors every pass
//! multiplies with to widths that are multiples of b changes no step. In f64, every integrator
//! takes the same steps (losses, ranks, factors) with b = 1, with b = 8 and with a b beyond the
//! layers' largest rank, on a network with a low-rank convolution, a low-rank linear layer and
//! a dense head; the widths its forward multiplies with are the bucket's; and the command line
//! takes `--rank-bucket`, rejects 0 with a message naming it, and checkpoints true-rank factors.
#![allow(non_snake_case)]

mod common;

use std::num::NonZeroUsize;
use std::process::Command;

use burn::tensor::{activation::relu, Distribution, Int, Tensor};
use common::*;
use dlrt::integrators::IntegratorKind;
use dlrt::layers::{bucket_width, Conv2dShape, DenseLinear, LowRankConv2d, Network, Pass};
use dlrt::linalg::TruncationConfig;
use dlrt::optim::{Optimizer, OptimizerConfig};
use dlrt::train::{loss::cross_entropy, Trainer};
use dlrt::LowRankLinear;
use rand::{rngs::StdRng, SeedableRng};

/// conv 3→12 (3×3, padding 1: n = 27, m = 12), ReLU, low-rank 432→20, ReLU, dense 20→4.
#[derive(Clone)]
struct ConvNet {
    conv: LowRankConv2d<B>,
    fc: LowRankLinear<B>,
    head: DenseLinear<B>,
}

impl ConvNet {
    fn new(seed: u64) -> Self {
        let (mut rng, device) = (StdRng::seed_from_u64(seed), Default::default());
        let shape = Conv2dShape::new(3, 12, [3, 3]).with_padding([1, 1]);
        Self {
            conv: LowRankConv2d::random(shape, 3, true, 2f64.sqrt(), &mut rng, &device).unwrap(),
            fc: LowRankLinear::random(12 * 6 * 6, 20, 3, true, 2f64.sqrt(), &mut rng, &device).unwrap(),
            head: DenseLinear::random(20, 4, true, 2f64.sqrt(), &mut rng, &device),
        }
    }

    fn logits(&self, x: Tensor<B, 4>) -> T2 {
        let z = relu(self.conv.forward(x));
        let batch = z.dims()[0];
        self.head.forward(relu(self.fc.forward(z.reshape([batch as i32, -1]))))
    }

    fn layers(&self) -> [&LowRankLinear<B>; 2] {
        [self.conv.core(), &self.fc]
    }
}

impl Network<B> for ConvNet {
    fn low_rank_layers(&mut self) -> Vec<&mut LowRankLinear<B>> {
        vec![self.conv.core_mut(), &mut self.fc]
    }
    fn dense_layers(&mut self) -> Vec<&mut DenseLinear<B>> {
        vec![&mut self.head]
    }
}

/// What `steps` steps of `kind` in bucket `bucket` did: the losses, the network after them and
/// the (U, V) widths every pass multiplied with, with the layer's rank at that pass.
struct Run {
    losses: Vec<f64>,
    net: ConvNet,
    widths: Vec<PassWidths>,
}

/// A layer's (U, V) widths in a pass, its (U, V) ranks then, and its largest rank min(n, m).
type PassWidths = ((usize, usize), (usize, usize), usize);

fn run(kind: IntegratorKind, bucket: usize, opt: &Optimizer, steps: usize) -> Run {
    let mut net = ConvNet::new(3);
    let device = Default::default();
    let x = gaussian(8, 3 * 6 * 6, &mut StdRng::seed_from_u64(4)).reshape([8, 3, 6, 6]);
    let labels = Tensor::<B, 1, Int>::from_ints([0, 1, 2, 3, 3, 2, 1, 0], &device);
    let truncation = TruncationConfig::relative(1e-3).with_bounds(1, Some(10));
    let mut trainer =
        Trainer::<B>::new(kind, &truncation, opt.clone()).unwrap().with_rank_bucket(bucket).unwrap();
    trainer.prepare(&mut net).unwrap();
    let (mut losses, mut widths) = (Vec::new(), Vec::new());
    for _ in 0..steps {
        let loss = trainer
            .step(&mut net, |net: &ConvNet| {
                for layer in net.layers() {
                    let r = (layer.u().dims()[1], layer.v().dims()[1]);
                    widths.push((layer.pass_widths(), r, layer.n().min(layer.m())));
                }
                cross_entropy(net.logits(x.clone()), labels.clone())
            })
            .unwrap()
            .loss;
        losses.push(loss);
    }
    Run { losses, net, widths }
}

#[test]
fn every_integrator_takes_the_same_steps_in_any_rank_bucket() {
    let adam = Optimizer::new(OptimizerConfig::adamw(0.0), 0.01).unwrap();
    let kinds = IntegratorKind::ALL.into_iter().filter(|k| *k != IntegratorKind::Dense);
    for (kind, opt) in kinds.flat_map(|k| [(k, Optimizer::sgd(0.2)), (k, adam.clone())]) {
        let reference = run(kind, 1, &opt, 3);
        // Without a bucket nothing is padded: the forward multiplies with the factors themselves.
        assert!(reference.widths.iter().all(|(w, r, _)| w == r), "{kind}");
        // The ranks change (else a bucket would be exercised at one width only); parallel BUG
        // keeps r = 3 on this problem, and the fixed-rank methods keep theirs.
        let ranks: Vec<usize> = reference.net.layers().iter().map(|l| l.rank()).collect();
        let adaptive =
            matches!(kind, IntegratorKind::AbcPsi | IntegratorKind::AbcPsiOnePass | IntegratorKind::Bug);
        assert!(!adaptive || ranks != [3, 3], "{kind}: ranks {ranks:?}");
        // 8 pads every width; 64 is beyond every layer's largest rank, min(n, m) = 12 and 20.
        for bucket in [8, 64] {
            let padded = run(kind, bucket, &opt, 3);
            for &(w, r, cap) in &padded.widths {
                for (w, r, name) in [(w.0, r.0, "U"), (w.1, r.1, "V")] {
                    let expected = if r >= cap { r } else { r.next_multiple_of(bucket).min(cap) };
                    assert_eq!(w, expected, "{kind}, bucket {bucket}: {name} of rank {r} (cap {cap})");
                }
            }
            assert!(padded.widths.iter().any(|(w, r, _)| w != r), "{kind}: something was padded");
            for (a, b) in reference.losses.iter().zip(&padded.losses) {
                assert!((a - b).abs() < 1e-12 * a.abs(), "{kind}, bucket {bucket}: loss {a} vs {b}");
            }
            for (a, b) in reference.net.layers().into_iter().zip(padded.net.layers()) {
                // True-rank factors: the padding never reaches the layer.
                assert_eq!(
                    (a.u().dims(), a.s().dims(), a.v().dims()),
                    (b.u().dims(), b.s().dims(), b.v().dims())
                );
                for (x, y, f) in [(a.u(), b.u(), "U"), (a.s(), b.s(), "S"), (a.v(), b.v(), "V")] {
                    let err = max_abs(x.clone() - y.clone()) / max_abs(x.clone());
                    assert!(err < 1e-12, "{kind}, {:?}, bucket {bucket}: {f} differs by {err:e}", opt.config);
                }
            }
            let (wa, wb) = (reference.net.head.weight().clone(), padded.net.head.weight().clone());
            assert!(max_abs(wa.clone() - wb) < 1e-12 * max_abs(wa), "{kind}: the dense head");
        }
    }
}

#[test]
fn a_padded_pass_hands_back_the_unpadded_gradients() {
    let mut rng = StdRng::seed_from_u64(8);
    let device = Default::default();
    // An augmented basis: U n×6, S 6×3, V m×3, as between abc-PSI's passes.
    let (u, v) = (orthonormal(30, 6, &mut rng), orthonormal(17, 3, &mut rng));
    let s = gaussian(6, 3, &mut rng);
    let bias = Tensor::<B, 1>::random([17], Distribution::Normal(0.0, 1.0), &device);
    let mut layer = LowRankLinear::from_factors(u, s, v, Some(bias)).unwrap();
    let x = gaussian(5, 30, &mut rng);
    let target = gaussian(5, 17, &mut rng);
    let bucket = NonZeroUsize::new(4).unwrap();
    for pass in [Pass::K, Pass::L, Pass::S, Pass::Tangent, Pass::Factors, Pass::Activations] {
        let mut grads_in = |b: NonZeroUsize| {
            layer.begin_pass_bucketed(pass, b);
            let widths = layer.pass_widths();
            let z = layer.forward(x.clone());
            let loss = (z.clone() - target.clone()).powf_scalar(2.0).sum();
            let value = loss.clone().into_scalar();
            let g = layer.take_grads(&loss.backward());
            (widths, z, value, g)
        };
        let (w1, z1, l1, g1) = grads_in(NonZeroUsize::MIN);
        let (w4, z4, l4, g4) = grads_in(bucket);
        assert_eq!((w1, w4), ((6, 3), (8, 4)), "{pass:?}");
        assert!(max_abs(z1 - z4) < 1e-13 && (l1 - l4).abs() < 1e-12 * l1, "{pass:?}");
        let same = |a: Option<T2>, b: Option<T2>, what: &str| match (a, b) {
            (Some(a), Some(b)) => {
                assert_eq!(a.dims(), b.dims(), "{pass:?} {what}");
                assert!(max_abs(a - b) < 1e-12, "{pass:?} {what}");
            }
            (None, None) => {}
            _ => panic!("{pass:?} {what}: a gradient on one side only"),
        };
        same(g1.k, g4.k, "K");
        same(g1.l, g4.l, "L");
        same(g1.s, g4.s, "S");
        same(g1.u, g4.u, "U");
        same(g1.v, g4.v, "V");
        same(g1.input, g4.input, "x");
        same(g1.output_grad, g4.output_grad, "δ");
        let (b1, b4) = (g1.bias.unwrap(), g4.bias.unwrap());
        assert!((b1 - b4).abs().max().into_scalar() < 1e-12, "{pass:?} bias");
    }
}

#[test]
fn bucket_widths_round_up_within_the_largest_rank() {
    let b = |k| NonZeroUsize::new(k).unwrap();
    assert_eq!(bucket_width(3, b(1), 20), 3);
    assert_eq!(bucket_width(3, b(8), 20), 8);
    assert_eq!(bucket_width(8, b(8), 20), 8);
    assert_eq!(bucket_width(17, b(8), 20), 20, "capped at min(n, m)");
    assert_eq!(bucket_width(24, b(8), 20), 24, "an augmented basis wider than min(n, m) stays");
}

#[test]
fn a_rank_bucket_of_zero_is_an_error_naming_it() {
    let err = Trainer::<B>::new(IntegratorKind::AbcPsi, &TruncationConfig::default(), Optimizer::sgd(0.1))
        .unwrap()
        .with_rank_bucket(0)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("rank_bucket") && err.contains("≥ 1"), "{err}");
    for args in [
        &["train", "configs/mnist_abc_psi.toml", "--rank-bucket", "0"][..],
        &["finetune", "configs/finetune/fashion_abc_psi.toml", "--rank-bucket", "0"],
        &["bench", "--rank-bucket", "0"],
        &["bench-vit", "--rank-bucket", "x"],
    ] {
        let out = dlrt(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains("--rank-bucket") && stderr.contains("≥ 1"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

fn dlrt(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dlrt"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .expect("run dlrt")
}

#[test]
fn dlrt_train_takes_the_flag_and_checkpoints_true_rank_factors() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_image_folder(&tmp.path().join("images"));
    let mut cfg = dlrt::config::RunConfig::paper_mnist();
    (cfg.model.hidden, cfg.model.rank, cfg.model.init) = (vec![24], 3, dlrt::layers::Init::He);
    (cfg.train.batch_size, cfg.optimizer.lr, cfg.integrator.tol) = (8, 0.05, 0.05);
    let config = tmp.path().join("train.toml");
    std::fs::write(&config, cfg.to_toml().unwrap()).unwrap();
    let run_dir = tmp.path().join("run");
    let data = tmp.path().join("images");
    let out = dlrt(&[
        "train",
        config.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--epochs",
        "2",
        "--quiet",
        "--rank-bucket",
        "8",
        "--out",
        run_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let saved = std::fs::read_to_string(run_dir.join("config.toml")).unwrap();
    assert!(saved.contains("rank_bucket = 8"), "{saved}");
    let (tensors, meta) = dlrt::io::read_safetensors(&run_dir.join("checkpoint.safetensors")).unwrap();
    let ranks: Vec<usize> = serde_json::from_str(&meta["ranks"]).unwrap();
    let (u_shape, u) = &tensors["layers.0.u"];
    assert_eq!((u_shape[1], tensors["layers.0.s"].0.clone()), (ranks[0], vec![ranks[0], ranks[0]]));
    // Orthonormal columns: a zero-padded column would have norm 0.
    let r = ranks[0];
    for j in 0..r {
        let norm: f32 = (0..u_shape[0]).map(|i| u[i * r + j].powi(2)).sum();
        assert!((norm - 1.0).abs() < 1e-4, "column {j} of U has norm² {norm}");
    }
    // A resumed run keeps its bucket, and may not change it.
    let resume = ["train", "--resume", run_dir.to_str().unwrap(), "--quiet"];
    let out = dlrt(&[&resume[..], &["--rank-bucket", "4"]].concat());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("integrator.rank_bucket"));
    let out = dlrt(&[&resume[..], &["--epochs", "3"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn bench_logs_steps_with_their_ranks_and_tells_new_shapes_from_seen_ones() {
    let out = dlrt(&[
        "bench",
        "--warmup",
        "2",
        "--steps",
        "3",
        "--methods",
        "abc_psi,lora",
        "--rank-bucket",
        "8",
        "--log-steps",
        "--data-dir",
        "/nonexistent",
    ]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.lines().next().unwrap().contains("rank bucket 8"), "{stdout}");
    let (_, shapes) = stdout.split_once("What a new shape costs").expect("the new-shape table");
    let row = shapes.lines().find(|l| l.starts_with("| lora |")).unwrap_or_else(|| panic!("{stdout}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    // | lora | steps | new ranks | at new | at seen | new widths | at new | at seen |: LoRA
    // keeps its rank, so the 4 steps after the first are all at seen ranks and widths.
    assert_eq!([cells[2], cells[3], cells[4], cells[6], cells[7]], ["4", "0", "-", "0", "-"], "{row}");
    assert!(cells[5].parse::<f64>().unwrap() > 0.0 && cells[8].parse::<f64>().unwrap() > 0.0, "{row}");
    let logged: Vec<&str> = stderr.lines().filter(|l| l.starts_with("abc_psi step ")).collect();
    assert_eq!(logged.len(), 5, "{stderr}");
    assert!(logged[0].contains("(warm-up)") && logged[4].contains("(timed)"), "{stderr}");
    assert!(logged[0].contains("ranks [20, 20] new, widths new"), "{stderr}");
}
