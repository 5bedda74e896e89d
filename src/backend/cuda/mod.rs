//! The CUDA backend: cudarc over a dynamically loaded driver, kernels from `kernels/*.cu`
//! compiled by NVRTC to CUBIN for the device's architecture at first use (cached on disk).
//!
//! Activations ([`Backend::Buf`]) are device f32 buffers, so results track the CPU oracle
//! closely; weights ([`CudaMat`]) are stored as FP16 on the device. All work is queued on one
//! stream. Device memory is allocated when a model, state or scratch buffer is created (scratch
//! grows to its high-water mark once), never per token.

pub mod device_mem;
mod encoder;
mod kernels;
pub mod pinned;

pub use device_mem::{CudaDeviceAlloc, CudaDeviceBuffer};
pub use pinned::{open_context, CopyEngine, PinnedBuf, PinnedStagingAlloc, PinnedUploader};

pub use kernels::{default_path, AttnPath};
pub mod libs;
pub mod nvrtc;
pub mod quant;
pub mod sources;

use super::checks::{
    check_len, AttentionShape, FullAttentionShape, NormShape, RopeParams, RowCopy,
};
use super::Backend;
use crate::model::{DType, RopeStyle};
use crate::quant::WeightMatrix;
use crate::{Error, Result};
use cudarc::driver::{
    CudaContext, CudaSlice, CudaStream, DriverError, LaunchConfig, PushKernelArg,
};
use half::f16;
use kernels::Kernels;
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

pub(crate) fn cuda_err(e: DriverError) -> Error {
    Error::Cuda(format!("{e:?}"))
}

/// A weight matrix `[out, in]` resident on the device as FP16, or packed INT8/INT4/INT2
/// (`q`; `data` is then a one-element placeholder).
pub struct CudaMat {
    data: CudaSlice<u16>,
    out: usize,
    inp: usize,
    q: Option<quant::QMat>,
}

impl CudaMat {
    /// `(out, in)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.out, self.inp)
    }

    /// The FP16 elements (as raw bits), row-major.
    pub fn data(&self) -> &CudaSlice<u16> {
        &self.data
    }
}

/// Scratch that grows to its high-water mark and is then reused.
struct Scratch {
    tokens: CudaSlice<u32>,
    part: CudaSlice<f32>,
    argmax: CudaSlice<u32>,
}

struct Inner {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    name: String,
    arch: (i32, i32),
    sms: usize,
    k: Kernels,
    /// Held only around kernel launches and copies on the stream, never across rayon work.
    scratch: Mutex<Scratch>,
    q: quant::QuantState,
}

/// The CUDA backend for one device. Cloning shares the device context, stream and kernels.
#[derive(Clone)]
pub struct CudaBackend {
    inner: Arc<Inner>,
}

fn dim32(what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| {
        Error::invalid(format!(
            "{what} = {v} does not fit the kernels' 32-bit sizes"
        ))
    })
}

/// Launch shape of the 1-D elementwise kernels.
fn elementwise_cfg(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(256).clamp(1, 65535 * 8) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl CudaBackend {
    /// Opens device `ordinal`. Returns [`Error::NoDevice`] (never panics) when the driver
    /// library is missing, no device exists or the ordinal is out of range, and
    /// [`Error::Cuda`] when NVRTC is missing or a kernel fails to compile or load.
    pub fn new(ordinal: usize) -> Result<Self> {
        let ctx = open_context(ordinal)?;
        // One stream, so cross-stream event tracking is pure overhead.
        // SAFETY: all work of this backend is ordered on its one stream.
        unsafe { ctx.disable_event_tracking() };
        let arch = ctx.compute_capability().map_err(cuda_err)?;
        let sms = ctx
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )
            .map_err(cuda_err)? as usize;
        let dev_name = ctx.name().map_err(cuda_err)?;
        let stream = ctx.default_stream();
        let k = Kernels::load(&ctx, arch.0 * 10 + arch.1)?;
        let q = quant::QuantState::new(&ctx, &stream, arch.0 * 10 + arch.1)?;
        let scratch = Scratch {
            tokens: stream.alloc_zeros(256).map_err(cuda_err)?,
            part: stream.alloc_zeros(1 << 16).map_err(cuda_err)?,
            argmax: stream.alloc_zeros(1).map_err(cuda_err)?,
        };
        Ok(CudaBackend {
            inner: Arc::new(Inner {
                name: format!("cuda:{ordinal} {dev_name} (sm_{}{})", arch.0, arch.1),
                ctx,
                stream,
                arch,
                sms,
                k,
                scratch: Mutex::new(scratch),
                q,
            }),
        })
    }

    /// The stream every operation is queued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.inner.stream
    }

    /// The device context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.inner.ctx
    }

    /// Compute capability `(major, minor)`.
    pub fn arch(&self) -> (i32, i32) {
        self.inner.arch
    }

    /// Number of streaming multiprocessors.
    pub fn sm_count(&self) -> usize {
        self.inner.sms
    }

    pub(crate) fn kernels(&self) -> &Kernels {
        &self.inner.k
    }

    pub(crate) fn quant(&self) -> &quant::QuantState {
        &self.inner.q
    }

    /// Sets the first `len` elements of `buf` to `value` on the device (used to poison outputs).
    pub fn fill(&self, buf: &mut CudaSlice<f32>, len: usize, value: f32) -> Result<()> {
        check_len("fill", buf.len(), len)?;
        if len == 0 {
            return Ok(());
        }
        let n = len as u64;
        let mut b = self.inner.stream.launch_builder(&self.inner.k.fill);
        b.arg(buf).arg(&n).arg(&value);
        // SAFETY: argument types match the kernel signature; n <= buf.len().
        unsafe { b.launch(elementwise_cfg(len)) }.map_err(cuda_err)?;
        Ok(())
    }

    /// Uploads raw FP16 bits `[out, in]` as a matrix.
    pub fn upload_f16(&self, bits: &[u16], out: usize, inp: usize) -> Result<CudaMat> {
        if bits.len() != out * inp || out == 0 || inp == 0 {
            return Err(Error::invalid(format!(
                "matrix [{out}, {inp}] needs {} elements, got {}",
                out * inp,
                bits.len()
            )));
        }
        let data = self.inner.stream.clone_htod(bits).map_err(cuda_err)?;
        Ok(CudaMat {
            data,
            out,
            inp,
            q: None,
        })
    }

    /// Wraps an already-filled device FP16 buffer `[out, in]` as a matrix.
    pub fn mat_from_device(&self, data: CudaSlice<u16>, out: usize, inp: usize) -> Result<CudaMat> {
        if data.len() < out * inp {
            return Err(Error::invalid("device buffer smaller than the matrix"));
        }
        Ok(CudaMat {
            data,
            out,
            inp,
            q: None,
        })
    }

    /// [`Backend::attention`] through an explicit kernel path (for checks and benchmarks);
    /// checks the shape itself, since callers reach it without the trait's wrapper.
    pub fn attention_path(
        &self,
        path: AttnPath,
        q: &CudaSlice<f32>,
        k_cache: &CudaSlice<f32>,
        v_cache: &CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
        shape: &AttentionShape,
    ) -> Result<()> {
        let shape = *shape;
        let AttentionShape { rows, head_dim, .. } = shape;
        shape.check(q.len(), out.len(), k_cache.len(), v_cache.len())?;
        if head_dim == 0 || head_dim > 128 {
            return Err(Error::Unsupported(format!(
                "head_dim {head_dim} (the CUDA attention kernels support 1..=128)"
            )));
        }
        if rows == 0 {
            return Ok(());
        }
        kernels::attention_with(self, path, q, k_cache, v_cache, out, shape)
    }

    /// Names of the GEMV tuning variants (index 0 is the default used by `matmul`).
    pub fn gemv_variant_names(&self) -> Vec<&'static str> {
        self.inner.k.gemv_variants.iter().map(|v| v.0).collect()
    }

    /// `out = W x` through GEMV variant `idx` (needs `in % 8 == 0`).
    pub fn gemv_variant(
        &self,
        idx: usize,
        x: &CudaSlice<f32>,
        w: &CudaMat,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        check_len("gemv x", x.len(), w.inp)?;
        check_len("gemv out", out.len(), w.out)?;
        let (_, per_block, f) = self
            .inner
            .k
            .gemv_variants
            .get(idx)
            .ok_or_else(|| Error::invalid(format!("no GEMV variant {idx}")))?;
        if w.inp % 8 != 0 {
            return Err(Error::invalid("vectorised GEMV needs in % 8 == 0"));
        }
        let (n, kdim) = (dim32("out features", w.out)?, dim32("in features", w.inp)?);
        let cfg = LaunchConfig {
            grid_dim: (w.out.div_ceil(*per_block) as u32, 1, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = self.inner.stream.launch_builder(f);
        b.arg(&w.data).arg(x).arg(out).arg(&n).arg(&kdim);
        // SAFETY: lengths checked above.
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        Ok(())
    }

    /// GEMV (`rows == 1`) or tensor-core GEMM into `out`, as [`Backend::matmul`].
    fn launch_matmul(
        &self,
        x: &CudaSlice<f32>,
        w: &CudaMat,
        out: &mut CudaSlice<f32>,
        rows: usize,
    ) -> Result<()> {
        if let Some(q) = &w.q {
            return quant::matmul(self, x, q, out, rows);
        }
        let (n, kdim) = (dim32("out features", w.out)?, dim32("in features", w.inp)?);
        let k = &self.inner.k;
        let s = &self.inner.stream;
        let vec = w.inp % 8 == 0;
        if rows == 1 {
            let (f, blocks) = if vec {
                (&k.gemv_vec, w.out.div_ceil(4))
            } else {
                (&k.gemv_scalar, w.out.div_ceil(4))
            };
            let cfg = LaunchConfig {
                grid_dim: (blocks as u32, 1, 1),
                block_dim: (128, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut b = s.launch_builder(f);
            b.arg(&w.data).arg(x).arg(out).arg(&n).arg(&kdim);
            // SAFETY: sizes were checked by the caller against the buffers.
            unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        } else {
            let m = dim32("rows", rows)?;
            let cfg = LaunchConfig {
                grid_dim: (w.out.div_ceil(128) as u32, rows.div_ceil(128) as u32, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            let v = vec as i32;
            let mut b = s.launch_builder(&k.gemm);
            b.arg(x)
                .arg(&w.data)
                .arg(out)
                .arg(&m)
                .arg(&n)
                .arg(&kdim)
                .arg(&v);
            // SAFETY: sizes were checked by the caller against the buffers.
            unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        }
        Ok(())
    }
}

/// FP16 bits of a dense host tensor (converted from f32/bf16 when needed).
fn to_f16_bits(t: &crate::model::Tensor) -> Result<Vec<u16>> {
    match t.dtype() {
        DType::F16 => {
            let b = t.bytes();
            Ok(b.par_chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect())
        }
        _ => {
            let v = t.to_f32_vec();
            let bits: Vec<u16> = v.par_iter().map(|&x| f16::from_f32(x).to_bits()).collect();
            if let Some(i) = v
                .iter()
                .zip(&bits)
                .position(|(&x, &h)| x.is_finite() && !f16::from_bits(h).is_finite())
            {
                return Err(Error::Unsupported(format!(
                    "weight value {} at element {i} overflows FP16",
                    v[i]
                )));
            }
            Ok(bits)
        }
    }
}

impl Backend for CudaBackend {
    type Buf = CudaSlice<f32>;
    type Mat = CudaMat;
    type Cache = CudaSlice<f32>;

    fn name(&self) -> String {
        self.inner.name.clone()
    }

    fn upload_matrix(&self, m: &WeightMatrix) -> Result<CudaMat> {
        match m {
            WeightMatrix::Dense(t) => {
                if t.shape().len() != 2 {
                    return Err(Error::invalid(format!(
                        "matrix must be 2-D, got {:?}",
                        t.shape()
                    )));
                }
                let (out, inp) = (t.shape()[0], t.shape()[1]);
                self.upload_f16(&to_f16_bits(t)?, out, inp)
            }
            WeightMatrix::Int8(_) | WeightMatrix::Int4(_) | WeightMatrix::Int2(_) => {
                let q = quant::upload(self, m)?;
                let (out, inp) = q.dims();
                let data = self.inner.stream.alloc_zeros(1).map_err(cuda_err)?;
                Ok(CudaMat {
                    data,
                    out,
                    inp,
                    q: Some(q),
                })
            }
        }
    }

    fn upload_vec(&self, v: &[f32]) -> Result<CudaSlice<f32>> {
        if v.is_empty() {
            return self.alloc(1);
        }
        self.inner.stream.clone_htod(v).map_err(cuda_err)
    }

    fn alloc(&self, len: usize) -> Result<CudaSlice<f32>> {
        self.inner.stream.alloc_zeros(len.max(1)).map_err(|e| {
            Error::OutOfMemory(format!("device allocation of {len} f32 failed: {e:?}"))
        })
    }

    fn write(&self, dst: &mut CudaSlice<f32>, src: &[f32]) -> Result<()> {
        check_len("write", dst.len(), src.len())?;
        if src.is_empty() {
            return Ok(());
        }
        let mut view = dst.slice_mut(0..src.len());
        self.inner
            .stream
            .memcpy_htod(src, &mut view)
            .map_err(cuda_err)
    }

    fn copy_rows_impl(
        &self,
        src: &CudaSlice<f32>,
        dst: &mut CudaSlice<f32>,
        c: &RowCopy,
    ) -> Result<()> {
        let (s, d) = c.check(src.len(), dst.len())?;
        if s.is_empty() {
            return Ok(());
        }
        let view = src.slice(s);
        let mut out = dst.slice_mut(d);
        self.inner
            .stream
            .memcpy_dtod(&view, &mut out)
            .map_err(cuda_err)
    }

    fn read(&self, src: &CudaSlice<f32>, dst: &mut [f32]) -> Result<()> {
        check_len("read", src.len(), dst.len())?;
        if dst.is_empty() {
            return Ok(());
        }
        let view = src.slice(0..dst.len());
        self.inner.stream.memcpy_dtoh(&view, dst).map_err(cuda_err)
    }

    fn buf_len(&self, buf: &CudaSlice<f32>) -> usize {
        buf.len()
    }

    fn embed(&self, table: &CudaMat, tokens: &[u32], out: &mut CudaSlice<f32>) -> Result<()> {
        if table.q.is_some() {
            return Err(Error::Unsupported(
                "embedding lookup in a packed INT8/INT4/INT2 table".into(),
            ));
        }
        let (vocab, dim) = table.dims();
        check_len("embed", out.len(), tokens.len() * dim)?;
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::invalid(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            )));
        }
        if tokens.is_empty() {
            return Ok(());
        }
        let s = &self.inner.stream;
        let mut scratch = self
            .inner
            .scratch
            .lock()
            .map_err(|_| Error::Internal("scratch lock poisoned".into()))?;
        if scratch.tokens.len() < tokens.len() {
            scratch.tokens = s
                .alloc_zeros(tokens.len().next_power_of_two())
                .map_err(cuda_err)?;
        }
        {
            let mut view = scratch.tokens.slice_mut(0..tokens.len());
            s.memcpy_htod(tokens, &mut view).map_err(cuda_err)?;
        }
        let d = dim32("dim", dim)?;
        let cfg = LaunchConfig {
            grid_dim: (tokens.len() as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = s.launch_builder(&self.inner.k.embed);
        b.arg(&table.data).arg(&scratch.tokens).arg(out).arg(&d);
        // SAFETY: tokens validated < vocab; out holds rows * dim.
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        Ok(())
    }

    fn rmsnorm_impl(
        &self,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
        shape: &NormShape,
    ) -> Result<()> {
        let NormShape { rows, dim, eps } = *shape;
        if rows == 0 || dim == 0 {
            return Ok(());
        }
        let d = dim32("dim", dim)?;
        let threads = if dim >= 4096 { 512 } else { 256 };
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = self.inner.stream.launch_builder(&self.inner.k.rmsnorm);
        b.arg(x).arg(w).arg(out).arg(&d).arg(&eps);
        // SAFETY: lengths checked by `Backend::rmsnorm`.
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        Ok(())
    }

    fn matmul(
        &self,
        x: &CudaSlice<f32>,
        w: &CudaMat,
        out: &mut CudaSlice<f32>,
        rows: usize,
    ) -> Result<()> {
        let (n_out, n_in) = w.dims();
        check_len("matmul x", x.len(), rows * n_in)?;
        check_len("matmul out", out.len(), rows * n_out)?;
        if rows == 0 {
            return Ok(());
        }
        self.launch_matmul(x, w, out, rows)
    }

    fn add_bias(
        &self,
        x: &mut CudaSlice<f32>,
        bias: &CudaSlice<f32>,
        rows: usize,
        width: usize,
    ) -> Result<()> {
        check_len("add_bias x", x.len(), rows * width)?;
        check_len("add_bias bias", bias.len(), width)?;
        let n = (rows * width) as u64;
        if n == 0 {
            return Ok(());
        }
        let wd = dim32("width", width)?;
        let mut b = self.inner.stream.launch_builder(&self.inner.k.add_bias);
        b.arg(x).arg(bias).arg(&n).arg(&wd);
        // SAFETY: lengths checked above.
        unsafe { b.launch(elementwise_cfg(rows * width)) }.map_err(cuda_err)?;
        Ok(())
    }

    fn rope_impl(&self, x: &mut CudaSlice<f32>, p: &RopeParams) -> Result<()> {
        let RopeParams {
            rows,
            n_heads,
            head_dim,
            pos0,
            theta,
            style,
        } = *p;
        let pairs = rows * n_heads * (head_dim / 2);
        if pairs == 0 {
            return Ok(());
        }
        let (r, h, hd, p) = (
            dim32("rows", rows)?,
            dim32("heads", n_heads)?,
            dim32("head_dim", head_dim)?,
            dim32("position", pos0 + rows)?,
        );
        let _ = p;
        let pos = pos0 as i32;
        let inter = matches!(style, RopeStyle::Interleaved) as i32;
        let cfg = LaunchConfig {
            grid_dim: (pairs.div_ceil(256) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = self.inner.stream.launch_builder(&self.inner.k.rope);
        b.arg(x)
            .arg(&r)
            .arg(&h)
            .arg(&hd)
            .arg(&pos)
            .arg(&theta)
            .arg(&inter);
        // SAFETY: lengths checked above.
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        Ok(())
    }

    fn alloc_cache(&self, len: usize) -> Result<CudaSlice<f32>> {
        self.alloc(len)
    }

    fn cache_len(&self, cache: &CudaSlice<f32>) -> usize {
        cache.len()
    }

    fn copy_cache(
        &self,
        src: &CudaSlice<f32>,
        dst: &mut CudaSlice<f32>,
        rows: usize,
        width: usize,
    ) -> Result<()> {
        self.store_rows(src, dst, rows, width, 0)
    }

    fn store_rows(
        &self,
        src: &CudaSlice<f32>,
        cache: &mut CudaSlice<f32>,
        rows: usize,
        width: usize,
        pos0: usize,
    ) -> Result<()> {
        check_len("store_rows src", src.len(), rows * width)?;
        check_len("store_rows cache", cache.len(), (pos0 + rows) * width)?;
        if rows * width == 0 {
            return Ok(());
        }
        let from = src.slice(0..rows * width);
        let mut to = cache.slice_mut(pos0 * width..(pos0 + rows) * width);
        self.inner
            .stream
            .memcpy_dtod(&from, &mut to)
            .map_err(cuda_err)
    }

    fn attention_impl(
        &self,
        q: &CudaSlice<f32>,
        k_cache: &CudaSlice<f32>,
        v_cache: &CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
        shape: &AttentionShape,
    ) -> Result<()> {
        let path = kernels::default_path(shape.rows, shape.head_dim);
        self.attention_path(path, q, k_cache, v_cache, out, shape)
    }

    fn swiglu(
        &self,
        gate: &CudaSlice<f32>,
        up: &CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
        len: usize,
    ) -> Result<()> {
        check_len("swiglu gate", gate.len(), len)?;
        check_len("swiglu up", up.len(), len)?;
        check_len("swiglu out", out.len(), len)?;
        if len == 0 {
            return Ok(());
        }
        let n = len as u64;
        let mut b = self.inner.stream.launch_builder(&self.inner.k.swiglu);
        b.arg(gate).arg(up).arg(out).arg(&n);
        // SAFETY: lengths checked above.
        unsafe { b.launch(elementwise_cfg(len)) }.map_err(cuda_err)?;
        Ok(())
    }

    fn add(&self, x: &mut CudaSlice<f32>, y: &CudaSlice<f32>, len: usize) -> Result<()> {
        check_len("add x", x.len(), len)?;
        check_len("add y", y.len(), len)?;
        if len == 0 {
            return Ok(());
        }
        let n = len as u64;
        let mut b = self.inner.stream.launch_builder(&self.inner.k.add);
        b.arg(x).arg(y).arg(&n);
        // SAFETY: lengths checked above.
        unsafe { b.launch(elementwise_cfg(len)) }.map_err(cuda_err)?;
        Ok(())
    }

    fn argmax(&self, x: &CudaSlice<f32>, len: usize) -> Result<u32> {
        check_len("argmax", x.len(), len)?;
        if len == 0 {
            return Err(Error::invalid("argmax of an empty vector"));
        }
        let s = &self.inner.stream;
        let mut scratch = self
            .inner
            .scratch
            .lock()
            .map_err(|_| Error::Internal("scratch lock poisoned".into()))?;
        let n = len as u64;
        let cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (1024, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = s.launch_builder(&self.inner.k.argmax);
        b.arg(x).arg(&n).arg(&mut scratch.argmax);
        // SAFETY: len checked above; output holds one u32.
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        let mut host = [0u32; 1];
        s.memcpy_dtoh(&scratch.argmax, &mut host)
            .map_err(cuda_err)?;
        Ok(host[0])
    }

    fn layer_norm_impl(
        &self,
        x: &CudaSlice<f32>,
        g: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
        shape: &NormShape,
    ) -> Result<()> {
        encoder::layer_norm(self, x, g, b, out, shape)
    }

    fn gelu_impl(&self, x: &mut CudaSlice<f32>, len: usize) -> Result<()> {
        encoder::gelu(self, x, len)
    }

    fn attention_full_impl(
        &self,
        q: &CudaSlice<f32>,
        k: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
        shape: &FullAttentionShape,
    ) -> Result<()> {
        encoder::attention_full(self, q, k, v, out, shape)
    }

    fn mean_rows_impl(
        &self,
        x: &CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
        rows: usize,
        width: usize,
    ) -> Result<()> {
        encoder::mean_rows(self, x, out, rows, width)
    }

    fn synchronize(&self) -> Result<()> {
        self.inner.stream.synchronize().map_err(cuda_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_without_a_device_is_a_typed_error_not_a_panic() {
        match CudaBackend::new(0) {
            Ok(be) => println!("CUDA device present: {}", be.name()),
            Err(Error::NoDevice(msg)) => assert!(!msg.is_empty()),
            Err(other) => panic!("expected NoDevice or a device, got {other}"),
        }
        // An absurd ordinal is always NoDevice.
        assert!(matches!(CudaBackend::new(10_000), Err(Error::NoDevice(_))));
    }

    #[test]
    fn f32_weights_convert_to_f16_and_overflow_is_named() {
        let t = crate::model::Tensor::from_f32(&[1.0, -2.5, 0.1], vec![1, 3]);
        let bits = to_f16_bits(&t).unwrap();
        assert_eq!(f16::from_bits(bits[1]).to_f32(), -2.5);
        let big = crate::model::Tensor::from_f32(&[1.0, 1e6], vec![1, 2]);
        assert!(to_f16_bits(&big)
            .unwrap_err()
            .to_string()
            .contains("overflows FP16"));
    }
}
