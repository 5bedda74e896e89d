//! `AlignedBuf`: a host buffer whose start and capacity are multiples of 4 KiB, as O_DIRECT needs.

use crate::{Error, Result};
use std::alloc::{self, Layout};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// Alignment (and granularity) of every direct read: one 4 KiB block.
pub const ALIGN: usize = 4096;

/// Rounds `n` up to the next multiple of [`ALIGN`].
pub fn round_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// A zero-initialised host buffer aligned to [`ALIGN`] (an anonymous mapping from 1 MiB on);
/// its capacity is its length rounded up to [`ALIGN`] (at least one block), so a direct read of
/// the rounded-up length always fits.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    cap: usize,
    /// Mapped with `mmap` (large buffers) rather than taken from the allocator.
    mapped: bool,
}

/// From this size on, a buffer is an anonymous mapping: the kernel hands out zero pages as
/// they are first touched, so a large buffer costs no zeroing pass (the allocator's aligned
/// path clears every byte up front).
const MAP_FROM: usize = 1 << 20;

// SAFETY: the buffer exclusively owns its allocation; `&AlignedBuf` only hands out `&[u8]`.
unsafe impl Send for AlignedBuf {}
// SAFETY: see above; shared access is read-only.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// Allocates `len` zeroed bytes (capacity rounded up to 4 KiB); a failed allocation is
    /// [`Error::OutOfMemory`].
    pub fn zeroed(len: usize) -> Result<Self> {
        let cap = round_up(len.max(1));
        if cap >= MAP_FROM {
            // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
            let raw = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    cap,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if raw == libc::MAP_FAILED {
                return Err(Error::OutOfMemory(format!(
                    "host mapping of {cap} bytes failed: {}",
                    std::io::Error::last_os_error()
                )));
            }
            // Mappings are page-aligned, hence 4 KiB-aligned.
            let ptr = NonNull::new(raw.cast::<u8>())
                .ok_or_else(|| Error::OutOfMemory("host mapping returned null".into()))?;
            return Ok(AlignedBuf {
                ptr,
                len,
                cap,
                mapped: true,
            });
        }
        let layout = Layout::from_size_align(cap, ALIGN).map_err(|_| {
            Error::OutOfMemory(format!("aligned buffer of {len} bytes is too large"))
        })?;
        // SAFETY: `layout` has a non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).ok_or_else(|| {
            Error::OutOfMemory(format!("host allocation of {cap} aligned bytes failed"))
        })?;
        Ok(AlignedBuf {
            ptr,
            len,
            cap,
            mapped: false,
        })
    }

    /// Copies `data` into a new aligned buffer.
    pub fn from_slice(data: &[u8]) -> Result<Self> {
        let mut buf = Self::zeroed(data.len())?;
        buf.copy_from_slice(data);
        Ok(buf)
    }

    /// Usable length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Allocated bytes (a multiple of [`ALIGN`], at least `len`).
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Sets the usable length to `len` (at most the capacity); bytes past the old length keep
    /// whatever they held (zero, or data a read left there).
    pub fn set_len(&mut self, len: usize) -> Result<()> {
        if len > self.cap {
            return Err(Error::invalid(format!(
                "AlignedBuf::set_len({len}) exceeds capacity {}",
                self.cap
            )));
        }
        self.len = len;
        Ok(())
    }

    /// The whole capacity as a mutable slice (for reads of a rounded-up length).
    pub fn full_capacity_mut(&mut self) -> &mut [u8] {
        // SAFETY: the allocation is `cap` bytes long, initialised (zeroed) and exclusively ours.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.cap) }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len <= cap` bytes, initialised, owned.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: `len <= cap` bytes, initialised, exclusively borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.mapped {
            // SAFETY: mapped in `zeroed` with exactly this length, and unmapped only here.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.cap) };
            return;
        }
        // SAFETY: allocated in `zeroed` with exactly this layout.
        unsafe {
            alloc::dealloc(
                self.ptr.as_ptr(),
                Layout::from_size_align_unchecked(self.cap, ALIGN),
            )
        }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("cap", &self.cap)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_capacity_and_contents() {
        for len in [
            0usize,
            1,
            4095,
            4096,
            4097,
            3 * 4096 + 17,
            MAP_FROM - 1,
            MAP_FROM + 5,
        ] {
            let mut b = AlignedBuf::zeroed(len).unwrap();
            assert_eq!(b.as_ptr() as usize % ALIGN, 0, "len {len}");
            assert_eq!(b.len(), len);
            assert!(b.capacity() >= len && b.capacity() % ALIGN == 0);
            assert!(b.iter().all(|&x| x == 0));
            b.iter_mut().enumerate().for_each(|(i, x)| *x = i as u8);
            assert!(b.iter().enumerate().all(|(i, &x)| x == i as u8));
        }
    }

    #[test]
    fn set_len_is_bounded_by_capacity() {
        let mut b = AlignedBuf::zeroed(10).unwrap();
        assert!(b.set_len(4096).is_ok());
        assert_eq!(b.len(), 4096);
        assert!(matches!(b.set_len(4097), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn round_up_values() {
        assert_eq!(round_up(0), 0);
        assert_eq!(round_up(1), 4096);
        assert_eq!(round_up(4096), 4096);
        assert_eq!(round_up(4097), 8192);
    }
}
