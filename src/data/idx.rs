//! The IDX format of MNIST and Fashion-MNIST, plain or gzip-compressed.
//!
//! Layout: a big-endian magic number `[0, 0, dtype, ndims]`, then `ndims` big-endian u32
//! sizes (outermost first), then `∏ sizes` values, row-major, and nothing after them. dlrt
//! reads unsigned bytes only (dtype 0x08): images are 3-dimensional `[count, rows, cols]`
//! (magic 0x00000803), labels 1-dimensional `[count]` (magic 0x00000801). A file that starts
//! with the gzip bytes `1f 8b` is decompressed first.
//!
//! Every check returns [`Error::BadFile`] naming the file, the field, what was expected and
//! what was found; no input makes the parser panic.

use std::io::Read;
use std::path::Path;

use crate::{Error, Result};

/// The dtype byte of unsigned bytes, the only one dlrt reads.
pub const UBYTE: u8 = 0x08;

/// A parsed IDX file of unsigned bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Idx {
    /// The sizes, outermost first.
    pub dims: Vec<usize>,
    /// The values, row-major; `data.len()` is the product of `dims`.
    pub data: Vec<u8>,
}

/// Reads a file, decompressing it if it starts with the gzip magic bytes `1f 8b`.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut out = Vec::new();
    // Multi-member so that bytes after the first member are read (and rejected if not gzip)
    // rather than silently ignored.
    flate2::read::MultiGzDecoder::new(raw.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| Error::bad_file(path, "gzip stream", "a complete gzip file", e))?;
    Ok(out)
}

fn dtype_name(dtype: u8) -> &'static str {
    match dtype {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0b => "i16",
        0x0c => "i32",
        0x0d => "f32",
        0x0e => "f64",
        _ => "not an IDX type",
    }
}

fn be_u32(bytes: &[u8], offset: usize) -> usize {
    u32::from_be_bytes([bytes[offset], bytes[offset + 1], bytes[offset + 2], bytes[offset + 3]]) as usize
}

/// Parses IDX `bytes` of unsigned bytes with `ndims` dimensions; `path` is named in errors.
pub fn parse(bytes: &[u8], path: &Path, ndims: usize) -> Result<Idx> {
    let magic = format!("{:#010x}", 0x0800 | ndims);
    if bytes.len() < 4 {
        return Err(Error::bad_file(path, "magic number", magic, format!("a {}-byte file", bytes.len())));
    }
    if bytes[..2] != [0, 0] {
        return Err(Error::bad_file(path, "magic number", magic, format!("{:#010x}", be_u32(bytes, 0))));
    }
    if bytes[2] != UBYTE {
        return Err(Error::bad_file(
            path,
            "data type",
            format!("{UBYTE:#04x} ({})", dtype_name(UBYTE)),
            format!("{:#04x} ({})", bytes[2], dtype_name(bytes[2])),
        ));
    }
    if bytes[3] as usize != ndims {
        return Err(Error::bad_file(path, "dimension count", ndims, bytes[3]));
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(Error::bad_file(
            path,
            "header length",
            format!("{header} bytes (magic number and {ndims} sizes)"),
            format!("{} bytes", bytes.len()),
        ));
    }
    let dims: Vec<usize> = (0..ndims).map(|i| be_u32(bytes, 4 + 4 * i)).collect();
    let got = bytes.len() - header;
    // Sizes come from the file: the product may overflow, and then no file can match it.
    let expected = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if expected != Some(got) {
        let want = match expected {
            Some(n) => format!("{n} bytes for dimensions {dims:?}"),
            None => format!("more bytes than fit in memory for dimensions {dims:?}"),
        };
        let why = match expected {
            Some(n) if got < n => format!(" (truncated: {} missing)", n - got),
            Some(n) => format!(" ({} trailing)", got - n),
            None => String::new(),
        };
        return Err(Error::bad_file(path, "data length", want, format!("{got} bytes{why}")));
    }
    Ok(Idx { dims, data: bytes[header..].to_vec() })
}

/// Reads and parses an IDX file (plain or gzip) with `ndims` dimensions.
pub fn read(path: &Path, ndims: usize) -> Result<Idx> {
    parse(&read_bytes(path)?, path, ndims)
}

/// Reads an image file `[count, rows, cols]` and its label file `[count]`.
///
/// Beyond the per-file checks, the counts must agree (the error names both files), images
/// must have at least one pixel, and every label must be a class in 0..=9.
pub fn read_pair(images: &Path, labels: &Path) -> Result<(Idx, Idx)> {
    let img = read(images, 3)?;
    if img.dims[1] == 0 || img.dims[2] == 0 {
        let got = format!("{}×{}", img.dims[1], img.dims[2]);
        return Err(Error::bad_file(images, "image size", "at least 1×1 pixels", got));
    }
    let lab = read(labels, 1)?;
    if img.dims[0] != lab.dims[0] {
        return Err(Error::bad_file(
            labels,
            "item count",
            format!("{} labels, one per image of {}", img.dims[0], images.display()),
            format!("{} labels", lab.dims[0]),
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
    use std::path::PathBuf;

    fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = magic.to_be_bytes().to_vec();
        for d in dims {
            out.extend(d.to_be_bytes());
        }
        out.extend(data);
        out
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn labels(dir: &tempfile::TempDir, name: &str, data: &[u8]) -> PathBuf {
        write(dir, name, &idx(0x801, &[data.len() as u32], data))
    }

    #[test]
    fn reads_plain_and_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let images = idx(0x803, &[2, 2, 3], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 255]);
        let lab = idx(0x801, &[2], &[7, 3]);
        for (suffix, wrap) in [("", (|b: &[u8]| b.to_vec()) as fn(&[u8]) -> Vec<u8>), (".gz", gzip)] {
            let i = write(&dir, &format!("i{suffix}"), &wrap(&images));
            let l = write(&dir, &format!("l{suffix}"), &wrap(&lab));
            let (i, l) = read_pair(&i, &l).unwrap();
            assert_eq!(i.dims, vec![2, 2, 3]);
            assert_eq!(i.data, vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 255]);
            assert_eq!(l, Idx { dims: vec![2], data: vec![7, 3] });
        }
    }

    /// (file name, bytes, field the error must name, text the error must contain)
    fn malformed() -> Vec<(&'static str, Vec<u8>, &'static str, &'static str)> {
        vec![
            ("wrong-magic", idx(0x1234_0803, &[1, 1, 1], &[0]), "magic number", "0x12340803"),
            ("float-type", idx(0x0d03, &[1, 1, 1], &[0; 4]), "data type", "0x0d (f32)"),
            ("label-dims", idx(0x801, &[1], &[0]), "dimension count", "expected 3, got 1"),
            ("truncated", idx(0x803, &[2, 2, 2], &[0; 7]), "data length", "1 missing"),
            ("trailing", idx(0x803, &[1, 1, 1], &[0, 0]), "data length", "1 trailing"),
            ("short-header", vec![0, 0, 8, 3, 0, 0, 0, 1, 0], "header length", "got 9 bytes"),
            ("tiny", vec![0, 0], "magic number", "2-byte file"),
            ("empty", vec![], "magic number", "0-byte file"),
            ("huge-dims", idx(0x803, &[u32::MAX; 3], &[0; 3]), "data length", "more bytes than fit"),
            ("no-pixels", idx(0x803, &[5, 0, 28], &[]), "image size", "0×28"),
        ]
    }

    #[test]
    fn malformed_images_name_the_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let good_labels = labels(&dir, "labels", &[1]);
        for (name, bytes, field, detail) in malformed() {
            for (file, bytes) in [(name.to_string(), bytes.clone()), (format!("{name}.gz"), gzip(&bytes))] {
                let path = write(&dir, &file, &bytes);
                let err = read_pair(&path, &good_labels).unwrap_err();
                let msg = err.to_string();
                assert!(matches!(&err, Error::BadFile { path: p, .. } if *p == path), "{file}: {msg}");
                assert!(msg.contains(&file) && msg.contains(field) && msg.contains(detail), "{file}: {msg}");
            }
        }
    }

    #[test]
    fn malformed_labels_and_gzip_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let images = write(&dir, "images", &idx(0x803, &[1, 1, 1], &[0]));
        let cases: [(&str, Vec<u8>, &str); 4] = [
            ("image-magic", idx(0x803, &[1, 1, 1], &[0]), "dimension count: expected 1, got 3"),
            ("labels-cut", idx(0x801, &[3], &[0, 1]), "data length"),
            ("cut.gz", gzip(&idx(0x801, &[1], &[1])).split_at(10).0.to_vec(), "gzip stream"),
            ("junk-after.gz", [gzip(&idx(0x801, &[1], &[1])), vec![1, 2, 3]].concat(), "gzip stream"),
        ];
        for (name, bytes, field) in cases {
            let err = read_pair(&images, &write(&dir, name, &bytes)).unwrap_err().to_string();
            assert!(err.contains(name) && err.contains(field), "{name}: {err}");
        }
        let missing = read_pair(&dir.path().join("absent"), &images).unwrap_err();
        assert!(matches!(missing, Error::Io { .. }) && missing.to_string().contains("absent"));
    }

    #[test]
    fn count_mismatch_and_bad_labels_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let images = write(&dir, "images", &idx(0x803, &[3, 1, 1], &[0, 0, 0]));
        let two = labels(&dir, "two-labels", &[1, 2]);
        let err = read_pair(&images, &two).unwrap_err().to_string();
        assert!(err.contains("two-labels") && err.contains("item count") && err.contains("images"), "{err}");
        assert!(err.contains("expected 3 labels") && err.contains("got 2 labels"), "{err}");
        let ten = labels(&dir, "ten", &[1, 10, 2]);
        let err = read_pair(&images, &ten).unwrap_err().to_string();
        assert!(err.contains("ten: label 1: expected a class in 0..=9, got 10"), "{err}");
        assert!(read_pair(&images, &labels(&dir, "nine", &[9, 0, 9])).is_ok());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let path = Path::new("fuzz");
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|i| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    // Mostly valid-looking headers, so the later checks are reached too.
                    match i {
                        0 | 1 => 0,
                        2 => UBYTE,
                        3 => 3,
                        4..=15 if i % 4 == 3 => (state % 4) as u8,
                        4..=15 if !state.is_multiple_of(8) => 0,
                        _ => state as u8,
                    }
                })
                .collect();
            for ndims in [0, 1, 3] {
                let _ = parse(&bytes, path, ndims);
            }
        }
    }
}
