//! The memory the pool's top tier lives in, pluggable: host memory on the CPU backend
//! ([`HostDeviceAlloc`]); the CUDA backend implements [`DeviceAlloc`] with device allocations
//! whose `copy_in` is a host-to-device copy from the pinned staging buffer
//! (`backend::cuda::CudaDeviceAlloc`).

use crate::io::{AlignedBuf, Sink};
use crate::{Error, Result};
use std::sync::Mutex;

/// One allocation of the pool's top tier, filled through [`Sink::copy_in`].
pub trait DeviceBuffer: Sink + Send + Sync {
    /// Bytes held.
    fn len(&self) -> u64;
    /// True when it holds no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The bytes, when the memory is host-visible (CPU backend); `None` for device memory.
    fn host_view(&self) -> Option<&[u8]>;
    /// The device address (a `CUdeviceptr`) when the memory is on a GPU; `None` for host memory.
    fn device_ptr(&self) -> Option<u64> {
        None
    }
    /// Copies `offset..offset + dst.len()` of the contents into `dst` (a read-back, for
    /// checks). The default reads [`DeviceBuffer::host_view`]; device memory overrides it.
    fn copy_out(&self, offset: u64, dst: &mut [u8]) -> Result<()> {
        let src = self
            .host_view()
            .ok_or_else(|| Error::Unsupported("buffer has no host view to copy out of".into()))?;
        let range = usize::try_from(offset)
            .ok()
            .and_then(|s| Some(s..s.checked_add(dst.len())?))
            .filter(|r| r.end <= src.len())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "read of {} bytes at offset {offset} overruns a {}-byte buffer",
                    dst.len(),
                    src.len()
                ))
            })?;
        dst.copy_from_slice(&src[range]);
        Ok(())
    }
    /// Moves the contents to host memory (demotion to the host tier), freeing this allocation.
    fn into_host(self: Box<Self>) -> Result<AlignedBuf>;
}

/// Allocates [`DeviceBuffer`]s.
pub trait DeviceAlloc: Send + Sync {
    /// A buffer of `len` bytes (contents unspecified until filled).
    fn alloc(&self, len: u64) -> Result<Box<dyn DeviceBuffer>>;
    /// A buffer holding `host`'s bytes (promotion from the host tier). The default copies;
    /// host-memory implementations can adopt the buffer without a copy.
    fn adopt(&self, host: AlignedBuf) -> Result<Box<dyn DeviceBuffer>> {
        let mut b = self.alloc(host.len() as u64)?;
        b.copy_in(0, &host)?;
        Ok(b)
    }
    /// Takes back a buffer the pool no longer needs (an evicted entry that is not demoted, or a
    /// failed load), for reuse by a later `alloc`. The default frees it.
    fn recycle(&self, buf: Box<dyn DeviceBuffer>) {
        drop(buf);
    }
    /// Short name for logs ("host", "cuda").
    fn name(&self) -> &'static str;
}

/// Default bytes of freed buffers a [`HostDeviceAlloc`] keeps for reuse.
pub const DEFAULT_RECYCLE_BYTES: usize = 512 << 20;

/// The CPU backend's "device" memory: aligned host buffers. Freed buffers are kept (up to a
/// byte cap) and reused by later allocations of similar size: a fresh allocation has to be
/// zeroed and faulted in page by page, which costs as much as reading it from NVMe.
#[derive(Debug)]
pub struct HostDeviceAlloc {
    cache: Mutex<Vec<AlignedBuf>>,
    cap_bytes: usize,
}

impl Default for HostDeviceAlloc {
    fn default() -> Self {
        Self::with_recycle_bytes(DEFAULT_RECYCLE_BYTES)
    }
}

impl HostDeviceAlloc {
    /// An allocator keeping up to `cap_bytes` of freed buffers for reuse (0: none).
    pub fn with_recycle_bytes(cap_bytes: usize) -> Self {
        HostDeviceAlloc {
            cache: Mutex::new(Vec::new()),
            cap_bytes,
        }
    }

    /// A cached buffer of capacity in `len..=2 * len` (rounded), resized to `len`.
    fn reuse(&self, len: usize) -> Option<AlignedBuf> {
        let mut cache = self.cache.lock().ok()?;
        let want = crate::io::round_up(len.max(1));
        let i = cache
            .iter()
            .position(|b| b.capacity() >= want && b.capacity() <= 2 * want)?;
        let mut b = cache.swap_remove(i);
        b.set_len(len).ok()?;
        Some(b)
    }
}

/// A [`DeviceBuffer`] in host memory.
#[derive(Debug)]
pub struct HostDeviceBuffer(AlignedBuf);

impl Sink for HostDeviceBuffer {
    fn copy_in(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.0.copy_in(offset, data)
    }
    fn host_dest(&mut self) -> Option<&mut [u8]> {
        self.0.host_dest()
    }
}

impl DeviceBuffer for HostDeviceBuffer {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn host_view(&self) -> Option<&[u8]> {
        Some(&self.0)
    }
    fn into_host(self: Box<Self>) -> Result<AlignedBuf> {
        Ok(self.0)
    }
}

impl DeviceAlloc for HostDeviceAlloc {
    fn alloc(&self, len: u64) -> Result<Box<dyn DeviceBuffer>> {
        let len = usize::try_from(len)
            .map_err(|_| Error::OutOfMemory(format!("{len} bytes do not fit in memory")))?;
        if let Some(b) = self.reuse(len) {
            return Ok(Box::new(HostDeviceBuffer(b)));
        }
        Ok(Box::new(HostDeviceBuffer(AlignedBuf::zeroed(len)?)))
    }
    fn recycle(&self, buf: Box<dyn DeviceBuffer>) {
        let Ok(b) = buf.into_host() else { return };
        if let Ok(mut cache) = self.cache.lock() {
            let held: usize = cache.iter().map(|b| b.capacity()).sum();
            if held + b.capacity() <= self.cap_bytes {
                cache.push(b);
            }
        }
    }
    fn adopt(&self, host: AlignedBuf) -> Result<Box<dyn DeviceBuffer>> {
        Ok(Box::new(HostDeviceBuffer(host)))
    }
    fn name(&self) -> &'static str {
        "host"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_buffer_round_trip() {
        let a = HostDeviceAlloc::default();
        let mut b = a.alloc(10).unwrap();
        b.copy_in(2, &[1, 2, 3]).unwrap();
        assert!(b.copy_in(8, &[1, 2, 3]).is_err(), "overrun must fail");
        assert_eq!(b.host_view().unwrap(), &[0, 0, 1, 2, 3, 0, 0, 0, 0, 0]);
        let host = b.into_host().unwrap();
        let c = a.adopt(host).unwrap();
        assert_eq!(c.len(), 10);
        assert_eq!(c.host_view().unwrap()[4], 3);
        assert_eq!(c.device_ptr(), None, "host memory has no device address");
        let mut out = [0u8; 4];
        c.copy_out(2, &mut out).unwrap();
        assert_eq!(out, [1, 2, 3, 0]);
        assert!(
            c.copy_out(7, &mut out).is_err(),
            "read past the end must fail"
        );
        assert!(c.copy_out(u64::MAX, &mut out).is_err());
    }

    #[test]
    fn recycled_buffers_are_reused_within_the_cap() {
        let a = HostDeviceAlloc::with_recycle_bytes(3 * 4096);
        let mut b = a.alloc(5000).unwrap();
        b.copy_in(0, &[9]).unwrap();
        let addr = b.host_view().unwrap().as_ptr();
        a.recycle(b);
        let c = a.alloc(4500).unwrap();
        assert_eq!(c.host_view().unwrap().as_ptr(), addr, "same memory again");
        assert_eq!(c.len(), 4500);
        a.recycle(c);
        // Too small for a larger request: a fresh allocation, which the cap then refuses.
        let big = a.alloc(4 * 4096).unwrap();
        assert_ne!(big.host_view().unwrap().as_ptr(), addr);
        a.recycle(big);
        let caps: Vec<usize> = a
            .cache
            .lock()
            .unwrap()
            .iter()
            .map(|b| b.capacity())
            .collect();
        assert_eq!(caps, vec![2 * 4096]);
    }
}
