//! The `.acv` variant file: fixed header, JSON metadata, tokenizer bytes, tensor directory,
//! then 4 KiB-aligned tensor payloads in forward order.
//!
//! ```text
//! offset  size  field
//!      0     8  magic        b"ACVARNT\0"
//!      8     4  version      u32 LE, currently 2
//!     12     4  header_crc   crc32 of bytes [64, data_start) (metadata + tokenizer + directory)
//!     16     8  meta_len     u64 LE, JSON [`Meta`]
//!     24     8  tok_len      u64 LE, tokenizer bytes named by `tokenizer_name` (0 = none)
//!     32     8  dir_len      u64 LE, JSON array of [`TensorEntry`]
//!     40     8  data_start   u64 LE, first payload byte; a multiple of 4096
//!     48     8  file_len     u64 LE, total file length; a multiple of 4096
//!     56     8  reserved     0
//!     64        metadata, tokenizer, directory, zero padding up to data_start
//! ```
//!
//! **Alignment guarantees** (for O_DIRECT readers): every tensor's `offset` is a multiple of
//! [`ALIGN`] (4096); the range `[offset, offset + padded_len)` with `padded_len =
//! round_up(len, 4096)` lies inside the file and its padding is zero; tensors are written in
//! forward order (embedding, then per layer `attn_norm wq wk wv wo [bq bk bv] ffn_norm w_gate
//! w_up w_down`, then `final_norm`, `classifier`), so one layer is one contiguous, aligned byte
//! range ([`VariantIndex::segments`]).
//!
//! **Packed payloads** hold the codes (`[out, row_stride]` bytes, see
//! [`crate::quant::packed`]), then the group parameters, each part at an offset relative to
//! the payload start that is a multiple of 256 (so a GPU can use it in place):
//!
//! | format | `scales_offset` | `zeros_offset` | `super_scales_offset` |
//! | --- | --- | --- | --- |
//! | INT8 | FP16 scales `[out, n_groups]` | 0 (none) | 0 (none) |
//! | INT4 | FP16 scales `[out, n_groups]` | FP16 zeros `[out, n_groups]` | 0 (none) |
//! | INT2 | u8 scale codes `[out, n_groups]` | zero codes, two per byte, `[out, ceil(n_groups/2)]` | FP16 super-scales `[out]` |
//!
//! (the INT2 codes and their decode are documented with the packer, "INT2 parameters").
//! Dense payloads are the tensor's little-endian bytes. Version 2 introduced the compact
//! INT2 parameters (version 1 stored FP16 scales and zeros for INT2 too).

use crate::model::{DType, ModelConfig};
use crate::quant::QuantConfig;
use serde::{Deserialize, Serialize};

/// File magic.
pub const MAGIC: [u8; 8] = *b"ACVARNT\0";
/// The format version this build writes and reads.
pub const VERSION: u32 = 2;
/// Bytes of the fixed header.
pub const HEADER_LEN: usize = 64;
/// Payload alignment (bytes).
pub const ALIGN: u64 = 4096;
/// Alignment of scales and zeros inside a packed payload.
pub const PART_ALIGN: u64 = 256;

/// Rounds `x` up to a multiple of `a`.
pub fn round_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

/// Storage format of one tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TensorFormat {
    /// Dense f32.
    F32,
    /// Dense f16.
    F16,
    /// Dense bf16.
    Bf16,
    /// Packed INT8 (symmetric).
    Int8,
    /// Packed INT4 (scale + zero).
    Int4,
    /// Packed INT2 (scale + zero).
    Int2,
}

impl TensorFormat {
    /// The format of a dense dtype.
    pub fn dense(d: DType) -> Self {
        match d {
            DType::F32 => TensorFormat::F32,
            DType::F16 => TensorFormat::F16,
            DType::BF16 => TensorFormat::Bf16,
        }
    }
}

/// One entry of the tensor directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorEntry {
    /// Full name: `embedding`, `layers.3.wq`, `final_norm`, `classifier`, ...
    pub name: String,
    /// Layer index, `None` for tensors outside the blocks.
    pub layer: Option<usize>,
    /// Storage format.
    pub format: TensorFormat,
    /// Logical shape (`[out, in]` for matrices).
    pub shape: Vec<usize>,
    /// Group size of packed formats (0 for dense).
    pub group: usize,
    /// Absolute payload offset in the file (multiple of 4096).
    pub offset: u64,
    /// Payload length in bytes (without the alignment padding).
    pub len: u64,
    /// Offset of the scales inside the payload: FP16 (INT8/INT4) or u8 codes (INT2); 0 for
    /// dense.
    pub scales_offset: u64,
    /// Offset of the zeros inside the payload: FP16 (INT4) or packed 4-bit codes (INT2); 0
    /// otherwise.
    pub zeros_offset: u64,
    /// Offset of the FP16 per-row super-scales inside the payload (INT2; 0 otherwise).
    pub super_scales_offset: u64,
    /// crc32 (IEEE) of the `len` payload bytes.
    pub crc32: u32,
}

/// Metadata of a variant file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// The model's shape.
    pub config: ModelConfig,
    /// Precision name ("fp16", "int8", "int4", "int2").
    pub precision: String,
    /// How it was quantized.
    pub quant: QuantConfig,
    /// What the embedded tokenizer bytes are, when there are some: a file's name
    /// (`tokenizer.bin`, `tokenizer.json`) or `tokenizer+config.json`, a `tokenizer.json` with
    /// its BOS/EOS, BOS rule and chat template in one document (what a GGUF model's or a
    /// Hugging Face model's variants carry; `model::tokenizer::embeddable_tokenizer`).
    pub tokenizer_name: Option<String>,
}

/// Which part of the model a byte range holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    /// Token embedding.
    Embedding,
    /// Transformer block `i` (norms, projections, biases).
    Layer(usize),
    /// Final norm and classifier.
    Head,
}

/// A 4 KiB-aligned byte range of the file (`len` is a multiple of 4096).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    /// What it holds.
    pub segment: Segment,
    /// First byte (multiple of 4096).
    pub offset: u64,
    /// Length (multiple of 4096).
    pub len: u64,
}

/// The parsed header and directory of a variant file (no payloads).
#[derive(Clone, Debug)]
pub struct VariantIndex {
    /// Metadata.
    pub meta: Meta,
    /// The embedded tokenizer file bytes, if any.
    pub tokenizer: Option<Vec<u8>>,
    /// Tensors in file (forward) order.
    pub tensors: Vec<TensorEntry>,
    /// First payload byte.
    pub data_start: u64,
    /// Total file length.
    pub file_len: u64,
}

impl VariantIndex {
    /// Per-segment byte ranges in forward order: the embedding, each layer, the head. Each is
    /// contiguous and 4 KiB-aligned at both ends, ready for O_DIRECT reads.
    pub fn segments(&self) -> Vec<ByteRange> {
        let mut out: Vec<ByteRange> = Vec::new();
        for t in &self.tensors {
            let seg = match (t.layer, t.name.as_str()) {
                (Some(i), _) => Segment::Layer(i),
                (None, "embedding") => Segment::Embedding,
                _ => Segment::Head,
            };
            let end = t.offset + round_up(t.len.max(1), ALIGN);
            match out.last_mut() {
                Some(r) if r.segment == seg => r.len = end - r.offset,
                _ => out.push(ByteRange {
                    segment: seg,
                    offset: t.offset,
                    len: end - t.offset,
                }),
            }
        }
        out
    }

    /// The directory entry named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.iter().find(|t| t.name == name)
    }
}
