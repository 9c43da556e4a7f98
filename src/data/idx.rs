//! The IDX format of MNIST and Fashion-MNIST, plain or gzip-compressed.
//!
//! Layout: a big-endian magic number `[0, 0, dtype, ndims]`, then `ndims` big-endian u32
//! sizes, then the data. dlrt reads unsigned bytes (dtype 0x08): images are 3-dimensional
//! (count, rows, cols), labels 1-dimensional (count). Every check names the file and field.

use std::io::Read;
use std::path::Path;

use crate::{Error, Result};

/// A parsed IDX file of unsigned bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Idx {
    /// The sizes, outermost first.
    pub dims: Vec<usize>,
    /// The values, row-major.
    pub data: Vec<u8>,
}

/// Reads a file, decompressing it if it starts with the gzip magic bytes.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| Error::bad_file(path, "gzip stream", "a complete gzip file", e))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses IDX `bytes` (from `path`, named in errors) with `ndims` dimensions of u8 data.
pub fn parse(bytes: &[u8], path: &Path, ndims: usize) -> Result<Idx> {
    if bytes.len() < 4 {
        return Err(Error::bad_file(path, "magic number", "4 bytes", format!("a {}-byte file", bytes.len())));
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let expected = 0x0800 | ndims as u32;
    if magic != expected {
        return Err(Error::bad_file(
            path,
            "magic number",
            format!("{expected:#010x}"),
            format!("{magic:#010x}"),
        ));
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(Error::bad_file(
            path,
            "header",
            format!("{header} bytes"),
            format!("{} bytes", bytes.len()),
        ));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|i| {
            let o = 4 + 4 * i;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    let expected_len = dims.iter().product::<usize>();
    let got = bytes.len() - header;
    if got != expected_len {
        return Err(Error::bad_file(
            path,
            "data length",
            format!("{expected_len} bytes for dimensions {dims:?}"),
            format!("{got} bytes"),
        ));
    }
    Ok(Idx { dims, data: bytes[header..].to_vec() })
}

/// Reads an image file (count × rows × cols) and its label file, checking they agree.
pub fn read_pair(images: &Path, labels: &Path) -> Result<(Idx, Idx)> {
    let img = parse(&read_bytes(images)?, images, 3)?;
    let lab = parse(&read_bytes(labels)?, labels, 1)?;
    if img.dims[0] != lab.dims[0] {
        return Err(Error::bad_file(
            labels,
            "item count",
            format!("{} labels, one per image of {}", img.dims[0], images.display()),
            lab.dims[0],
        ));
    }
    if let Some(pos) = lab.data.iter().position(|&l| l > 9) {
        return Err(Error::bad_file(labels, format!("label {pos}"), "a class in 0..=9", lab.data[pos]));
    }
    Ok((img, lab))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = magic.to_be_bytes().to_vec();
        for d in dims {
            out.extend(d.to_be_bytes());
        }
        out.extend(data);
        out
    }

    fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8], gzip: bool) -> std::path::PathBuf {
        let path = dir.path().join(name);
        let mut f = std::fs::File::create(&path).unwrap();
        if gzip {
            let mut enc = flate2::write::GzEncoder::new(f, flate2::Compression::default());
            enc.write_all(bytes).unwrap();
            enc.finish().unwrap();
        } else {
            f.write_all(bytes).unwrap();
        }
        path
    }

    #[test]
    fn reads_plain_and_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let images = idx(0x803, &[2, 2, 3], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        let labels = idx(0x801, &[2], &[7, 3]);
        for gzip in [false, true] {
            let (i, l) =
                read_pair(&write(&dir, "i", &images, gzip), &write(&dir, "l", &labels, gzip)).unwrap();
            assert_eq!(i.dims, vec![2, 2, 3]);
            assert_eq!(i.data[11], 11);
            assert_eq!(l.data, vec![7, 3]);
        }
    }

    #[test]
    fn malformed_files_name_the_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let good_labels = write(&dir, "labels", &idx(0x801, &[2], &[1, 2]), false);
        let cases: [(&str, Vec<u8>, &str); 5] = [
            ("wrong-magic", idx(0x802, &[1, 1, 1], &[0]), "magic number"),
            ("truncated", idx(0x803, &[2, 2, 2], &[0; 7]), "data length"),
            ("trailing", idx(0x803, &[1, 1, 1], &[0, 0]), "data length"),
            ("short-header", vec![0, 0, 8, 3, 0, 0], "header"),
            ("tiny", vec![0, 0], "magic number"),
        ];
        for (name, bytes, field) in cases {
            let path = write(&dir, name, &bytes, false);
            let err = read_pair(&path, &good_labels).unwrap_err().to_string();
            assert!(err.contains(name) && err.contains(field), "{name}: {err}");
        }
        let truncated_gzip = {
            let path = write(&dir, "cut.gz", &idx(0x803, &[1, 2, 2], &[1, 2, 3, 4]), true);
            let bytes = std::fs::read(&path).unwrap();
            write(&dir, "cut.gz", &bytes[..bytes.len() - 6], false)
        };
        assert!(read_pair(&truncated_gzip, &good_labels).unwrap_err().to_string().contains("cut.gz"));
    }

    #[test]
    fn count_mismatch_and_bad_labels_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let images = write(&dir, "images", &idx(0x803, &[3, 1, 1], &[0, 0, 0]), false);
        let two = write(&dir, "two-labels", &idx(0x801, &[2], &[1, 2]), false);
        let err = read_pair(&images, &two).unwrap_err().to_string();
        assert!(err.contains("two-labels") && err.contains("item count") && err.contains("images"), "{err}");
        let ten = write(&dir, "ten", &idx(0x801, &[3], &[1, 10, 2]), false);
        assert!(read_pair(&images, &ten).unwrap_err().to_string().contains("label 1"));
    }
}
