//! Transparent huge pages for weight layouts. A decode step streams every weight once; on
//! 4 KiB pages that is a TLB miss per page and a hardware prefetcher that stops at every page
//! edge. Linux backs a region with 2 MiB pages on first touch when it was advised
//! `MADV_HUGEPAGE` (the default `madvise` mode of transparent huge pages), so the packers ask
//! before they write (decode gain in docs/PERFORMANCE.md). `AGENTCOMPRESS_CPU_HUGE_PAGES=0`
//! opts out.

/// Huge pages are only whole-2-MiB parts of a region.
pub const HUGE_PAGE: usize = 2 << 20;

/// False when `AGENTCOMPRESS_CPU_HUGE_PAGES=0`.
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var("AGENTCOMPRESS_CPU_HUGE_PAGES").map_or(true, |v| v.trim() != "0")
    })
}

/// Advises huge pages for the whole 2 MiB pages inside `bytes` bytes at `ptr` (memory not yet
/// touched gets them on first write). Returns whether such a part existed and Linux took the
/// advice; a refusal (no transparent huge pages in this kernel) only costs the speed-up.
pub fn advise(ptr: *const u8, bytes: usize) -> bool {
    let start = ptr as usize;
    let (Some(first), Some(end)) = (
        start.checked_next_multiple_of(HUGE_PAGE),
        start.checked_add(bytes),
    ) else {
        return false;
    };
    let last = end / HUGE_PAGE * HUGE_PAGE;
    if last <= first || !enabled() {
        return false;
    }
    advise_range(first, last - first)
}

#[cfg(target_os = "linux")]
fn advise_range(addr: usize, len: usize) -> bool {
    // SAFETY: `addr .. addr + len` lies inside an allocation the caller owns; MADV_HUGEPAGE
    // changes how its pages are backed, never their contents.
    unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_HUGEPAGE) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn advise_range(_addr: usize, _len: usize) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_without_a_whole_huge_page_is_left_alone() {
        let v = vec![0u8; HUGE_PAGE];
        // A 2 MiB buffer holds a whole aligned huge page only when it starts on one.
        let aligned = v.as_ptr() as usize % HUGE_PAGE == 0;
        assert!(!advise(v.as_ptr(), 4096));
        assert!(!advise(v.as_ptr(), 0));
        if !aligned {
            assert!(!advise(v.as_ptr(), v.len()));
        }
        assert!(!advise(usize::MAX as *const u8, 16));
    }

    #[test]
    fn advised_memory_keeps_its_contents_and_takes_writes() {
        let mut v: Vec<u32> = Vec::with_capacity(3 * HUGE_PAGE / 4);
        let took = advise(v.as_ptr().cast(), v.capacity() * 4);
        v.extend((0..3 * HUGE_PAGE as u32 / 4).map(|i| i ^ 0x5a5a));
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32 ^ 0x5a5a));
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .is_ok_and(|s| !s.contains("[never]"));
        if cfg!(target_os = "linux") && thp && enabled() {
            assert!(took, "Linux with transparent huge pages refused the advice");
        } else {
            eprintln!("SKIPPED: no transparent huge pages here (advice taken: {took})");
        }
    }
}
