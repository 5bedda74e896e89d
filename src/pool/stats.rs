//! `PoolStats`: what the pool did (hits, misses, loads, evictions, bytes, time, throughput).

use crate::io::LoadStats;
use serde::Serialize;
use std::fmt;

/// Counters of a [`super::Pool`] since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct PoolStats {
    /// Acquires served from the device tier.
    pub hits: u64,
    /// Acquires that had to load (from the host tier or from disk).
    pub misses: u64,
    /// Misses served by promotion from the host tier instead of disk.
    pub host_hits: u64,
    /// Loads from disk that completed (acquires and prefetches).
    pub disk_loads: u64,
    /// Loads that failed (the entry was left out, nothing half-loaded).
    pub load_failures: u64,
    /// Prefetch requests that loaded something.
    pub prefetch_loads: u64,
    /// Prefetch requests skipped: no room without evicting a pinned entry or another
    /// prefetched entry not used yet, or the entry was acquired since the request.
    pub prefetch_skips: u64,
    /// Entries evicted from the device tier.
    pub evictions: u64,
    /// Evicted entries kept in the host tier.
    pub demotions: u64,
    /// Entries dropped from the host tier to make room there.
    pub host_evictions: u64,
    /// Bytes read from disk.
    pub bytes_read: u64,
    /// Bytes promoted from the host tier.
    pub bytes_promoted: u64,
    /// Seconds spent loading (swap time: disk loads and promotions, summed over threads).
    pub load_s: f64,
    /// Seconds the disk stage spent reading.
    pub disk_s: f64,
    /// Seconds the copy stage spent copying into device memory (0 for loads read in place).
    pub copy_s: f64,
    /// Seconds the verify stage spent computing checksums.
    pub verify_s: f64,
    /// Disk-stage throughput in GB/s (bytes read / disk seconds).
    pub disk_gbps: f64,
    /// Copy-stage throughput in GB/s (bytes read / copy seconds).
    pub copy_gbps: f64,
    /// Verify-stage throughput in GB/s (bytes read / checksum seconds).
    pub verify_gbps: f64,
    /// Bytes resident in the device tier now.
    pub device_used: u64,
    /// Device tier budget.
    pub device_budget: u64,
    /// Bytes held by the host tier now.
    pub host_used: u64,
    /// Host tier budget.
    pub host_budget: u64,
}

impl PoolStats {
    /// Device-tier hits over all acquires (0 when none).
    pub fn hit_rate(&self) -> f64 {
        let n = self.hits + self.misses;
        if n == 0 {
            0.0
        } else {
            self.hits as f64 / n as f64
        }
    }

    /// Adds one disk load's timings.
    pub(crate) fn add_load(&mut self, l: &LoadStats) {
        self.disk_loads += 1;
        self.bytes_read += l.bytes;
        self.disk_s += l.disk_s;
        self.copy_s += l.copy_s;
        self.verify_s += l.verify_s;
        self.disk_gbps = crate::io::gbps(self.bytes_read, self.disk_s);
        self.copy_gbps = crate::io::gbps(self.bytes_read, self.copy_s);
        self.verify_gbps = crate::io::gbps(self.bytes_read, self.verify_s);
    }
}

impl fmt::Display for PoolStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        writeln!(f, "{:<22} {:>14}", "metric", "value")?;
        writeln!(f, "{:<22} {:>14}", "hits", self.hits)?;
        writeln!(f, "{:<22} {:>14}", "misses", self.misses)?;
        writeln!(f, "{:<22} {:>13.1}%", "hit rate", 100.0 * self.hit_rate())?;
        writeln!(f, "{:<22} {:>14}", "host-tier hits", self.host_hits)?;
        writeln!(f, "{:<22} {:>14}", "disk loads", self.disk_loads)?;
        writeln!(f, "{:<22} {:>14}", "load failures", self.load_failures)?;
        writeln!(f, "{:<22} {:>14}", "prefetch loads", self.prefetch_loads)?;
        writeln!(f, "{:<22} {:>14}", "prefetch skips", self.prefetch_skips)?;
        writeln!(f, "{:<22} {:>14}", "evictions", self.evictions)?;
        writeln!(f, "{:<22} {:>14}", "demotions to host", self.demotions)?;
        writeln!(f, "{:<22} {:>14}", "host evictions", self.host_evictions)?;
        writeln!(f, "{:<22} {:>10.1} MiB", "bytes read", mib(self.bytes_read))?;
        writeln!(
            f,
            "{:<22} {:>10.1} MiB",
            "bytes promoted",
            mib(self.bytes_promoted)
        )?;
        writeln!(f, "{:<22} {:>12.3} s", "swap (load) time", self.load_s)?;
        writeln!(f, "{:<22} {:>9.2} GB/s", "disk stage", self.disk_gbps)?;
        writeln!(f, "{:<22} {:>9.2} GB/s", "copy stage", self.copy_gbps)?;
        writeln!(f, "{:<22} {:>9.2} GB/s", "verify stage", self.verify_gbps)?;
        writeln!(
            f,
            "{:<22} {:>10.1} MiB of {:.1}",
            "device tier used",
            mib(self.device_used),
            mib(self.device_budget)
        )?;
        write!(
            f,
            "{:<22} {:>10.1} MiB of {:.1}",
            "host tier used",
            mib(self.host_used),
            mib(self.host_budget)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_rate_and_throughput() {
        let mut s = PoolStats {
            hits: 3,
            misses: 1,
            ..Default::default()
        };
        assert!((s.hit_rate() - 0.75).abs() < 1e-12);
        s.add_load(&LoadStats {
            bytes: 2_000_000_000,
            disk_s: 1.0,
            copy_s: 0.5,
            wall_s: 1.1,
            ..Default::default()
        });
        assert!((s.disk_gbps - 2.0).abs() < 1e-9 && (s.copy_gbps - 4.0).abs() < 1e-9);
        let table = s.to_string();
        assert!(
            table.contains("hit rate") && table.contains("75.0%"),
            "{table}"
        );
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"bytes_read\":2000000000"), "{json}");
        assert_eq!(PoolStats::default().hit_rate(), 0.0);
    }
}
