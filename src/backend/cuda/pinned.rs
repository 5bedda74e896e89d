//! Page-locked (pinned) host staging for weight streaming: [`PinnedBuf`] (4 KiB-aligned,
//! page-locked host memory, so a host-to-device copy from it is a DMA at full PCIe / NVLink
//! speed instead of the driver's bounce through its own small pinned buffers), the
//! [`PinnedStagingAlloc`] the staging pipeline draws its ring from, and [`CopyEngine`]: a
//! context plus a dedicated copy stream, from which the device-memory pool
//! ([`super::device_mem`]) is built.
//!
//! Opening never panics where CUDA is absent: no driver library, no device or a bad ordinal is
//! [`Error::NoDevice`] naming the reason.

use super::device_mem::CudaDeviceAlloc;
use super::{cuda_err, libs};
use crate::io::{round_up, StagingAlloc, StagingBuffer, ALIGN};
use crate::{Error, Result};
use cudarc::driver::{CudaContext, CudaEvent, CudaStream, CudaViewMut, PinnedHostSlice};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

/// Opens (retains) the primary context of device `ordinal`. [`Error::NoDevice`], never a
/// panic, when the driver library is missing, no device exists or the ordinal is out of range.
pub fn open_context(ordinal: usize) -> Result<Arc<CudaContext>> {
    if !libs::driver_present() {
        return Err(Error::NoDevice(
            "the CUDA driver library (libcuda.so) is not installed or not on the loader path"
                .into(),
        ));
    }
    let count = CudaContext::device_count().map_err(|e| {
        Error::NoDevice(format!("the CUDA driver reports no usable device ({e:?})"))
    })?;
    if count <= 0 {
        return Err(Error::NoDevice("the CUDA driver reports 0 devices".into()));
    }
    if ordinal >= count as usize {
        return Err(Error::NoDevice(format!(
            "device {ordinal} requested but only {count} present"
        )));
    }
    CudaContext::new(ordinal)
        .map_err(|e| Error::NoDevice(format!("cannot open device {ordinal}: {e:?}")))
}

/// `len` bytes of page-locked host memory whose start is 4 KiB aligned (O_DIRECT reads land in
/// it directly), zero-initialised. Plain cacheable pinned memory, not write-combined: the staging
/// pipeline checksums every chunk on the host, and host reads of write-combined memory crawl.
pub struct PinnedBuf {
    /// Keeps the allocation alive; freed (after its event) on drop.
    _mem: PinnedHostSlice<u8>,
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the buffer exclusively owns its allocation; `&PinnedBuf` only hands out `&[u8]`.
unsafe impl Send for PinnedBuf {}
// SAFETY: see above; shared access is read-only.
unsafe impl Sync for PinnedBuf {}

impl PinnedBuf {
    /// Allocates `len` pinned bytes in `ctx` (at least one 4 KiB block is mapped).
    pub fn new(ctx: &Arc<CudaContext>, len: usize) -> Result<Self> {
        // cuMemHostAlloc returns page-aligned memory in practice; one spare block makes the
        // 4 KiB alignment a guarantee rather than an assumption.
        let bytes = round_up(len.max(1))
            .checked_add(ALIGN)
            .filter(|&b| b < isize::MAX as usize)
            .ok_or_else(|| {
                Error::OutOfMemory(format!("pinned buffer of {len} bytes is too large"))
            })?;
        // SAFETY: the memory is zeroed below before any slice of it is formed.
        let mut mem = unsafe { ctx.alloc_pinned_with_flags::<u8>(bytes, 0) }.map_err(|e| {
            Error::OutOfMemory(format!(
                "page-locked host allocation of {bytes} bytes failed: {e:?}"
            ))
        })?;
        let base = mem.as_mut_ptr().map_err(cuda_err)?;
        let skip = base.align_offset(ALIGN);
        if skip + len > bytes {
            return Err(Error::Internal("pinned buffer cannot be aligned".into()));
        }
        // SAFETY: `skip + len <= bytes`, inside the allocation; no copy uses it yet.
        let ptr = unsafe { base.add(skip) };
        // SAFETY: `len` bytes from `ptr` lie inside the allocation, exclusively ours.
        unsafe { std::ptr::write_bytes(ptr, 0, len) };
        Ok(PinnedBuf {
            _mem: mem,
            ptr,
            len,
        })
    }

    /// Usable length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Deref for PinnedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len` initialised (zeroed) bytes from `ptr`, owned by `_mem`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl DerefMut for PinnedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, exclusively borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl StagingBuffer for PinnedBuf {
    fn as_slice(&self) -> &[u8] {
        self
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        self
    }
}

/// [`StagingAlloc`] of [`PinnedBuf`]s: the staging ring in page-locked memory, so the sink's
/// `copy_in` is a DMA from the very buffer the disk read landed in.
#[derive(Clone)]
pub struct PinnedStagingAlloc {
    ctx: Arc<CudaContext>,
}

impl PinnedStagingAlloc {
    /// Pinned staging buffers of `ctx`.
    pub fn new(ctx: Arc<CudaContext>) -> Self {
        PinnedStagingAlloc { ctx }
    }
}

impl StagingAlloc for PinnedStagingAlloc {
    fn alloc(&self, len: usize) -> Result<Box<dyn StagingBuffer>> {
        Ok(Box::new(PinnedBuf::new(&self.ctx, len)?))
    }
}

/// A device context with a dedicated copy stream: where pinned staging buffers and the pool's
/// device memory come from. Host-to-device copies on it run beside the compute stream.
#[derive(Clone)]
pub struct CopyEngine {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    name: String,
}

impl CopyEngine {
    /// Opens device `ordinal` without compiling any kernel ([`Error::NoDevice`] without CUDA).
    /// Completion is tracked by explicit events, so cudarc's per-buffer event tracking is off.
    pub fn open(ordinal: usize) -> Result<Self> {
        let ctx = open_context(ordinal)?;
        // SAFETY: every buffer this engine makes is synchronised explicitly (an event after
        // each copy), never through cudarc's implicit tracking.
        unsafe { ctx.disable_event_tracking() };
        let name = format!("cuda:{ordinal} {}", ctx.name().map_err(cuda_err)?);
        Self::with_context(ctx, name)
    }

    /// A copy stream on an already open context (e.g. a [`super::CudaBackend`]'s).
    pub fn with_context(ctx: Arc<CudaContext>, name: String) -> Result<Self> {
        let stream = ctx.new_stream().map_err(cuda_err)?;
        Ok(CopyEngine { ctx, stream, name })
    }

    /// The context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The copy stream.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// "cuda:N device name".
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Pinned staging buffers for the staging pipeline.
    pub fn staging_alloc(&self) -> PinnedStagingAlloc {
        PinnedStagingAlloc::new(self.ctx.clone())
    }

    /// Device memory for the pool, filled on the copy stream.
    pub fn device_alloc(&self) -> CudaDeviceAlloc {
        CudaDeviceAlloc::new(self.stream.clone())
    }
}

/// Uploads pageable host bytes through two pinned bounce buffers: the host copies chunk k + 1
/// into one while the DMA of chunk k runs from the other. What the driver does internally for
/// a pageable copy, with larger buffers; measured beside the plain pageable copy by
/// `bench stream --device cuda` to tell whether model uploads gain from it.
pub struct PinnedUploader {
    bufs: [PinnedBuf; 2],
    freed: [CudaEvent; 2],
}

impl PinnedUploader {
    /// Two bounce buffers of `chunk` bytes in `ctx`.
    pub fn new(ctx: &Arc<CudaContext>, chunk: usize) -> Result<Self> {
        if chunk == 0 {
            return Err(Error::invalid("bounce buffer of 0 bytes"));
        }
        let ev = || ctx.new_event(None).map_err(cuda_err);
        Ok(PinnedUploader {
            bufs: [PinnedBuf::new(ctx, chunk)?, PinnedBuf::new(ctx, chunk)?],
            freed: [ev()?, ev()?],
        })
    }

    /// Copies `src` to the start of `dst` on `stream`; returns once every byte has arrived.
    pub fn copy(
        &mut self,
        stream: &Arc<CudaStream>,
        src: &[u8],
        dst: &mut CudaViewMut<'_, u8>,
    ) -> Result<()> {
        if src.len() > dst.len() {
            return Err(Error::invalid(format!(
                "upload of {} bytes into a {}-byte device buffer",
                src.len(),
                dst.len()
            )));
        }
        let chunk = self.bufs[0].len();
        for (k, piece) in src.chunks(chunk).enumerate() {
            let b = k % 2;
            // The DMA that last read this bounce buffer must be done before it is refilled
            // (an event never recorded counts as done).
            self.freed[b].synchronize().map_err(cuda_err)?;
            self.bufs[b][..piece.len()].copy_from_slice(piece);
            let off = k * chunk;
            let mut d = dst.slice_mut(off..off + piece.len());
            stream
                .memcpy_htod(&self.bufs[b][..piece.len()], &mut d)
                .map_err(cuda_err)?;
            self.freed[b].record(stream).map_err(cuda_err)?;
        }
        for e in &self.freed {
            e.synchronize().map_err(cuda_err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_without_a_driver_is_no_device_not_a_panic() {
        match CopyEngine::open(0) {
            Err(Error::NoDevice(why)) => assert!(!why.is_empty()),
            Err(e) => panic!("expected NoDevice, got {e}"),
            // A machine with a GPU opens it; the copy stream must then exist.
            Ok(e) => assert!(e.name().starts_with("cuda:0")),
        }
        if !libs::driver_present() {
            let e = open_context(3)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains("libcuda"), "{e}");
        }
    }
}
