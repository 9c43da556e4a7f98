//! File I/O below everything else: safetensors read and written as named f32 tensors, and
//! atomic writes.
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

/// Writes `tensors` and `metadata` as safetensors to `path`, atomically.
pub fn write_safetensors(path: &Path, tensors: &TensorMap, metadata: HashMap<String, String>) -> Result<()> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, (shape, values))| {
            let bytes: &[u8] = bytemuck_f32(values);
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::bad_file(path, name, "a consistent tensor", e))
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::bad_file(path, "header", "serialisable tensors", e))?;
    atomic_write(path, &bytes)
}

fn bytemuck_f32(values: &[f32]) -> &[u8] {
    // f32 has no padding and any bit pattern is a valid u8 sequence; safetensors is little
    // endian, as is every target this crate builds for (checked below).
    const _: () = assert!(cfg!(target_endian = "little"), "dlrt writes little-endian safetensors");
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values)) }
}

/// Writes `bytes` to `path` through `path.tmp`: write, fsync, rename.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
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
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Reads every tensor (converted to f32) and the metadata of a safetensors file.
pub fn read_safetensors(path: &Path) -> Result<(TensorMap, HashMap<String, String>)> {
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
            Dtype::F16 | Dtype::BF16 => {
                return Err(Error::bad_file(path, name, "dtype F32 or F64", format!("{:?}", view.dtype())))
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
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|e| bad(&e))?;
    let len = u64::from_le_bytes(len);
    let mut header = Vec::new();
    file.take(len).read_to_end(&mut header).map_err(|e| bad(&e))?;
    if header.len() as u64 != len {
        return Err(bad(&format!("a header of {len} bytes in a file with {} after it", header.len())));
    }
    #[derive(serde::Deserialize)]
    struct Header {
        #[serde(rename = "__metadata__", default)]
        metadata: HashMap<String, String>,
    }
    let header: Header = serde_json::from_slice(&header).map_err(|e| bad(&e))?;
    Ok(header.metadata)
}
