//! Weight matrices as the engine consumes them: dense (f32/f16/bf16) or quantized packings.
//!
//! The quantized formats (INT8/INT4/INT2, group-wise, FP16 scales and zeros) are documented
//! next to their packers in this module's submodules.

pub mod precision;

pub use precision::Precision;

use crate::model::Tensor;

/// One projection matrix `[out, in]`, in whichever precision its variant stores it.
#[derive(Clone, Debug)]
pub enum WeightMatrix {
    /// A dense host tensor (f32, f16 or bf16).
    Dense(Tensor),
}

impl WeightMatrix {
    /// `(out, in)` of the matrix.
    pub fn dims(&self) -> (usize, usize) {
        match self {
            WeightMatrix::Dense(t) => (t.shape()[0], t.shape()[1]),
        }
    }

    /// Bytes the matrix occupies in this precision (packed data plus scales and zeros).
    pub fn byte_len(&self) -> usize {
        match self {
            WeightMatrix::Dense(t) => t.bytes().len(),
        }
    }
}

impl From<Tensor> for WeightMatrix {
    fn from(t: Tensor) -> Self {
        WeightMatrix::Dense(t)
    }
}
