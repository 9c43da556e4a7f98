//! [`evaluate_checkpoint`]: the test accuracy of a checkpoint of either kind (`dlrt eval`).

use std::fmt;
use std::path::{Path, PathBuf};

use super::finetune::EVAL_BATCH;
use super::fit::evaluate;
use crate::checkpoint::{self, adapters};
use crate::config::ModelKind;
use crate::data::{self, DatasetSource, ImageFormat, Split};
use crate::models::Classifier;
use crate::{Error, Result, TrainBackend};

/// What a checkpoint scores on its data set's test split.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// The checkpoint.
    pub path: PathBuf,
    /// Epochs it had trained.
    pub epoch: usize,
    /// Test accuracy in [0, 1].
    pub accuracy: f64,
    /// Mean test cross-entropy.
    pub loss: f64,
    /// Test images evaluated (a fine-tuning run's `test_subset`, or the whole split).
    pub images: usize,
    /// The ranks of its low-rank layers (adapters for a fine-tuning checkpoint).
    pub ranks: Vec<usize>,
    /// Whether it holds adapters on a pretrained backbone.
    pub adapters: bool,
}

/// A checkpoint of either kind, and what evaluating it needs.
struct Loaded {
    model: Box<dyn Classifier<TrainBackend>>,
    dataset: DatasetSource,
    epoch: usize,
    /// Test images to evaluate on (0: all).
    images: usize,
    format: ImageFormat,
    /// Images per evaluation batch.
    chunk: usize,
    labels: Vec<String>,
    /// A network trained from scratch: its input width and [C, H, W] images, and whether it is
    /// LeNet-5 (a ViT resizes any image).
    input: Option<(usize, [usize; 3], bool)>,
}

/// Loads the checkpoint at `path` (of `dlrt train` or `dlrt finetune`) and evaluates it on the
/// test split of its run's data set, read from `data_dir`.
pub fn evaluate_checkpoint(path: &Path, data_dir: &Path) -> Result<Evaluation> {
    let device = Default::default();
    let adapters = adapters::is_adapter_checkpoint(path)?;
    let loaded = if adapters {
        let (model, cfg, epoch) = adapters::load_as_trained::<TrainBackend>(path, &device)?;
        let labels = adapters::labels(path, model.head.weight().dims()[1])?;
        Loaded {
            model: Box::new(model),
            dataset: cfg.train.dataset,
            epoch,
            images: cfg.train.test_subset,
            format: ImageFormat::Rgb(cfg.backbone.image),
            chunk: EVAL_BATCH,
            labels,
            input: None,
        }
    } else {
        let (model, _, state) = checkpoint::load::<TrainBackend>(path, &device)?;
        let lenet5 = state.config.model.kind == ModelKind::LeNet5;
        Loaded {
            model: Box::new(model),
            dataset: state.config.train.dataset,
            epoch: state.epoch,
            images: state.config.train.test_subset,
            format: ImageFormat::AsStored,
            chunk: super::run::EVAL_BATCH,
            labels: state.labels,
            input: Some((state.inputs, state.image, lenet5)),
        }
    };
    let Loaded { model, dataset, epoch, images, format, chunk, labels, input } = loaded;
    let mut test = match &dataset {
        DatasetSource::Named(name) => data::load(*name, Split::Test, data_dir)?,
        DatasetSource::Folder(spec) => data::folder::load(spec, &mut std::io::stderr())?.1,
    };
    if test.classes != labels {
        let expected = format!("the checkpoint's classes {labels:?}");
        return Err(Error::config("train.dataset", dataset, &expected));
    }
    if let Some((inputs, image, lenet5)) = input {
        // The MLP flattens its input, so only the size counts; LeNet-5 needs the shape.
        let found = [test.channels, test.rows, test.cols];
        if test.features() != inputs || (lenet5 && found != image) {
            let expected = format!(
                "images of the checkpoint's shape {image:?} (channels, rows, columns), not {found:?}"
            );
            return Err(Error::config("train.dataset", dataset, &expected));
        }
    }
    if images > 0 {
        test.truncate(images);
    }
    let (loss, accuracy) = evaluate(model.as_ref(), &test, format, chunk, &device);
    Ok(Evaluation {
        path: path.to_path_buf(),
        epoch,
        accuracy,
        loss,
        images: test.len,
        ranks: model.ranks(),
        adapters,
    })
}

impl fmt::Display for Evaluation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (path, epoch, accuracy, loss) =
            (self.path.display(), self.epoch, 100.0 * self.accuracy, self.loss);
        match self.adapters {
            true => write!(
                f,
                "{path}: epoch {epoch}, test accuracy {accuracy:.2} % on {} images, test loss {loss:.4}, adapter ranks {:?}",
                self.images, self.ranks
            ),
            false => write!(f, "{path}: epoch {epoch}, test accuracy {accuracy:.2} %, test loss {loss:.4}, ranks {:?}", self.ranks),
        }
    }
}
