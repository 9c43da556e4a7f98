//! The integrators' updates batched across layers (`integrators::batched`): the
//! same steps as the per-layer path, orthonormal factors, and host reads per step that do not
//! grow with the number of layers.
#![allow(non_snake_case)]

mod common;

use std::sync::Mutex;

use burn::tensor::{backend::AutodiffBackend, Int, Tensor};
use common::*;
use dlrt::integrators::abc_psi::AbcPsi;
use dlrt::integrators::batched::{augment_all, batched_counts};
use dlrt::integrators::bc_psi::BcPsi;
use dlrt::integrators::bug::Bug;
use dlrt::integrators::parallel_bug::ParallelBug;
use dlrt::integrators::psi::Psi;
use dlrt::integrators::{BatchedUpdate, IntegratorKind};
use dlrt::layers::{Init, Network};
use dlrt::linalg::{from_faer, host_reads, thin_qr, to_faer, TruncationConfig};
use dlrt::models::Mlp;
use dlrt::optim::{Optimizer, OptimizerConfig};
use dlrt::train::{loss::cross_entropy, Trainer};
use dlrt::LowRankLinear;
use dlrt::TrainBackend;
use faer::Mat;
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

/// `host_reads` counts for the whole process: the tests here run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn trainer<A: AutodiffBackend>(batched: bool, one_pass: bool, opt: &Optimizer) -> Trainer<A> {
    let truncation = TruncationConfig::relative(0.05).with_bounds(1, Some(8));
    let integ = AbcPsi::new(truncation).unwrap().batched(Some(batched));
    let integ = if one_pass { integ.one_pass() } else { integ };
    Trainer::from_integrator(Some(Box::new(integ)), opt.clone()).unwrap()
}

/// An MLP `widths` with every layer but the output low-rank, inputs and labels.
fn setup<A: AutodiffBackend>(widths: &[usize], seed: u64) -> (Mlp<A>, Tensor<A, 2>, Tensor<A, 1, Int>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let device = Default::default();
    let low_rank: Vec<bool> = (1..widths.len()).map(|i| i + 1 < widths.len()).collect();
    let net = Mlp::<A>::new(widths, &low_rank, 3, Init::He, 2f64.sqrt(), &mut rng, &device).unwrap();
    // From the seeded generator (Tensor::random would draw from an unseeded one): each run of a
    // test sees the same inputs, so its round-off gaps are the same from run to run.
    let x: Vec<f32> = (0..32 * widths[0]).map(|_| StandardNormal.sample(&mut rng)).collect();
    let x = Tensor::<A, 1>::from_floats(x.as_slice(), &device).reshape([32, widths[0]]);
    let classes = *widths.last().unwrap() as i64;
    let labels =
        Tensor::<A, 1, Int>::from_ints((0..32).map(|i| i % classes).collect::<Vec<_>>().as_slice(), &device);
    (net, x, labels)
}

#[test]
fn batched_steps_equal_per_layer_steps_in_f64_and_keep_the_factors_orthonormal() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for one_pass in [false, true] {
        // No layer fell back to the per-layer path (which reads per layer).
        let passes = if one_pass { 1 } else { 2 };
        batched_equals_per_layer_in_f64(|batched, opt| trainer(batched, one_pass, opt), passes + 4);
    }
}

/// `trainer(batched, opt)`'s batched steps equal its per-layer steps in f64 (SGD and AdamW,
/// five steps of a 3-low-rank-layer MLP), each batched step reading `reads_per_step` times,
/// and keep the factors orthonormal.
fn batched_equals_per_layer_in_f64(trainer: impl Fn(bool, &Optimizer) -> Trainer<B>, reads_per_step: u64) {
    let optimizers = [Optimizer::sgd(0.5), Optimizer::new(OptimizerConfig::adamw(0.0), 0.05).unwrap()];
    for opt in &optimizers {
        let (net, x, labels) = setup::<B>(&[40, 30, 24, 20, 4], 7);
        let ce = |net: &Mlp<B>| cross_entropy(net.forward(x.clone()), labels.clone());
        let (mut per_layer, mut batched) = (net.clone(), net);
        let (mut t_per, mut t_bat) = (trainer(false, opt), trainer(true, opt));
        for _ in 0..5 {
            let l_per = t_per.step(&mut per_layer, ce).unwrap().loss;
            let before = host_reads();
            let l_bat = t_bat.step(&mut batched, ce).unwrap().loss;
            assert_eq!(host_reads() - before, reads_per_step, "{:?}", opt.config);
            // The gap depends on the inputs (abc-PSI: up to 1.3e-11 in the loss and 6.9e-11 in
            // W over seeds 1–12; 3.5e-15 here, the same in every run): Adam's division by √v̂
            // magnifies the paths' different round-off (as for W below).
            assert!((l_per - l_bat).abs() < 1e-9 * l_per.abs(), "losses {l_per} vs {l_bat}");
        }
        for (a, b) in per_layer.low_rank_layers().iter().zip(batched.low_rank_layers().iter()) {
            assert_eq!(a.rank(), b.rank());
            let diff = fro(a.to_dense() - b.to_dense()) / fro(a.to_dense());
            // The paths orthonormalise differently (Gram matrices vs Householder); Adam's
            // division by √v̂ magnifies that round-off, still far below f32's.
            assert!(diff < 1e-9, "{:?}: W differs by {diff:e}", opt.config);
            assert!(orthonormality_error(b.u()) < 1e-12, "U: {:e}", orthonormality_error(b.u()));
            assert!(orthonormality_error(b.v()) < 1e-12, "V: {:e}", orthonormality_error(b.v()));
        }
    }
}

/// The largest |QᵀQ − I| of an f32 factor.
fn departure_f32(q: &Tensor<TrainBackend, 2>) -> f32 {
    let r = q.dims()[1];
    let eye = Tensor::<TrainBackend, 2>::eye(r, &q.device());
    (q.clone().transpose().matmul(q.clone()) - eye).abs().max().into_scalar()
}

/// Host reads in the fourth f32 step of `trainer(batched)` on MLPs with 1 and 3 low-rank
/// layers: batched (1, 3), then per layer (1, 3). The factors must stay orthonormal.
fn reads_of_the_fourth_step(trainer: impl Fn(bool) -> Trainer<TrainBackend>) -> Vec<u64> {
    let mut reads = Vec::new();
    for (widths, batched) in [
        (&[30, 20, 4][..], true),
        (&[30, 20, 20, 20, 4][..], true),
        (&[30, 20, 4][..], false),
        (&[30, 20, 20, 20, 4][..], false),
    ] {
        let (mut net, x, labels) = setup::<TrainBackend>(widths, 3);
        let ce = |net: &Mlp<TrainBackend>| cross_entropy(net.forward(x.clone()), labels.clone());
        let mut t = trainer(batched);
        for _ in 0..3 {
            t.step(&mut net, ce).unwrap();
        }
        let before = host_reads();
        t.step(&mut net, ce).unwrap();
        reads.push(host_reads() - before);
        for layer in net.low_rank_layers() {
            assert!(departure_f32(layer.u()) < 1e-5, "U departs by {}", departure_f32(layer.u()));
            assert!(departure_f32(layer.v()) < 1e-5, "V departs by {}", departure_f32(layer.v()));
        }
    }
    reads
}

#[test]
fn host_reads_per_step_do_not_grow_with_the_number_of_layers() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let opt = Optimizer::sgd(0.1);
    for one_pass in [false, true] {
        let reads = reads_of_the_fourth_step(|batched| trainer(batched, one_pass, &opt));
        // Batched: one loss per pass and two reads per phase, for 1 and for 3 low-rank layers.
        let passes = if one_pass { 1 } else { 2 };
        assert_eq!(reads[0], passes + 4, "one_pass {one_pass}: reads {reads:?}");
        assert_eq!(reads[1], reads[0], "one_pass {one_pass}: reads {reads:?}");
        // The per-layer path reads per layer (the test can tell the two apart).
        assert!(reads[3] > reads[2], "one_pass {one_pass}: reads {reads:?}");
    }
    // LoRA: the loss and one finiteness check of every layer's factors together.
    for widths in [&[30, 20, 4][..], &[30, 20, 20, 20, 4][..]] {
        let (mut net, x, labels) = setup::<TrainBackend>(widths, 4);
        let ce = |net: &Mlp<TrainBackend>| cross_entropy(net.forward(x.clone()), labels.clone());
        let mut t =
            Trainer::<TrainBackend>::new(IntegratorKind::Lora, &TruncationConfig::default(), opt.clone())
                .unwrap();
        t.prepare(&mut net).unwrap();
        let before = host_reads();
        t.step(&mut net, ce).unwrap();
        assert_eq!(host_reads() - before, 2, "LoRA on {widths:?}");
    }
}

#[test]
fn an_overflowing_batched_step_is_an_error_naming_the_layer() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for method in ["abc_psi", "abc_psi_one_pass", "parallel_bug", "bug", "psi", "bc_psi"] {
        let (mut net, x, labels) = setup::<B>(&[40, 30, 24, 20, 4], 9);
        let ce = |net: &Mlp<B>| cross_entropy(net.forward(x.clone()), labels.clone());
        let opt = Optimizer::sgd(1e308);
        let mut t = match method {
            "parallel_bug" => parallel_bug::<B>(true, &opt),
            "bug" => bug::<B>(true, &opt),
            "psi" => psi::<B>(true, &opt),
            "bc_psi" => bc_psi::<B>(true, &opt),
            _ => trainer::<B>(true, method == "abc_psi_one_pass", &opt),
        };
        let result = t.step(&mut net, ce).and_then(|_| t.step(&mut net, ce));
        let err = result.err().unwrap_or_else(|| panic!("{method}: λ = 1e308 gave no error"));
        assert!(
            matches!(&err, dlrt::Error::NonFinite { context } if context.contains("low-rank layer") || context.contains("loss")),
            "{method}: {err}"
        );
    }
}

#[test]
fn an_ill_conditioned_remainder_is_augmented_batched_in_f32_with_one_more_read() {
    // K1 = U0 A + N with the remainder N (n×k) of κ = 1e5 after its columns are scaled, in f32:
    // beyond CholeskyQR2 from an f32 Gram matrix (κ² ≫ 1/ε), which used to send the layer down
    // the per-layer path. Shifted CholeskyQR3 takes three Gram reads instead of two.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (n, m, r, k) = (500, 300, 12, 12);
    let mut rng = StdRng::seed_from_u64(11);
    let mut gaussian = |rows, cols| Mat::<f64>::from_fn(rows, cols, |_, _| StandardNormal.sample(&mut rng));
    let basis = thin_qr(gaussian(n, r + k).as_ref()).Q;
    let U0 = basis.as_ref().subcols(0, r).to_owned();
    let P = basis.as_ref().subcols(r, k).to_owned();
    let W = thin_qr(gaussian(k, k).as_ref()).Q;
    let sigma =
        Mat::from_fn(k, k, |i, j| if i == j { 10f64.powf(-5.0 * i as f64 / (k - 1) as f64) } else { 0.0 });
    let N = &P * &sigma * W.transpose();
    let K1 = &U0 * gaussian(r, k) * faer::Scale(0.1) + &N;
    let V0 = thin_qr(gaussian(m, r).as_ref()).Q;
    let S0 = Mat::from_fn(r, r, |i, j| if i == j { 1.0 + i as f64 } else { 0.0 });
    let device = Default::default();
    let tensor = |a: &Mat<f64>| from_faer::<TrainBackend, f64>(a.as_ref(), &device);
    let mut layer =
        LowRankLinear::<TrainBackend>::from_factors(tensor(&U0), tensor(&S0), tensor(&V0), None).unwrap();
    let (W0, K1) = (to_faer(&layer.to_dense()), tensor(&K1));
    let (counts, reads) = (batched_counts(), host_reads());
    augment_all(&mut [(&mut layer, K1.clone())]).unwrap();
    let (counts, reads) = (batched_counts() - counts, host_reads() - reads);
    assert_eq!((counts.layer_phases, counts.fallbacks), (1, 0), "the layer stayed on the batched path");
    assert_eq!(reads, 3, "shifted CholeskyQR3: three Gram reads");
    // Checked in f64 on the host, so that only the f32 factors' own round-off shows.
    let (U_hat, K1) = (to_faer(layer.u()), to_faer(&K1));
    assert_eq!(U_hat.ncols(), r + k);
    let eps = f32::EPSILON as f64;
    let departure = (U_hat.transpose() * &U_hat - Mat::<f64>::identity(r + k, r + k)).norm_max();
    assert!(departure < 20.0 * eps, "Û orthonormal to f32 round-off: {departure:e}");
    // span(Û) ⊇ span(K1) (T3), and Û S̄ V0ᵀ = W0 (T1), to f32 round-off.
    let outside = (&K1 - &U_hat * (U_hat.transpose() * &K1)).norm_l2() / K1.norm_l2();
    assert!(outside < 10.0 * eps, "K1 outside span(Û): {outside:e}");
    let W = to_faer(&layer.to_dense());
    let t1 = (&W - &W0).norm_l2() / W0.norm_l2();
    assert!(t1 < 10.0 * eps, "W changed by {t1:e}");
}

fn parallel_bug<A: AutodiffBackend>(batched: bool, opt: &Optimizer) -> Trainer<A> {
    let truncation = TruncationConfig::relative(0.05).with_bounds(1, Some(8));
    let integ = ParallelBug::new(truncation).unwrap().batched(Some(batched));
    Trainer::from_integrator(Some(Box::new(integ)), opt.clone()).unwrap()
}

fn bug<A: AutodiffBackend>(batched: bool, opt: &Optimizer) -> Trainer<A> {
    let truncation = TruncationConfig::relative(0.05).with_bounds(1, Some(8));
    let integ = Bug::new(truncation).unwrap().batched(Some(batched));
    Trainer::from_integrator(Some(Box::new(integ)), opt.clone()).unwrap()
}

/// [`batched_equals_per_layer_in_f64`], and in f32 as many reads with one low-rank layer as
/// with three, where the per-layer path reads more with more layers.
fn batched_equals_per_layer_with_reads(
    trainer: impl Fn(bool, &Optimizer) -> Trainer<B>,
    trainer_f32: impl Fn(bool, &Optimizer) -> Trainer<TrainBackend>,
    reads_per_step: u64,
) {
    batched_equals_per_layer_in_f64(trainer, reads_per_step);
    let opt = Optimizer::sgd(0.1);
    let reads = reads_of_the_fourth_step(|batched| trainer_f32(batched, &opt));
    assert_eq!(reads[0], reads_per_step, "reads {reads:?}");
    assert_eq!(reads[1], reads[0], "reads {reads:?}");
    assert!(reads[3] > reads[2], "the per-layer path reads per layer: {reads:?}");
}

#[test]
fn parallel_bug_batched_equals_per_layer_in_f64_and_reads_do_not_grow_with_the_layers() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // One pass (the loss), two augmentation rounds for every U and V, one read of every Ŝ.
    batched_equals_per_layer_with_reads(parallel_bug, parallel_bug, 1 + 2 + 1);
}

#[test]
fn bug_batched_equals_per_layer_in_f64_and_reads_do_not_grow_with_the_layers() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Three passes (their losses), two augmentation rounds for every U and V after the
    // L-pass, one read of every Ŝ1 after the S-pass.
    batched_equals_per_layer_with_reads(bug, bug, 3 + 2 + 1);
}

fn psi<A: AutodiffBackend>(batched: bool, opt: &Optimizer) -> Trainer<A> {
    Trainer::from_integrator(Some(Box::new(Psi::default().batched(Some(batched)))), opt.clone()).unwrap()
}

fn bc_psi<A: AutodiffBackend>(batched: bool, opt: &Optimizer) -> Trainer<A> {
    Trainer::from_integrator(Some(Box::new(BcPsi::default().batched(Some(batched)))), opt.clone()).unwrap()
}

#[test]
fn psi_and_bc_psi_batched_equal_per_layer_in_f64_and_reads_do_not_grow_with_the_layers() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // PSI: three passes (their losses) and two CholeskyQR2 rounds for each of its two QRs.
    batched_equals_per_layer_with_reads(psi, psi, 3 + 2 + 2);
    // bc-PSI: two passes and the same two QRs.
    batched_equals_per_layer_with_reads(bc_psi, bc_psi, 2 + 2 + 2);
}

#[test]
fn batched_qr_of_ill_conditioned_dependent_and_zero_columns_in_f32() {
    // X = P Σ Wᵀ (n×k) with κ = 1e5 in f32, and an X with a repeated column: shifted
    // CholeskyQR3 from the Gram matrices serves both; an X with a zero column has no Cholesky
    // factor and takes the per-layer Householder QR (its own read). All give X = Q R with Q
    // orthonormal and R upper triangular.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (n, k) = (400, 10);
    let mut rng = StdRng::seed_from_u64(12);
    let mut gaussian = |rows, cols| Mat::<f64>::from_fn(rows, cols, |_, _| StandardNormal.sample(&mut rng));
    let P = thin_qr(gaussian(n, k).as_ref()).Q;
    let W = thin_qr(gaussian(k, k).as_ref()).Q;
    let sigma =
        Mat::from_fn(k, k, |i, j| if i == j { 10f64.powf(-5.0 * i as f64 / (k - 1) as f64) } else { 0.0 });
    let ill = &P * &sigma * W.transpose();
    let mut dependent = gaussian(n, k);
    let first = dependent.as_ref().col(0).to_owned();
    dependent.as_mut().col_mut(k - 1).copy_from(&first);
    let mut zero = gaussian(n, k);
    zero.as_mut().col_mut(3).fill(0.0);
    let device = Default::default();
    let tensor = |a: &Mat<f64>| from_faer::<TrainBackend, f64>(a.as_ref(), &device);
    let (counts, reads) = (batched_counts(), host_reads());
    let xs = [tensor(&ill), tensor(&dependent), tensor(&zero)];
    let qrs = dlrt::integrators::batched::qr_all(&xs, |i| format!("X{i}")).unwrap();
    let (counts, reads) = (batched_counts() - counts, host_reads() - reads);
    assert_eq!((counts.layer_phases, counts.fallbacks), (3, 1), "only the zero column fell back");
    assert_eq!(qrs.iter().map(|q| q.from_gram).collect::<Vec<_>>(), [true, true, false]);
    assert_eq!(reads, 3 + 1, "three Gram rounds, one read of the fallback's X");
    let eps = f32::EPSILON as f64;
    for (qr, X) in qrs.iter().zip([&ill, &dependent, &zero]) {
        let (Q, R) = (to_faer(&qr.Q), to_faer(&qr.R));
        let departure = (Q.transpose() * &Q - Mat::<f64>::identity(k, k)).norm_max();
        assert!(departure < 20.0 * eps, "Q orthonormal to f32 round-off: {departure:e}");
        let residual = (&Q * &R - X).norm_l2() / X.norm_l2();
        assert!(residual < 10.0 * eps, "X = Q R to f32 round-off: {residual:e}");
        let R_ref = R.as_ref();
        let below = (0..k).flat_map(|j| (j + 1..k).map(move |i| R_ref[(i, j)].abs())).fold(0.0, f64::max);
        assert!(below < 10.0 * eps * R.norm_max(), "R upper triangular: {below:e}");
    }
}

/// `IntegratorKind::build` passes the batched setting to every method that batches: `on` runs
/// its phases batched, `off` per layer, and `auto` per layer on the CPU.
#[test]
fn build_sets_the_batched_update() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let truncation = TruncationConfig::relative(0.05).with_bounds(1, Some(8));
    for kind in IntegratorKind::ALL {
        if matches!(kind, IntegratorKind::Lora | IntegratorKind::Dense) {
            continue;
        }
        for setting in BatchedUpdate::ALL {
            let batched = setting == BatchedUpdate::On;
            let integrator = kind.build::<B>(&truncation, setting).unwrap();
            let mut t = Trainer::from_integrator(integrator, Optimizer::sgd(0.1)).unwrap();
            let (mut net, x, labels) = setup::<B>(&[20, 16, 12, 4], 3);
            t.prepare(&mut net).unwrap();
            let before = batched_counts();
            t.step(&mut net, |net| cross_entropy(net.forward(x.clone()), labels.clone())).unwrap();
            let phases = (batched_counts() - before).layer_phases;
            assert_eq!(
                phases > 0,
                batched,
                "{kind}, batched_update = {setting}: {phases} batched layer-phases"
            );
        }
    }
}

/// `integrator.batched_update` reaches a training run: `on` batches every phase, `off` none,
/// and the two take the same steps (f32, to round-off: same ranks and decompositions, losses
/// within 1e-4). `dlrt train --batched-update` writes the setting to the run's config, and a bad
/// value is refused with the valid ones.
#[test]
fn a_run_takes_the_batched_update_setting() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    tiny_image_folder(&images);
    let mut cfg = dlrt::config::RunConfig::paper_mnist();
    cfg.train.dataset = dlrt::data::DatasetSource::Folder(dlrt::data::FolderSpec::new(&images));
    (cfg.model.hidden, cfg.model.rank, cfg.model.init) = (vec![24, 16], 3, Init::He);
    (cfg.train.batch_size, cfg.train.epochs, cfg.optimizer.lr, cfg.integrator.tol) = (8, 2, 0.05, 0.05);
    let device = Default::default();
    let mut records = Vec::new();
    for setting in [BatchedUpdate::On, BatchedUpdate::Off] {
        cfg.integrator.batched_update = setting;
        let run_dir = tmp.path().join(setting.name());
        let opts = dlrt::train::fit::RunOptions {
            run_dir,
            data_dir: images.clone(),
            resume: false,
            progress: false,
        };
        let before = batched_counts();
        let run = dlrt::train::run::run::<TrainBackend>(&cfg, &opts, &device).unwrap();
        let phases = (batched_counts() - before).layer_phases;
        assert_eq!(phases > 0, setting == BatchedUpdate::On, "{setting}: {phases} batched layer-phases");
        records.push(run.last().unwrap().clone());
    }
    let (on, off) = (&records[0], &records[1]);
    assert_eq!((on.step, &on.ranks, on.qr, on.svd), (off.step, &off.ranks, off.qr, off.svd));
    for (a, b) in [(on.train_loss, off.train_loss), (on.test_loss, off.test_loss)] {
        assert!((a - b).abs() < 1e-4 * b.abs().max(1.0), "batched {a} against per layer {b}");
    }

    let config = tmp.path().join("train.toml");
    cfg.train.epochs = 1;
    std::fs::write(&config, cfg.to_toml().unwrap()).unwrap();
    let train = |setting: &str, run_dir: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_dlrt"))
            .args(["train", config.to_str().unwrap(), "--quiet", "--max-batches", "1"])
            .args(["--batched-update", setting, "--out", run_dir.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let run_dir = tmp.path().join("cli");
    let out = train("on", &run_dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let saved = std::fs::read_to_string(run_dir.join("config.toml")).unwrap();
    assert!(saved.contains("batched_update = \"on\""), "{saved}");
    let out = train("yes", &tmp.path().join("bad"));
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"yes\"") && err.contains("\"auto\"") && err.contains("\"off\""), "{err}");
}
