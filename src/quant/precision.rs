//! The four precisions a model is served in.

use serde::{Deserialize, Serialize};

/// One of the four variants of a model, most to least precise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 16-bit floating point weights.
    Fp16,
    /// 8-bit integer weights.
    Int8,
    /// 4-bit integer weights.
    Int4,
    /// 2-bit integer weights.
    Int2,
}

impl Precision {
    /// All precisions, most precise first.
    pub const ALL: [Precision; 4] = [
        Precision::Fp16,
        Precision::Int8,
        Precision::Int4,
        Precision::Int2,
    ];

    /// Nominal bits per weight.
    pub fn bits(self) -> u32 {
        match self {
            Precision::Fp16 => 16,
            Precision::Int8 => 8,
            Precision::Int4 => 4,
            Precision::Int2 => 2,
        }
    }

    /// Lower-case name: `fp16`, `int8`, `int4`, `int2`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp16 => "fp16",
            Precision::Int8 => "int8",
            Precision::Int4 => "int4",
            Precision::Int2 => "int2",
        }
    }

    /// Position in [`Precision::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        Precision::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                crate::Error::invalid(format!(
                    "unknown precision '{s}' (expected fp16, int8, int4 or int2)"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_is_named() {
        for p in Precision::ALL {
            assert_eq!(p.name().parse::<Precision>().unwrap(), p);
        }
        assert!("int3"
            .parse::<Precision>()
            .unwrap_err()
            .to_string()
            .contains("int3"));
        assert_eq!(Precision::Int4.bits(), 4);
    }
}
