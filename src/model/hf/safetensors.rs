//! One memory-mapped `.safetensors` file: an 8-byte little-endian header length, a JSON header
//! `{name: {dtype, shape, data_offsets: [start, end]}, "__metadata__": {...}}`, then the data.
//!
//! The header is parsed here (rather than through the `safetensors` crate) so that every bound is
//! checked against the real file size and every failure names the file, the tensor and the
//! problem. Tensors are zero-copy [`Tensor::mapped`] views into the shared map.
//!
//! As the format demands, the tensors' byte ranges tile the data section exactly: sorted by
//! offset, each starts where the previous one ends, the first at 0 and the last at the end of
//! the file, so no two overlap and no byte is unaccounted for. A header whose length field is
//! off by even one byte therefore fails (the data section it implies is not covered), and a
//! name listed twice is refused while parsing, before a JSON map could keep only one of them.

use super::strict_json::parse_strict;
use crate::model::input_file::open_regular;
use crate::model::{DType, Tensor};
use crate::{Error, Result};
use memmap2::Mmap;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest JSON header accepted (the format's own reference limit is 100 MB).
const MAX_HEADER_BYTES: u64 = 100 << 20;

/// Where one tensor's bytes lie inside the file.
#[derive(Clone, Debug)]
struct Entry {
    /// The element type name as written in the header (`"F32"`, `"BF16"`, ...).
    dtype: String,
    /// Shape, outermost first.
    shape: Vec<usize>,
    /// Absolute byte offset of the first element in the file.
    offset: usize,
}

/// A header entry with its range relative to the data section, before the tiling check.
struct Placed {
    name: String,
    entry: Entry,
    start: usize,
    end: usize,
}

/// A parsed, memory-mapped safetensors file.
pub struct SafeFile {
    path: PathBuf,
    map: Arc<Mmap>,
    entries: HashMap<String, Entry>,
    /// Why the tensors do not tile the data section, if they do not (see
    /// [`SafeFile::check_layout`]).
    layout_problem: Option<String>,
}

/// Bytes per element of a safetensors dtype name, `None` when the name is unknown.
fn dtype_size(name: &str) -> Option<usize> {
    Some(match name {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" => 8,
        _ => return None,
    })
}

/// The engine's element type for a safetensors dtype name, when it has one.
fn engine_dtype(name: &str) -> Option<DType> {
    match name {
        "F32" => Some(DType::F32),
        "F16" => Some(DType::F16),
        "BF16" => Some(DType::BF16),
        _ => None,
    }
}

impl SafeFile {
    /// Opens, maps and validates `path`; no tensor byte is read.
    pub fn open(path: &Path) -> Result<Self> {
        let (file, _) = open_regular(path)?;
        // SAFETY: the map is read-only; a file truncated underneath us is the usual mmap caveat.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let (entries, layout_problem) = parse_header(path, &map)?;
        Ok(SafeFile {
            path: path.to_path_buf(),
            map: Arc::new(map),
            entries,
            layout_problem,
        })
    }

    /// Fails unless the tensors' byte ranges tile the data section exactly (no overlap, no
    /// hole, nothing after the last tensor). Kept apart from [`SafeFile::open`] so a loader can
    /// first name a tensor it needs that the header lacks (which also leaves a hole), then
    /// refuse the layout before any tensor is used.
    pub fn check_layout(&self) -> Result<()> {
        match &self.layout_problem {
            None => Ok(()),
            Some(m) => Err(Error::corrupt(&self.path, format!("safetensors: {m}"))),
        }
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the header lists a tensor called `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The shape the header records for `name`.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    /// A zero-copy view of tensor `name`, or `None` when the header does not list it.
    /// A dtype the engine cannot use is [`Error::Unsupported`].
    pub fn tensor(&self, name: &str) -> Result<Option<Tensor>> {
        let Some(e) = self.entries.get(name) else {
            return Ok(None);
        };
        let dtype = engine_dtype(&e.dtype).ok_or_else(|| {
            Error::Unsupported(format!(
                "tensor {name} in {} has dtype {}; only F32, F16 and BF16 are supported",
                self.path.display(),
                e.dtype
            ))
        })?;
        Tensor::mapped(self.map.clone(), e.offset, e.shape.clone(), dtype)
            .map(Some)
            .map_err(|err| Error::corrupt(&self.path, format!("tensor {name}: {err}")))
    }
}

/// Parses and bounds-checks the header of a mapped file; returns the entries and, when their
/// ranges do not tile the data section, what is wrong with the layout.
fn parse_header(path: &Path, bytes: &[u8]) -> Result<(HashMap<String, Entry>, Option<String>)> {
    let corrupt = |m: String| Error::corrupt(path, format!("safetensors: {m}"));
    let file_len = bytes.len();
    if file_len < 8 {
        return Err(corrupt(format!(
            "file has {file_len} bytes, too short for the 8-byte header length"
        )));
    }
    let mut len8 = [0u8; 8];
    len8.copy_from_slice(&bytes[..8]);
    let header_len = u64::from_le_bytes(len8);
    let available = (file_len - 8) as u64;
    if header_len > available || header_len > MAX_HEADER_BYTES {
        return Err(corrupt(format!(
            "header length {header_len} runs past the end of the file ({file_len} bytes)"
        )));
    }
    // The smallest header is "{}".
    if header_len < 2 {
        return Err(corrupt(format!(
            "header length {header_len} is too small for a JSON object"
        )));
    }
    let data_start = 8 + header_len as usize;
    let header = &bytes[8..data_start];
    if header[0] != b'{' {
        return Err(corrupt("header is not a JSON object".into()));
    }
    let json =
        parse_strict(header).map_err(|e| corrupt(format!("header is not valid JSON: {e}")))?;
    let Value::Object(obj) = json else {
        return Err(corrupt("header is not a JSON object".into()));
    };
    let data_len = file_len - data_start;
    let mut placed = Vec::with_capacity(obj.len());
    for (name, v) in obj {
        if name == "__metadata__" {
            continue;
        }
        let (entry, start, end) = parse_entry(&name, &v, data_start, data_len).map_err(corrupt)?;
        placed.push(Placed {
            name,
            entry,
            start,
            end,
        });
    }
    let layout_problem = check_tiling(&mut placed, data_len).err();
    let entries = placed.into_iter().map(|p| (p.name, p.entry)).collect();
    Ok((entries, layout_problem))
}

/// Checks that the ranges cover `0..data_len` exactly, without overlap or hole; the error names
/// the tensors involved.
fn check_tiling(placed: &mut [Placed], data_len: usize) -> std::result::Result<(), String> {
    placed.sort_by_key(|p| (p.start, p.end));
    let mut covered = 0usize;
    let mut previous: Option<&str> = None;
    for p in placed.iter() {
        if p.start < covered {
            return Err(format!(
                "tensor {}: data offsets [{}, {}] overlap tensor {} (which ends at {covered})",
                p.name,
                p.start,
                p.end,
                previous.unwrap_or("?")
            ));
        }
        if p.start > covered {
            return Err(format!(
                "tensor {}: data offsets [{}, {}] leave a hole of {} bytes at {covered} (the \
                 data section must be contiguous)",
                p.name,
                p.start,
                p.end,
                p.start - covered
            ));
        }
        covered = p.end;
        previous = Some(&p.name);
    }
    if covered != data_len {
        return Err(format!(
            "the tensors cover {covered} of the {data_len} data bytes (a wrong header length or \
             trailing data)"
        ));
    }
    Ok(())
}

/// Validates one header entry; the error message names the tensor.
fn parse_entry(
    name: &str,
    v: &Value,
    data_start: usize,
    data_len: usize,
) -> std::result::Result<(Entry, usize, usize), String> {
    let dtype = v
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("tensor {name}: missing or non-string \"dtype\""))?;
    let size =
        dtype_size(dtype).ok_or_else(|| format!("tensor {name}: unknown dtype \"{dtype}\""))?;
    let shape = v
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("tensor {name}: missing or non-array \"shape\""))?
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| format!("tensor {name}: shape has a non-integer or negative dimension"))?;
    let offsets = v
        .get("data_offsets")
        .and_then(Value::as_array)
        .filter(|a| a.len() == 2)
        .ok_or_else(|| format!("tensor {name}: \"data_offsets\" is not a pair"))?;
    let off = |i: usize| {
        offsets[i]
            .as_u64()
            .and_then(|o| usize::try_from(o).ok())
            .ok_or_else(|| format!("tensor {name}: data offset is not a non-negative integer"))
    };
    let (start, end) = (off(0)?, off(1)?);
    if start > end || end > data_len {
        return Err(format!(
            "tensor {name}: data offsets [{start}, {end}] are out of range for {data_len} data bytes"
        ));
    }
    let want = shape
        .iter()
        .try_fold(size, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("tensor {name}: shape {shape:?} overflows"))?;
    if end - start != want {
        return Err(format!(
            "tensor {name}: data offsets [{start}, {end}] hold {} bytes, but {dtype} {shape:?} needs {want}",
            end - start
        ));
    }
    let entry = Entry {
        dtype: dtype.to_string(),
        shape,
        offset: data_start + start,
    };
    Ok((entry, start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a safetensors file from a JSON header and a data section.
    fn file_bytes(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn write(dir: &Path, bytes: &[u8]) -> PathBuf {
        let p = dir.join("t.safetensors");
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn reads_f32_and_bf16_tensors_zero_copy() {
        let dir = tempfile::tempdir().unwrap();
        let mut data: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        data.extend(half::bf16::from_f32(3.0).to_le_bytes());
        let h = r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[1,1],"data_offsets":[8,10]}}"#;
        // Pad the header to 8 bytes as writers do, so the f32 data stays aligned.
        let h = format!("{h:<width$}", width = h.len().div_ceil(8) * 8);
        let f = SafeFile::open(&write(dir.path(), &file_bytes(&h, &data))).unwrap();
        let a = f.tensor("a").unwrap().unwrap();
        assert!(a.is_mapped());
        assert_eq!(a.as_f32().unwrap(), &[1.5, -2.0]);
        let b = f.tensor("b").unwrap().unwrap();
        assert_eq!(b.shape(), &[1, 1]);
        assert_eq!(b.to_f32_vec(), vec![3.0]);
        assert!(f.tensor("c").unwrap().is_none());
    }

    #[test]
    fn rejects_size_mismatch_and_unsupported_dtype() {
        let dir = tempfile::tempdir().unwrap();
        let h = r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
        let e = SafeFile::open(&write(dir.path(), &file_bytes(h, &[0; 8])))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("tensor a") && e.contains("needs 12"), "{e}");
        let h = r#"{"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#;
        let f = SafeFile::open(&write(dir.path(), &file_bytes(h, &[0; 8]))).unwrap();
        let e = f.tensor("a").unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)), "{e}");
        assert!(e.to_string().contains("I64"));
    }

    #[test]
    fn rejects_short_files_and_non_object_headers() {
        let dir = tempfile::tempdir().unwrap();
        let e = SafeFile::open(&write(dir.path(), &[1, 2, 3]))
            .err()
            .unwrap();
        assert!(e.to_string().contains("too short"), "{e}");
        let e = SafeFile::open(&write(dir.path(), &file_bytes("[1]", &[])))
            .err()
            .unwrap();
        assert!(e.to_string().contains("not a JSON object"), "{e}");
    }
}
