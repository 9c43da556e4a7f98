//! Training end to end on the real MNIST files: a short run through the library, resume
//! equality, checkpoint round trips, and the CLI (`train`, `eval`, `export`). Skips with a
//! printed reason when MNIST has not been fetched (`dlrt fetch mnist`; CI fetches it).

mod common;

use std::path::Path;
use std::process::Command;

use dlrt::checkpoint;
use dlrt::config::RunConfig;
use dlrt::data::{self, DatasetName, Split};
use dlrt::integrators::IntegratorKind;
use dlrt::train::fit::{checkpoint_path, RunOptions};
use dlrt::train::run::run;
use dlrt::TrainBackend;

/// A short run: 3 epochs of 15 batches on the first 2 000 training images.
fn short_config(method: IntegratorKind) -> RunConfig {
    let mut cfg = RunConfig::paper_mnist();
    cfg.integrator.method = method;
    cfg.train.epochs = 3;
    cfg.train.max_batches = 15;
    cfg.train.train_subset = 2000;
    cfg.optimizer.rule = dlrt::optim::OptimizerConfig::adamw(0.0);
    cfg.optimizer.lr = 1e-3;
    // Adam with the authors' N(0, 1) init needs far more than 45 steps to learn.
    cfg.model.init = dlrt::layers::Init::He;
    cfg
}

fn opts(run_dir: &Path, data: &Path, resume: bool) -> RunOptions {
    RunOptions { run_dir: run_dir.to_path_buf(), data_dir: data.to_path_buf(), resume, progress: false }
}

#[test]
fn interrupted_and_resumed_run_equals_uninterrupted_run() {
    let Some(data) = common::mnist_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let device = Default::default();
    for method in [IntegratorKind::AbcPsi, IntegratorKind::Dense] {
        let mut cfg = short_config(method);
        // A warm-up that the interruption after 15 steps cuts in two.
        cfg.optimizer.warmup_steps = 20;
        let whole = tmp.path().join(format!("{method}-whole"));
        let full = run::<TrainBackend>(&cfg, &opts(&whole, &data, false), &device).unwrap();
        assert_eq!(full.len(), 3);

        let parts = tmp.path().join(format!("{method}-parts"));
        let mut first = cfg.clone();
        first.train.epochs = 1;
        run::<TrainBackend>(&first, &opts(&parts, &data, false), &device).unwrap();
        let resumed = run::<TrainBackend>(&cfg, &opts(&parts, &data, true), &device).unwrap();
        assert_eq!(resumed.len(), 3, "the resumed run reports all epochs");
        for (a, b) in full.iter().zip(&resumed) {
            assert_eq!(
                (a.train_loss, a.test_loss, a.test_accuracy, &a.ranks, a.step, a.passes),
                (b.train_loss, b.test_loss, b.test_accuracy, &b.ranks, b.step, b.passes),
                "{method}: epoch {}",
                a.epoch
            );
        }
        let (wa, _) = dlrt::io::read_safetensors(&checkpoint_path(&whole)).unwrap();
        let (wb, _) = dlrt::io::read_safetensors(&checkpoint_path(&parts)).unwrap();
        assert_eq!(wa, wb, "{method}: final checkpoints differ");
        assert!(full[2].test_accuracy > 0.5, "{method} learned nothing: {:?}", full[2]);
    }
}

/// `warmup_steps` takes effect in a run: under a warm-up far longer than the run every step's λ
/// is below 10⁻⁵ λ, so the model barely moves (as under a constant λ/10⁶) and ends well short
/// of a run without warm-up.
#[test]
fn a_long_warm_up_holds_the_first_steps_back() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    common::tiny_image_folder(&images);
    let mut cfg = RunConfig::paper_mnist();
    cfg.train.dataset = dlrt::data::DatasetSource::Folder(dlrt::data::FolderSpec::new(&images));
    (cfg.model.hidden, cfg.model.rank, cfg.model.init) = (vec![24], 3, dlrt::layers::Init::He);
    (cfg.train.batch_size, cfg.train.epochs, cfg.optimizer.lr) = (8, 2, 0.05);
    let device = Default::default();
    let loss = |name: &str, lr: f64, warmup_steps: u64| {
        let mut c = cfg.clone();
        (c.optimizer.lr, c.optimizer.warmup_steps) = (lr, warmup_steps);
        let records =
            run::<TrainBackend>(&c, &opts(&tmp.path().join(name), &images, false), &device).unwrap();
        records.last().unwrap().test_loss
    };
    let (plain, warm, slow) = (loss("plain", 0.05, 0), loss("warm", 0.05, 999_999), loss("slow", 5e-8, 0));
    // 8 steps at λ (k+1)/10⁶ against 8 at 5e-8: both leave the initial model all but unchanged.
    assert!((warm - slow).abs() < 1e-4 * slow, "warm-up {warm}, λ/10⁶ {slow}");
    assert!(plain < warm - 0.01, "without warm-up {plain}, with {warm}");
}

#[test]
fn checkpoint_round_trip_and_bad_checkpoints() {
    let Some(data) = common::mnist_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = short_config(IntegratorKind::AbcPsi);
    cfg.train.epochs = 1;
    let dir = tmp.path().join("run");
    let records = run::<TrainBackend>(&cfg, &opts(&dir, &data, false), &Default::default()).unwrap();
    let path = checkpoint_path(&dir);
    let (model, _, state) = checkpoint::load::<TrainBackend>(&path, &Default::default()).unwrap();
    assert_eq!(state.epoch, 1);
    assert_eq!(model.ranks(), records[0].ranks);
    for name in ["metrics.jsonl", "metrics.csv", "config.toml", "accuracy.png", "loss.svg", "ranks.png"] {
        assert!(dir.join(name).metadata().map(|m| m.len() > 0).unwrap_or(false), "{name} missing");
    }
    // A truncated checkpoint and a wrong shape give errors naming the file and the tensor.
    let bytes = std::fs::read(&path).unwrap();
    let cut = tmp.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = checkpoint::load::<TrainBackend>(&cut, &Default::default()).unwrap_err().to_string();
    assert!(err.contains("cut.safetensors"), "{err}");
    let (mut tensors, meta) = dlrt::io::read_safetensors(&path).unwrap();
    let (shape, values) = tensors.get_mut("layers.0.v").unwrap();
    let r = shape[1];
    *shape = vec![499, r];
    values.truncate(499 * r);
    let bad = tmp.path().join("bad.safetensors");
    dlrt::io::write_safetensors(&bad, &tensors, meta.clone()).unwrap();
    let err = checkpoint::load::<TrainBackend>(&bad, &Default::default()).unwrap_err().to_string();
    assert!(err.contains("bad.safetensors") && err.contains("layers.0.v") && err.contains("500"), "{err}");
    // Optimizer state that does not fit its layer (a moment of another shape, a basis of another
    // height, a basis the parameter has none of) is an error, not a panic at the next step.
    let (good, _) = dlrt::io::read_safetensors(&path).unwrap();
    let [_, width] = <[usize; 2]>::try_from(good["layers.0.opt.k.right"].0.clone()).unwrap();
    for (name, shape) in [
        ("layers.0.opt.s.m2", [1, 1]),
        ("layers.0.opt.k.m1", [500, width + 1]),
        ("layers.0.opt.k.right", [499, width]),
        ("layers.0.opt.k.left", [784, width]),
    ] {
        let mut tensors = good.clone();
        tensors.insert(name.into(), (shape.to_vec(), vec![0.0; shape[0] * shape[1]]));
        dlrt::io::write_safetensors(&bad, &tensors, meta.clone()).unwrap();
        let err = checkpoint::load::<TrainBackend>(&bad, &Default::default()).unwrap_err().to_string();
        assert!(err.contains("bad.safetensors") && err.contains(name), "{name}: {err}");
    }
    let mut no_labels = meta.clone();
    no_labels.insert("labels".into(), "[]".into());
    dlrt::io::write_safetensors(&bad, &good, no_labels).unwrap();
    let err = checkpoint::load::<TrainBackend>(&bad, &Default::default()).unwrap_err().to_string();
    assert!(err.contains("metadata.labels") && err.contains("at least one class"), "{err}");
    // A file of another kind is named as what it is.
    let other = |format: Option<&str>| {
        let mut meta = meta.clone();
        match format {
            Some(f) => meta.insert("format".into(), f.into()),
            None => meta.remove("format"),
        };
        dlrt::io::write_safetensors(&bad, &tensors, meta).unwrap();
        checkpoint::load::<TrainBackend>(&bad, &Default::default()).unwrap_err().to_string()
    };
    for (format, what) in [
        (Some(checkpoint::DENSE_FORMAT), "a `dlrt export`, not a checkpoint"),
        (Some(checkpoint::trainer::FORMAT), "a trainer state"),
        (Some(checkpoint::adapters::FORMAT), "a `dlrt finetune` checkpoint"),
        (Some("pt"), "pt (not a file dlrt wrote)"),
        (None, "none (not a file dlrt wrote)"),
    ] {
        let err = other(format);
        assert!(
            err.contains("bad.safetensors") && err.contains("metadata.format") && err.contains(what),
            "{err}"
        );
    }
    let err =
        dlrt::checkpoint::adapters::load::<TrainBackend>(&path, &Default::default()).unwrap_err().to_string();
    assert!(err.contains("a `dlrt train` checkpoint"), "{err}");
}

#[test]
fn cli_train_eval_export_and_nan_loss() {
    let Some(data) = common::mnist_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dlrt = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_dlrt"))
            .args(args)
            .env("DLRT_DATA", &data)
            .output()
            .expect("run dlrt")
    };
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/mnist_abc_psi.toml");
    let out_dir = tmp.path().join("cli-run");
    let config = config.to_str().unwrap();
    let out = out_dir.to_str().unwrap();
    let r = dlrt(&["train", config, "--epochs", "1", "--max-batches", "40", "--out", out, "--quiet"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stdout).contains("test accuracy"));
    // `dlrt report` summarises the run folder; a folder without a run is an error naming the file.
    let r = dlrt(&["report", out]);
    let table = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success() && table.contains("| cli-run | abc_psi | 0.01 | sgd 0.01 | 1 |"), "{table}");
    let r = dlrt(&["report", tmp.path().to_str().unwrap()]);
    assert!(!r.status.success() && String::from_utf8_lossy(&r.stderr).contains("config.toml"));
    // A run still in its first epoch (config written, no metrics yet) gets a row saying so,
    // and the finished run beside it is still reported.
    let running = tmp.path().join("running");
    std::fs::create_dir_all(&running).unwrap();
    std::fs::copy(out_dir.join("config.toml"), running.join("config.toml")).unwrap();
    std::fs::write(running.join("metrics.jsonl"), "").unwrap();
    let r = dlrt(&["report", running.to_str().unwrap(), out]);
    let table = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(table.contains("| running | abc_psi | 0.01 | sgd 0.01 | 0 | no epoch finished yet |"), "{table}");
    assert!(table.contains("| cli-run | abc_psi |"), "{table}");
    let ckpt = out_dir.join("checkpoint.safetensors");
    let r = dlrt(&["eval", ckpt.to_str().unwrap()]);
    assert!(r.status.success() && String::from_utf8_lossy(&r.stdout).contains("test accuracy"));
    // The run folder stands for its checkpoint.
    let by_folder = dlrt(&["eval", out_dir.to_str().unwrap()]);
    assert_eq!(String::from_utf8_lossy(&by_folder.stdout), String::from_utf8_lossy(&r.stdout));
    // The export creates the folder it is written into.
    let dense = tmp.path().join("exports").join("dense.safetensors");
    let r = dlrt(&["export", ckpt.to_str().unwrap(), "--out", dense.to_str().unwrap()]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let (tensors, _) = dlrt::io::read_safetensors(&dense).unwrap();
    assert_eq!(tensors["layers.0.weight"].0, vec![784, 500]);
    // A folder is not a file to write the dense weights to: refused before any work.
    let exports = dense.parent().unwrap();
    let r = dlrt(&["export", ckpt.to_str().unwrap(), "--out", exports.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.code() == Some(1) && err.contains("--out") && err.contains("a file"), "{err}");
    assert!(!tmp.path().join("exports.tmp").exists());

    // Resume continues the run folder.
    let before = std::fs::read(&ckpt).unwrap();
    let r = dlrt(&["train", "--resume", out, "--epochs", "2"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let after_resume = std::fs::read(&ckpt).unwrap();
    assert_ne!(before, after_resume);
    // A learning rate that overflows: a clear error naming the step.
    let nan_dir = tmp.path().join("nan-run");
    let r = dlrt(&[
        "train",
        config,
        "--epochs",
        "1",
        "--max-batches",
        "20",
        "--lr",
        "1e30",
        "--out",
        nan_dir.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("non-finite") && err.contains("step"), "{err}");
    // Unknown keys in a config are named.
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, std::fs::read_to_string(config).unwrap().replace("[train]", "[train]\nepochz = 3"))
        .unwrap();
    let r = dlrt(&["train", bad.to_str().unwrap()]);
    assert!(!r.status.success() && String::from_utf8_lossy(&r.stderr).contains("epochz"));
}

/// Every file of a run folder, by name, with its bytes.
fn folder_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

#[test]
fn a_run_that_fails_leaves_the_run_folder_as_it_was() {
    let Some(data) = common::mnist_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dlrt = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_dlrt"))
            .args(args)
            .env("DLRT_DATA", &data)
            .env_remove("RUST_BACKTRACE")
            .output()
            .expect("run dlrt");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let config = tmp.path().join("small.toml");
    std::fs::write(
        &config,
        "[model]\nhidden = [32]\nlow_rank = \"hidden\"\nrank = 4\n[integrator]\nmethod = \"abc_psi\"\ntol = 0.01\n\
         [optimizer]\nkind = \"sgd\"\nlr = 0.01\n[train]\nepochs = 2\nmax_batches = 3\ntest_subset = 200\n",
    )
    .unwrap();
    let (config, run) = (config.to_str().unwrap(), tmp.path().join("run"));
    let out = run.to_str().unwrap();
    assert_eq!(dlrt(&["train", config, "--out", out, "--quiet"]).0, Some(0));
    let before = folder_files(&run);
    assert!(before.iter().any(|(name, _)| name == "checkpoint.safetensors"), "{before:?}");
    let fails = |args: &[&str], expected: &[&str]| {
        let (code, err) = dlrt(args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(expected.iter().all(|e| err.contains(e)), "{args:?}: {err}");
        assert!(folder_files(&run) == before, "{args:?} changed the run folder");
    };
    // A new run into the folder that fails in its first epoch: at a training step, at the
    // evaluation (a dense network whose test logits overflow while its training loss is
    // finite), or a seed that TOML cannot store.
    fails(
        &["train", config, "--out", out, "--lr", "1e30"],
        &["non-finite", "step 1", "an earlier run in the folder is as it was"],
    );
    fails(&["train", config, "--out", out, "--method", "dense", "--lr", "1e8"], &["non-finite", "test loss"]);
    fails(&["train", config, "--out", out, "--seed", "9223372036854775808"], &["train.seed"]);
    // Resuming: fewer epochs than the checkpoint has done, or a config beside --resume.
    fails(&["train", "--resume", out, "--epochs", "1"], &["train.epochs", "2 epochs"]);
    fails(&["train", config, "--resume", out], &["--resume", "no config file"]);
    // Images are not written among a folder's files.
    let data_dir = data.to_str().unwrap();
    fails(
        &["write-images", "mnist", "--out", out, "--data-dir", data_dir],
        &["--out", "a new or empty folder"],
    );
    // The same run again replaces the folder's run once its first epoch ends.
    assert_eq!(dlrt(&["train", config, "--out", out, "--quiet", "--epochs", "1"]).0, Some(0));
    let jsonl = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(jsonl.lines().count(), 1, "{jsonl}");
}

#[test]
fn real_mnist_files_have_the_known_contents() {
    let Some(dir) = common::mnist_dir() else { return };
    let train = data::load(DatasetName::Mnist, Split::Train, &dir).unwrap();
    let test = data::load(DatasetName::Mnist, Split::Test, &dir).unwrap();
    assert_eq!((train.len, train.rows, train.cols, test.len), (60_000, 28, 28, 10_000));
    assert_eq!(&train.labels[..5], &[5, 0, 4, 1, 9]);
    let n = train.images.len() as f64;
    let mean = train.images.iter().map(|&x| x as f64).sum::<f64>() / n;
    let std = (train.images.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
    assert!(mean.abs() < 0.01 && (std - 1.0).abs() < 0.02, "normalised mean {mean}, std {std}");
}
