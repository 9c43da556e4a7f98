//! [`predict`]: the classes a checkpoint gives image files (`dlrt predict`).
//!
//! Each image goes through the run's data path: decoded, stored as the run stored its training
//! images (their channels and size: grey or colour converted, resized to the stored size) and
//! normalised as in training; for a fine-tuning checkpoint then resized to the backbone's
//! input. A network trained from scratch (`dlrt train`) reads the stored shape from its
//! checkpoint's run state, a fine-tuning checkpoint from its `image` metadata.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use burn::tensor::{activation::softmax, Tensor, TensorData};

use super::finetune::EVAL_BATCH;
use crate::checkpoint::{self, adapters};
use crate::data::{self, DatasetSource, ImageFormat};
use crate::io::{write_safetensors, TensorMap};
use crate::models::Classifier;
use crate::{CpuBackend, Error, Result, TrainBackend};

/// The classes of one image, most likely first.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// The image file.
    pub path: PathBuf,
    /// `(class name, probability)` of the `top` likeliest classes.
    pub top: Vec<(String, f32)>,
}

/// What [`predict`] returns: a prediction per image, and the tensors behind them.
#[derive(Clone, Debug)]
pub struct Predictions {
    /// One per image, in the order given.
    pub items: Vec<Prediction>,
    /// The model's input, `[images, channels, height, width]` row-major, and that shape
    /// (RGB at the backbone's side for a fine-tuning checkpoint; as stored in training for
    /// a `dlrt train` one).
    pub pixel_values: (Vec<f32>, [usize; 4]),
    /// The class scores, `[images, classes]` row-major.
    pub logits: Vec<f32>,
    /// The class names in label order.
    pub labels: Vec<String>,
    /// The checkpoint they came from (with the images, what [`Predictions::save`] must not
    /// overwrite).
    pub checkpoint: PathBuf,
}

/// Runs the checkpoint at `checkpoint` (of `dlrt finetune` or `dlrt train`) on the image
/// files `images` and keeps the `top` likeliest classes of each.
pub fn predict(checkpoint: &Path, images: &[PathBuf], top: usize) -> Result<Predictions> {
    if images.is_empty() {
        return Err(Error::config("images", "none", "at least one image file"));
    }
    if top == 0 {
        return Err(Error::config("--top", 0, "at least 1 class per image"));
    }
    let (pixel_values, logits, labels) = if adapters::is_adapter_checkpoint(checkpoint)? {
        adapter_logits(checkpoint, images)?
    } else {
        network_logits(checkpoint, images)?
    };
    let classes = labels.len();
    let probs = softmax(
        Tensor::<CpuBackend, 2>::from_data(
            TensorData::new(logits.clone(), [images.len(), classes]),
            &Default::default(),
        ),
        1,
    )
    .into_data()
    .to_vec::<f32>()
    .map_err(|e| Error::Internal(format!("probabilities: {e:?}")))?;
    let items = images
        .iter()
        .zip(probs.chunks(classes))
        .map(|(path, p)| {
            let mut order: Vec<usize> = (0..classes).collect();
            order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
            let top = order.iter().take(top).map(|&c| (labels[c].clone(), p[c])).collect();
            Prediction { path: path.clone(), top }
        })
        .collect();
    Ok(Predictions { items, pixel_values, logits, labels, checkpoint: checkpoint.to_path_buf() })
}

/// The model's input with its shape, the logits and the class names.
type Outputs = ((Vec<f32>, [usize; 4]), Vec<f32>, Vec<String>);

/// A fine-tuning checkpoint's [`Outputs`] on `images`.
fn adapter_logits(checkpoint: &Path, images: &[PathBuf]) -> Result<Outputs> {
    let device = Default::default();
    let (model, config, _) = adapters::load_as_trained::<CpuBackend>(checkpoint, &device)?;
    let classes = model.head.weight().dims()[1];
    let labels = adapters::labels(checkpoint, classes)?;
    // As training stored its images (channels and size), then resized to the backbone's input.
    let (size, channels) = match (adapters::stored_image(checkpoint)?, &config.train.dataset) {
        (Some([c, h, w]), _) => (Some((h, w)), Some(c)),
        // A checkpoint from before the shape was stored.
        (None, DatasetSource::Named(_)) => (Some((28, 28)), Some(1)),
        (None, DatasetSource::Folder(spec)) => (spec.image_size.map(|s| (s, s)), None),
    };
    let side = config.backbone.image;
    let mut pixels = Vec::with_capacity(images.len() * 3 * side * side);
    for path in images {
        let one = data::folder::read_images(std::slice::from_ref(path), size, channels)?;
        pixels.extend(one.batch(&[0], ImageFormat::Rgb(side)).0);
    }
    let shape = [images.len(), 3, side, side];
    let logits = chunked_logits::<CpuBackend>(&pixels, shape, EVAL_BATCH, &device, |x| model.forward(x))?;
    Ok(((pixels, shape), logits, labels))
}

/// A `dlrt train` checkpoint's [`Outputs`] on `images`, each stored as the run stored its
/// training images (channels and size) and normalised alike.
fn network_logits(checkpoint: &Path, images: &[PathBuf]) -> Result<Outputs> {
    let device = Default::default();
    let (model, _, state) = checkpoint::load::<TrainBackend>(checkpoint, &device)?;
    let [c, h, w] = state.image;
    if !matches!(c, 1 | 3) {
        // An image-folder checkpoint written before dlrt stored `image`: `checkpoint::load`
        // gives it [inputs, 1, 1], which is enough for eval but says nothing of the image size.
        return Err(Error::bad_file(
            checkpoint,
            "metadata.image",
            "the [C, H, W] its images were stored at (a checkpoint of an older dlrt has none: train it again)",
            "none",
        ));
    }
    // Stored pixels are already the network's input, [n, C, H, W].
    let data = data::folder::read_images(images, Some((h, w)), Some(c))?;
    let shape = [images.len(), c, h, w];
    let batch = super::run::EVAL_BATCH;
    let logits = chunked_logits::<TrainBackend>(&data.images, shape, batch, &device, |x| model.logits(x))?;
    Ok(((data.images, shape), logits, state.labels))
}

/// `logits` of the images `input` (`shape` = [n, C, H, W], row-major), `chunk` at a time.
fn chunked_logits<B: burn::tensor::backend::Backend>(
    input: &[f32],
    [_, c, h, w]: [usize; 4],
    chunk: usize,
    device: &B::Device,
    logits: impl Fn(Tensor<B, 4>) -> Tensor<B, 2>,
) -> Result<Vec<f32>> {
    let plane = c * h * w;
    let mut out = Vec::new();
    for part in input.chunks(chunk * plane) {
        let x = Tensor::from_data(TensorData::new(part.to_vec(), [part.len() / plane, c, h, w]), device);
        let values = logits(x).into_data().convert::<f32>().to_vec::<f32>();
        out.extend(values.map_err(|e| Error::Internal(format!("logits: {e:?}")))?);
    }
    Ok(out)
}

impl Predictions {
    /// Writes `pixel_values` and `logits` as safetensors (with the class names as `labels`
    /// metadata), e.g. to feed the same input to another implementation of the model. `path`
    /// may not be a file the predictions were made from (checkpoint, backbone or image).
    pub fn save(&self, path: &Path) -> Result<()> {
        let backbone = adapters::backbone_files(&self.checkpoint)?.map(Vec::from).unwrap_or_default();
        let inputs: Vec<&Path> = std::iter::once(&self.checkpoint)
            .chain(self.items.iter().map(|p| &p.path))
            .chain(&backbone)
            .map(|p| p.as_path())
            .collect();
        crate::io::check_not_input(path, "--out", &inputs)?;
        let n = self.items.len();
        let mut tensors = TensorMap::new();
        tensors.insert("pixel_values".into(), (self.pixel_values.1.to_vec(), self.pixel_values.0.clone()));
        tensors.insert("logits".into(), (vec![n, self.labels.len()], self.logits.clone()));
        let labels = serde_json::to_string(&self.labels).expect("strings serialise");
        write_safetensors(path, &tensors, HashMap::from([("labels".to_string(), labels)]))
    }
}

impl fmt::Display for Predictions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for item in &self.items {
            let top: Vec<String> =
                item.top.iter().map(|(c, p)| format!("{c} ({:.1} %)", 100.0 * p)).collect();
            writeln!(f, "{}: {}", item.path.display(), top.join(", "))?;
        }
        Ok(())
    }
}
