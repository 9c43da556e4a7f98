//! File I/O below everything else: safetensors read and written as named f32 tensors (stored
//! as f32 or, on request, bf16), and atomic writes.
//!
//! Files are written to `NAME.tmp`, synced, then renamed over `NAME`, so a crash or a full
//! disk never leaves a half-written file and never destroys the previous one.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::{tensor::TensorView, Dtype, SafeTensors};

use crate::{Error, Result};

/// Named f32 tensors with their shapes, in a deterministic order.
pub type TensorMap = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// The float type a safetensors file stores its tensors in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FileDtype {
    /// f32: the values exactly.
    #[default]
    F32,
    /// bf16 (safetensors `BF16`): each value rounded to the nearest bf16, ties to even
    /// (relative error < 2⁻⁸: bf16 keeps 8 significant bits), in half the bytes.
    Bf16,
}

impl FileDtype {
    /// PyTorch's name of the type, as HF's `config.json` writes it (`torch_dtype`).
    pub fn torch_name(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::Bf16 => "bfloat16",
        }
    }
}

/// Writes `tensors` and `metadata` as f32 safetensors to `path`, atomically.
pub fn write_safetensors(path: &Path, tensors: &TensorMap, metadata: HashMap<String, String>) -> Result<()> {
    write_safetensors_as(path, tensors, metadata, FileDtype::F32)
}

/// [`write_safetensors`] with the tensors stored as `dtype`.
pub fn write_safetensors_as(
    path: &Path,
    tensors: &TensorMap,
    metadata: HashMap<String, String>,
    dtype: FileDtype,
) -> Result<()> {
    let bf16: Vec<Vec<u8>> = match dtype {
        FileDtype::F32 => Vec::new(),
        FileDtype::Bf16 => tensors
            .values()
            .map(|(_, values)| values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect())
            .collect(),
    };
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .enumerate()
        .map(|(i, (name, (shape, values)))| {
            let (st_dtype, bytes): (Dtype, &[u8]) = match dtype {
                FileDtype::F32 => (Dtype::F32, f32_bytes(values)),
                FileDtype::Bf16 => (Dtype::BF16, &bf16[i]),
            };
            TensorView::new(st_dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::bad_file(path, name, "a consistent tensor", e))
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::bad_file(path, "header", "serialisable tensors", e))?;
    atomic_write(path, &bytes)
}

/// The values' bytes; safetensors is little endian, as is every target this crate builds for.
fn f32_bytes(values: &[f32]) -> &[u8] {
    const _: () = assert!(cfg!(target_endian = "little"), "dlrt writes little-endian safetensors");
    bytemuck::cast_slice(values)
}

/// An error when `out` (a file about to be written, named by `field`) is one of the files
/// `inputs` that the command reads (the same file, however the paths are spelled), so that a
/// slip of `--out` cannot replace them.
pub fn check_not_input(out: &Path, field: &str, inputs: &[&Path]) -> Result<()> {
    match inputs.iter().find(|input| same_file(out, input)) {
        Some(input) => Err(Error::config(
            field,
            out.display(),
            &format!("a file other than {}, which this command reads", input.display()),
        )),
        None => Ok(()),
    }
}

/// Whether `a` and `b` name one existing file, however the paths are spelled.
pub fn same_file(a: &Path, b: &Path) -> bool {
    matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b)
}

/// Writes `bytes` to `path` through `path.tmp`: write, fsync, rename.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
        return Err(Error::not_found(path, format!("the folder {} does not exist", dir.display())));
    }
    let tmp = tmp_path(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// A folder where a safetensors file is expected gets an error saying so (rather than the
/// system's "Is a directory").
fn not_a_folder(path: &Path) -> Result<()> {
    if path.is_dir() {
        let got = "a folder (name the .safetensors file in it: a run's checkpoint.safetensors, a backbone's model.safetensors)";
        return Err(Error::bad_file(path, "file", "a safetensors file", got));
    }
    Ok(())
}

/// Reads every tensor (converted to f32; F32, F64, BF16 or F16 in the file) and the metadata of
/// a safetensors file.
pub fn read_safetensors(path: &Path) -> Result<(TensorMap, HashMap<String, String>)> {
    not_a_folder(path)?;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::bad_file(path, "safetensors header", "a valid safetensors file", e))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::bad_file(path, "safetensors header", "a valid safetensors file", e))?;
    let mut out = TensorMap::new();
    for name in st.names() {
        let view = st.tensor(name).map_err(|e| Error::bad_file(path, name, "a readable tensor", e))?;
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => {
                data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
            }
            Dtype::F64 => data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
                .collect(),
            // Half-precision values widen to f32 exactly (HF often ships backbones in bf16).
            Dtype::BF16 => {
                data.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
            }
            Dtype::F16 => {
                data.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
            }
            other => return Err(Error::bad_file(path, name, "a float dtype", format!("{other:?}"))),
        };
        out.insert(name.to_string(), (view.shape().to_vec(), values));
    }
    Ok((out, meta.metadata().clone().unwrap_or_default()))
}

/// The metadata of a safetensors file, from its header alone (the tensors are not read).
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    use std::io::Read;
    let bad = |e: &dyn std::fmt::Display| {
        Error::bad_file(path, "safetensors header", "a valid safetensors file", e.to_string())
    };
    not_a_folder(path)?;
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|e| bad(&e))?;
    let len = u64::from_le_bytes(len);
    let mut header = Vec::new();
    file.take(len).read_to_end(&mut header).map_err(|e| bad(&e))?;
    if header.len() as u64 != len {
        let got = format!(
            "not a safetensors file: its first 8 bytes give a header of {len} bytes, and {} follow",
            header.len()
        );
        return Err(bad(&got));
    }
    #[derive(serde::Deserialize)]
    struct Header {
        #[serde(rename = "__metadata__", default)]
        metadata: HashMap<String, String>,
    }
    let header: Header = serde_json::from_slice(&header).map_err(|e| bad(&e))?;
    Ok(header.metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_files_round_to_nearest_even_and_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let (f32_path, bf16_path) = (dir.path().join("a.safetensors"), dir.path().join("b.safetensors"));
        let tie = 2f32.powi(-8); // half a bf16 ulp at 1
        let values = vec![1.0 + tie, 1.0 + 3.0 * tie, -0.1, 3.0e38, 0.0];
        // Ties go to the even mantissa: 1 + 2⁻⁸ → 1, 1 + 3·2⁻⁸ → 1 + 2⁻⁶; -0.1 to its nearest.
        let expected =
            vec![1.0, 1.0 + 4.0 * tie, f32::from_bits(0xbdcd_0000), f32::from_bits(0x7f62_0000), 0.0];
        let tensors = TensorMap::from([("w".to_string(), (vec![5, 1], values.clone()))]);
        write_safetensors(&f32_path, &tensors, HashMap::new()).unwrap();
        write_safetensors_as(&bf16_path, &tensors, HashMap::new(), FileDtype::Bf16).unwrap();
        let bytes = std::fs::read(&bf16_path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("w").unwrap().dtype(), Dtype::BF16);
        assert_eq!(st.tensor("w").unwrap().data().len(), 10, "two bytes a value");
        let (back, _) = read_safetensors(&bf16_path).unwrap();
        assert_eq!(back["w"], (vec![5, 1], expected));
        assert_eq!(read_safetensors(&f32_path).unwrap().0["w"].1, values);
    }

    #[test]
    fn f16_tensors_widen_exactly_and_integers_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.safetensors");
        let bytes: Vec<u8> =
            [0.5f32, -2.0, 65504.0].iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
        let ints = [1u8, 0, 0, 0];
        let views = vec![
            ("h", TensorView::new(Dtype::F16, vec![3], &bytes).unwrap()),
            ("i", TensorView::new(Dtype::I32, vec![1], &ints).unwrap()),
        ];
        std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
        let err = read_safetensors(&path).unwrap_err().to_string();
        assert!(
            err.contains("h.safetensors") && err.contains("a float dtype") && err.contains("I32"),
            "{err}"
        );
        let views = vec![("h", TensorView::new(Dtype::F16, vec![3], &bytes).unwrap())];
        std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
        assert_eq!(read_safetensors(&path).unwrap().0["h"].1, vec![0.5, -2.0, 65504.0]);
    }
}
