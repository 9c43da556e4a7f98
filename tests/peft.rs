//! peft LoRA adapters in and out, against golden fixtures written by peft itself
//! (`bench/peft_roundtrip.py fixtures`, torch 2.15, with transformers 5.24 + peft 0.21 and with
//! transformers 4.57 + peft 0.17, which name the modules differently): in
//! `tests/fixtures/peft/transformers{5,4}/`, `base` is a tiny random DINOv2 as transformers saves
//! it, `lora/` a LoRA adapter that peft made on it (ranks 4 and 2 through rank_pattern, α 8 and 3,
//! lora_bias, the classifier as a module to save), `expected.safetensors` input pixels and
//! PeftModel's logits. No Python runs here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::{Tensor, TensorData};
use dlrt::checkpoint::peft::{self, ModuleNames};
use dlrt::io::{read_safetensors, FileDtype};
use dlrt::layers::AdapterTarget;
use dlrt::linalg::TruncationConfig;
use dlrt::models::{ViT, ViTClassifier};
use dlrt::CpuBackend;
use rand::{rngs::StdRng, SeedableRng};

type B = CpuBackend;

/// The files peft wrote with transformers `generation` (5 or 4).
fn fixtures_of(generation: u8) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/peft/transformers{generation}"))
}

/// transformers 5's.
fn fixtures() -> PathBuf {
    fixtures_of(5)
}

fn base_of(generation: u8) -> ViT<B> {
    let dir = fixtures_of(generation).join("base");
    ViT::load(dir.join("model.safetensors"), dir.join("config.json"), &Default::default()).unwrap()
}

fn base() -> ViT<B> {
    base_of(5)
}

/// The base of `generation` with zero adapters on `targets` and a random 10-class head.
fn classifier_of(generation: u8, targets: &[AdapterTarget]) -> ViTClassifier<B> {
    let mut rng = StdRng::seed_from_u64(1);
    ViTClassifier::new(base_of(generation), targets, 1, 10, &mut rng, &Default::default()).unwrap()
}

fn classifier(targets: &[AdapterTarget]) -> ViTClassifier<B> {
    classifier_of(5, targets)
}

/// No truncation beyond round-off: the imported ΔW is peft's.
fn exact() -> TruncationConfig {
    TruncationConfig { tol: 1e-6, absolute: false, r_min: 1, r_max: None }
}

/// peft's input pixels and logits (transformers `generation`).
fn expected() -> (Tensor<B, 4>, Vec<f32>) {
    expected_of(5)
}

fn expected_of(generation: u8) -> (Tensor<B, 4>, Vec<f32>) {
    let (t, _) = read_safetensors(&fixtures_of(generation).join("expected.safetensors")).unwrap();
    let (shape, pixels) = t["pixel_values"].clone();
    let x = Tensor::from_data(
        TensorData::new(pixels, [shape[0], shape[1], shape[2], shape[3]]),
        &Default::default(),
    );
    (x, t["logits"].1.clone())
}

fn logits(model: &ViTClassifier<B>, x: Tensor<B, 4>) -> Vec<f32> {
    model.forward(x).into_data().to_vec::<f32>().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn a_peft_adapter_imports_to_peft_s_logits() {
    for generation in [5, 4] {
        let mut model = classifier_of(generation, &AdapterTarget::DEFAULT);
        let (x, theirs) = expected_of(generation);
        let before = logits(&model, x.clone());
        assert!(max_diff(&before, &theirs) > 0.1, "the fixture's adapter and head change the logits");
        let ranks = peft::init_adapters(&fixtures_of(generation).join("lora"), &mut model, &exact()).unwrap();
        // rank_pattern gives layer 1's value rank 2, every other module r = 4.
        let want: Vec<usize> = (0..2)
            .flat_map(|i| {
                AdapterTarget::DEFAULT.map(|t| if (i, t) == (1, AdapterTarget::Value) { 2 } else { 4 })
            })
            .collect();
        assert_eq!(ranks.iter().map(|r| r.2).collect::<Vec<_>>(), want);
        // In the model's order (block, then query, key, value), not the file's (sorted by name).
        let order: Vec<_> = (0..2).flat_map(|i| AdapterTarget::DEFAULT.map(|t| (i, t))).collect();
        assert_eq!(ranks.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(), order);
        let ours = logits(&model, x);
        assert!(max_diff(&ours, &theirs) < 1e-4, "transformers {generation}: dlrt {ours:?}\npeft {theirs:?}");
    }
}

#[test]
fn the_import_is_exact_whatever_the_run_s_tolerance_within_its_rank_bounds() {
    // ϑ = 0.5 would drop directions of these adapters; the import keeps them all (the run's ϑ
    // acts from its first step on), so the model is peft's.
    let mut model = classifier(&AdapterTarget::DEFAULT);
    let (x, theirs) = expected();
    let loose = TruncationConfig { tol: 0.5, absolute: false, r_min: 1, r_max: None };
    let ranks = peft::init_adapters(&fixtures().join("lora"), &mut model, &loose).unwrap();
    let mut again = classifier(&AdapterTarget::DEFAULT);
    assert_eq!(ranks, peft::init_adapters(&fixtures().join("lora"), &mut again, &exact()).unwrap());
    assert!(max_diff(&logits(&model, x), &theirs) < 1e-4);
    // r_max still bounds the rank, keeping the SVD's leading directions: layer 1's value
    // (rank 2 in the file) stays at 2, the other modules (rank 4) go to 3.
    let mut model = classifier(&AdapterTarget::DEFAULT);
    let capped = TruncationConfig { r_max: Some(3), ..loose };
    let ranks = peft::init_adapters(&fixtures().join("lora"), &mut model, &capped).unwrap();
    let want: Vec<usize> =
        ranks.iter().map(|&(i, t, _)| if (i, t) == (1, AdapterTarget::Value) { 2 } else { 3 }).collect();
    assert_eq!(ranks.iter().map(|r| r.2).collect::<Vec<_>>(), want);
    for (_, _, l) in model.backbone.adapters() {
        let s = l.s().clone().into_data().to_vec::<f32>().unwrap();
        let r = l.rank();
        // S = diag(σ), nonincreasing: the SVD of ΔW.
        for i in 0..r {
            for j in 0..r {
                assert!(i == j || s[i * r + j] == 0.0);
            }
        }
        assert!((1..r).all(|i| s[i * r + i] <= s[(i - 1) * r + i - 1]));
    }
}

#[test]
fn the_export_has_peft_s_names_shapes_and_keys_and_reimports_exactly() {
    let mut model = classifier(&AdapterTarget::DEFAULT);
    peft::init_adapters(&fixtures().join("lora"), &mut model, &exact()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("peft");
    let labels = vec!["a".to_string(); 10];
    peft::export(
        &out,
        &model,
        &base(),
        &fixtures().join("base"),
        &labels,
        ModuleNames::Transformers5,
        FileDtype::F32,
    )
    .unwrap();

    // The tensors: the names and shapes of peft's own file (transformers 5's module names).
    let (ours, meta) = read_safetensors(&out.join(peft::WEIGHTS)).unwrap();
    let (theirs, _) = read_safetensors(&fixtures().join("lora").join(peft::WEIGHTS)).unwrap();
    let shapes = |t: &BTreeMap<String, (Vec<usize>, Vec<f32>)>| {
        t.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect::<BTreeMap<_, _>>()
    };
    assert_eq!(shapes(&ours), shapes(&theirs));
    assert_eq!(meta["labels"], serde_json::to_string(&labels).unwrap());

    // The config: every key we write is one peft writes, with its type; the scale α/r is 1.
    let read_json = |p: PathBuf| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let ours = read_json(out.join(peft::CONFIG));
    let theirs = read_json(fixtures().join("lora").join(peft::CONFIG));
    for (key, value) in ours.as_object().unwrap() {
        let Some(t) = theirs.get(key) else { panic!("peft writes no `{key}`") };
        let kind = |v: &serde_json::Value| std::mem::discriminant(v);
        assert!(
            t.is_null() || value.is_null() || kind(t) == kind(value),
            "`{key}`: ours {value}, peft's {t}"
        );
    }
    assert_eq!(ours["peft_type"], "LORA");
    assert_eq!(ours["lora_bias"], true);
    assert_eq!(ours["modules_to_save"], serde_json::json!(["classifier"]));
    assert_eq!(ours["rank_pattern"], ours["alpha_pattern"]);
    assert_eq!(ours["rank_pattern"]["dinov2.encoder.layer.1.attention.v_proj"], 2);
    assert_eq!(ours["rank_pattern"]["dinov2.encoder.layer.0.attention.q_proj"], 4);

    // Read back, the export gives the same network, with either generation's names.
    let old = tmp.path().join("peft4");
    peft::export(
        &old,
        &model,
        &base(),
        &fixtures().join("base"),
        &labels,
        ModuleNames::Transformers4,
        FileDtype::F32,
    )
    .unwrap();
    let (names, _) = read_safetensors(&old.join(peft::WEIGHTS)).unwrap();
    assert!(
        names.contains_key("base_model.model.dinov2.encoder.layer.1.attention.attention.value.lora_A.weight")
    );
    // transformers 4's names: those of the file peft 0.17 wrote with transformers 4.57.
    let mut model4 = classifier_of(4, &AdapterTarget::DEFAULT);
    peft::init_adapters(&fixtures_of(4).join("lora"), &mut model4, &exact()).unwrap();
    let out4 = tmp.path().join("peft4_of_4");
    peft::export(
        &out4,
        &model4,
        &base_of(4),
        &fixtures_of(4).join("base"),
        &labels,
        ModuleNames::Transformers4,
        FileDtype::F32,
    )
    .unwrap();
    let (ours4, _) = read_safetensors(&out4.join(peft::WEIGHTS)).unwrap();
    let (theirs4, _) = read_safetensors(&fixtures_of(4).join("lora").join(peft::WEIGHTS)).unwrap();
    assert_eq!(shapes(&ours4), shapes(&theirs4));

    let (x, _) = expected();
    for dir in [out, old] {
        let mut again = classifier(&AdapterTarget::DEFAULT);
        peft::init_adapters(&dir, &mut again, &exact()).unwrap();
        assert!(max_diff(&logits(&again, x.clone()), &logits(&model, x.clone())) < 1e-5);
    }
}

/// `--dtype bf16`: every tensor stored as BF16, each the f32 export's value rounded to nearest,
/// and the adapter read back gives the f32 adapter's logits to bf16 precision.
#[test]
fn a_bf16_export_is_the_f32_export_rounded_to_nearest() {
    let mut model = classifier(&AdapterTarget::DEFAULT);
    peft::init_adapters(&fixtures().join("lora"), &mut model, &exact()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let labels = vec!["a".to_string(); 10];
    let export = |name: &str, dtype: FileDtype| {
        let dir = tmp.path().join(name);
        peft::export(
            &dir,
            &model,
            &base(),
            &fixtures().join("base"),
            &labels,
            ModuleNames::Transformers5,
            dtype,
        )
        .unwrap();
        dir
    };
    let (f32_dir, bf16_dir) = (export("f32", FileDtype::F32), export("bf16", FileDtype::Bf16));
    let bytes = std::fs::read(bf16_dir.join(peft::WEIGHTS)).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(file.tensors().iter().all(|(_, t)| t.dtype() == safetensors::Dtype::BF16));
    let (exact_tensors, _) = read_safetensors(&f32_dir.join(peft::WEIGHTS)).unwrap();
    let (rounded, meta) = read_safetensors(&bf16_dir.join(peft::WEIGHTS)).unwrap();
    assert_eq!(meta["labels"], serde_json::to_string(&labels).unwrap());
    // Continuing it on a data set with the same number of other classes is an error.
    peft::check_labels(&bf16_dir, &labels).unwrap();
    let mut others = labels.clone();
    others[0] = "zebra".into();
    let err = peft::check_labels(&bf16_dir, &others).unwrap_err().to_string();
    assert!(
        err.contains(peft::WEIGHTS) && err.contains("metadata.labels") && err.contains(&others[0]),
        "{err}"
    );
    assert_eq!(exact_tensors.keys().collect::<Vec<_>>(), rounded.keys().collect::<Vec<_>>());
    let mut moved = 0;
    for (name, (shape, values)) in &exact_tensors {
        assert_eq!(shape, &rounded[name].0, "{name}");
        for (&f, &b) in values.iter().zip(&rounded[name].1) {
            assert_eq!(b, half::bf16::from_f32(f).to_f32(), "{name}: {f} not rounded to nearest");
            moved += usize::from(b != f);
        }
    }
    assert!(moved > 0, "no value changed: the file is not bf16");
    let config = |dir: &Path| std::fs::read_to_string(dir.join(peft::CONFIG)).unwrap();
    assert_eq!(config(&f32_dir), config(&bf16_dir));

    let (x, _) = expected();
    let mut again = classifier(&AdapterTarget::DEFAULT);
    peft::init_adapters(&bf16_dir, &mut again, &exact()).unwrap();
    let (ours, f32_logits) = (logits(&again, x.clone()), logits(&model, x));
    let scale = f32_logits.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = max_diff(&ours, &f32_logits);
    assert!(diff > 0.0 && diff < 2e-2 * scale, "bf16 adapter moved the logits by {diff} (scale {scale})");
}

#[test]
fn bad_peft_adapters_are_errors_that_name_the_file_and_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let copy = |name: &str| -> PathBuf {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for f in [peft::WEIGHTS, peft::CONFIG] {
            std::fs::copy(fixtures().join("lora").join(f), dir.join(f)).unwrap();
        }
        dir
    };
    // Adapters on query and key only: the file's value modules have nowhere to go.
    let err = peft::init_adapters(
        &copy("a"),
        &mut classifier(&[AdapterTarget::Query, AdapterTarget::Key]),
        &exact(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("adapter_model.safetensors")
            && err.contains("v_proj")
            && err.contains("backbone.targets"),
        "{err}"
    );

    // A DoRA adapter, and a config that is not peft's.
    let dir = copy("dora");
    let config = dir.join(peft::CONFIG);
    let text = std::fs::read_to_string(&config).unwrap().replace("\"use_dora\": false", "\"use_dora\": true");
    std::fs::write(&config, text).unwrap();
    let err = peft::init_adapters(&dir, &mut classifier(&AdapterTarget::DEFAULT), &exact())
        .unwrap_err()
        .to_string();
    assert!(err.contains("adapter_config.json") && err.contains("use_dora"), "{err}");
    std::fs::write(&config, "{\"peft_type\": \"IA3\", \"r\": 1, \"lora_alpha\": 1}").unwrap();
    let err = peft::init_adapters(&dir, &mut classifier(&AdapterTarget::DEFAULT), &exact())
        .unwrap_err()
        .to_string();
    assert!(err.contains("peft_type") && err.contains("IA3"), "{err}");

    // A head for another number of classes.
    let mut rng = StdRng::seed_from_u64(1);
    let mut five =
        ViTClassifier::new(base(), &AdapterTarget::DEFAULT, 1, 5, &mut rng, &Default::default()).unwrap();
    let err = peft::init_adapters(&copy("five"), &mut five, &exact()).unwrap_err().to_string();
    assert!(err.contains("classifier.weight") && err.contains("[5, 16]"), "{err}");

    // An adapter made for another backbone: its A does not fit the projection.
    let dir = copy("wide");
    let file = dir.join(peft::WEIGHTS);
    let (mut t, meta) = read_safetensors(&file).unwrap();
    let name = "base_model.model.dinov2.encoder.layer.0.attention.k_proj.lora_A.weight";
    let (shape, values) = t.remove(name).unwrap();
    t.insert(name.into(), (vec![shape[0], 2 * shape[1]], [values.clone(), values].concat()));
    dlrt::io::write_safetensors(&file, &t, meta).unwrap();
    let err = peft::init_adapters(&dir, &mut classifier(&AdapterTarget::DEFAULT), &exact())
        .unwrap_err()
        .to_string();
    assert!(err.contains(name) && err.contains("[r, 16]") && err.contains("[4, 32]"), "{err}");

    // A missing folder names the file.
    let err = peft::init_adapters(&tmp.path().join("none"), &mut five, &exact()).unwrap_err().to_string();
    assert!(err.contains("adapter_config.json"), "{err}");
}

/// `dlrt finetune --init-adapters` starts from the adapter; `dlrt export --format peft` and
/// `dlrt predict` read the checkpoint. Skips when MNIST has not been fetched.
#[test]
fn the_cli_fine_tunes_from_a_peft_adapter_and_exports_one() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    if !data.join("mnist").exists() {
        eprintln!("skipped: MNIST not fetched (dlrt fetch mnist)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let weights = fixtures().join("base/model.safetensors");
    let config = tmp.path().join("tiny.toml");
    let toml = format!(
        "[backbone]\nweights = {weights:?}\ntargets = [\"query\", \"key\", \"value\"]\nrank = 4\nimage = 28\n\
         [integrator]\nmethod = \"abc_psi\"\ntol = 0.05\n[optimizer]\nkind = \"adam\"\nlr = 0.01\n\
         [train]\ndataset = \"mnist\"\nbatch_size = 16\nepochs = 1\nseed = 0\ntrain_subset = 64\ntest_subset = 32\nmax_batches = 2\n"
    );
    std::fs::write(&config, toml).unwrap();
    let dlrt = |args: &[&std::ffi::OsStr]| {
        let out = Command::new(env!("CARGO_BIN_EXE_dlrt")).args(args).output().unwrap();
        assert!(out.status.success(), "dlrt {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let run = tmp.path().join("run");
    let lora = fixtures().join("lora");
    dlrt(&[
        "finetune".as_ref(),
        config.as_ref(),
        "--init-adapters".as_ref(),
        lora.as_ref(),
        "--out".as_ref(),
        run.as_ref(),
        "--data-dir".as_ref(),
        data.as_ref(),
        "--quiet".as_ref(),
    ]);
    let ckpt = run.join("checkpoint.safetensors");
    let stored = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(stored.contains("init_adapters"), "{stored}");
    let out = tmp.path().join("exported");
    let said = dlrt(&[
        "export".as_ref(),
        ckpt.as_ref(),
        "--format".as_ref(),
        "peft".as_ref(),
        "--out".as_ref(),
        out.as_ref(),
    ]);
    assert!(said.contains("exported"), "{said}");
    assert!(out.join(peft::WEIGHTS).exists() && out.join(peft::CONFIG).exists());

    // predict: one line per image with the top classes, and the tensors it computed them from.
    let img = tmp.path().join("grey.png");
    image::save_buffer(&img, &[128u8; 40 * 40], 40, 40, image::ColorType::L8).unwrap();
    let tensors = tmp.path().join("pred.safetensors");
    let said = dlrt(&[
        "predict".as_ref(),
        ckpt.as_ref(),
        img.as_ref(),
        img.as_ref(),
        "--top".as_ref(),
        "2".as_ref(),
        "--out".as_ref(),
        tensors.as_ref(),
    ]);
    assert_eq!(said.lines().count(), 2, "{said}");
    assert!(said.lines().all(|l| l.contains("grey.png") && l.matches('%').count() == 2), "{said}");
    let (t, _) = read_safetensors(&tensors).unwrap();
    assert_eq!(t["pixel_values"].0, vec![2, 3, 28, 28]);
    assert_eq!(t["logits"].0, vec![2, 10]);

    // A file that is no checkpoint is refused, by name.
    let out = Command::new(env!("CARGO_BIN_EXE_dlrt"))
        .args(["export".as_ref(), weights.as_os_str(), "--format".as_ref(), "peft".as_ref()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("model.safetensors")
            && err.contains("metadata.format")
            && err.contains("got pt (not a file dlrt wrote)"),
        "{err}"
    );
}

#[test]
fn rank_stabilised_lora_scales_by_alpha_over_root_r() {
    let singular_values = |dir: &Path| -> Vec<Vec<f32>> {
        let mut model = classifier(&AdapterTarget::DEFAULT);
        peft::init_adapters(dir, &mut model, &exact()).unwrap();
        let diag = |l: &dlrt::layers::LowRankLinear<B>| {
            let (r, s) = (l.rank(), l.s().clone().into_data().to_vec::<f32>().unwrap());
            (0..r).map(|i| s[i * r + i]).collect()
        };
        model.backbone.adapters().map(|(_, _, l)| diag(l)).collect()
    };
    let plain = singular_values(&fixtures().join("lora"));
    let tmp = tempfile::tempdir().unwrap();
    for f in [peft::WEIGHTS, peft::CONFIG] {
        std::fs::copy(fixtures().join("lora").join(f), tmp.path().join(f)).unwrap();
    }
    let config = tmp.path().join(peft::CONFIG);
    let text =
        std::fs::read_to_string(&config).unwrap().replace("\"use_rslora\": false", "\"use_rslora\": true");
    std::fs::write(&config, text).unwrap();
    let rs = singular_values(tmp.path());
    // α/√r over α/r is √r: 2 for the rank-4 modules, √2 for the rank-2 one.
    for (p, q) in plain.iter().zip(&rs) {
        let root_r = (p.len() as f32).sqrt();
        for (a, b) in p.iter().zip(q) {
            assert!((b / a - root_r).abs() < 1e-4, "{b} / {a} vs √r = {root_r}");
        }
    }
}
