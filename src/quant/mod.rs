//! Weight matrices as the engine consumes them: dense (f32/f16/bf16) or quantized packings.
//!
//! The packed formats (INT8 symmetric, INT4/INT2 asymmetric group-wise; FP16 scales and zeros,
//! compact scale/zero codes for INT2) are documented once, in [`packed`]; the FP16 conversion
//! in [`fp16`].

pub mod calib;
pub mod fp16;
pub mod gptq;
pub mod int2_params;
pub mod packed;
pub mod per_precision;
pub mod quality;
pub mod quantizer;
pub mod variant;

pub use packed::{Int2Matrix, Int4Matrix, Int8Matrix, Packed};
pub use per_precision::PerPrecision;
pub use quality::Quality;
pub use quantizer::Method;
pub use variant::{
    quantize_model, reconstruction_error, size_report, Precision, QuantConfig, SizeReport,
};

pub mod precision;

use crate::model::Tensor;

/// One projection matrix `[out, in]`, in whichever precision its variant stores it.
#[derive(Clone, Debug)]
pub enum WeightMatrix {
    /// A dense host tensor (f32, f16 or bf16); FP16 variants use an f16 tensor.
    Dense(Tensor),
    /// INT8 weight-only, symmetric, per output channel or per group.
    Int8(Int8Matrix),
    /// INT4 weight-only, group-wise, FP16 scale and zero.
    Int4(Int4Matrix),
    /// INT2 weight-only, group-wise, compact scale and zero codes (decoded to FP16 in memory).
    Int2(Int2Matrix),
}

impl WeightMatrix {
    /// `(out, in)` of the matrix.
    pub fn dims(&self) -> (usize, usize) {
        match self {
            WeightMatrix::Dense(t) => (t.shape()[0], t.shape()[1]),
            WeightMatrix::Int8(m) => m.dims(),
            WeightMatrix::Int4(m) => m.dims(),
            WeightMatrix::Int2(m) => m.dims(),
        }
    }

    /// Bytes the matrix occupies in this precision as stored (packed data plus scales and
    /// zeros, or INT2's compact parameter codes).
    pub fn byte_len(&self) -> usize {
        match self {
            WeightMatrix::Dense(t) => t.bytes().len(),
            WeightMatrix::Int8(m) => m.byte_len(),
            WeightMatrix::Int4(m) => m.byte_len(),
            WeightMatrix::Int2(m) => m.byte_len(),
        }
    }

    /// Nominal bits of one code ("16" for f16/bf16 tensors, "32" for f32).
    pub fn bits(&self) -> u32 {
        match self {
            WeightMatrix::Dense(t) => 8 * t.dtype().size() as u32,
            WeightMatrix::Int8(_) => 8,
            WeightMatrix::Int4(_) => 4,
            WeightMatrix::Int2(_) => 2,
        }
    }

    /// Group size of a packed matrix (`None` for dense).
    pub fn group_size(&self) -> Option<usize> {
        match self {
            WeightMatrix::Dense(_) => None,
            WeightMatrix::Int8(m) => Some(m.group_size()),
            WeightMatrix::Int4(m) => Some(m.group_size()),
            WeightMatrix::Int2(m) => Some(m.group_size()),
        }
    }

    /// The matrix as f32 `[out, in]` (reference dequantisation for packed formats).
    pub fn dequantize(&self) -> Vec<f32> {
        match self {
            WeightMatrix::Dense(t) => t.to_f32_vec(),
            WeightMatrix::Int8(m) => m.dequantize(),
            WeightMatrix::Int4(m) => m.dequantize(),
            WeightMatrix::Int2(m) => m.dequantize(),
        }
    }
}

impl From<Tensor> for WeightMatrix {
    fn from(t: Tensor) -> Self {
        WeightMatrix::Dense(t)
    }
}
