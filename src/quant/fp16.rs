//! The FP16 format: IEEE binary16, little-endian, row-major `[out, in]`, no padding.
//!
//! f32 inputs are rounded to nearest, ties to even (`half::f16::from_f32`); bf16 inputs are
//! first widened to f32 exactly. Values beyond FP16's range become ±inf, which
//! [`to_f16`] reports as an error naming the tensor, since such a model would be broken.

use crate::model::{DType, Tensor};
use crate::{Error, Result};
use half::f16;

/// Converts a dense tensor of any dtype to an owned FP16 tensor of the same shape.
/// `name` is used in the error when a finite value overflows FP16.
pub fn to_f16(name: &str, t: &Tensor) -> Result<Tensor> {
    if t.dtype() == DType::F16 {
        return Ok(t.clone());
    }
    let v = t.to_f32_vec();
    let mut bytes = Vec::with_capacity(v.len() * 2);
    for (i, &x) in v.iter().enumerate() {
        let h = f16::from_f32(x);
        if h.is_infinite() && x.is_finite() {
            return Err(Error::invalid(format!(
                "tensor {name}: element {i} = {x} overflows FP16"
            )));
        }
        bytes.extend_from_slice(&h.to_le_bytes());
    }
    Ok(Tensor::from_bytes(&bytes, t.shape().to_vec(), DType::F16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_nearest_even_and_rejects_overflow() {
        // 1 + 2^-11 is halfway between 1 and the next f16 (1 + 2^-10): ties to even -> 1.
        let halfway = 1.0 + f32::powi(2.0, -11);
        let above = 1.0 + 3.0 * f32::powi(2.0, -12);
        let t = Tensor::from_f32(&[halfway, above, -2.5], vec![3]);
        let h = to_f16("x", &t).unwrap();
        assert_eq!(h.dtype(), DType::F16);
        assert_eq!(h.to_f32_vec(), vec![1.0, 1.0 + f32::powi(2.0, -10), -2.5]);
        let e = to_f16("layers.3.wq", &Tensor::from_f32(&[1e6], vec![1]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("layers.3.wq"), "{e}");
    }
}
