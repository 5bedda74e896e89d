//! ggml tensor element types: their ids in the file, names, and block geometry.

/// Elements per super-block of the K-quant types.
pub const QK_K: usize = 256;

/// A tensor element type as GGUF tensor infos name it (`ggml_type`). Only the types this
/// crate dequantizes have variants; every other id is kept as [`GgmlType::Other`] so that an
/// error can name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    /// IEEE float32.
    F32,
    /// IEEE float16.
    F16,
    /// bfloat16.
    BF16,
    /// Blocks of 32: f16 scale, 32 int8.
    Q8_0,
    /// Blocks of 32: f16 scale, 16 bytes of nibbles, offset 8.
    Q4_0,
    /// Blocks of 32: f16 scale, f16 minimum, 16 bytes of nibbles.
    Q4_1,
    /// Blocks of 32: f16 scale, 32 high bits, 16 bytes of nibbles, offset 16.
    Q5_0,
    /// Blocks of 32: f16 scale, f16 minimum, 32 high bits, 16 bytes of nibbles.
    Q5_1,
    /// Super-blocks of 256, 2-bit, 16 sub-blocks with 4-bit scales and minimums.
    Q2K,
    /// Super-blocks of 256, 3-bit, 16 sub-blocks with 6-bit scales.
    Q3K,
    /// Super-blocks of 256, 4-bit, 8 sub-blocks with 6-bit scales and minimums.
    Q4K,
    /// Super-blocks of 256, 5-bit, 8 sub-blocks with 6-bit scales and minimums.
    Q5K,
    /// Super-blocks of 256, 6-bit, 16 sub-blocks with int8 scales.
    Q6K,
    /// Any other id (I-quants, Q8_1, Q8_K, integer types, future types).
    Other(u32),
}

impl GgmlType {
    /// The type with file id `id`.
    pub fn from_id(id: u32) -> Self {
        use GgmlType::*;
        match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            10 => Q2K,
            11 => Q3K,
            12 => Q4K,
            13 => Q5K,
            14 => Q6K,
            30 => BF16,
            other => Other(other),
        }
    }

    /// The name ggml gives the type (`"Q4_1"`, `"Q6_K"`; for other ids the known name, or
    /// `"type N"`).
    pub fn name(self) -> String {
        use GgmlType::*;
        let s = match self {
            F32 => "F32",
            F16 => "F16",
            BF16 => "BF16",
            Q8_0 => "Q8_0",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q2K => "Q2_K",
            Q3K => "Q3_K",
            Q4K => "Q4_K",
            Q5K => "Q5_K",
            Q6K => "Q6_K",
            Other(id) => return other_name(id),
        };
        s.to_string()
    }

    /// `(elements per block, bytes per block)`, `None` for [`GgmlType::Other`].
    pub fn block(self) -> Option<(usize, usize)> {
        use GgmlType::*;
        Some(match self {
            F32 => (1, 4),
            F16 | BF16 => (1, 2),
            Q8_0 => (32, 34),
            Q4_0 => (32, 18),
            Q4_1 => (32, 20),
            Q5_0 => (32, 22),
            Q5_1 => (32, 24),
            Q2K => (QK_K, 84),
            Q3K => (QK_K, 110),
            Q4K => (QK_K, 144),
            Q5K => (QK_K, 176),
            Q6K => (QK_K, 210),
            Other(_) => return None,
        })
    }
}

/// Names of the ggml types this crate does not dequantize, for error messages.
fn other_name(id: u32) -> String {
    let known = match id {
        9 => "Q8_1",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => return format!("type {id}"),
    };
    format!("{known} (type {id})")
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_unknown_types_are_named() {
        for id in [0, 1, 2, 3, 6, 7, 8, 10, 11, 12, 13, 14, 30] {
            let t = GgmlType::from_id(id);
            assert!(!matches!(t, GgmlType::Other(_)), "{id}");
            assert!(t.block().is_some());
        }
        assert_eq!(GgmlType::from_id(23).name(), "IQ4_XS (type 23)");
        assert_eq!(GgmlType::from_id(200).name(), "type 200");
        assert_eq!(GgmlType::Q6K.to_string(), "Q6_K");
    }
}
