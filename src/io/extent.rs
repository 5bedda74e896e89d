//! What to read: a tensor extent (a byte range of a file, with an optional checksum) and a
//! layer (the extents one pool entry holds, concatenated in order).

use std::path::PathBuf;

/// One contiguous byte range of a file. The variant store lays payloads out 4 KiB-aligned, which
/// lets the reader use O_DIRECT; unaligned extents still read correctly (buffered).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extent {
    /// File holding the bytes.
    pub path: PathBuf,
    /// Byte offset of the range in the file.
    pub offset: u64,
    /// Length of the range in bytes.
    pub len: u64,
    /// CRC-32 (IEEE, as `crc32fast` computes it) of the range, checked after reading when set.
    pub crc32: Option<u32>,
}

impl Extent {
    /// An extent without a checksum.
    pub fn new(path: impl Into<PathBuf>, offset: u64, len: u64) -> Self {
        Extent {
            path: path.into(),
            offset,
            len,
            crc32: None,
        }
    }

    /// The same extent, checked against `crc32` after reading.
    pub fn with_crc32(mut self, crc32: u32) -> Self {
        self.crc32 = Some(crc32);
        self
    }
}

/// The unit of residency: a list of extents whose bytes are placed back to back in the
/// destination (extent `i` starts where extent `i - 1` ends).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layer {
    /// The extents, in destination order.
    pub extents: Vec<Extent>,
}

impl Layer {
    /// A layer made of `extents`.
    pub fn new(extents: Vec<Extent>) -> Self {
        Layer { extents }
    }

    /// Total bytes of the layer in the destination.
    pub fn total_len(&self) -> u64 {
        self.extents.iter().map(|e| e.len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_len_sums_extents() {
        let l = Layer::new(vec![
            Extent::new("a", 0, 4096),
            Extent::new("b", 8192, 10).with_crc32(7),
        ]);
        assert_eq!(l.total_len(), 4106);
        assert_eq!(l.extents[1].crc32, Some(7));
        assert_eq!(Layer::default().total_len(), 0);
    }
}
