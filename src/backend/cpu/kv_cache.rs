//! The CPU backend's key/value cache: one layer's keys or values, row-major `[rows, kv_dim]`,
//! in FP16 (the default: half the bytes a decode step streams) or f32 (the exact reference).

use super::super::checks::check_len;
use crate::Result;
use half::f16;

/// The element type of a [`KvCache`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvPrecision {
    /// FP16: rows are rounded to nearest on store; attention widens them exactly to f32.
    #[default]
    F16,
    /// f32: stored as computed (the reference the FP16 cache is tested against).
    F32,
}

impl std::str::FromStr for KvPrecision {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f16" | "fp16" => Ok(KvPrecision::F16),
            "f32" | "fp32" => Ok(KvPrecision::F32),
            _ => Err(crate::Error::invalid(format!(
                "unknown KV cache precision '{s}' (f16 or f32)"
            ))),
        }
    }
}

impl std::fmt::Display for KvPrecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KvPrecision::F16 => "f16",
            KvPrecision::F32 => "f32",
        })
    }
}

/// One layer's key or value cache on the CPU, `[rows, kv_dim]` row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum KvCache {
    /// FP16 rows.
    F16(Vec<f16>),
    /// f32 rows.
    F32(Vec<f32>),
}

impl From<Vec<f32>> for KvCache {
    /// An f32 cache holding `v` as is.
    fn from(v: Vec<f32>) -> Self {
        KvCache::F32(v)
    }
}

impl KvCache {
    /// A zeroed cache of `len` elements (fallible: the length follows the input).
    pub fn zeroed(precision: KvPrecision, len: usize) -> Result<Self> {
        use crate::model::input_file::try_filled;
        Ok(match precision {
            KvPrecision::F16 => KvCache::F16(try_filled(len, f16::ZERO)?),
            KvPrecision::F32 => KvCache::F32(try_filled(len, 0.0)?),
        })
    }

    /// Elements held.
    pub fn len(&self) -> usize {
        match self {
            KvCache::F16(v) => v.len(),
            KvCache::F32(v) => v.len(),
        }
    }

    /// True when the cache holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The precision of the elements.
    pub fn precision(&self) -> KvPrecision {
        match self {
            KvCache::F16(_) => KvPrecision::F16,
            KvCache::F32(_) => KvPrecision::F32,
        }
    }

    /// Every element widened to f32.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match self {
            KvCache::F16(v) => v.iter().map(|h| h.to_f32()).collect(),
            KvCache::F32(v) => v.clone(),
        }
    }

    /// Writes `src` (f32, `rows * width` elements) at row `pos0`, rounding to the cache's
    /// precision.
    pub fn store(&mut self, src: &[f32], rows: usize, width: usize, pos0: usize) -> Result<()> {
        check_len("store_rows src", src.len(), rows * width)?;
        check_len("store_rows cache", self.len(), (pos0 + rows) * width)?;
        let (at, n) = (pos0 * width, rows * width);
        match self {
            KvCache::F16(v) => half::slice::HalfFloatSliceExt::convert_from_f32_slice(
                &mut v[at..at + n],
                &src[..n],
            ),
            KvCache::F32(v) => v[at..at + n].copy_from_slice(&src[..n]),
        }
        Ok(())
    }

    /// Copies the first `rows` rows of width `width` of `src` into the start of `self`
    /// (growing a cache); both must have the same precision.
    pub fn copy_rows_from(&mut self, src: &KvCache, rows: usize, width: usize) -> Result<()> {
        let n = rows * width;
        check_len("copy_cache src", src.len(), n)?;
        check_len("copy_cache dst", self.len(), n)?;
        match (self, src) {
            (KvCache::F16(d), KvCache::F16(s)) => d[..n].copy_from_slice(&s[..n]),
            (KvCache::F32(d), KvCache::F32(s)) => d[..n].copy_from_slice(&s[..n]),
            _ => {
                return Err(crate::Error::invalid(
                    "copy_cache between caches of different precisions",
                ))
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_rounds_to_the_cache_precision_and_copy_keeps_rows() {
        let src = [1.0f32, 1.0 + 1.0 / 4096.0, -3.5, 65504.0, 0.1, -0.0];
        for p in [KvPrecision::F16, KvPrecision::F32] {
            let mut c = KvCache::zeroed(p, 12).unwrap();
            c.store(&src, 2, 3, 1).unwrap();
            let got = c.to_f32_vec();
            assert_eq!(&got[..3], &[0.0; 3]);
            for (g, s) in got[3..9].iter().zip(&src) {
                let want = match p {
                    KvPrecision::F16 => f16::from_f32(*s).to_f32(),
                    KvPrecision::F32 => *s,
                };
                assert_eq!(g.to_bits(), want.to_bits(), "{p}");
            }
            assert!(c.store(&src, 2, 3, 3).is_err(), "past the end");
            let mut grown = KvCache::zeroed(p, 24).unwrap();
            grown.copy_rows_from(&c, 3, 3).unwrap();
            assert_eq!(&grown.to_f32_vec()[..9], &got[..9]);
            assert!(grown.copy_rows_from(&c, 5, 3).is_err());
        }
        let mut f = KvCache::zeroed(KvPrecision::F16, 4).unwrap();
        let e = f
            .copy_rows_from(&KvCache::zeroed(KvPrecision::F32, 4).unwrap(), 1, 4)
            .unwrap_err();
        assert!(e.to_string().contains("different precisions"), "{e}");
        assert_eq!("fp16".parse::<KvPrecision>().unwrap(), KvPrecision::F16);
        assert!("f8".parse::<KvPrecision>().is_err());
    }
}
