//! The real MNIST and Fashion-MNIST files: pinned hashes, sizes, first labels, class counts
//! and the normalisation. Each test skips with a printed reason when its data set has not
//! been fetched (`dlrt fetch mnist`, `dlrt fetch fashion-mnist`); files that are present but
//! wrong fail.

use std::path::{Path, PathBuf};

use dlrt::data::{self, fetch, Dataset, DatasetName, Split};

/// `$DLRT_DATA`, else `data/` at the crate root; `None` (after saying why) if `name` is absent.
fn data_dir(name: DatasetName) -> Option<PathBuf> {
    let dir = std::env::var_os("DLRT_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("data"));
    let p = fetch::paths(name, &dir);
    let missing: Vec<_> = [&p.train_images, &p.train_labels, &p.test_images, &p.test_labels]
        .into_iter()
        .filter(|f| !f.exists())
        .collect();
    if missing.is_empty() {
        return Some(dir);
    }
    eprintln!("skipping: {name} not fetched ({} absent); run `dlrt fetch {name}`", missing[0].display());
    None
}

fn class_counts(d: &Dataset) -> [usize; 10] {
    let mut counts = [0; 10];
    d.labels.iter().for_each(|&l| counts[l as usize] += 1);
    counts
}

/// Mean and standard deviation of all pixels, accumulated in f64.
fn moments(d: &Dataset) -> (f64, f64) {
    let n = d.images.len() as f64;
    let mean = d.images.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = d.images.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[test]
fn mnist_matches_the_published_files() {
    let Some(dir) = data_dir(DatasetName::Mnist) else { return };
    fetch::verify(DatasetName::Mnist, &dir).unwrap();
    let train = data::load(DatasetName::Mnist, Split::Train, &dir).unwrap();
    let test = data::load(DatasetName::Mnist, Split::Test, &dir).unwrap();
    for (d, len) in [(&train, 60_000), (&test, 10_000)] {
        assert_eq!((d.len, d.rows, d.cols), (len, 28, 28));
        assert_eq!((d.images.len(), d.labels.len()), (len * 784, len));
    }
    assert_eq!(train.labels[..5], [5, 0, 4, 1, 9]);
    assert_eq!(test.labels[..5], [7, 2, 1, 0, 4]);
    assert_eq!(class_counts(&train), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]);
    assert_eq!(class_counts(&test), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]);
    // The normalisation constants are MNIST's own moments.
    let (mean, std) = moments(&train);
    assert!(mean.abs() < 0.01 && (std - 1.0).abs() < 0.02, "mean {mean}, std {std}");
    // Pixel bytes 0 and 255 both occur, so the normalised range is exactly this.
    let (lo, hi) = train.images.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    assert_eq!((lo, hi), (-data::MEAN / data::STD, (1.0 - data::MEAN) / data::STD));
}

#[test]
fn fashion_mnist_matches_the_published_files() {
    let Some(dir) = data_dir(DatasetName::FashionMnist) else { return };
    fetch::verify(DatasetName::FashionMnist, &dir).unwrap();
    let train = data::load(DatasetName::FashionMnist, Split::Train, &dir).unwrap();
    let test = data::load(DatasetName::FashionMnist, Split::Test, &dir).unwrap();
    for (d, len) in [(&train, 60_000), (&test, 10_000)] {
        assert_eq!((d.len, d.rows, d.cols), (len, 28, 28));
        assert_eq!(class_counts(d), [len / 10; 10]);
    }
    assert_eq!(train.labels[..5], [9, 0, 0, 3, 0]);
    assert_eq!(test.labels[..5], [9, 2, 1, 1, 6]);
    // Normalised with MNIST's constants, so only finite and roughly centred.
    let (mean, std) = moments(&train);
    assert!(mean.is_finite() && mean.abs() < 1.0 && std > 0.5, "mean {mean}, std {std}");
}
