//! LeNet-5 (`[model] kind = "lenet5"`) end to end on the real MNIST files: it learns, a run
//! resumed from its checkpoint equals an uninterrupted one, and a checkpoint whose shapes do
//! not fit the network is an error naming the tensor. Skips with a printed reason when MNIST
//! has not been fetched (`dlrt fetch mnist`; CI fetches it).

mod common;

use std::path::Path;

use dlrt::checkpoint;
use dlrt::config::{ModelKind, RunConfig, Schedule};
use dlrt::integrators::IntegratorKind;
use dlrt::train::fit::{checkpoint_path, RunOptions};
use dlrt::train::run::run;
use dlrt::TrainBackend;

/// The shipped preset, cut to `epochs` epochs of 12 batches on 1 000 images, at a constant λ
/// (a cosine schedule spans the whole run, so one epoch of a 1-epoch run would not be the
/// first epoch of a 2-epoch run).
fn short(method: IntegratorKind, epochs: usize) -> RunConfig {
    let mut cfg = RunConfig::lenet5_with(method);
    cfg.optimizer.schedule = Schedule::Constant;
    assert_eq!(cfg.model.kind, ModelKind::LeNet5);
    (cfg.train.epochs, cfg.train.max_batches) = (epochs, 12);
    (cfg.train.train_subset, cfg.train.test_subset) = (1000, 500);
    cfg
}

fn opts(run_dir: &Path, data: &Path, resume: bool) -> RunOptions {
    RunOptions { run_dir: run_dir.to_path_buf(), data_dir: data.to_path_buf(), resume, progress: false }
}

#[test]
fn lenet5_learns_and_resumes_bit_for_bit() {
    let Some(data) = common::mnist_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let device = Default::default();
    // PSI stores S = Rᵀ, a transposed view, which a resumed run reads back row-major: the
    // factors are stored row-major for that.
    for method in [IntegratorKind::AbcPsi, IntegratorKind::Psi, IntegratorKind::Dense] {
        let cfg = short(method, 2);
        let whole = tmp.path().join(format!("{method}-whole"));
        let full = run::<TrainBackend>(&cfg, &opts(&whole, &data, false), &device).unwrap();
        let parts = tmp.path().join(format!("{method}-parts"));
        run::<TrainBackend>(&short(method, 1), &opts(&parts, &data, false), &device).unwrap();
        let resumed = run::<TrainBackend>(&cfg, &opts(&parts, &data, true), &device).unwrap();
        for (a, b) in full.iter().zip(&resumed) {
            assert_eq!(
                (a.test_loss, a.test_accuracy, &a.ranks, a.step),
                (b.test_loss, b.test_accuracy, &b.ranks, b.step),
                "{method}: epoch {}",
                a.epoch
            );
        }
        // 24 steps of SGD: far from trained, far above chance (10 %).
        assert!(full[1].test_accuracy > 0.5, "{method} learned nothing: {:?}", full[1]);
        let ranks = &full[1].ranks;
        match method {
            IntegratorKind::Dense => assert!(ranks.is_empty()),
            _ => assert_eq!(ranks.len(), 3, "conv1, conv2 and fc1 are low-rank"),
        }
        let (model, _, state) = checkpoint::load::<TrainBackend>(&checkpoint_path(&whole), &device).unwrap();
        assert_eq!((&model.ranks(), state.image), (ranks, [1, 28, 28]));
    }
}

#[test]
fn a_checkpoint_that_does_not_fit_lenet5_is_an_error_naming_the_tensor() {
    let Some(data) = common::mnist_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = short(IntegratorKind::AbcPsi, 1);
    cfg.train.max_batches = 2;
    let dir = tmp.path().join("run");
    run::<TrainBackend>(&cfg, &opts(&dir, &data, false), &Default::default()).unwrap();
    let (tensors, meta) = dlrt::io::read_safetensors(&checkpoint_path(&dir)).unwrap();
    // conv2's U is 500×r (C_in·k·k = 20·5·5); a 3×3 kernel's would be 180×r.
    let mut wrong = tensors.clone();
    let (shape, values) = wrong.get_mut("layers.1.u").unwrap();
    let r = shape[1];
    *shape = vec![180, r];
    values.truncate(180 * r);
    let bad = tmp.path().join("bad.safetensors");
    dlrt::io::write_safetensors(&bad, &wrong, meta.clone()).unwrap();
    let err = checkpoint::load::<TrainBackend>(&bad, &Default::default()).unwrap_err().to_string();
    assert!(err.contains("layers.1.u") && err.contains("[500, r]"), "{err}");
    // An image shape that is not the stored input width, then images too small for LeNet-5
    // (the stored shape is what the layers are sized from).
    let mut meta = meta;
    meta.insert("image".into(), "[1, 12, 12]".into());
    dlrt::io::write_safetensors(&bad, &tensors, meta.clone()).unwrap();
    let err = checkpoint::load::<TrainBackend>(&bad, &Default::default()).unwrap_err().to_string();
    assert!(err.contains("metadata.image") && err.contains("C·H·W = 784"), "{err}");
    meta.insert("inputs".into(), "144".into());
    dlrt::io::write_safetensors(&bad, &tensors, meta).unwrap();
    let err = checkpoint::load::<TrainBackend>(&bad, &Default::default()).unwrap_err().to_string();
    assert!(err.contains("bad.safetensors") && err.contains("metadata.image"), "the file is named: {err}");
    assert!(err.contains("LeNet-5 images") && err.contains("16 to 256 pixels"), "{err}");
    // A dense export says how its convolutions' kernels are laid out.
    let dense = tmp.path().join("dense.safetensors");
    let format = checkpoint::ExportFormat::Dense;
    checkpoint::export(&checkpoint_path(&dir), Some(dense.clone()), format, dlrt::io::FileDtype::F32)
        .unwrap();
    let (tensors, meta) = dlrt::io::read_safetensors(&dense).unwrap();
    assert_eq!(
        (&tensors["layers.0.weight"].0, &tensors["layers.1.weight"].0),
        (&vec![25, 20], &vec![500, 50])
    );
    assert!(meta["orientation"].contains("W[c·k_h·k_w + i·k_w + j, o] = kernel[o, c, i, j]"), "{meta:?}");
}
