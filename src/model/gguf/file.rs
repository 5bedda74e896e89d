//! The GGUF container (versions 2 and 3, little-endian): header, metadata, tensor infos and
//! the memory-mapped data section.
//!
//! Layout: magic `GGUF`, `u32` version, `u64` tensor count, `u64` metadata count; the metadata
//! (`string` key, `u32` type, value); the tensor infos (`string` name, `u32` dimension count,
//! that many `u64` dimensions innermost first, `u32` ggml type, `u64` offset into the data);
//! padding to `general.alignment` (default 32); the data. Every count and length read from the
//! file is checked against the bytes that remain before anything is allocated for it.

use super::value::{Value, ValueType};
use super::{dequant, GgmlType};
use crate::model::{DType, Tensor};
use crate::{Error, Result};
use memmap2::Mmap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The four bytes every GGUF file starts with.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section and of each tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Most dimensions a ggml tensor has.
const MAX_DIMS: u32 = 4;
/// Deepest nesting of arrays inside arrays accepted.
const MAX_ARRAY_DEPTH: usize = 4;

/// One tensor's entry in the file's directory.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    /// The tensor's name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions as the file lists them, innermost (contiguous) first: a matrix is
    /// `[in, out]` over row-major `(out, in)` data.
    pub dims: Vec<u64>,
    /// The element type.
    pub ty: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    /// Bytes of data.
    pub len: usize,
}

impl TensorInfo {
    /// The shape in the engine's order, outermost first (`[out, in]` for a matrix).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.dims.iter().product::<u64>() as usize
    }
}

/// A parsed, memory-mapped GGUF file.
pub struct GgufFile {
    path: PathBuf,
    map: Arc<Mmap>,
    version: u32,
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    data_start: usize,
    alignment: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// Whether `path` is a file that starts with the GGUF magic.
pub fn has_magic(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && head == MAGIC
}

/// Reads little-endian fields from the file, every read bounds-checked.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> std::result::Result<&'a [u8], String> {
        if n > self.remaining() {
            return Err(format!(
                "{what} at offset {} needs {n} bytes but only {} remain",
                self.pos,
                self.remaining()
            ));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> std::result::Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> std::result::Result<u32, String> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> std::result::Result<u64, String> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A count of items of at least `min_size` bytes each, checked against what remains.
    fn count(&mut self, min_size: usize, what: &str) -> std::result::Result<usize, String> {
        let at = self.pos;
        let n = self.u64(what)?;
        let fits = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(min_size))
            .is_some_and(|b| b <= self.remaining());
        if !fits {
            return Err(format!(
                "{what} at offset {at} is {n}, more than the {} bytes left can hold",
                self.remaining()
            ));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> std::result::Result<String, String> {
        let n = self.count(1, &format!("length of {what}"))?;
        let at = self.pos;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec())
            .map_err(|e| format!("{what} at offset {at} is not UTF-8: {e}"))
    }

    fn value(
        &mut self,
        ty: ValueType,
        what: &str,
        depth: usize,
    ) -> std::result::Result<Value, String> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(what)?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(what)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            ValueType::U32 => Value::U32(self.u32(what)?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            ValueType::U64 => Value::U64(self.u64(what)?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            ValueType::Bool => {
                let at = self.pos;
                match self.array::<1>(what)?[0] {
                    0 => Value::Bool(false),
                    1 => Value::Bool(true),
                    b => return Err(format!("{what} at offset {at} is a bool of value {b}")),
                }
            }
            ValueType::String => Value::String(self.string(what)?),
            ValueType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(format!("{what} nests arrays deeper than {MAX_ARRAY_DEPTH}"));
                }
                let elem = self.value_type(what)?;
                let n = self.count(elem.min_size(), &format!("element count of {what}"))?;
                let mut items = try_vec(n, what)?;
                for _ in 0..n {
                    items.push(self.value(elem, what, depth + 1)?);
                }
                Value::Array(elem, items)
            }
        })
    }

    fn value_type(&mut self, what: &str) -> std::result::Result<ValueType, String> {
        let at = self.pos;
        let tag = self.u32(what)?;
        ValueType::from_tag(tag)
            .ok_or_else(|| format!("{what} at offset {at} has unknown value type {tag}"))
    }
}

/// An empty vector with room for `n` items, allocated fallibly.
fn try_vec<T>(n: usize, what: &str) -> std::result::Result<Vec<T>, String> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        format!(
            "out of memory for {n} items ({} bytes) of {what}",
            n.saturating_mul(std::mem::size_of::<T>())
        )
    })?;
    Ok(v)
}

impl GgufFile {
    /// Opens, maps and parses `path`; no tensor data is read.
    pub fn open(path: &Path) -> Result<Self> {
        let (file, _) = crate::model::input_file::open_regular(path)?;
        // SAFETY: the map is read-only; a file truncated underneath us is the usual mmap caveat.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Self::parse(path, Arc::new(map))
    }

    fn parse(path: &Path, map: Arc<Mmap>) -> Result<Self> {
        let corrupt = |m: String| Error::corrupt(path, format!("GGUF: {m}"));
        let mut c = Cursor {
            bytes: &map,
            pos: 0,
        };
        let magic: [u8; 4] = c.array("magic").map_err(corrupt)?;
        if magic != MAGIC {
            return Err(corrupt(format!("magic is {magic:?}, not \"GGUF\"")));
        }
        let version = c.u32("version").map_err(corrupt)?;
        match version {
            2 | 3 => {}
            1 => {
                return Err(Error::Unsupported(format!(
                    "GGUF version 1 in {} (only versions 2 and 3 are read)",
                    path.display()
                )))
            }
            v if v.swap_bytes() <= 3 => {
                return Err(Error::Unsupported(format!(
                    "big-endian GGUF in {} (only little-endian files are read)",
                    path.display()
                )))
            }
            v => return Err(corrupt(format!("unknown version {v}"))),
        }
        // A tensor info takes at least 8 (name) + 4 + 4 + 8 bytes, a metadata pair 8 + 4 + 1.
        let n_tensors = c.count(24, "tensor count").map_err(corrupt)?;
        let n_kv = c.count(13, "metadata count").map_err(corrupt)?;
        let mut metadata = try_vec(n_kv, "metadata").map_err(corrupt)?;
        let mut seen = std::collections::HashSet::new();
        for i in 0..n_kv {
            let key = c
                .string(&format!("key of metadata entry {i}"))
                .map_err(corrupt)?;
            let ty = c.value_type(&format!("type of {key}")).map_err(corrupt)?;
            let value = c.value(ty, &key, 0).map_err(corrupt)?;
            if !seen.insert(key.clone()) {
                return Err(corrupt(format!("metadata key {key} appears twice")));
            }
            metadata.push((key, value));
        }
        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, v)) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 30 => a,
                _ => {
                    return Err(corrupt(format!(
                        "general.alignment = {v} is not a power of two"
                    )))
                }
            },
        };
        let mut infos: Vec<(String, Vec<u64>, GgmlType, u64)> =
            try_vec(n_tensors, "tensor infos").map_err(corrupt)?;
        for i in 0..n_tensors {
            let name = c.string(&format!("name of tensor {i}")).map_err(corrupt)?;
            let n_dims = c
                .u32(&format!("dimension count of {name}"))
                .map_err(corrupt)?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(corrupt(format!(
                    "tensor {name} has {n_dims} dimensions (1 to {MAX_DIMS} allowed)"
                )));
            }
            let dims = (0..n_dims)
                .map(|_| c.u64(&format!("dimensions of {name}")))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(corrupt)?;
            let ty = GgmlType::from_id(c.u32(&format!("type of {name}")).map_err(corrupt)?);
            let offset = c.u64(&format!("offset of {name}")).map_err(corrupt)?;
            infos.push((name, dims, ty, offset));
        }
        let header_end = c.pos as u64;
        let data_start = header_end.div_ceil(alignment) * alignment;
        if data_start > map.len() as u64 {
            return Err(corrupt(format!(
                "the data section would start at {data_start}, past the end of the {}-byte file",
                map.len()
            )));
        }
        let data_start = data_start as usize;
        let data_len = (map.len() - data_start) as u64;
        let mut tensors = try_vec(n_tensors, "tensors").map_err(corrupt)?;
        let mut by_name = HashMap::new();
        for (name, dims, ty, offset) in infos {
            let len = tensor_len(&name, &dims, ty).map_err(corrupt)?;
            if offset % alignment != 0 {
                return Err(corrupt(format!(
                    "tensor {name} at data offset {offset} is not aligned to {alignment}"
                )));
            }
            if offset
                .checked_add(len as u64)
                .is_none_or(|end| end > data_len)
            {
                return Err(corrupt(format!(
                    "tensor {name} ({len} bytes at data offset {offset}) runs past the end of \
                     the {data_len}-byte data section"
                )));
            }
            if by_name.insert(name.clone(), tensors.len()).is_some() {
                return Err(corrupt(format!("tensor {name} appears twice")));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset,
                len,
            });
        }
        Ok(GgufFile {
            path: path.to_path_buf(),
            map,
            version,
            metadata,
            tensors,
            by_name,
            data_start,
            alignment,
        })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The data alignment in force (`general.alignment` or 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Every metadata pair, in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// The metadata value under `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Every tensor info, in file order (not layer order: find tensors by name).
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The info of tensor `name`.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw bytes of tensor `name` in the map.
    pub fn raw(&self, info: &TensorInfo) -> &[u8] {
        let start = self.data_start + info.offset as usize;
        &self.map[start..start + info.len]
    }

    /// Tensor `name` in the engine's shape order (`[out, in]`): F32, F16 and BF16 data as a
    /// zero-copy view of the map, quantized types dequantized to an owned f32 tensor. `None`
    /// when the file has no such tensor; a type that cannot be dequantized is
    /// [`Error::Unsupported`] naming it.
    pub fn tensor(&self, name: &str) -> Result<Option<Tensor>> {
        let Some(info) = self.info(name) else {
            return Ok(None);
        };
        let at = self.data_start + info.offset as usize;
        let named = |e: Error| match e {
            Error::Unsupported(m) => {
                Error::Unsupported(format!("tensor {name} in {}: {m}", self.path.display()))
            }
            Error::OutOfMemory(m) => Error::OutOfMemory(m),
            other => Error::corrupt(&self.path, format!("tensor {name}: {other}")),
        };
        let dense = match info.ty {
            GgmlType::F32 => Some(DType::F32),
            GgmlType::F16 => Some(DType::F16),
            GgmlType::BF16 => Some(DType::BF16),
            _ => None,
        };
        if let Some(dtype) = dense {
            return Tensor::mapped(self.map.clone(), at, info.shape(), dtype)
                .map(Some)
                .map_err(named);
        }
        let values = dequant::dequantize(info.ty, self.raw(info), info.numel()).map_err(named)?;
        Ok(Some(Tensor::from_f32(&values, info.shape())))
    }

    /// Tensor `name` dequantized to f32 values, in file order.
    pub fn tensor_f32(&self, name: &str) -> Result<Option<Vec<f32>>> {
        let Some(info) = self.info(name) else {
            return Ok(None);
        };
        dequant::dequantize(info.ty, self.raw(info), info.numel())
            .map(Some)
            .map_err(|e| match e {
                Error::Unsupported(m) => Error::Unsupported(format!("tensor {name}: {m}")),
                other => other,
            })
    }
}

/// Bytes of a tensor with dimensions `dims` of type `ty`; an error names the tensor when the
/// innermost dimension is not a whole number of blocks or a size overflows.
fn tensor_len(name: &str, dims: &[u64], ty: GgmlType) -> std::result::Result<usize, String> {
    let overflow = || format!("tensor {name}: dimensions {dims:?} overflow");
    let numel = dims
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(overflow)?;
    let Some((bs, ts)) = ty.block() else {
        // Unknown types are listed (inspect shows them) but their size is not known: they
        // occupy no bytes here and reading them is refused by name.
        return Ok(0);
    };
    if dims[0] % bs as u64 != 0 {
        return Err(format!(
            "tensor {name}: its innermost dimension {} is not a multiple of the {ty} block of {bs}",
            dims[0]
        ));
    }
    (numel / bs).checked_mul(ts).ok_or_else(overflow)
}
