//! Which variants are resident in device memory: a capacity in bytes and least-recently-used
//! eviction. The router asks "is it resident?"; the engine keeps exactly the variants listed
//! here loaded, so a variant evicted here is dropped from memory.

use crate::quant::{PerPrecision, Precision};
use crate::{Error, Result};

/// Resident variants under a byte budget.
#[derive(Clone, Debug)]
pub struct VariantCache {
    capacity: u64,
    bytes: PerPrecision<u64>,
    /// `(precision, last use)` of each resident variant.
    resident: Vec<(Precision, u64)>,
    clock: u64,
    /// Variant loads so far.
    pub swaps: u64,
    /// Uses of an already resident variant so far.
    pub hits: u64,
    /// Variants admitted ahead of use by [`VariantCache::prefetch`] so far.
    pub prefetches: u64,
}

impl VariantCache {
    /// An empty device of `capacity` bytes holding variants of the given sizes.
    pub fn new(capacity: u64, bytes: impl Into<PerPrecision<u64>>) -> Result<Self> {
        let bytes = bytes.into();
        if let Some(p) = Precision::ALL.iter().find(|p| bytes[**p] > capacity) {
            return Err(Error::invalid(format!(
                "device capacity of {capacity} bytes cannot hold the {p} variant ({} bytes)",
                bytes[*p]
            )));
        }
        Ok(VariantCache {
            capacity,
            bytes,
            resident: Vec::new(),
            clock: 0,
            swaps: 0,
            hits: 0,
            prefetches: 0,
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
        self.make_room(self.bytes[p], 0);
        self.resident.push((p, self.clock));
        self.swaps += 1;
        true
    }

    /// Bytes of the resident variants.
    pub fn used(&self) -> u64 {
        self.resident.iter().map(|(q, _)| self.bytes[*q]).sum()
    }

    /// Evicts least recently used variants, keeping the `keep` most recently used ones, until
    /// `need` more bytes fit; returns whether they do.
    fn make_room(&mut self, need: u64, keep: usize) -> bool {
        while self.used() + need > self.capacity {
            if self.resident.len() <= keep {
                return false;
            }
            let Some(lru) = self
                .resident
                .iter()
                .enumerate()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(i, _)| i)
            else {
                return false;
            };
            self.resident.remove(lru);
        }
        true
    }

    /// Whether `p` could be admitted by [`VariantCache::prefetch`] now: it is not resident and
    /// fits beside the most recently used variant.
    pub fn can_prefetch(&self, p: Precision) -> bool {
        let mru = self.resident().first().map_or(0, |q| self.bytes[*q]);
        !self.is_resident(p) && mru + self.bytes[p] <= self.capacity
    }

    /// Admits `p` ahead of use (a background load finished), evicting least recently used
    /// variants but never the most recently used one. Counts neither a hit nor a swap; returns
    /// whether `p` was admitted (false when already resident or when it does not fit beside
    /// the most recently used variant).
    pub fn prefetch(&mut self, p: Precision) -> bool {
        if !self.can_prefetch(p) || !self.make_room(self.bytes[p], 1) {
            return false;
        }
        self.clock += 1;
        self.resident.push((p, self.clock));
        self.prefetches += 1;
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
        let mut r = VariantCache::new(100, [100, 50, 30, 20]).unwrap();
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
        assert!(VariantCache::new(10, [100, 50, 30, 20]).is_err());
    }

    #[test]
    fn prefetch_admits_beside_the_most_recent_variant_without_counting_a_use() {
        let mut r = VariantCache::new(100, [100, 50, 30, 20]).unwrap();
        r.use_variant(Int8);
        r.use_variant(Int4);
        // INT2 fits beside both (50 + 30 + 20).
        assert!(r.prefetch(Int2));
        assert!(!r.prefetch(Int2), "already resident");
        assert_eq!(r.used(), 100);
        // FP16 cannot fit beside the most recent (INT2 now): refused, nothing evicted.
        assert!(!r.can_prefetch(Fp16));
        assert!(!r.prefetch(Fp16));
        assert_eq!(r.resident().len(), 3);
        // FP16 needs the whole device: a demand swap evicts everything, and nothing fits beside it.
        r.use_variant(Int4);
        assert!(r.use_variant(Fp16));
        assert_eq!(r.resident(), vec![Fp16]);
        assert!(!r.prefetch(Int2));
        assert_eq!((r.swaps, r.hits, r.prefetches), (3, 1, 1));
    }
}
