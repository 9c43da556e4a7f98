//! Bad input gives an error that names the problem, never a panic.

mod common;

use burn::tensor::Tensor;
use common::*;
use dlrt::integrators::{BatchedUpdate, IntegratorKind};
use dlrt::linalg::TruncationConfig;
use dlrt::optim::{Optimizer, OptimizerConfig};
use dlrt::problems::MatrixProblem;
use dlrt::train::Trainer;
use dlrt::{DenseLinear, Error, LowRankLinear};
use rand::{rngs::StdRng, SeedableRng};

#[test]
fn mismatched_shapes_are_errors() {
    let mut rng = StdRng::seed_from_u64(1);
    let (u, v) = (orthonormal(6, 2, &mut rng), orthonormal(4, 2, &mut rng));
    let err = LowRankLinear::from_factors(u.clone(), gaussian(3, 2, &mut rng), v.clone(), None).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }) && err.to_string().contains("[2, 2]"), "{err}");
    let bias = Tensor::zeros([6], &Default::default());
    let err =
        LowRankLinear::from_factors(u.clone(), gaussian(2, 2, &mut rng), v.clone(), Some(bias)).unwrap_err();
    assert!(err.to_string().contains("bias"), "{err}");
    let mut layer = LowRankLinear::from_factors(u, gaussian(2, 2, &mut rng), v, None).unwrap();
    let err = layer
        .set_factors(orthonormal(7, 2, &mut rng), gaussian(2, 2, &mut rng), orthonormal(4, 2, &mut rng))
        .unwrap_err();
    assert!(err.to_string().contains("6×4"), "n×m of a layer is fixed: {err}");
    let err =
        DenseLinear::from_weights(gaussian(3, 4, &mut rng), Some(Tensor::zeros([3], &Default::default())))
            .unwrap_err();
    assert!(err.to_string().contains("bias"), "{err}");
    let err = LowRankLinear::<B>::random(5, 4, 0, false, 1.0, &mut rng, &Default::default()).unwrap_err();
    assert!(err.to_string().contains("rank"), "{err}");
}

#[test]
fn tolerance_outside_zero_one_and_inverted_rank_bounds_are_errors() {
    for tol in [0.0, 1.0, 1.5, -0.1, f64::NAN] {
        let err = IntegratorKind::AbcPsi
            .build::<B>(&TruncationConfig::relative(tol), BatchedUpdate::Auto)
            .err()
            .expect("error");
        assert!(matches!(&err, Error::InvalidConfig { field, .. } if field == "tol"), "{err}");
    }
    let err = IntegratorKind::Bug
        .build::<B>(&TruncationConfig::relative(0.1).with_bounds(10, Some(5)), BatchedUpdate::Auto)
        .err()
        .expect("error");
    assert!(err.to_string().contains("r_max") && err.to_string().contains("r_min = 10"), "{err}");
    let err = toml::from_str::<TruncationConfig>("tol = 0.1\ntau = 0.2").unwrap_err();
    assert!(err.to_string().contains("tau"), "unknown keys are named: {err}");
    let err = Optimizer::new(OptimizerConfig::adamw(-1.0), 0.1).unwrap_err();
    assert!(err.to_string().contains("weight_decay"), "{err}");
}

#[test]
fn nan_in_a_factor_or_base_is_an_error() {
    let mut rng = StdRng::seed_from_u64(2);
    let mut s = vec![1.0, 0.0, 0.0, 1.0];
    s[1] = f64::NAN;
    let s: T2 = Tensor::<B, 1>::from_floats(s.as_slice(), &Default::default()).reshape([2, 2]);
    let err = LowRankLinear::from_factors(orthonormal(5, 2, &mut rng), s, orthonormal(4, 2, &mut rng), None)
        .unwrap_err();
    assert!(matches!(err, Error::NonFinite { .. }), "{err}");
    let mut u = orthonormal(5, 2, &mut rng).into_data().to_vec::<f64>().unwrap();
    u[3] = f64::INFINITY;
    let u: T2 = Tensor::<B, 1>::from_floats(u.as_slice(), &Default::default()).reshape([5, 2]);
    let err = LowRankLinear::from_factors(u, eye(2), orthonormal(4, 2, &mut rng), None).unwrap_err();
    assert!(err.to_string().contains("factor U"), "{err}");
    let base = gaussian(5, 4, &mut rng).div_scalar(0.0);
    assert!(LowRankLinear::adapter(base, 2, None, &mut rng).is_err());
}

#[test]
fn nan_loss_stops_the_step_and_leaves_the_layer_usable() {
    let mut rng = StdRng::seed_from_u64(3);
    let layer = LowRankLinear::random(8, 6, 2, true, 1.0, &mut rng, &Default::default()).unwrap();
    let mut p = MatrixProblem::new(layer);
    let good = gaussian(8, 6, &mut rng);
    let bad = good.clone().div_scalar(0.0);
    for kind in IntegratorKind::ALL.into_iter().filter(|k| *k != IntegratorKind::Dense) {
        let mut integ =
            Trainer::<B>::new(kind, &TruncationConfig::relative(0.01), Optimizer::sgd(0.1)).unwrap();
        let before = p.layer.to_dense();
        let err = integ.step(&mut p, |p| p.least_squares(&bad)).unwrap_err();
        assert!(matches!(&err, Error::NonFinite { context } if context.contains("loss")), "{kind}: {err}");
        assert_eq!(fro(p.layer.to_dense() - before), 0.0, "{kind}: a NaN loss changed the layer");
        // The next step with a finite loss works.
        integ.step(&mut p, |p| p.least_squares(&good)).unwrap();
    }
}

#[test]
fn an_overflowing_step_is_an_error_not_a_panic() {
    let mut rng = StdRng::seed_from_u64(4);
    let a = gaussian(10, 8, &mut rng);
    for kind in IntegratorKind::ALL.into_iter().filter(|k| *k != IntegratorKind::Dense) {
        let layer =
            LowRankLinear::random(10, 8, 3, false, 1.0, &mut StdRng::seed_from_u64(5), &Default::default())
                .unwrap();
        let mut p = MatrixProblem::new(layer);
        let mut integ =
            Trainer::<B>::new(kind, &TruncationConfig::relative(0.01), Optimizer::sgd(1e308)).unwrap();
        integ.prepare(&mut p).unwrap();
        let result = integ
            .step(&mut p, |p| p.least_squares(&a))
            .and_then(|_| integ.step(&mut p, |p| p.least_squares(&a)));
        let err = result.err().unwrap_or_else(|| panic!("{kind}: λ = 1e308 gave no error"));
        assert!(matches!(err, Error::NonFinite { .. }), "{kind}: {err}");
    }
}

#[test]
fn dense_training_refuses_low_rank_layers() {
    let mut rng = StdRng::seed_from_u64(6);
    let layer = LowRankLinear::random(6, 5, 2, false, 1.0, &mut rng, &Default::default()).unwrap();
    let mut p = MatrixProblem::new(layer);
    assert!(IntegratorKind::Dense
        .build::<B>(&TruncationConfig::default(), BatchedUpdate::Auto)
        .unwrap()
        .is_none());
    let integ =
        Trainer::<B>::new(IntegratorKind::Dense, &TruncationConfig::default(), Optimizer::sgd(0.1)).unwrap();
    let err = integ.prepare(&mut p).unwrap_err();
    assert!(err.to_string().contains("dense layers"), "{err}");
}

/// A full disk while checkpointing: the write of `checkpoint.safetensors.tmp` fails (a link
/// to /dev/full, which answers every write with ENOSPC). The error names that file and the
/// cause, the last good checkpoint is untouched and still loads, and the next save succeeds.
#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_while_checkpointing_keeps_the_last_checkpoint() {
    use dlrt::checkpoint::{self, RunState};
    use dlrt::config::RunConfig;
    use dlrt::train::run::new_model;
    if !std::path::Path::new("/dev/full").exists() {
        eprintln!("skipped: this system has no /dev/full to fill the disk with");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("checkpoint.safetensors");
    let mut config = RunConfig::paper_mnist();
    (config.model.hidden, config.model.rank) = (vec![8], 2);
    let model =
        new_model::<B>(&config, ([1, 28, 28], 10), &mut StdRng::seed_from_u64(7), &Default::default())
            .unwrap();
    let state = |epoch| RunState {
        config: config.clone(),
        epoch,
        step: 10 * epoch as u64,
        counters: Default::default(),
        inputs: 784,
        image: [1, 28, 28],
        labels: (0..10).map(|c| c.to_string()).collect(),
    };
    let train_state = Default::default();
    checkpoint::save(&path, &model, &train_state, &state(1)).unwrap();
    let good = std::fs::read(&path).unwrap();

    let pending = tmp.path().join("checkpoint.safetensors.tmp");
    std::os::unix::fs::symlink("/dev/full", &pending).unwrap();
    let err = checkpoint::save(&path, &model, &train_state, &state(2)).unwrap_err().to_string();
    assert!(err.contains("checkpoint.safetensors.tmp"), "names the file: {err}");
    assert!(err.contains("No space left"), "names the cause: {err}");
    assert_eq!(std::fs::read(&path).unwrap(), good, "the last checkpoint changed");
    assert!(std::fs::symlink_metadata(&pending).is_err(), "the failed temporary file was left behind");
    let (_, _, restored) = checkpoint::load::<B>(&path, &Default::default()).unwrap();
    assert_eq!(restored.epoch, 1);

    checkpoint::save(&path, &model, &train_state, &state(2)).unwrap();
    assert_eq!(checkpoint::load::<B>(&path, &Default::default()).unwrap().2.epoch, 2);
}

#[test]
fn a_folder_given_for_a_file_and_a_file_for_a_folder_are_named_as_such() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.json");
    let err = dlrt::models::ViT::<B>::load(tmp.path(), &config, &Default::default())
        .map(|_| ())
        .expect_err("an error");
    assert!(err.to_string().contains("a folder, not a file: the backbone's weights"), "{err}");
    let missing = tmp.path().join("model.safetensors");
    let err = dlrt::models::ViT::<B>::load(&missing, &config, &Default::default())
        .map(|_| ())
        .expect_err("an error");
    assert!(err.to_string().contains("no such file: the backbone's weights"), "{err}");
    let file = tmp.path().join("digit.png");
    std::fs::write(&file, b"not a folder").unwrap();
    let spec = dlrt::data::folder::FolderSpec::new(&file);
    let err =
        dlrt::data::folder::load(&spec, &mut std::io::sink()).map(|_| ()).expect_err("an error").to_string();
    assert!(err.contains("train.dataset.path") && err.contains("got a file"), "{err}");
    let spec = dlrt::data::folder::FolderSpec::new(tmp.path().join("nowhere"));
    let err =
        dlrt::data::folder::load(&spec, &mut std::io::sink()).map(|_| ()).expect_err("an error").to_string();
    assert!(err.contains("no such folder"), "{err}");
}
