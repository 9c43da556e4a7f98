//! Per-epoch metrics of a training run, written to the run folder as JSON lines and CSV.
//!
//! `metrics.jsonl` is the record: one [`EpochRecord`] object per line, read back on resume.
//! `metrics.csv` holds the same numbers as a table for spreadsheets and plotting scripts, with
//! the ranks spread over one `rank_i` column per low-rank layer. [`MetricsWriter`] appends to
//! both after every epoch and flushes, so the files are complete up to the last finished epoch.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::{Error, Result};

/// What one epoch measured. One JSON line in `metrics.jsonl`, one row in `metrics.csv`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Optimizer steps taken so far.
    pub step: u64,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f64,
    /// Mean test loss.
    pub test_loss: f64,
    /// Test accuracy in [0, 1].
    pub test_accuracy: f64,
    /// Rank of each low-rank layer, in network order.
    pub ranks: Vec<usize>,
    /// `1 − Σ low-rank params / Σ dense params` over the factorized layers only.
    pub compression_low_rank: f64,
    /// The same ratio over the whole network (dense layers count in both sums).
    pub compression_network: f64,
    /// Inference parameters of the network now.
    pub params: usize,
    /// Wall time of the epoch's training, in seconds (evaluation excluded).
    pub wall_seconds: f64,
    /// Training samples per second over the epoch.
    pub samples_per_second: f64,
    /// Forward/backward passes so far.
    pub passes: u64,
    /// QR decompositions so far.
    pub qr: u64,
    /// SVDs so far.
    pub svd: u64,
}

/// File name of the JSON-lines log in a run folder: one [`EpochRecord`] object per line.
pub const JSONL_FILE: &str = "metrics.jsonl";
/// File name of the CSV table in a run folder: one row per [`EpochRecord`].
pub const CSV_FILE: &str = "metrics.csv";

/// The CSV columns before the per-layer ranks, in [`EpochRecord`] field order less `ranks`.
const CSV_COLUMNS: [&str; 13] = [
    "epoch",
    "step",
    "train_loss",
    "test_loss",
    "test_accuracy",
    "compression_low_rank",
    "compression_network",
    "params",
    "wall_seconds",
    "samples_per_second",
    "passes",
    "qr",
    "svd",
];

/// Appends epoch records to a run folder's `metrics.jsonl` and `metrics.csv`.
///
/// The CSV columns are the fields of [`EpochRecord`] in order, `epoch` to `svd`, with `ranks`
/// left out and spread over `rank_0, rank_1, …` at the end, one column per low-rank layer.
/// The number of layers is known only from the first record, so the header is written with
/// it; a later record with another number of ranks is an error.
#[derive(Debug)]
pub struct MetricsWriter {
    run_dir: PathBuf,
    /// The open files; `None` for a new run until its first record.
    files: Option<MetricsFiles>,
}

#[derive(Debug)]
struct MetricsFiles {
    jsonl: File,
    jsonl_path: PathBuf,
    csv: File,
    csv_path: PathBuf,
    /// Rank columns of the CSV header; `None` until the header is written.
    rank_columns: Option<usize>,
}

impl MetricsWriter {
    /// Fresh `metrics.jsonl` and `metrics.csv` in `run_dir` (an existing folder). Any that are
    /// there are replaced at the first [`Self::append`], not before: a run that fails in its
    /// first epoch leaves an earlier run's metrics as they were.
    pub fn create(run_dir: &Path) -> Self {
        Self { run_dir: run_dir.to_path_buf(), files: None }
    }

    /// Writes the (empty) files now rather than at the first record.
    pub fn start(&mut self) -> Result<()> {
        if self.files.is_none() {
            self.files = Some(MetricsFiles::rewrite(&self.run_dir, &[])?);
        }
        Ok(())
    }

    /// Reopens the metrics of a run resumed from the checkpoint of epoch `keep_epochs`.
    ///
    /// Reads `metrics.jsonl`, keeps the records with `epoch <= keep_epochs` (later ones were
    /// written after that checkpoint and will be trained again), rewrites both files with only
    /// those, and returns them. The CSV is rebuilt from the JSON lines, which are the record.
    ///
    /// The kept records must be one per epoch 1 to `keep_epochs`, the last at the checkpoint's
    /// `step`: anything else is not this checkpoint's log (a folder where a new run was killed
    /// while it replaced an earlier one, or an edited log), an error that changes nothing.
    pub fn resume(run_dir: &Path, keep_epochs: usize, step: u64) -> Result<(Self, Vec<EpochRecord>)> {
        let path = run_dir.join(JSONL_FILE);
        let mut records = read_jsonl(&path)?;
        records.retain(|r| r.epoch <= keep_epochs);
        let epochs: Vec<usize> = records.iter().map(|r| r.epoch).collect();
        let last_step = records.last().map_or(0, |r| r.step);
        if !epochs.iter().copied().eq(1..=keep_epochs) || last_step != step {
            return Err(Error::bad_file(
                &path,
                "epoch",
                format!("one record per epoch 1 to {keep_epochs}, the last at step {step}, as the run's checkpoint has done"),
                format!("records of epochs {epochs:?}, the last at step {last_step}"),
            ));
        }
        let files = MetricsFiles::rewrite(run_dir, &records)?;
        Ok((Self { run_dir: run_dir.to_path_buf(), files: Some(files) }, records))
    }

    /// Appends `rec` to both files and flushes them (a new run's first record replaces any
    /// files that were there).
    ///
    /// Each line reaches the OS in one unbuffered write, so a killed process loses no finished
    /// epoch and leaves no half line.
    pub fn append(&mut self, rec: &EpochRecord) -> Result<()> {
        self.start()?;
        let files = self.files.as_mut().expect("started");
        if files.rank_columns.is_none() {
            write_all(&mut files.csv, &files.csv_path, csv_header(rec.ranks.len()).as_bytes())?;
            files.rank_columns = Some(rec.ranks.len());
        }
        let row = csv_row(rec, files.rank_columns, &files.csv_path)?;
        write_all(&mut files.jsonl, &files.jsonl_path, json_line(rec).as_bytes())?;
        write_all(&mut files.csv, &files.csv_path, row.as_bytes())
    }
}

impl MetricsFiles {
    /// Writes `records` as the whole content of both files, each through a temporary file and
    /// a rename so an interrupted rewrite leaves the old file, then opens both for appending.
    fn rewrite(run_dir: &Path, records: &[EpochRecord]) -> Result<Self> {
        let (jsonl_path, csv_path) = (run_dir.join(JSONL_FILE), run_dir.join(CSV_FILE));
        let rank_columns = records.first().map(|r| r.ranks.len());
        let mut csv = rank_columns.map(csv_header).unwrap_or_default();
        for rec in records {
            csv.push_str(&csv_row(rec, rank_columns, &csv_path)?);
        }
        let jsonl: String = records.iter().map(json_line).collect();
        crate::io::atomic_write(&jsonl_path, jsonl.as_bytes())?;
        crate::io::atomic_write(&csv_path, csv.as_bytes())?;
        Ok(Self {
            jsonl: open_append(&jsonl_path)?,
            jsonl_path,
            csv: open_append(&csv_path)?,
            csv_path,
            rank_columns,
        })
    }
}

/// Reads a `metrics.jsonl` file: one [`EpochRecord`] per non-blank line.
///
/// A `null` in a float field (how JSON stores a NaN or an infinity) reads back as NaN. An
/// unreadable line is an [`Error::BadFile`] that names the file and the line number (from 1).
pub fn read_jsonl(path: &Path) -> Result<Vec<EpochRecord>> {
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let mut de = serde_json::Deserializer::from_str(line);
        let rec = StoredRecord::deserialize(&mut de).and_then(|rec| de.end().map(|()| rec)).map_err(|e| {
            Error::bad_file(path, format!("line {}", i + 1), "an EpochRecord JSON object", json_error(&e))
        })?;
        records.push(rec);
    }
    Ok(records)
}

/// [`EpochRecord`]'s deserializer with one difference: a float field may be `null`.
///
/// serde_json writes NaN and ±∞ as `null` (JSON has no such numbers) but refuses `null` for
/// an `f64`; without this, one non-finite test loss would make the log unreadable on resume.
/// The field list must match [`EpochRecord`]'s; the compiler checks that it does.
#[derive(Deserialize)]
#[serde(remote = "EpochRecord")]
struct StoredRecord {
    epoch: usize,
    step: u64,
    #[serde(deserialize_with = "nan_if_null")]
    train_loss: f64,
    #[serde(deserialize_with = "nan_if_null")]
    test_loss: f64,
    #[serde(deserialize_with = "nan_if_null")]
    test_accuracy: f64,
    ranks: Vec<usize>,
    #[serde(deserialize_with = "nan_if_null")]
    compression_low_rank: f64,
    #[serde(deserialize_with = "nan_if_null")]
    compression_network: f64,
    params: usize,
    #[serde(deserialize_with = "nan_if_null")]
    wall_seconds: f64,
    #[serde(deserialize_with = "nan_if_null")]
    samples_per_second: f64,
    passes: u64,
    qr: u64,
    svd: u64,
}

fn nan_if_null<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// serde_json's message with its position cut to the column: each line is its own document,
/// so its "line 1" would contradict the line number the error names.
fn json_error(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    match message.strip_suffix(&position) {
        Some(m) => format!("{m} (column {})", e.column()),
        None => message,
    }
}

fn json_line(rec: &EpochRecord) -> String {
    // Serializing a struct of numbers into a String cannot fail.
    let mut line = serde_json::to_string(rec).expect("EpochRecord serializes to JSON");
    line.push('\n');
    line
}

fn csv_header(rank_columns: usize) -> String {
    let ranks = (0..rank_columns).map(|i| format!("rank_{i}"));
    let mut header = CSV_COLUMNS.iter().map(|c| c.to_string()).chain(ranks).collect::<Vec<_>>().join(",");
    header.push('\n');
    header
}

/// One CSV row; `rank_columns` is the header's number of rank columns.
fn csv_row(rec: &EpochRecord, rank_columns: Option<usize>, path: &Path) -> Result<String> {
    let expected = rank_columns.unwrap_or(rec.ranks.len());
    if rec.ranks.len() != expected {
        return Err(Error::shape(
            format!("{} row of epoch {}", path.display(), rec.epoch),
            format!("{expected} ranks (one per rank_i column)"),
            format!("{} ranks", rec.ranks.len()),
        ));
    }
    let mut row = format!(
        "{},{},{},{},{},{},{},{},{},{},{},{},{}",
        rec.epoch,
        rec.step,
        rec.train_loss,
        rec.test_loss,
        rec.test_accuracy,
        rec.compression_low_rank,
        rec.compression_network,
        rec.params,
        rec.wall_seconds,
        rec.samples_per_second,
        rec.passes,
        rec.qr,
        rec.svd
    );
    for r in &rec.ranks {
        row.push_str(&format!(",{r}"));
    }
    row.push('\n');
    Ok(row)
}

fn write_all(file: &mut File, path: &Path, bytes: &[u8]) -> Result<()> {
    file.write_all(bytes).and_then(|()| file.flush()).map_err(|e| Error::io(path, e))
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new().append(true).open(path).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: usize, ranks: Vec<usize>) -> EpochRecord {
        EpochRecord {
            epoch,
            step: 10 * epoch as u64,
            train_loss: 1.0 / epoch as f64,
            test_loss: 1.5 / epoch as f64,
            test_accuracy: 0.5 + 0.1 * epoch as f64,
            ranks,
            compression_low_rank: 0.75,
            compression_network: 0.5,
            params: 1000 + epoch,
            wall_seconds: 2.5,
            samples_per_second: 400.0,
            passes: 20 * epoch as u64,
            qr: 3 * epoch as u64,
            svd: epoch as u64,
        }
    }

    fn csv_lines(dir: &Path) -> Vec<String> {
        fs::read_to_string(dir.join(CSV_FILE)).unwrap().lines().map(str::to_string).collect()
    }

    #[test]
    fn round_trip_through_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<_> = (1..=3).map(|e| record(e, vec![4 + e, 7])).collect();
        let mut writer = MetricsWriter::create(dir.path());
        for rec in &records {
            writer.append(rec).unwrap();
        }
        assert_eq!(read_jsonl(&dir.path().join(JSONL_FILE)).unwrap(), records);
        let lines = csv_lines(dir.path());
        assert_eq!(
            lines[0],
            "epoch,step,train_loss,test_loss,test_accuracy,compression_low_rank,compression_network,\
             params,wall_seconds,samples_per_second,passes,qr,svd,rank_0,rank_1"
        );
        assert_eq!(lines[1], "1,10,1,1.5,0.6,0.75,0.5,1001,2.5,400,20,3,1,5,7");
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn a_new_run_replaces_old_files_at_its_first_record_only() {
        let dir = tempfile::tempdir().unwrap();
        MetricsWriter::create(dir.path()).append(&record(1, vec![2])).unwrap();
        let mut writer = MetricsWriter::create(dir.path());
        assert_eq!(read_jsonl(&dir.path().join(JSONL_FILE)).unwrap(), [record(1, vec![2])]);
        assert_eq!(csv_lines(dir.path()).len(), 2, "the old header and row stay");
        writer.append(&record(1, vec![7, 8])).unwrap();
        assert_eq!(read_jsonl(&dir.path().join(JSONL_FILE)).unwrap(), [record(1, vec![7, 8])]);
        let lines = csv_lines(dir.path());
        assert!(lines.len() == 2 && lines[0].ends_with(",rank_0,rank_1"), "{lines:?}");
    }

    #[test]
    fn resume_drops_epochs_after_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = MetricsWriter::create(dir.path());
        for e in 1..=4 {
            writer.append(&record(e, vec![3])).unwrap();
        }
        drop(writer);
        let (mut writer, kept) = MetricsWriter::resume(dir.path(), 2, 20).unwrap();
        assert_eq!(kept, vec![record(1, vec![3]), record(2, vec![3])]);
        writer.append(&record(3, vec![2])).unwrap();
        let epochs: Vec<_> =
            read_jsonl(&dir.path().join(JSONL_FILE)).unwrap().iter().map(|r| r.epoch).collect();
        assert_eq!(epochs, [1, 2, 3]);
        let lines = csv_lines(dir.path());
        assert_eq!(lines.len(), 4, "one header and three rows: {lines:?}");
        assert!(lines[0].ends_with(",svd,rank_0") && lines[3].starts_with("3,30,"));
        assert!(!dir.path().join("metrics.jsonl.tmp").exists());
    }

    #[test]
    fn resume_from_epoch_zero_writes_the_header_later() {
        let dir = tempfile::tempdir().unwrap();
        MetricsWriter::create(dir.path()).append(&record(1, vec![3, 3])).unwrap();
        let (mut writer, kept) = MetricsWriter::resume(dir.path(), 0, 0).unwrap();
        assert!(kept.is_empty() && csv_lines(dir.path()).is_empty());
        writer.append(&record(1, vec![5, 6])).unwrap();
        assert_eq!(csv_lines(dir.path())[0].split(',').filter(|c| c.starts_with("rank_")).count(), 2);
    }

    #[test]
    fn a_corrupt_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JSONL_FILE);
        let good = json_line(&record(1, vec![3]));
        fs::write(&path, format!("{good}\n{{\"epoch\": 2, \"step\": }}\n")).unwrap();
        let err = read_jsonl(&path).unwrap_err();
        assert!(matches!(&err, Error::BadFile { field, .. } if field == "line 3"), "{err}");
        let message = err.to_string();
        assert!(message.contains(JSONL_FILE) && message.contains("(column 22)"), "{message}");
        assert!(MetricsWriter::resume(dir.path(), 1, 10).is_err());
    }

    #[test]
    fn a_missing_file_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = MetricsWriter::resume(dir.path(), 1, 10).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
    }

    #[test]
    fn a_log_that_is_not_the_checkpoints_is_refused_and_left_as_it_was() {
        // A missing epoch, a repeated one, a log one epoch short of its checkpoint, and the
        // first epoch of another run (its step is not the checkpoint's).
        let cases: [(&[usize], u64); 4] = [(&[1, 3], 20), (&[1, 2, 2], 20), (&[1], 20), (&[1, 2], 25)];
        for (epochs, step) in cases {
            let dir = tempfile::tempdir().unwrap();
            let mut writer = MetricsWriter::create(dir.path());
            for &e in epochs {
                writer.append(&record(e, vec![3])).unwrap();
            }
            drop(writer);
            let before = fs::read(dir.path().join(JSONL_FILE)).unwrap();
            let err = MetricsWriter::resume(dir.path(), 2, step).unwrap_err().to_string();
            assert!(
                err.contains(JSONL_FILE) && err.contains("one record per epoch 1 to 2"),
                "{epochs:?}: {err}"
            );
            assert_eq!(fs::read(dir.path().join(JSONL_FILE)).unwrap(), before, "{epochs:?}: the log changed");
        }
    }

    #[test]
    fn non_finite_numbers_survive_as_nan() {
        let dir = tempfile::tempdir().unwrap();
        let mut rec = record(1, vec![3]);
        rec.test_loss = f64::INFINITY;
        rec.samples_per_second = f64::NAN;
        MetricsWriter::create(dir.path()).append(&rec).unwrap();
        let back = read_jsonl(&dir.path().join(JSONL_FILE)).unwrap();
        assert!(back[0].test_loss.is_nan() && back[0].samples_per_second.is_nan());
        assert_eq!(back[0].train_loss, rec.train_loss);
        assert!(csv_lines(dir.path())[1].contains(",inf,"));
    }

    #[test]
    fn a_changed_layer_count_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = MetricsWriter::create(dir.path());
        writer.append(&record(1, vec![3, 3])).unwrap();
        let err = writer.append(&record(2, vec![3])).unwrap_err();
        assert!(matches!(err, Error::Shape { .. }), "{err}");
        assert_eq!(read_jsonl(&dir.path().join(JSONL_FILE)).unwrap().len(), 1);
    }
}
