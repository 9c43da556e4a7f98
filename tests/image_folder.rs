//! Image folders (torchvision's ImageFolder layout) end to end, on folders of small PNGs the
//! tests write: the loader, each error it names a file in, `dlrt train --data` and
//! `dlrt finetune --data` from a folder, and a data set written as a folder reading back to
//! the same pixels.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use dlrt::data::folder::{self, FolderSpec};
use dlrt::data::{Dataset, MEAN, STD};
use rand::{rngs::StdRng, Rng, SeedableRng};

const CLASSES: [&str; 3] = ["checker", "horizontal", "vertical"];
const SIDE: u32 = 8;

/// An 8×8 grey image of class `c`: stripes or a checkerboard, with noise.
fn pattern(c: usize, rng: &mut StdRng) -> image::GrayImage {
    image::GrayImage::from_fn(SIDE, SIDE, |x, y| {
        let on = match c {
            0 => (x + y) % 2 == 0,
            1 => y % 2 == 0,
            _ => x % 2 == 0,
        };
        let base: i32 = if on { 200 } else { 40 };
        image::Luma([(base + rng.random_range(-30..=30)).clamp(0, 255) as u8])
    })
}

/// Writes `per_class` images of each class into `dir/<class>/NNN.png`.
fn write_classes(dir: &Path, per_class: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    for (c, name) in CLASSES.iter().enumerate() {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        for i in 0..per_class {
            pattern(c, &mut rng).save(dir.join(name).join(format!("{c}{i:03}.png"))).unwrap();
        }
    }
}

/// `root/train` (12 images per class) and `root/test` (4 per class).
fn write_folder(root: &Path) -> PathBuf {
    write_classes(&root.join("train"), 12, 1);
    write_classes(&root.join("test"), 4, 2);
    root.to_path_buf()
}

fn load(spec: &FolderSpec) -> (Dataset, Dataset, String) {
    let mut log = Vec::new();
    let (train, test) = folder::load(spec, &mut log).unwrap_or_else(|e| panic!("{e}"));
    (train, test, String::from_utf8(log).unwrap())
}

fn error(spec: &FolderSpec) -> String {
    folder::load(spec, &mut std::io::sink()).unwrap_err().to_string()
}

#[test]
fn a_train_test_folder_loads_with_sorted_classes_and_exact_pixels() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_folder(tmp.path());
    let (train, test, log) = load(&FolderSpec::new(&dir));
    assert!(log.is_empty(), "{log}");
    assert_eq!(train.classes, CLASSES.map(String::from).to_vec());
    assert_eq!((train.len, test.len), (36, 12));
    assert_eq!((train.channels, train.rows, train.cols, train.features()), (1, 8, 8, 64));
    assert_eq!(train.images.len(), 36 * 64);
    // Ordered by file name: the names start with the class index.
    assert_eq!(&train.labels[..], &[vec![0u8; 12], vec![1; 12], vec![2; 12]].concat()[..]);
    let first = image::open(dir.join("train/checker/0000.png")).unwrap().to_luma8();
    let expect: Vec<f32> = first.as_raw().iter().map(|&p| (f32::from(p) / 255.0 - MEAN) / STD).collect();
    assert_eq!(&train.images[..64], &expect[..]);

    // image_size resizes every image; an RGB image among grey ones is converted, with a note.
    let (resized, _, _) = load(&FolderSpec { image_size: Some(4), ..FolderSpec::new(&dir) });
    assert_eq!((resized.rows, resized.cols, resized.images.len()), (4, 4, 36 * 16));
    let rgb = image::RgbImage::from_pixel(8, 8, image::Rgb([10, 200, 30]));
    rgb.save(dir.join("train/vertical/9999.png")).unwrap();
    let (mixed, _, log) = load(&FolderSpec::new(&dir));
    assert_eq!((mixed.len, mixed.channels), (37, 1));
    assert!(
        log.contains("1 of 49 images") && log.contains("9999.png") && log.contains("converted to 1"),
        "{log}"
    );
}

#[test]
fn one_folder_is_split_per_class_by_the_stated_fraction_and_seed() {
    let tmp = tempfile::tempdir().unwrap();
    write_classes(tmp.path(), 8, 3);
    let spec =
        |seed| FolderSpec { test_fraction: Some(0.25), split_seed: seed, ..FolderSpec::new(tmp.path()) };
    let (train, test, _) = load(&spec(0));
    assert_eq!((train.len, test.len), (18, 6));
    assert_eq!(test.labels.iter().filter(|&&y| y == 1).count(), 2, "2 of each class's 8");
    let (again, test_again, _) = load(&spec(0));
    assert_eq!((again.images, test_again.images), (train.images.clone(), test.images.clone()));
    let (_, other, _) = load(&spec(1));
    assert_ne!(other.images, test.images, "another seed, another split");
    // JPEG files (any case of the extension) are read too; other files are not images.
    let mut rng = StdRng::seed_from_u64(4);
    pattern(1, &mut rng).save(tmp.path().join("horizontal/extra.JPEG")).unwrap();
    std::fs::write(tmp.path().join("horizontal/readme.txt"), "not an image").unwrap();
    let (train2, test2, _) = load(&spec(0));
    assert_eq!(train2.len + test2.len, 25);
    let err = error(&FolderSpec::new(tmp.path()));
    assert!(err.contains("train.dataset.test_fraction") && err.contains("no train/"), "{err}");
    let err = error(&FolderSpec { test_fraction: Some(1.5), ..FolderSpec::new(tmp.path()) });
    assert!(err.contains("test_fraction") && err.contains("1.5"), "{err}");

    // A fraction too small for a class still holds one of its images out.
    let (train3, test3, _) = load(&FolderSpec { test_fraction: Some(0.01), ..FolderSpec::new(tmp.path()) });
    assert_eq!((train3.len, test3.len), (22, 3));
    let mut per_class: Vec<u8> = test3.labels.clone();
    per_class.sort();
    assert_eq!(per_class, [0, 1, 2], "one test image of each class");
    // One image per class leaves nothing to test on; one class is no classification.
    let tiny = tempfile::tempdir().unwrap();
    write_classes(tiny.path(), 1, 5);
    let err = error(&FolderSpec { test_fraction: Some(0.5), ..FolderSpec::new(tiny.path()) });
    assert!(err.contains("test_fraction") && err.contains("one image"), "{err}");
    let single = tempfile::tempdir().unwrap();
    write_classes(tiny.path(), 4, 6);
    std::fs::rename(tiny.path().join("checker"), single.path().join("checker")).unwrap();
    let err = error(&FolderSpec { test_fraction: Some(0.5), ..FolderSpec::new(single.path()) });
    assert!(err.contains("at least two") && err.contains("checker"), "{err}");
}

#[test]
fn bad_folders_are_errors_that_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_folder(tmp.path());
    let spec = FolderSpec::new(&dir);

    // A truncated PNG and a file that is no image.
    let good = std::fs::read(dir.join("train/checker/0000.png")).unwrap();
    let cut = dir.join("train/checker/0000.png");
    std::fs::write(&cut, &good[..good.len() / 2]).unwrap();
    let err = error(&spec);
    assert!(err.contains("0000.png") && err.contains("a readable PNG or JPEG"), "{err}");
    std::fs::write(&cut, b"not an image at all").unwrap();
    assert!(error(&spec).contains("0000.png"));
    std::fs::write(&cut, &good).unwrap();

    // An empty class folder.
    std::fs::create_dir_all(dir.join("train/empty")).unwrap();
    std::fs::write(dir.join("train/empty/notes.txt"), "no images here").unwrap();
    let err = error(&spec);
    assert!(err.contains("train/empty") && err.contains("at least one .png"), "{err}");
    std::fs::remove_dir_all(dir.join("train/empty")).unwrap();

    // A test class that train does not have.
    std::fs::create_dir_all(dir.join("test/diagonal")).unwrap();
    std::fs::write(dir.join("test/diagonal/x.png"), &good).unwrap();
    let err = error(&spec);
    assert!(err.contains("test/diagonal") && err.contains("checker, horizontal, vertical"), "{err}");
    std::fs::remove_dir_all(dir.join("test/diagonal")).unwrap();

    // No test folder, no folder at all, a stated fraction with train/ and test/.
    let moved = tmp.path().join("elsewhere");
    std::fs::rename(dir.join("test"), &moved).unwrap();
    assert!(error(&spec).contains("test/"), "{}", error(&spec));
    std::fs::rename(&moved, dir.join("test")).unwrap();
    assert!(error(&FolderSpec::new(dir.join("missing"))).contains("missing"));
    let err = error(&FolderSpec { test_fraction: Some(0.2), ..spec.clone() });
    assert!(err.contains("test_fraction") && err.contains("own train/ and test/"), "{err}");
    assert!(folder::load(&spec, &mut std::io::sink()).is_ok(), "the folder is whole again");
}

#[test]
fn a_data_set_written_as_a_folder_reads_back_to_the_same_pixels() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let (len, side) = (30, 6);
    let bytes: Vec<u8> = (0..len * side * side).map(|_| rng.random()).collect();
    let make = |n: usize| Dataset {
        images: bytes[..n * side * side].iter().map(|&p| (f32::from(p) / 255.0 - MEAN) / STD).collect(),
        labels: (0..n).map(|i| (i * 7 % 3) as u8).collect(),
        len: n,
        channels: 1,
        rows: side,
        cols: side,
        classes: vec!["T-shirt/top".into(), "Trouser".into(), "Bag".into()],
    };
    let (train, test) = (make(30), make(12));
    assert_eq!(folder::write_split(&train, tmp.path(), "train").unwrap(), 30);
    assert_eq!(folder::write_split(&test, tmp.path(), "test").unwrap(), 12);
    let (back, back_test, _) = load(&FolderSpec::new(tmp.path()));
    // The folder names sort in label order; the files (named by index) in the original order.
    assert_eq!(back.classes, ["0_t-shirt-top", "1_trouser", "2_bag"]);
    assert_eq!((back.labels, back_test.labels), (train.labels, test.labels));
    assert_eq!(back.images, train.images, "bit for bit");
    assert_eq!(back_test.images, test.images, "bit for bit");
}

fn dlrt(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_dlrt")).args(args).output().expect("run dlrt");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "dlrt {args:?} failed:\n{text}");
    text
}

/// `dlrt finetune` of the tiny random ViT of tests/finetune.rs (14 px, abc-PSI, one epoch) on
/// the image folder `data`, into `dir/ft`; returns its checkpoint.
fn finetune_tiny_vit(dir: &Path, data: &str) -> PathBuf {
    let weights = common::tiny_backbone_files(dir);
    let mut cfg = dlrt::config::FinetuneConfig::paper_vit(weights, dlrt::integrators::IntegratorKind::AbcPsi);
    (cfg.backbone.rank, cfg.backbone.image, cfg.integrator.r_max) = (4, 14, Some(8));
    (cfg.train.epochs, cfg.train.batch_size, cfg.train.train_subset, cfg.train.test_subset) = (1, 8, 0, 0);
    let cfg_path = dir.join("ft.toml");
    std::fs::write(&cfg_path, cfg.to_toml().unwrap()).unwrap();
    let ft = dir.join("ft");
    dlrt(&["finetune", cfg_path.to_str().unwrap(), "--data", data, "--quiet", "--out", ft.to_str().unwrap()]);
    ft.join("checkpoint.safetensors")
}

#[test]
fn dlrt_train_and_finetune_learn_from_a_folder_and_store_its_class_names() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_folder(&tmp.path().join("images"));
    let data = data.to_str().unwrap();
    let mut cfg = dlrt::config::RunConfig::paper_mnist();
    (cfg.model.hidden, cfg.model.rank, cfg.model.init) = (vec![32], 4, dlrt::layers::Init::He);
    (cfg.train.batch_size, cfg.optimizer.lr) = (6, 0.05);
    let config = tmp.path().join("train.toml");
    std::fs::write(&config, cfg.to_toml().unwrap()).unwrap();
    let run = tmp.path().join("run");
    let args = ["train", config.to_str().unwrap(), "--data", data, "--epochs", "5", "--quiet"];
    dlrt(&[&args[..], &["--out", run.to_str().unwrap()]].concat());
    let ckpt = run.join("checkpoint.safetensors");
    let meta = dlrt::io::read_metadata(&ckpt).unwrap();
    assert_eq!(meta["labels"], r#"["checker","horizontal","vertical"]"#);
    assert_eq!(meta["inputs"], "64");
    let eval = dlrt(&["eval", ckpt.to_str().unwrap()]);
    let accuracy: f64 =
        eval.split("test accuracy ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(accuracy > 60.0, "stripes and checkerboards are easy: {eval}");
    // predict on the test files classifies them as eval does: the same accuracy.
    let files = walk(&Path::new(data).join("test"));
    let got = dlrt::train::predict::predict(&ckpt, &files, 1).unwrap();
    let hits = got.items.iter().filter(|p| p.path.parent().unwrap().ends_with(&p.top[0].0)).count();
    let predicted = format!("test accuracy {:.2} %", 100.0 * hits as f64 / files.len() as f64);
    assert!(eval.contains(&predicted), "{predicted}: {eval}");
    assert_eq!(got.pixel_values.1, [files.len(), 1, 8, 8]);
    dlrt(&["export", ckpt.to_str().unwrap()]);
    let dense = dlrt::io::read_metadata(&run.join("dense.safetensors")).unwrap();
    assert_eq!(dense["labels"], meta["labels"]);
    let resumed = dlrt(&["train", "--resume", run.to_str().unwrap(), "--epochs", "6", "--quiet"]);
    assert!(resumed.contains("after 6 epochs"), "{resumed}");

    // Fine-tuning the tiny random ViT of tests/finetune.rs from the same folder.
    let ckpt = finetune_tiny_vit(tmp.path(), data);
    let ft = ckpt.parent().unwrap();
    assert_eq!(dlrt::io::read_metadata(&ckpt).unwrap()["labels"], r#"["checker","horizontal","vertical"]"#);
    assert!(dlrt(&["eval", ckpt.to_str().unwrap()]).contains("on 12 images"));
    dlrt(&["export", ckpt.to_str().unwrap()]);
    let exported: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ft.join("merged").join("config.json")).unwrap())
            .unwrap();
    assert_eq!(exported["id2label"]["2"], "vertical");
    assert_eq!(exported["label2id"]["checker"], 0);

    // Images of another size since training: the MLP cannot take them (an error naming the
    // data set and both shapes), the ViT resizes them.
    let mut rng = StdRng::seed_from_u64(7);
    for split in ["train", "test"] {
        for entry in walk(&Path::new(data).join(split)) {
            let c = CLASSES.iter().position(|c| entry.parent().unwrap().ends_with(c)).unwrap();
            image::imageops::resize(&pattern(c, &mut rng), 10, 10, image::imageops::FilterType::Nearest)
                .save(&entry)
                .unwrap();
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_dlrt"))
        .args(["eval", run.join("checkpoint.safetensors").to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("train.dataset") && err.contains("[1, 8, 8]") && err.contains("[1, 10, 10]"),
        "{err}"
    );
    assert!(dlrt(&["eval", ckpt.to_str().unwrap()]).contains("on 12 images"));
}

#[test]
fn predict_gives_images_the_channels_and_size_training_stored_them_in() {
    // Training: grey 8×8 images. Test: the same patterns in colour at 10×10. The folder stores
    // every image as the majority does (grey) at the first training image's size (8×8), so
    // `predict` on the test files must give the model what `eval` gives it, bit for bit.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("images");
    write_classes(&root.join("train"), 12, 1);
    let mut rng = StdRng::seed_from_u64(2);
    let mut files = Vec::new();
    for (c, name) in CLASSES.iter().enumerate() {
        std::fs::create_dir_all(root.join("test").join(name)).unwrap();
        for i in 0..4 {
            let grey =
                image::imageops::resize(&pattern(c, &mut rng), 10, 10, image::imageops::FilterType::Triangle);
            let colour = image::RgbImage::from_fn(10, 10, |x, y| {
                let v = grey.get_pixel(x, y)[0];
                image::Rgb([v, v / 2, 255 - v])
            });
            let file = root.join("test").join(name).join(format!("{c}{i:03}.png"));
            colour.save(&file).unwrap();
            files.push(file);
        }
    }
    let ckpt = finetune_tiny_vit(tmp.path(), root.to_str().unwrap());
    assert_eq!(dlrt::checkpoint::adapters::stored_image(&ckpt).unwrap(), Some([1, 8, 8]));

    let (_, test, note) = load(&FolderSpec::new(&root));
    assert!(note.contains("converted to 1"), "{note}");
    // The test split is ordered by file name, as `files` is.
    let (want, _) = dlrt::data::images::rgb_batch(&test, &(0..files.len()).collect::<Vec<_>>(), 14);
    let got = dlrt::train::predict::predict(&ckpt, &files, 1).unwrap();
    assert_eq!(got.pixel_values.1, [files.len(), 3, 14, 14]);
    assert_eq!(got.pixel_values.0, want, "predict's input is eval's");
}

/// The files in the class folders of `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for class in std::fs::read_dir(dir).unwrap() {
        for file in std::fs::read_dir(class.unwrap().path()).unwrap() {
            files.push(file.unwrap().path());
        }
    }
    files
}

/// The loader's speed on 224×224 colour JPEGs (600 images, 3 classes), the size a ViT reads:
/// `cargo test --release --test image_folder -- --ignored --nocapture loader_throughput`.
#[test]
#[ignore = "a measurement, not a check: run it by name"]
fn loader_throughput() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(9);
    for split in ["train", "test"] {
        for (c, name) in CLASSES.iter().enumerate() {
            let dir = tmp.path().join(split).join(name);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..100 {
                let img = image::RgbImage::from_fn(224, 224, |x, y| {
                    let v = ((x * (c as u32 + 1) + y) % 256) as u8;
                    image::Rgb([v, v.wrapping_add(rng.random()), 255 - v])
                });
                img.save(dir.join(format!("{i:03}.jpg"))).unwrap();
            }
        }
    }
    let spec = FolderSpec::new(tmp.path());
    let mut rates = Vec::new();
    for size in [None, Some(56)] {
        for _ in 0..3 {
            let summary =
                folder::inspect(&FolderSpec { image_size: size, ..spec.clone() }, &mut std::io::sink())
                    .unwrap();
            rates.push((size, 600.0 / summary.seconds));
        }
    }
    for (size, rate) in rates {
        println!(
            "224×224 RGB JPEG, stored at {size:?} (None = as is): {rate:.0} images/s on {} threads",
            rayon::current_num_threads()
        );
    }
}
