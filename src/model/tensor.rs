//! Host tensors: a shape, an element type and bytes that are either memory-mapped from the
//! checkpoint (zero-copy) or owned.

use crate::{Error, Result};
use half::{bf16, f16};
use memmap2::Mmap;
use std::sync::Arc;

/// Element type of a dense host tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DType {
    /// IEEE float32.
    F32,
    /// IEEE float16.
    F16,
    /// bfloat16.
    BF16,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }
}

/// Where a tensor's bytes live.
#[derive(Clone)]
enum Storage {
    /// A window into a memory-mapped file.
    Mapped {
        map: Arc<Mmap>,
        offset: usize,
        len: usize,
    },
    /// Bytes owned by the tensor, kept in `u64` words so every element type is aligned.
    Owned { words: Arc<Vec<u64>>, len: usize },
}

/// A dense, row-major host tensor. Cloning is cheap (the bytes are shared).
#[derive(Clone)]
pub struct Tensor {
    shape: Vec<usize>,
    dtype: DType,
    storage: Storage,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {:?})", self.dtype, self.shape)
    }
}

impl Tensor {
    /// A tensor over `map[offset..offset+len]`; checks bounds, length and alignment.
    pub fn mapped(map: Arc<Mmap>, offset: usize, shape: Vec<usize>, dtype: DType) -> Result<Self> {
        let len = shape
            .iter()
            .try_fold(dtype.size(), |a, &d| a.checked_mul(d))
            .ok_or_else(|| Error::invalid(format!("tensor shape {shape:?} overflows")))?;
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= map.len())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "tensor of {len} bytes at offset {offset} runs past the end of a {}-byte file",
                    map.len()
                ))
            })?;
        let _ = end;
        let t = Tensor {
            shape,
            dtype,
            storage: Storage::Mapped { map, offset, len },
        };
        if (t.bytes().as_ptr() as usize) % dtype.size() != 0 {
            // Unaligned data in the file: fall back to an owned, aligned copy.
            return Ok(Tensor::from_bytes(t.bytes(), t.shape.clone(), dtype));
        }
        Ok(t)
    }

    /// An owned tensor copied from raw little-endian bytes.
    pub fn from_bytes(bytes: &[u8], shape: Vec<usize>, dtype: DType) -> Self {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        Tensor {
            shape,
            dtype,
            storage: Storage::Owned {
                words: Arc::new(words),
                len: bytes.len(),
            },
        }
    }

    /// An owned float32 tensor.
    pub fn from_f32(data: &[f32], shape: Vec<usize>) -> Self {
        debug_assert_eq!(data.len(), shape.iter().product::<usize>());
        Tensor::from_bytes(bytemuck::cast_slice(data), shape, DType::F32)
    }

    /// Shape, outermost first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The raw little-endian bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.storage {
            Storage::Mapped { map, offset, len } => &map[*offset..*offset + *len],
            Storage::Owned { words, len } => &bytemuck::cast_slice::<u64, u8>(words)[..*len],
        }
    }

    /// Whether the bytes are borrowed from a memory map rather than copied.
    pub fn is_mapped(&self) -> bool {
        matches!(self.storage, Storage::Mapped { .. })
    }

    /// Zero-copy view as f32, when the tensor is float32.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match self.dtype {
            DType::F32 => bytemuck::try_cast_slice(self.bytes()).ok(),
            _ => None,
        }
    }

    /// The elements converted to f32 (a copy).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        let b = self.bytes();
        match self.dtype {
            DType::F32 => match bytemuck::try_cast_slice::<u8, f32>(b) {
                Ok(s) => s.to_vec(),
                Err(_) => b
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            },
            DType::F16 => b
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::BF16 => b
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        }
    }

    /// The same bytes under a new shape with the same element count.
    pub fn reshape(&self, shape: Vec<usize>) -> Result<Self> {
        if shape.iter().product::<usize>() != self.numel() {
            return Err(Error::invalid(format!(
                "cannot reshape {:?} to {:?}",
                self.shape, shape
            )));
        }
        Ok(Tensor {
            shape,
            dtype: self.dtype,
            storage: self.storage.clone(),
        })
    }

    /// Rows `start..end` of a tensor whose first dimension indexes rows (shares the bytes).
    pub fn rows(&self, start: usize, end: usize) -> Result<Self> {
        let rows = *self.shape.first().unwrap_or(&0);
        if start > end || end > rows {
            return Err(Error::invalid(format!(
                "rows {start}..{end} out of range for shape {:?}",
                self.shape
            )));
        }
        let row_bytes = self.shape[1..].iter().product::<usize>() * self.dtype.size();
        let mut shape = self.shape.clone();
        shape[0] = end - start;
        let storage = match &self.storage {
            Storage::Mapped { map, offset, .. } => Storage::Mapped {
                map: map.clone(),
                offset: offset + start * row_bytes,
                len: (end - start) * row_bytes,
            },
            Storage::Owned { .. } => {
                let b = &self.bytes()[start * row_bytes..end * row_bytes];
                return Ok(Tensor::from_bytes(b, shape, self.dtype));
            }
        };
        Ok(Tensor {
            shape,
            dtype: self.dtype,
            storage,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_and_bf16_convert_exactly() {
        let vals = [1.0f32, -2.5, 0.125, 65504.0];
        let h: Vec<u8> = vals
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect();
        let b: Vec<u8> = vals
            .iter()
            .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
            .collect();
        assert_eq!(
            Tensor::from_bytes(&h, vec![4], DType::F16).to_f32_vec(),
            vals
        );
        let bb = Tensor::from_bytes(&b, vec![4], DType::BF16).to_f32_vec();
        assert_eq!(bb[..3], vals[..3]);
    }

    #[test]
    fn rows_and_reshape_share_and_check_bounds() {
        let t = Tensor::from_f32(&[1., 2., 3., 4., 5., 6.], vec![3, 2]);
        assert_eq!(t.rows(1, 3).unwrap().as_f32().unwrap(), &[3., 4., 5., 6.]);
        assert!(t.rows(2, 4).is_err());
        assert!(t.reshape(vec![4, 2]).is_err());
        assert_eq!(t.reshape(vec![6]).unwrap().shape(), &[6]);
    }
}
