//! What a finished run tells its user: the one-line summary `dlrt train` and `dlrt finetune`
//! end with, and `dlrt report`'s markdown table over run folders.
//!
//! A run folder (of either command) holds `config.toml` and `metrics.jsonl`; [`report`] reads
//! both and writes one row per folder:
//!
//! | column | from |
//! |---|---|
//! | method, τ, optimizer | `config.toml` (a [`RunConfig`] or a [`FinetuneConfig`]) |
//! | epochs, test accuracy, ranks, compression | the last [`EpochRecord`] |
//! | best | the best test accuracy of any epoch |
//! | time/epoch | the mean wall time of the epochs |
//!
//! For fine-tuning, ranks are the adapters' and the two compressions are adapters against the
//! projections they adapt and trainable parameters against the backbone ([`super::finetune`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::fit::ranks_summary;
use super::metrics::{read_jsonl, EpochRecord, JSONL_FILE};
use crate::config::{FinetuneConfig, OptimizerSection, RunConfig, Schedule};
use crate::integrators::IntegratorKind;
use crate::{Error, Result};

/// Peak resident memory of this process in MiB (VmHWM), where the OS reports it.
pub fn peak_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The last line of `dlrt train`: accuracy, epochs and ranks after the last epoch, the run
/// folder and the peak memory. Writes nothing when no epoch ran.
pub fn write_train_summary(
    out: &mut impl Write,
    method: IntegratorKind,
    records: &[EpochRecord],
    run_dir: &Path,
) -> Result<()> {
    write_summary(out, method, records, run_dir, |last| format!("ranks {:?}", last.ranks))
}

/// The last line of `dlrt finetune`: as [`write_train_summary`], with the number of trainable
/// parameters instead of the ranks.
pub fn write_finetune_summary(
    out: &mut impl Write,
    method: IntegratorKind,
    records: &[EpochRecord],
    run_dir: &Path,
) -> Result<()> {
    write_summary(out, method, records, run_dir, |last| format!("{} trainable parameters", last.params))
}

fn write_summary(
    out: &mut impl Write,
    method: IntegratorKind,
    records: &[EpochRecord],
    run_dir: &Path,
    size: impl Fn(&EpochRecord) -> String,
) -> Result<()> {
    let Some(last) = records.last() else { return Ok(()) };
    writeln!(
        out,
        "{method}: test accuracy {:.2} % after {} epochs, {}; run folder {}{}",
        100.0 * last.test_accuracy,
        last.epoch,
        size(last),
        run_dir.display(),
        peak_memory_mib().map(|m| format!("; peak memory {m:.0} MiB")).unwrap_or_default()
    )
    .map_err(Error::Output)
}

/// The method, ϑ and optimizer of a run folder's `config.toml`, of `dlrt train` or of
/// `dlrt finetune`; an error in neither form is reported as a training config's error.
fn run_settings(path: &Path) -> Result<(IntegratorKind, f64, OptimizerSection)> {
    match RunConfig::load(path) {
        Ok(cfg) => Ok((cfg.integrator.method, cfg.integrator.tol, cfg.optimizer)),
        Err(mlp_err) => match FinetuneConfig::load(path) {
            Ok(cfg) => Ok((cfg.integrator.method, cfg.integrator.tol, cfg.optimizer)),
            Err(_) => Err(mlp_err),
        },
    }
}

/// `dlrt report`: one markdown row per run folder (module docs). A run still in its first
/// epoch gets a row that says so. A folder that cannot be read gets a row naming the error,
/// after which the other folders still get theirs; the first such error is returned at the end.
pub fn report(runs: &[PathBuf], out: &mut impl Write) -> Result<()> {
    writeln!(
        out,
        "| run | method | τ | optimizer | epochs | test accuracy | best | ranks | compression low-rank / network | time/epoch |"
    )
    .map_err(Error::Output)?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|---|").map_err(Error::Output)?;
    let mut first_error = None;
    for dir in runs {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let line = match row(dir, &name) {
            Ok(line) => line,
            Err(e) => {
                let line = format!("| {name} | not a readable run folder: {e} | | | | | | | | |");
                first_error.get_or_insert(e);
                line
            }
        };
        writeln!(out, "{line}").map_err(Error::Output)?;
    }
    first_error.map_or(Ok(()), Err)
}

/// The report's row of the run folder `dir`, called `name`.
fn row(dir: &Path, name: &str) -> Result<String> {
    let (method, tol, o) = run_settings(&dir.join("config.toml"))?;
    let records = read_jsonl(&dir.join(JSONL_FILE))?;
    // Dense training has no truncation.
    let tol = if method == IntegratorKind::Dense { "—".to_string() } else { number(tol) };
    let optimizer = format!(
        "{} {}{}{}",
        o.kind(),
        number(o.lr),
        if o.schedule == Schedule::Cosine { " cosine" } else { "" },
        if o.warmup_steps > 0 { format!(", warm-up {}", o.warmup_steps) } else { String::new() }
    );
    let Some(last) = records.last() else {
        return Ok(format!(
            "| {name} | {method} | {tol} | {optimizer} | 0 | no epoch finished yet | | | | |"
        ));
    };
    let best = records.iter().map(|r| r.test_accuracy).fold(0.0, f64::max);
    let time = records.iter().map(|r| r.wall_seconds).sum::<f64>() / records.len() as f64;
    Ok(format!(
        "| {name} | {method} | {tol} | {optimizer} | {} | {:.2} % | {:.2} % | {} | {:.1} % / {:.1} % | {:.1} s |",
        last.epoch,
        100.0 * last.test_accuracy,
        100.0 * best,
        ranks_summary(&last.ranks),
        100.0 * last.compression_low_rank,
        100.0 * last.compression_network,
        time
    ))
}

/// A config value as a reader writes it: plainly from 1e-4 to 1e4, in scientific notation
/// outside (a learning rate of 1e-30 as `1e-30`, not thirty zeros).
fn number(x: f64) -> String {
    if x == 0.0 || (1e-4..1e4).contains(&x.abs()) {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::metrics::MetricsWriter;

    fn record(epoch: usize, accuracy: f64, ranks: Vec<usize>) -> EpochRecord {
        EpochRecord {
            epoch,
            step: 100 * epoch as u64,
            train_loss: 0.5,
            test_loss: 0.4,
            test_accuracy: accuracy,
            ranks,
            compression_low_rank: 0.9,
            compression_network: 0.8,
            params: 1234,
            wall_seconds: 2.0 * epoch as f64,
            samples_per_second: 1000.0,
            passes: 0,
            qr: 0,
            svd: 0,
        }
    }

    fn run_folder(root: &Path, name: &str, config: &str, records: &[EpochRecord]) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let mut writer = MetricsWriter::create(&dir);
        writer.start().unwrap();
        records.iter().for_each(|r| writer.append(r).unwrap());
        dir
    }

    #[test]
    fn one_row_per_run_of_either_command() {
        let tmp = tempfile::tempdir().unwrap();
        let mut adam = RunConfig::paper_mnist();
        adam.optimizer = OptimizerSection {
            rule: crate::optim::OptimizerConfig::adamw(0.1),
            lr: 0.004,
            schedule: Schedule::Cosine,
            warmup_steps: 100,
        };
        let vit = FinetuneConfig::paper_vit("w/model.safetensors".into(), IntegratorKind::Lora);
        let runs = [
            run_folder(
                tmp.path(),
                "paper",
                &RunConfig::paper_mnist().to_toml().unwrap(),
                &[record(1, 0.9, vec![20, 18, 0]), record(2, 0.95, vec![19, 17, 0])],
            ),
            run_folder(tmp.path(), "recipe", &adam.to_toml().unwrap(), &[]),
            run_folder(
                tmp.path(),
                "vit",
                &vit.to_toml().unwrap(),
                &[record(1, 0.8, (0..36).map(|i| 30 + i % 3).collect())],
            ),
        ];
        let mut out = Vec::new();
        report(&runs, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert_eq!(
            lines[2],
            "| paper | abc_psi | 0.01 | sgd 0.01 | 2 | 95.00 % | 95.00 % | [19, 17, 0] | 90.0 % / 80.0 % | 3.0 s |"
        );
        assert_eq!(lines[3], "| recipe | abc_psi | 0.01 | adam 0.004 cosine, warm-up 100 | 0 | no epoch finished yet | | | | |");
        assert_eq!(
            lines[4],
            "| vit | lora | 0.15 | adam 0.001 | 1 | 80.00 % | 80.00 % | 30..32 (mean 31.0 over 36) | 90.0 % / 80.0 % | 2.0 s |"
        );
    }

    #[test]
    fn a_folder_without_a_config_is_an_error_naming_the_file_after_the_other_rows() {
        let tmp = tempfile::tempdir().unwrap();
        let mut dense = RunConfig::paper_mnist_with(IntegratorKind::Dense);
        dense.optimizer.lr = 1e-30;
        let good = run_folder(tmp.path(), "dense", &dense.to_toml().unwrap(), &[record(1, 0.5, vec![])]);
        let mut out = Vec::new();
        let err = report(&[tmp.path().join("nowhere"), good], &mut out).unwrap_err().to_string();
        assert!(err.contains("nowhere") && err.contains("config.toml"), "{err}");
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[2].starts_with("| nowhere | not a readable run folder: ")
                && lines[2].contains("config.toml")
        );
        // Dense training has no τ; a tiny learning rate is written as such.
        assert!(lines[3].starts_with("| dense | dense | — | sgd 1e-30 | 1 | 50.00 % |"), "{text}");
    }

    #[test]
    fn the_summary_line_names_the_method_accuracy_and_folder() {
        let mut out = Vec::new();
        let records = [record(3, 0.9712, vec![12, 9, 0])];
        write_train_summary(&mut out, IntegratorKind::AbcPsi, &records, Path::new("runs/x")).unwrap();
        write_finetune_summary(&mut out, IntegratorKind::Lora, &records, Path::new("runs/y")).unwrap();
        write_train_summary(&mut out, IntegratorKind::Bug, &[], Path::new("runs/z")).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "no line for a run without epochs: {text}");
        assert!(lines[0].starts_with(
            "abc_psi: test accuracy 97.12 % after 3 epochs, ranks [12, 9, 0]; run folder runs/x"
        ));
        assert!(lines[1].starts_with(
            "lora: test accuracy 97.12 % after 3 epochs, 1234 trainable parameters; run folder runs/y"
        ));
    }
}
