//! GGUF model files (llama.cpp's format, versions 2 and 3): the container, its metadata, the
//! dequantization of ggml's block types, and the `llama` / `qwen2` architectures.
//!
//! [`load`] maps a file and builds [`ModelWeights`]: F32/F16/BF16 tensors are zero-copy views,
//! quantized ones (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K-Q6_K) are dequantized to f32. Matrices
//! are listed `[in, out]` in the file over row-major `(out, in)` data, which is the engine's
//! `[out, in]` layout. Every malformed file is a typed [`crate::Error`] naming the problem; every
//! count and length is checked against the file's size before anything is allocated for it.

pub mod arch;
pub mod dequant;
mod dequant_k;
pub mod file;
pub mod ggml_type;
pub mod value;

pub use arch::GgufArch;
pub use dequant::dequantize;
pub use file::{has_magic, GgufFile, TensorInfo, MAGIC};
pub use ggml_type::GgmlType;
pub use value::{Value, ValueType};

use crate::model::ModelWeights;
use crate::Result;
use std::path::Path;

/// Loads the model in the GGUF file at `path`.
pub fn load(path: &Path) -> Result<ModelWeights> {
    arch::weights(&GgufFile::open(path)?)
}
