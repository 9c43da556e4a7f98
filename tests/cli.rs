//! The `dlrt` binary end to end.

mod common;

use std::process::Command;

fn dlrt(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dlrt")).args(args).output().expect("run dlrt")
}

#[test]
fn matrix_finds_the_target_rank_with_abc_psi() {
    let out = dlrt(&["matrix", "--method", "abc_psi", "--target-rank", "7", "--rank", "3", "--steps", "25"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 25);
    let (first, last) = (&rows[0], &rows[24]);
    assert_eq!(last[2], "7", "final rank: {text}");
    let loss = |row: &Vec<&str>| row[1].parse::<f64>().unwrap();
    assert!(loss(last) < 1e-6 * loss(first), "{text}");
    // abc-PSI: 2 passes, 1 QR, 1 SVD per step.
    assert_eq!(&last[3..], &["50", "25", "25"]);
}

#[test]
fn bad_arguments_fail_with_a_message_naming_the_value() {
    let out = dlrt(&["matrix", "--tau", "1.5"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tol") && err.contains("1.5"), "{err}");
    let out = dlrt(&["matrix", "--method", "svd_magic"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("abc_psi"), "lists the valid methods");
}

#[test]
#[cfg(not(feature = "cuda"))]
fn cuda_without_the_feature_is_a_clear_error() {
    let out = dlrt(&["bench", "--device", "cuda", "--steps", "1", "--warmup", "0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--features cuda"), "{err}");
}

#[test]
fn bench_prints_both_tables_and_attributes_host_time_to_the_right_methods() {
    // Gaussian batches where MNIST is absent: the table is the same shape either way.
    let args = ["bench", "--warmup", "2", "--steps", "3", "--methods", "abc_psi_one_pass,bc_psi,lora,dense"];
    let out = dlrt(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (main, parts) = text.split_once("Where a step's time goes").expect("the breakdown table");
    // | method | forward | backward | update | host QR | host SVD |
    let row = |method: &str| -> Vec<f64> {
        let line = parts
            .lines()
            .find(|l| l.starts_with(&format!("| {method} |")))
            .unwrap_or_else(|| panic!("{text}"));
        line.split('|').skip(2).filter(|c| !c.trim().is_empty()).map(|c| c.trim().parse().unwrap()).collect()
    };
    for method in ["abc_psi_one_pass", "bc_psi", "lora", "dense"] {
        assert!(main.contains(&format!("| {method} |")), "{text}");
        let r = row(method);
        assert_eq!(r.len(), 5, "{text}");
        assert!(r[..3].iter().all(|&t| t > 0.0), "forward, backward and update take time: {text}");
    }
    // Host time goes where the decompositions are: abc-PSI has both, bc-PSI QRs only, LoRA
    // and dense training none.
    let (abc, bc, lora, dense) = (row("abc_psi_one_pass"), row("bc_psi"), row("lora"), row("dense"));
    assert!(abc[3] > 0.0 && abc[4] > 0.0, "{text}");
    assert!(bc[3] > 0.0 && bc[4] == 0.0, "{text}");
    assert!(lora[3..] == [0.0, 0.0] && dense[3..] == [0.0, 0.0], "{text}");
}

#[test]
fn bench_vit_prints_a_row_per_method_and_rejects_tiny_images() {
    let args = ["bench-vit", "--image", "14", "--batch", "2", "--steps", "1", "--warmup", "0"];
    let out = dlrt(&[&args[..], &["--methods", "abc_psi,abc_psi_one_pass,lora"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (main, parts) = text.split_once("Where a step's time goes").expect("the breakdown table");
    for method in ["abc_psi", "abc_psi_one_pass", "lora"] {
        assert!(main.contains(&format!("| {method} |")), "{text}");
        assert!(parts.contains(&format!("| {method} |")), "{text}");
    }
    let lora = parts.lines().find(|l| l.starts_with("| lora |")).unwrap();
    assert!(lora.ends_with("| 0 | 0 |"), "LoRA makes no host decompositions: {text}");
    // Seeded: a second run trains to the same ranks and parameter count (all but the timings).
    let again = dlrt(&[&args[..], &["--methods", "abc_psi,abc_psi_one_pass,lora"]].concat());
    let again = String::from_utf8(again.stdout).unwrap();
    let untimed = |t: &str| -> Vec<String> {
        let rows = t.split_once("Where a step's time goes").unwrap().0.lines();
        rows.filter(|l| l.starts_with("| abc_psi"))
            .map(|l| l.split('|').skip(3).collect::<Vec<_>>().join("|"))
            .collect()
    };
    assert_eq!(untimed(&text), untimed(&again), "{text}\n{again}");
    let out = dlrt(&["bench-vit", "--image", "10"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("patch size 14"));
}

#[test]
fn bench_ops_times_every_operation_of_a_block_in_both_precisions() {
    for precision in ["f32", "bf16"] {
        let args = ["bench-ops", "--model", "vit-s14", "--image", "28", "--batch", "2", "--rank", "4"];
        let out = dlrt(&[&args[..], &["--precision", precision, "--steps", "1", "--warmup", "0"]].concat());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        let rows: Vec<&str> =
            text.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| op |")).collect();
        assert_eq!(rows.len(), 10, "{text}");
        // 28 px of patch 14: 5 tokens per image, 10 in the batch; the backbone's type where it applies.
        assert!(rows[0].contains(&format!("[10, 384]×[384, 384] {precision}")), "{text}");
        assert!(rows[3].contains("r = 4, f32") && rows[7].contains("f32"), "{text}");
        for row in &rows {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            assert!(cells[3].parse::<f64>().is_ok_and(|ms| ms > 0.0), "{row}");
            let backward = cells[4];
            assert!(backward == "—" || backward.parse::<f64>().is_ok_and(|ms| ms > 0.0), "{row}");
        }
    }
    let err = fails(&["bench-ops", "--steps", "0"]);
    assert!(err.contains("steps"), "{err}");
    let err = fails(&["bench-ops", "--model", "vit-s14", "--rank", "400"]);
    assert!(err.contains("rank") && err.contains("384"), "{err}");
}

#[test]
fn bench_vit_counts_the_batched_updates_fallbacks() {
    let args = ["bench-vit", "--image", "28", "--batch", "2", "--steps", "1", "--warmup", "1"];
    let out = Command::new(env!("CARGO_BIN_EXE_dlrt"))
        .args([&args[..], &["--methods", "abc_psi,parallel_bug,lora", "--batched-update", "on"]].concat())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    // 36 adapters, 2 steps: abc-PSI batches 2 phases per layer and step, parallel BUG 3.
    // (How many fall back depends on round-off; the counts of layer-phases do not.)
    let line = |method: &str| text.lines().find(|l| l.starts_with(&format!("{method}: "))).unwrap_or("");
    assert!(
        line("abc_psi").ends_with(" of 144 batched layer-phases took the per-layer path (all 2 steps)"),
        "{text}"
    );
    assert!(line("parallel_bug").contains(" of 216 batched layer-phases"), "{text}");
    assert!(!text.contains("\nlora: "), "LoRA's update is not batched: {text}");
}

/// Fails with exit status 1 (an error, not a panic's 101); returns stderr.
fn fails(args: &[&str]) -> String {
    let out = dlrt(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    err
}

#[test]
fn bench_times_bf16_products_and_names_them() {
    let out = dlrt(&[
        "bench",
        "--warmup",
        "0",
        "--steps",
        "1",
        "--methods",
        "abc_psi,dense",
        "--precision",
        "bf16",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.lines().next().unwrap().contains("bf16 products"), "{text}");
    assert!(text.contains("| abc_psi |") && text.contains("| dense |"), "{text}");
    let out = dlrt(&["bench", "--precision", "fp16"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--precision") && err.contains("\"bf16\""), "{err}");
}

#[test]
fn benchmark_sizes_without_work_are_errors_not_panics() {
    let err = fails(&["bench", "--steps", "0", "--methods", "dense"]);
    assert!(err.contains("steps") && err.contains("at least 1"), "{err}");
    for (flag, name) in [("--steps", "steps"), ("--batch", "batch")] {
        let err = fails(&["bench-vit", flag, "0", "--methods", "lora"]);
        assert!(err.contains(name), "{err}");
    }
    let err = fails(&["bench-vit", "--rank", "0", "--image", "14", "--batch", "1", "--methods", "lora"]);
    assert!(err.contains("rank"), "{err}");
    for args in [&["matrix", "--n", "0"][..], &["matrix", "--rank", "0"], &["matrix", "--lr", "0"]] {
        fails(args);
    }
    // Sizes that would exhaust memory, methods a benchmark cannot run: errors naming them.
    for (args, name) in [
        (&["matrix", "--n", "0"][..], "`n` = 0"),
        (&["matrix", "--m", "100000"], "`m` = 100000"),
        (&["matrix", "--steps", "0"], "`steps` = 0"),
        (&["bench-vit", "--methods", "lora,dense"], "`methods` = dense"),
        (&["bench-vit", "--batch", "100000000", "--methods", "lora"], "`batch` = 100000000"),
        (&["bench-vit", "--image", "100000", "--methods", "lora"], "`image` = 100000"),
        (&["bench-ops", "--batch", "1000000000000000000"], "`batch` = 1000000000000000000"),
        (&["bench-ops", "--image", "100000000", "--batch", "1"], "`image` = 100000000"),
        (&["bench-ops", "--batch", "4096", "--image", "448"], "3215360 tokens"),
        (&["bench-vit", "--batch", "4096", "--image", "448", "--methods", "lora"], "4198400 tokens"),
    ] {
        let err = fails(args);
        assert!(err.contains(name), "{args:?}: {err}");
    }
    // A method the command cannot run is a usage error (exit status 2) that lists the others.
    let out = dlrt(&["matrix", "--method", "dense"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(2) && err.contains("a low-rank method (abc_psi,"), "{err}");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/finetune/fashion_lora.toml");
    let err = fails(&["finetune", config, "--method", "dense"]);
    assert!(err.contains("integrator.method") && err.contains("abc_psi_one_pass"), "{err}");
    let err = fails(&["finetune", config, "--image", "100000"]);
    assert!(err.contains("backbone.image") && err.contains("2048"), "{err}");
}

#[test]
fn overrides_are_checked_like_config_keys() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/mnist_abc_psi.toml");
    let err = fails(&["train", config, "--tau", "1.5"]);
    assert!(err.contains("integrator.tol") && err.contains("1.5"), "{err}");
    let err = fails(&["train", config, "--epochs", "0"]);
    assert!(err.contains("train.epochs"), "{err}");
    // --test-fraction splits an image folder: a built-in data set has none, and a value out of
    // range is named like its key.
    let err = fails(&["train", config, "--test-fraction", "0.2"]);
    assert!(err.contains("--test-fraction") && err.contains("--data DIR"), "{err}");
    let err = fails(&["train", config, "--data", "some/folder", "--test-fraction", "1.5"]);
    assert!(err.contains("train.dataset.test_fraction") && err.contains("1.5"), "{err}");
    let out = dlrt(&["train", config, "--dataset", "mnist", "--test-fraction", "0.2"]);
    assert_eq!(out.status.code(), Some(2), "a usage error: {}", String::from_utf8_lossy(&out.stderr));
    // Counts a config file could not hold (TOML integers are i64) are refused before any work.
    let huge = "9223372036854775808";
    for flag in ["--epochs", "--max-batches", "--rank-bucket", "--warmup-steps"] {
        let err = fails(&["train", config, flag, huge]);
        assert!(err.contains(huge) && err.contains("TOML integer"), "{flag}: {err}");
    }
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/finetune/fashion_lora.toml");
    let err = fails(&["finetune", config, "--rank", "0"]);
    assert!(err.contains("backbone.rank"), "{err}");
    let err = fails(&["finetune", config, "--train-subset", "9223372036854775808"]);
    assert!(err.contains("train.train_subset") && err.contains("TOML integer"), "{err}");
    let help = String::from_utf8(dlrt(&["finetune", "--help"]).stdout).unwrap();
    for flag in ["--backbone", "--rank", "--test-subset", "--epochs", "--tau", "--lr", "--max-batches"] {
        assert!(help.contains(flag), "finetune --help lacks {flag}: {help}");
    }
}

#[test]
fn a_resumed_run_refuses_any_override_but_epochs() {
    use dlrt::checkpoint::{self, RunState};
    use dlrt::config::RunConfig;
    use dlrt::train::run::new_model;
    use rand::{rngs::StdRng, SeedableRng};
    let tmp = tempfile::tempdir().unwrap();
    let mut config = RunConfig::paper_mnist();
    (config.model.hidden, config.model.rank) = (vec![8], 2);
    let model = new_model::<dlrt::CpuBackend>(
        &config,
        ([1, 28, 28], 10),
        &mut StdRng::seed_from_u64(0),
        &Default::default(),
    )
    .unwrap();
    let labels = (0..10).map(|c| c.to_string()).collect();
    let state = RunState {
        config: config.clone(),
        epoch: 1,
        step: 10,
        counters: Default::default(),
        inputs: 784,
        image: [1, 28, 28],
        labels,
    };
    checkpoint::save(&tmp.path().join("checkpoint.safetensors"), &model, &Default::default(), &state)
        .unwrap();
    let dir = tmp.path().to_str().unwrap();
    let err = fails(&["train", "--resume", dir, "--seed", "3"]);
    assert!(err.contains("train.seed") && err.contains("only train.epochs"), "{err}");
    let empty = tempfile::tempdir().unwrap();
    let err = fails(&["train", "--resume", empty.path().to_str().unwrap()]);
    assert!(err.contains("--resume") && err.contains("holding its checkpoint.safetensors"), "{err}");
    let err = fails(&["train", "--resume", dir, "--epochs", "4", "--max-batches", "2"]);
    assert!(err.contains("train.max_batches"), "{err}");
    let metrics = std::fs::read_dir(tmp.path()).unwrap().count();
    let err = fails(&["train", "--resume", dir, "--epochs", "9223372036854775808"]);
    assert!(err.contains("train.epochs") && err.contains("TOML integer"), "{err}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), metrics, "nothing was written");
    // A resumed run stays in its folder: --out is refused rather than ignored.
    let elsewhere = tmp.path().join("elsewhere");
    let out = dlrt(&["train", "--resume", dir, "--out", elsewhere.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "a usage error: {err}");
    assert!(err.contains("--resume") && err.contains("--out"), "{err}");
    assert!(!elsewhere.exists());
    // A network trained from scratch has no base model: no peft form, which says so.
    let ckpt = tmp.path().join("checkpoint.safetensors");
    let ckpt = ckpt.to_str().unwrap();
    let err = fails(&["export", ckpt, "--format", "peft"]);
    assert!(err.contains("--format peft") && err.contains("dlrt finetune"), "{err}");
    let err = fails(&["predict", ckpt, "some.png"]);
    assert!(err.contains("some.png"), "a missing image is named: {err}");
    // Image metadata that does not fit the network's 784 inputs is refused, not trusted.
    let (tensors, mut meta) = dlrt::io::read_safetensors(std::path::Path::new(ckpt)).unwrap();
    let edited = tmp.path().join("edited.safetensors");
    for image in ["[3, 28, 28]", "[1, 28, 0]", "[0, 28, 28]", "[18446744073709551615, 1, 1]"] {
        meta.insert("image".into(), image.into());
        dlrt::io::write_safetensors(&edited, &tensors, meta.clone()).unwrap();
        let err = fails(&["predict", edited.to_str().unwrap(), "some.png"]);
        assert!(err.contains("metadata.image") && err.contains("C·H·W = 784"), "{image}: {err}");
    }
}

#[test]
fn a_closed_standard_output_does_not_stop_a_training_run() {
    let Some(data) = common::mnist_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/mnist_abc_psi.toml");
    let out = tmp.path().join("run");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dlrt"))
        .args(["train", config, "--epochs", "2", "--max-batches", "2", "--out"])
        .arg(&out)
        .arg("--data-dir")
        .arg(&data)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run dlrt");
    // `dlrt train … | head -0`: the reader is gone before the first line.
    drop(child.stdout.take());
    let result = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(!err.contains("panicked"), "{err}");
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2, "both epochs ran: {metrics}");
}

#[test]
fn report_reads_train_and_finetune_folders() {
    use dlrt::config::{FinetuneConfig, RunConfig};
    use dlrt::train::metrics::{EpochRecord, MetricsWriter};
    let tmp = tempfile::tempdir().unwrap();
    let record = |accuracy, ranks: Vec<usize>, params| EpochRecord {
        epoch: 1,
        step: 60,
        train_loss: 0.3,
        test_loss: 0.25,
        test_accuracy: accuracy,
        ranks,
        compression_low_rank: 0.9,
        compression_network: 0.99,
        params,
        wall_seconds: 12.0,
        samples_per_second: 160.0,
        passes: 60,
        qr: 0,
        svd: 0,
    };
    let vit = FinetuneConfig::paper_vit("w/model.safetensors".into(), dlrt::IntegratorKind::Lora);
    let runs = [
        ("mlp", RunConfig::paper_mnist().to_toml().unwrap(), record(0.97, vec![20, 18, 0], 50_000)),
        ("vit", vit.to_toml().unwrap(), record(0.86, vec![32; 36], 900_000)),
    ];
    let mut args = vec!["report".to_string()];
    for (name, config, rec) in runs {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.toml"), config).unwrap();
        MetricsWriter::create(&dir).append(&rec).unwrap();
        args.push(dir.to_string_lossy().into_owned());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = dlrt(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("| mlp | abc_psi | 0.01 | sgd 0.01 | 1 | 97.00 % | 97.00 % | [20, 18, 0] |"),
        "{text}"
    );
    assert!(text.contains("| vit | lora | 0.15 | adam 0.001 | 1 | 86.00 % |"), "{text}");
    assert!(text.contains("32..32 (mean 32.0 over 36) | 90.0 % / 99.0 % | 12.0 s |"), "{text}");
}

#[cfg(target_os = "linux")]
#[test]
fn a_failed_write_of_the_output_is_an_error() {
    if !std::path::Path::new("/dev/full").exists() {
        eprintln!("skipped: this system has no /dev/full");
        return;
    }
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dlrt"))
        .args(["matrix", "--steps", "1"])
        .stdout(full)
        .output()
        .expect("run dlrt");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("writing the output") && !err.contains("<stdout>"), "{err}");
}

#[test]
fn bench_lenet5_has_its_rows_and_the_convolution_table() {
    let args = ["bench", "--model", "lenet5", "--warmup", "0", "--steps", "1", "--methods", "abc_psi,dense"];
    let out = dlrt(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("LeNet-5 conv20-conv50-500-10, batch 64"), "{text}");
    let (main, conv) =
        text.split_once("One convolution's forward + backward").expect("the convolution table");
    // abc-PSI's ranks: conv1, conv2, fc1.
    let header = main.lines().find(|l| l.starts_with("| method |")).expect("header");
    let ranks = header.split('|').position(|c| c.trim() == "ranks").expect("a ranks column");
    let abc = main.lines().find(|l| l.starts_with("| abc_psi |")).expect("abc_psi row");
    assert_eq!(abc.split('|').nth(ranks).unwrap().trim().matches(',').count(), 2, "{abc}");
    assert!(main.lines().any(|l| l.starts_with("| dense |")), "{text}");
    assert_eq!(
        conv.lines().filter(|l| l.starts_with("| 3×3, 64 → 128 | 128×64×3×3 | 16×16 |")).count(),
        2,
        "{conv}"
    );
}

#[test]
fn errors_are_one_clear_message_without_a_backtrace() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nothere.safetensors");
    let toml = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/mnist_abc_psi.toml");
    let cases = [
        (missing.to_str().unwrap(), "No such file"),
        (tmp.path().to_str().unwrap(), "a folder (name the .safetensors file in it"),
        (toml, "not a safetensors file"),
    ];
    for (path, expected) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_dlrt"))
            .args(["eval", path])
            .env("RUST_BACKTRACE", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.starts_with("Error: ") && err.contains(path) && err.contains(expected), "{err}");
        // The I/O error's text is in the message already: no cause repeats it, no backtrace.
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}
