//! Image folders in torchvision's ImageFolder layout, read as a [`Dataset`].
//!
//! Two layouts:
//! - `DIR/train/<class>/*.png|jpg|jpeg` and `DIR/test/<class>/…` (a class of `test/` must be
//!   one of `train/`);
//! - `DIR/<class>/…`, split into train and test per class: `test_fraction` of each class's
//!   images (rounded) go to the test split, chosen by a shuffle seeded with `split_seed`.
//!
//! Classes are the sorted folder names (label i is the i-th name). Within a split the images
//! are ordered by file name, then class, so a folder written by [`write_split`] (files named by
//! their index) holds the images in the order of the IDX files it came from.
//!
//! Pixels: grey images stay one channel, colour images are three (alpha is dropped); when a
//! folder mixes them, every image is converted to the majority's channel count (ties: the
//! first image's) and a note says how many were converted. Every image is resized bilinearly
//! ([`super::images::resize_to`]) to the stored size: `image_size`×`image_size` if given, else
//! the size of the first training image; an image already of that size is not resampled. Each
//! channel is normalised like the built-in data sets, `(x/255 − 0.1307) / 0.3081`, so an
//! 8-bit PNG of an MNIST image gives exactly the values of the IDX file. Decoding runs on all
//! cores (rayon).

use std::io::Write;
use std::path::{Path, PathBuf};

use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{images::resize_to, Dataset, MEAN, STD};
use crate::{Error, Result};

/// An image folder and how to read it: `dataset = { path = "DIR", … }` in a `[train]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FolderSpec {
    /// The folder: `train/` and `test/` of class folders, or class folders to split.
    pub path: PathBuf,
    /// Share of each class that goes to the test split when the folder has no `train/`, in
    /// (0, 1); must be absent when it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_fraction: Option<f64>,
    /// Seed of the train/test split (with `test_fraction`).
    #[serde(default)]
    pub split_seed: u64,
    /// Side of the stored square images (default: the first training image's size, kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<usize>,
}

impl FolderSpec {
    /// A folder with the defaults: its own `train/` and `test/`, images kept at their size.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), test_fraction: None, split_seed: 0, image_size: None }
    }

    /// Checks the values (names the key under `train.dataset`).
    pub fn validate(&self) -> Result<()> {
        if let Some(f) = self.test_fraction {
            if !(f > 0.0 && f < 1.0) {
                return Err(Error::config("train.dataset.test_fraction", f, "a fraction in (0, 1)"));
            }
        }
        if let Some(side) = self.image_size.filter(|&s| s == 0 || s > super::MAX_IMAGE_SIDE) {
            let expected = format!("a side from 1 to {} pixels", super::MAX_IMAGE_SIDE);
            return Err(Error::config("train.dataset.image_size", side, &expected));
        }
        Ok(())
    }
}

/// The image extensions read (case-insensitive).
pub const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// The class folders of `dir`, sorted by name.
fn class_dirs(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_dir() {
            out.push((path.file_name().unwrap_or_default().to_string_lossy().into_owned(), path));
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(Error::bad_file(dir, "class folders", "one folder of images per class", "none"));
    }
    Ok(out)
}

/// The images of one class folder, sorted by file name; an empty folder is an error.
fn images_in(class_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(class_dir).map_err(|e| Error::io(class_dir, e))? {
        let path = entry.map_err(|e| Error::io(class_dir, e))?.path();
        let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase());
        if path.is_file() && ext.is_some_and(|e| EXTENSIONS.contains(&e.as_str())) {
            out.push(path);
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(Error::bad_file(
            class_dir,
            "class folder",
            "at least one .png, .jpg or .jpeg image",
            "none",
        ));
    }
    Ok(out)
}

/// One labelled image file.
type Sample = (PathBuf, u8);

/// Label of class index `i` (labels are bytes: at most 256 classes).
fn label(i: usize, dir: &Path) -> Result<u8> {
    u8::try_from(i).map_err(|_| Error::bad_file(dir, "class folders", "at most 256 classes", "more"))
}

/// The class names and the train and test samples of `spec`'s folder.
fn list(spec: &FolderSpec) -> Result<(Vec<String>, Vec<Sample>, Vec<Sample>)> {
    let dir = &spec.path;
    if !dir.is_dir() {
        return Err(Error::bad_file(
            dir,
            "train.dataset.path",
            "a folder of class folders",
            if dir.is_file() { "a file" } else { "no such folder" },
        ));
    }
    let (train_dir, test_dir) = (dir.join("train"), dir.join("test"));
    let (mut train, mut test) = (Vec::new(), Vec::new());
    let classes: Vec<String>;
    if train_dir.is_dir() {
        if let Some(f) = spec.test_fraction {
            let why = format!("absent: {} has its own train/ and test/ folders", dir.display());
            return Err(Error::config("train.dataset.test_fraction", f, &why));
        }
        if !test_dir.is_dir() {
            return Err(Error::bad_file(dir, "test/", "a test/ folder next to train/", "none"));
        }
        let train_classes = class_dirs(&train_dir)?;
        for (i, (_, path)) in train_classes.iter().enumerate() {
            let y = label(i, &train_dir)?;
            train.extend(images_in(path)?.into_iter().map(|p| (p, y)));
        }
        classes = train_classes.into_iter().map(|(name, _)| name).collect();
        for (name, path) in class_dirs(&test_dir)? {
            let Some(i) = classes.iter().position(|c| *c == name) else {
                let expected = format!("a class of train/ ({})", classes.join(", "));
                return Err(Error::bad_file(&path, "class", expected, "a class that train/ does not have"));
            };
            test.extend(images_in(&path)?.into_iter().map(|p| (p, i as u8)));
        }
    } else {
        let Some(fraction) = spec.test_fraction else {
            let why = format!(
                "a fraction in (0, 1) (or --test-fraction F): {} has no train/ folder, so its class \
                 folders are split into train and test",
                dir.display()
            );
            return Err(Error::config("train.dataset.test_fraction", "none", &why));
        };
        let class_list = class_dirs(dir)?;
        let mut rng = StdRng::seed_from_u64(spec.split_seed);
        for (i, (_, path)) in class_list.iter().enumerate() {
            let y = label(i, dir)?;
            let mut files = images_in(path)?;
            files.shuffle(&mut rng);
            // At least one test image per class, and one training image.
            let n_test = ((files.len() as f64 * fraction).round() as usize).max(1).min(files.len() - 1);
            test.extend(files.drain(..n_test).map(|p| (p, y)));
            train.extend(files.into_iter().map(|p| (p, y)));
        }
        classes = class_list.into_iter().map(|(name, _)| name).collect();
        if test.is_empty() {
            let why = "a split with test images: every class folder holds one image, which it trains on";
            return Err(Error::config("train.dataset.test_fraction", fraction, why));
        }
    }
    if classes.len() < 2 {
        let got = format!("one, {:?}", classes[0]);
        return Err(Error::bad_file(dir, "class folders", "at least two (one per class)", got));
    }
    let by_name = |a: &Sample, b: &Sample| (a.0.file_name(), a.1).cmp(&(b.0.file_name(), b.1));
    train.sort_by(by_name);
    test.sort_by(by_name);
    Ok((classes, train, test))
}

/// A decoded image: 8-bit, `channels` planes interleaved (as the `image` crate stores them).
struct Decoded {
    channels: usize,
    rows: usize,
    cols: usize,
    bytes: Vec<u8>,
}

fn decode(path: &Path) -> Result<Decoded> {
    let bad =
        |e: &dyn std::fmt::Display| Error::bad_file(path, "image", "a readable PNG or JPEG", e.to_string());
    let img = image::io::Reader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .decode()
        .map_err(|e| bad(&e))?;
    let (cols, rows) = (img.width() as usize, img.height() as usize);
    if img.color().has_color() {
        Ok(Decoded { channels: 3, rows, cols, bytes: img.to_rgb8().into_raw() })
    } else {
        Ok(Decoded { channels: 1, rows, cols, bytes: img.to_luma8().into_raw() })
    }
}

/// `img` with `channels` channels: grey copied to R, G and B, or colour to its luma.
fn convert(img: Decoded, channels: usize) -> Decoded {
    if img.channels == channels {
        return img;
    }
    let (w, h) = (img.cols as u32, img.rows as u32);
    let bytes = match channels {
        3 => img.bytes.iter().flat_map(|&g| [g, g, g]).collect(),
        _ => image::RgbImage::from_raw(w, h, img.bytes)
            .map(|rgb| image::DynamicImage::ImageRgb8(rgb).to_luma8().into_raw())
            .unwrap_or_default(),
    };
    Decoded { channels, bytes, ..img }
}

/// Normalised `[channels, rows, cols]` pixels of `img`, resized to `rows`×`cols`.
fn pixels(img: &Decoded, rows: usize, cols: usize) -> Vec<f32> {
    let c = img.channels;
    let mut out = Vec::with_capacity(c * rows * cols);
    for ch in 0..c {
        let plane = img.bytes.iter().skip(ch).step_by(c);
        if (img.rows, img.cols) == (rows, cols) {
            // The same expression as `data::load`, so 8-bit PNGs give the IDX values exactly.
            out.extend(plane.map(|&p| (f32::from(p) / 255.0 - MEAN) / STD));
        } else {
            let unit: Vec<f32> = plane.map(|&p| f32::from(p) / 255.0).collect();
            out.extend(resize_to(&unit, img.rows, img.cols, rows, cols).iter().map(|&p| (p - MEAN) / STD));
        }
    }
    out
}

/// Decodes `samples` on all cores into `[len, channels·rows·cols]` normalised pixels.
fn decode_all(samples: &[Sample]) -> Result<Vec<Decoded>> {
    samples.par_iter().map(|(path, _)| decode(path)).collect()
}

/// Reads the train and test splits of the image folder `spec` (see the module doc); notes on
/// converted images go to `log`.
pub fn load(spec: &FolderSpec, log: &mut dyn Write) -> Result<(Dataset, Dataset)> {
    spec.validate()?;
    let (classes, train, test) = list(spec)?;
    let (train_img, test_img) = (decode_all(&train)?, decode_all(&test)?);
    let all = || train_img.iter().chain(&test_img);
    let grey = all().filter(|d| d.channels == 1).count();
    let colour = all().count() - grey;
    let first = train_img.first().map_or(1, |d| d.channels);
    let channels = match grey.cmp(&colour) {
        std::cmp::Ordering::Greater => 1,
        std::cmp::Ordering::Less => 3,
        std::cmp::Ordering::Equal => first,
    };
    let minority = grey.min(colour);
    if minority > 0 {
        let (other, example) = all()
            .zip(train.iter().chain(&test))
            .find(|(d, _)| d.channels != channels)
            .map(|(d, s)| (d.channels, s.0.display().to_string()))
            .unwrap_or_default();
        let _ = writeln!(
            log,
            "note: {minority} of {} images in {} have {other} channel(s) (e.g. {example}); converted to {channels}, the majority",
            grey + colour,
            spec.path.display()
        );
    }
    let (rows, cols) = match (spec.image_size, train_img.first()) {
        (Some(s), _) => (s, s),
        (None, Some(d)) => (d.rows, d.cols),
        (None, None) => (1, 1),
    };
    let build = |imgs: Vec<Decoded>, samples: &[Sample]| -> Dataset {
        let planes: Vec<Vec<f32>> =
            imgs.into_par_iter().map(|d| pixels(&convert(d, channels), rows, cols)).collect();
        Dataset {
            images: planes.concat(),
            labels: samples.iter().map(|s| s.1).collect(),
            len: samples.len(),
            channels,
            rows,
            cols,
            classes: classes.clone(),
        }
    };
    Ok((build(train_img, &train), build(test_img, &test)))
}

/// The image files `paths` as a data set of one split without labels (all 0, no classes),
/// pixels as [`load`] stores them: with `channels` (1 or 3; grey copied to R, G and B, colour
/// to its luma) and resized to `size` (rows, cols) where given, as a run stored its training
/// images; else colour when any image is colour, and each image at its own size, which must
/// then be the same for all.
pub fn read_images(
    paths: &[PathBuf],
    size: Option<(usize, usize)>,
    channels: Option<usize>,
) -> Result<Dataset> {
    let decoded: Vec<Decoded> = paths.par_iter().map(|p| decode(p)).collect::<Result<_>>()?;
    let any_colour = decoded.iter().any(|d| d.channels == 3);
    let channels = channels.unwrap_or(if any_colour { 3 } else { 1 });
    let (rows, cols) = match (size, decoded.first()) {
        (Some(s), _) => s,
        (None, Some(d)) => (d.rows, d.cols),
        (None, None) => (1, 1),
    };
    if size.is_none() {
        if let Some((d, p)) = decoded.iter().zip(paths).find(|(d, _)| (d.rows, d.cols) != (rows, cols)) {
            let expected = format!("{rows}×{cols} pixels, as {}", paths[0].display());
            return Err(Error::bad_file(p, "image size", expected, format!("{}×{}", d.rows, d.cols)));
        }
    }
    let planes: Vec<Vec<f32>> =
        decoded.into_par_iter().map(|d| pixels(&convert(d, channels), rows, cols)).collect();
    Ok(Dataset {
        images: planes.concat(),
        labels: vec![0; paths.len()],
        len: paths.len(),
        channels,
        rows,
        cols,
        classes: vec![],
    })
}

/// Writes `data` as an image folder split `split_name` (`DIR/<split>/<i>_<class>/<index>.png`,
/// 8-bit grey or RGB PNG, pixels un-normalised and rounded), the folder names sorting in label
/// order and the files in index order; returns the number of images written.
pub fn write_split(data: &Dataset, dir: &Path, split_name: &str) -> Result<usize> {
    let width = data.classes.len().saturating_sub(1).to_string().len();
    let slug = |s: &str| -> String {
        s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect()
    };
    let folders: Vec<PathBuf> = data
        .classes
        .iter()
        .enumerate()
        .map(|(i, name)| dir.join(split_name).join(format!("{i:0width$}_{}", slug(name))))
        .collect();
    for f in &folders {
        std::fs::create_dir_all(f).map_err(|e| Error::io(f, e))?;
    }
    let digits = data.len.saturating_sub(1).to_string().len().max(5);
    let (c, plane) = (data.channels, data.rows * data.cols);
    (0..data.len).into_par_iter().try_for_each(|i| {
        let img = &data.images[i * c * plane..(i + 1) * c * plane];
        let byte = |v: f32| ((v * STD + MEAN) * 255.0).round().clamp(0.0, 255.0) as u8;
        let bytes: Vec<u8> =
            (0..plane).flat_map(|p| (0..c).map(move |ch| byte(img[ch * plane + p]))).collect();
        let label = usize::from(data.labels[i]);
        let folder = folders.get(label).ok_or_else(|| {
            Error::Internal(format!("label {label} of image {i} but {} classes", data.classes.len()))
        })?;
        let path = folder.join(format!("{i:0digits$}.png"));
        let color = if c == 3 { image::ColorType::Rgb8 } else { image::ColorType::L8 };
        image::save_buffer(&path, &bytes, data.cols as u32, data.rows as u32, color)
            .map_err(|e| Error::bad_file(&path, "image", "a writable PNG", e.to_string()))
    })?;
    Ok(data.len)
}

/// Writes both splits of the built-in data set `name` (read from `data_dir`) as an image folder
/// `out/train/…` and `out/test/…` ([`write_split`]); returns the numbers of images written.
/// `out` must be new or empty: images written among others would make a data set nobody asked
/// for.
pub fn write_dataset(name: super::DatasetName, data_dir: &Path, out: &Path) -> Result<(usize, usize)> {
    if std::fs::read_dir(out).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(Error::bad_file(out, "--out", "a new or empty folder", "a folder with files in it"));
    }
    let train = super::load(name, super::Split::Train, data_dir)?;
    let test = super::load(name, super::Split::Test, data_dir)?;
    Ok((write_split(&train, out, "train")?, write_split(&test, out, "test")?))
}

/// What [`inspect`] found in an image folder, and how fast it was read.
#[derive(Clone, Debug, PartialEq)]
pub struct FolderSummary {
    /// The folder.
    pub path: PathBuf,
    /// Class names in label order.
    pub classes: Vec<String>,
    /// Training and test images.
    pub images: (usize, usize),
    /// Channels, rows and columns of the stored images.
    pub shape: (usize, usize, usize),
    /// Seconds to list, decode, convert, resize and normalise both splits.
    pub seconds: f64,
}

/// Reads the image folder `spec` as a run would, timing it.
pub fn inspect(spec: &FolderSpec, log: &mut dyn Write) -> Result<FolderSummary> {
    let started = std::time::Instant::now();
    let (train, test) = load(spec, log)?;
    Ok(FolderSummary {
        path: spec.path.clone(),
        classes: train.classes,
        images: (train.len, test.len),
        shape: (train.channels, train.rows, train.cols),
        seconds: started.elapsed().as_secs_f64(),
    })
}

impl std::fmt::Display for FolderSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (c, h, w) = self.shape;
        let total = self.images.0 + self.images.1;
        write!(
            f,
            "{}: {} classes {:?}; {} train + {} test images of {c}×{h}×{w}; read in {:.2} s ({:.0} images/s on {} threads)",
            self.path.display(),
            self.classes.len(),
            self.classes,
            self.images.0,
            self.images.1,
            self.seconds,
            total as f64 / self.seconds.max(1e-9),
            rayon::current_num_threads()
        )
    }
}
