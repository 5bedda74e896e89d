//! Which variants are resident in device memory: a capacity in bytes and least-recently-used
//! eviction. (The device-memory pool will replace this bookkeeping; the router only asks
//! "is it resident?" and "what does loading it evict?".)

use crate::quant::Precision;
use crate::{Error, Result};

/// Resident variants under a byte budget.
#[derive(Clone, Debug)]
pub struct Residency {
    capacity: u64,
    bytes: [u64; 4],
    /// `(precision, last use)` of each resident variant.
    resident: Vec<(Precision, u64)>,
    clock: u64,
    /// Variant loads so far.
    pub swaps: u64,
    /// Uses of an already resident variant so far.
    pub hits: u64,
}

impl Residency {
    /// An empty device of `capacity` bytes holding variants of the given sizes.
    pub fn new(capacity: u64, bytes: [u64; 4]) -> Result<Self> {
        if let Some(p) = Precision::ALL.iter().find(|p| bytes[p.index()] > capacity) {
            return Err(Error::invalid(format!(
                "device capacity of {capacity} bytes cannot hold the {p} variant ({} bytes)",
                bytes[p.index()]
            )));
        }
        Ok(Residency {
            capacity,
            bytes,
            resident: Vec::new(),
            clock: 0,
            swaps: 0,
            hits: 0,
        })
    }

    /// Whether `p` is resident.
    pub fn is_resident(&self, p: Precision) -> bool {
        self.resident.iter().any(|&(r, _)| r == p)
    }

    /// The resident variants, most recently used first.
    pub fn resident(&self) -> Vec<Precision> {
        let mut r = self.resident.clone();
        r.sort_by_key(|e| std::cmp::Reverse(e.1));
        r.into_iter().map(|(p, _)| p).collect()
    }

    /// Uses variant `p`: a hit when resident, otherwise a swap that loads it and evicts least
    /// recently used variants until it fits. Returns whether a swap happened.
    pub fn use_variant(&mut self, p: Precision) -> bool {
        self.clock += 1;
        if let Some(e) = self.resident.iter_mut().find(|(r, _)| *r == p) {
            e.1 = self.clock;
            self.hits += 1;
            return false;
        }
        let used = |r: &Vec<(Precision, u64)>, b: &[u64; 4]| -> u64 {
            r.iter().map(|(q, _)| b[q.index()]).sum()
        };
        while used(&self.resident, &self.bytes) + self.bytes[p.index()] > self.capacity {
            let Some(lru) = self
                .resident
                .iter()
                .enumerate()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(i, _)| i)
            else {
                break;
            };
            self.resident.remove(lru);
        }
        self.resident.push((p, self.clock));
        self.swaps += 1;
        true
    }

    /// Fraction of uses that were hits.
    pub fn hit_rate(&self) -> f64 {
        let n = self.hits + self.swaps;
        if n == 0 {
            0.0
        } else {
            self.hits as f64 / n as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Precision::*;

    #[test]
    fn lru_eviction_under_a_byte_budget() {
        let mut r = Residency::new(100, [100, 50, 30, 20]).unwrap();
        assert!(r.use_variant(Int8));
        assert!(r.use_variant(Int4));
        assert!(!r.use_variant(Int8));
        assert!(r.use_variant(Int2)); // 50 + 30 + 20 = 100 fits
        assert_eq!(r.resident().len(), 3);
        assert!(r.use_variant(Fp16)); // evicts everything
        assert_eq!(r.resident(), vec![Fp16]);
        assert!(r.use_variant(Int4));
        assert_eq!(r.resident(), vec![Int4]);
        assert_eq!((r.swaps, r.hits), (5, 1));
        assert!((r.hit_rate() - 1.0 / 6.0).abs() < 1e-12);
        assert!(Residency::new(10, [100, 50, 30, 20]).is_err());
    }
}
