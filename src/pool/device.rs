//! The memory the pool's top tier lives in, pluggable: host memory on the CPU backend
//! ([`HostDeviceAlloc`]); the CUDA backend implements [`DeviceAlloc`] with device allocations
//! whose `copy_in` is a host-to-device copy from the pinned staging buffer.

use crate::io::{AlignedBuf, Sink};
use crate::{Error, Result};

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
    /// Short name for logs ("host", "cuda").
    fn name(&self) -> &'static str;
}

/// The CPU backend's "device" memory: aligned host buffers.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostDeviceAlloc;

/// A [`DeviceBuffer`] in host memory.
#[derive(Debug)]
pub struct HostDeviceBuffer(AlignedBuf);

impl Sink for HostDeviceBuffer {
    fn copy_in(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.0.copy_in(offset, data)
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
        Ok(Box::new(HostDeviceBuffer(AlignedBuf::zeroed(len)?)))
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
        let a = HostDeviceAlloc;
        let mut b = a.alloc(10).unwrap();
        b.copy_in(2, &[1, 2, 3]).unwrap();
        assert!(b.copy_in(8, &[1, 2, 3]).is_err(), "overrun must fail");
        assert_eq!(b.host_view().unwrap(), &[0, 0, 1, 2, 3, 0, 0, 0, 0, 0]);
        let host = b.into_host().unwrap();
        let c = a.adopt(host).unwrap();
        assert_eq!(c.len(), 10);
        assert_eq!(c.host_view().unwrap()[4], 3);
    }
}
