//! The CPU backend: the reference oracle for every other backend ([`CpuBackend::exact`]), and
//! the default when no GPU is present. All arithmetic accumulates in f32; matrix products run
//! on all cores: a decode step's on a persistent worker pool ([`worker_pool`]), prefill's on
//! rayon. Packed products on a VNNI CPU quantize their activations to int8 blocks unless the
//! backend is exact ([`qgemv_vnni`]). Dense FP16 weights on AVX-512 are re-laid out at upload
//! into panels of 16 outputs ([`f16panel`]): one kernel for any number of input rows, every
//! row bit-identical to a one-row product. Packed products over 32 or more input rows (prefill)
//! run as blocked GEMMs that unpack each weight once per call ([`qgemm_vnni`]); shorter ones
//! stay bit-identical to one-row products. [`f16gemm`] serves FP16 prefill where the panel
//! layout is not used. The panel layouts are written on huge pages where Linux gives them
//! ([`huge_pages`]).

pub mod act_quant;
pub mod amx;
mod attention_batch;
mod attention_f16;
mod dots_avx2;
pub mod encoder_ops;
pub mod f16gemm;
pub mod f16mat;
#[cfg(target_arch = "x86_64")]
mod f16mat_avx512;
pub mod f16panel;
mod gemm_tile;
pub mod huge_pages;
mod kernels;
pub mod kv_cache;
mod prefetch;
pub mod qgemm_vnni;
pub mod qgemv;
mod qgemv_avx512;
pub mod qgemv_vnni;
pub mod qpanel;
mod simd;
mod vexp;
pub mod worker_pool;

pub use kernels::{argmax, dot};
pub use kv_cache::{KvCache, KvPrecision};
pub use worker_pool::Threading;

use super::checks::{
    check_len, AttentionShape, FullAttentionShape, NormShape, RopeParams, RowCopy,
};
use super::{AttentionJob, Backend};
use crate::model::{DType, Tensor};
use crate::quant::{Int2Matrix, Int4Matrix, Int8Matrix, Packed, WeightMatrix};
use crate::{Error, Result};
use rayon::prelude::*;

/// Fewest elements a SwiGLU splits over the threads.
const SWIGLU_PARALLEL_MIN: usize = 1024;

/// A weight matrix uploaded to the CPU backend.
#[derive(Clone, Debug)]
pub enum CpuMat {
    /// Dense f32 `[out, in]` (zero-copy when the checkpoint is float32).
    F32 {
        /// The tensor holding the f32 data.
        data: Tensor,
        /// Output features.
        out: usize,
        /// Input features.
        inp: usize,
    },
    /// Dense FP16 `[out, in]`, kept in FP16 and widened per use ([`f16mat`]).
    F16 {
        /// The weights, row-major.
        data: std::sync::Arc<Vec<half::f16>>,
        /// Output features.
        out: usize,
        /// Input features.
        inp: usize,
    },
    /// Dense FP16 in the panel layout of [`f16panel`] (uploads on AVX-512 CPUs): one kernel
    /// for every input row count.
    F16Panels(f16panel::F16Panels),
    /// INT8 packed codes, computed on directly (see [`crate::quant::packed`]).
    Int8(Int8Matrix),
    /// INT8 codes in the panel layout of [`qpanel`] (uploads on VNNI CPUs, unless exact).
    Int8Panels(qpanel::QPanels<8>),
    /// INT4 codes in the panel layout of [`qpanel`].
    Int4Panels(qpanel::QPanels<4>),
    /// INT2 codes in the panel layout of [`qpanel`].
    Int2Panels(qpanel::QPanels<2>),
    /// INT4 packed codes, computed on directly.
    Int4(Int4Matrix),
    /// INT2 packed codes, computed on directly.
    Int2(Int2Matrix),
}

impl CpuMat {
    /// `(out, in)`.
    pub fn dims(&self) -> (usize, usize) {
        match self {
            CpuMat::F32 { out, inp, .. } | CpuMat::F16 { out, inp, .. } => (*out, *inp),
            CpuMat::F16Panels(m) => m.dims(),
            CpuMat::Int8Panels(m) => m.dims(),
            CpuMat::Int4Panels(m) => m.dims(),
            CpuMat::Int2Panels(m) => m.dims(),
            CpuMat::Int8(m) => m.dims(),
            CpuMat::Int4(m) => m.dims(),
            CpuMat::Int2(m) => m.dims(),
        }
    }
}

/// The CPU backend. Cheap to construct; holds no state but its settings: the key/value cache
/// precision, how decode products spread over threads, and whether packed products may
/// quantize their activations.
#[derive(Clone, Debug, Default)]
pub struct CpuBackend {
    /// Packed products on f32 activations only (no int8 activation blocks).
    exact: bool,
    kv: KvPrecision,
    threading: Threading,
}

impl CpuBackend {
    /// True when packed uploads take the panel layout of [`qpanel`]: the CPU has VNNI (and
    /// `AGENTCOMPRESS_CPU_SIMD` does not cap it below), the backend may quantize activations (not [`CpuBackend::exact`]), and the groups are whole
    /// activation blocks.
    fn panels<const BITS: u32>(&self, m: &Packed<BITS>) -> bool {
        !self.exact
            && qgemv::best_path() == Some(qgemv::GemvPath::Avx512Vnni)
            && qpanel::QPanels::supports(m)
    }

    /// A CPU backend with an FP16 key/value cache whose packed products use the fastest path
    /// (int8 activations with AVX512-VNNI where present).
    pub fn new() -> Self {
        CpuBackend::default()
    }

    /// The oracle other backends are checked against: packed products keep f32 activations
    /// (the GPU's quantized kernels keep f16 activations, and int8 activation blocks would
    /// add an error of their own to the comparison) and the key/value cache is f32.
    pub fn exact() -> Self {
        CpuBackend {
            exact: true,
            kv: KvPrecision::F32,
            ..Default::default()
        }
    }

    /// A CPU backend whose key/value caches hold `kv` elements (f32: the exact reference).
    pub fn with_kv(kv: KvPrecision) -> Self {
        CpuBackend {
            kv,
            ..Default::default()
        }
    }

    /// This backend with its decode products spread by `threading` (the worker pool by
    /// default; rayon to compare against).
    pub fn with_threading(self, threading: Threading) -> Self {
        CpuBackend { threading, ..self }
    }

    /// How this backend spreads a decode product over threads.
    pub fn threading(&self) -> Threading {
        self.threading
    }

    /// The precision of the key/value caches this backend allocates.
    pub fn kv_precision(&self) -> KvPrecision {
        self.kv
    }
}

/// Rows are processed in parallel once a matrix has this many output rows.
const PAR_MIN_ROWS: usize = 64;

/// Rows from which [`Backend::matmul_batch`] runs the blocked products (FP16 and packed):
/// a batched decode step of this many sequences already reads each weight block once for
/// all of them at close to prefill speed, while [`Backend::matmul`] keeps the blocked
/// products for prefill-sized row counts so few-row products stay bit-identical to decode.
const BATCH_BLOCKED_MIN_ROWS: usize = 8;

impl Backend for CpuBackend {
    type Buf = Vec<f32>;
    type Mat = CpuMat;
    type Cache = KvCache;

    fn name(&self) -> String {
        let threads = match self.threading {
            Threading::Pool => worker_pool::threads(),
            Threading::Rayon => rayon::current_num_threads(),
        };
        format!(
            "cpu ({threads} threads ({}), {} KV cache)",
            self.threading, self.kv
        )
    }

    fn upload_matrix(&self, m: &WeightMatrix) -> Result<CpuMat> {
        match m {
            WeightMatrix::Dense(t) => {
                if t.shape().len() != 2 {
                    return Err(Error::invalid(format!(
                        "matrix must be 2-D, got {:?}",
                        t.shape()
                    )));
                }
                let (out, inp) = (t.shape()[0], t.shape()[1]);
                if t.dtype() == DType::F16 && f16mat::F16Path::best() == f16mat::F16Path::Avx512 {
                    return Ok(CpuMat::F16Panels(f16panel::F16Panels::pack(
                        t.bytes(),
                        out,
                        inp,
                    )?));
                }
                if t.dtype() == DType::F16 {
                    let data = t
                        .bytes()
                        .chunks_exact(2)
                        .map(|b| half::f16::from_le_bytes([b[0], b[1]]))
                        .collect();
                    return Ok(CpuMat::F16 {
                        data: std::sync::Arc::new(data),
                        out,
                        inp,
                    });
                }
                let data = match t.dtype() {
                    DType::F32 if t.as_f32().is_some() => t.clone(),
                    _ => Tensor::from_f32(&t.to_f32_vec(), vec![out, inp]),
                };
                Ok(CpuMat::F32 { data, out, inp })
            }
            WeightMatrix::Int8(m) if self.panels(m) => {
                Ok(CpuMat::Int8Panels(qpanel::QPanels::pack(m)?))
            }
            WeightMatrix::Int4(m) if self.panels(m) => {
                Ok(CpuMat::Int4Panels(qpanel::QPanels::pack(m)?))
            }
            WeightMatrix::Int2(m) if self.panels(m) => {
                Ok(CpuMat::Int2Panels(qpanel::QPanels::pack(m)?))
            }
            WeightMatrix::Int8(m) => Ok(CpuMat::Int8(m.clone())),
            WeightMatrix::Int4(m) => Ok(CpuMat::Int4(m.clone())),
            WeightMatrix::Int2(m) => Ok(CpuMat::Int2(m.clone())),
        }
    }

    fn upload_vec(&self, v: &[f32]) -> Result<Vec<f32>> {
        Ok(v.to_vec())
    }

    fn alloc(&self, len: usize) -> Result<Vec<f32>> {
        crate::model::input_file::try_filled(len, 0.0)
    }

    fn write(&self, dst: &mut Vec<f32>, src: &[f32]) -> Result<()> {
        check_len("write", dst.len(), src.len())?;
        dst[..src.len()].copy_from_slice(src);
        Ok(())
    }

    fn read(&self, src: &Vec<f32>, dst: &mut [f32]) -> Result<()> {
        check_len("read", src.len(), dst.len())?;
        dst.copy_from_slice(&src[..dst.len()]);
        Ok(())
    }

    fn buf_len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }

    fn copy_rows_impl(&self, src: &Vec<f32>, dst: &mut Vec<f32>, c: &RowCopy) -> Result<()> {
        let (s, d) = c.check(src.len(), dst.len())?;
        dst[d].copy_from_slice(&src[s]);
        Ok(())
    }

    fn embed(&self, table: &CpuMat, tokens: &[u32], out: &mut Vec<f32>) -> Result<()> {
        let (vocab, dim) = table.dims();
        if !matches!(
            table,
            CpuMat::F32 { .. } | CpuMat::F16 { .. } | CpuMat::F16Panels(_)
        ) {
            return Err(Error::Unsupported(
                "embedding tables must be dense (f32/f16/bf16), not packed".into(),
            ));
        }
        check_len("embed", out.len(), tokens.len() * dim)?;
        for (r, &tok) in tokens.iter().enumerate() {
            let tok = tok as usize;
            if tok >= vocab {
                return Err(Error::invalid(format!(
                    "token id {tok} is outside the vocabulary of {vocab}"
                )));
            }
            let dst = &mut out[r * dim..(r + 1) * dim];
            let rows = tok * dim..(tok + 1) * dim;
            match table {
                CpuMat::F32 { data, .. } => dst.copy_from_slice(
                    &data
                        .as_f32()
                        .ok_or_else(|| Error::Internal("embedding not f32".into()))?[rows],
                ),
                CpuMat::F16 { data, .. } => {
                    dst.iter_mut()
                        .zip(&data[rows])
                        .for_each(|(d, h)| *d = h.to_f32());
                }
                CpuMat::F16Panels(m) => m.row_into(tok, dst),
                _ => unreachable!("packed tables were rejected above"),
            }
        }
        Ok(())
    }

    fn rmsnorm_impl(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        out: &mut Vec<f32>,
        shape: &NormShape,
    ) -> Result<()> {
        let NormShape { rows, dim, eps } = *shape;
        for r in 0..rows {
            kernels::rmsnorm(
                &x[r * dim..(r + 1) * dim],
                &w[..dim],
                &mut out[r * dim..(r + 1) * dim],
                eps,
            );
        }
        Ok(())
    }

    fn matmul(&self, x: &Vec<f32>, w: &CpuMat, out: &mut Vec<f32>, rows: usize) -> Result<()> {
        let (n_out, n_in) = w.dims();
        check_len("matmul x", x.len(), rows * n_in)?;
        check_len("matmul out", out.len(), rows * n_out)?;
        let _mode = worker_pool::use_threading(self.threading);
        match w {
            CpuMat::F32 { data, .. } => {
                let wf = data
                    .as_f32()
                    .ok_or_else(|| Error::Internal("matrix not f32".into()))?;
                matmul_rows(
                    rows,
                    n_in,
                    n_out,
                    &x[..rows * n_in],
                    &mut out[..rows * n_out],
                    |o, xr| dot(&wf[o * n_in..(o + 1) * n_in], xr),
                );
            }
            CpuMat::F16 { data, .. } => f16mat::f16_matmul(
                data,
                n_out,
                n_in,
                &x[..rows * n_in],
                rows,
                &mut out[..rows * n_out],
            ),
            CpuMat::F16Panels(m) => m.matmul(&x[..rows * n_in], rows, &mut out[..rows * n_out]),
            CpuMat::Int8Panels(m) => m.matmul(&x[..rows * n_in], rows, &mut out[..rows * n_out]),
            CpuMat::Int4Panels(m) => m.matmul(&x[..rows * n_in], rows, &mut out[..rows * n_out]),
            CpuMat::Int2Panels(m) => m.matmul(&x[..rows * n_in], rows, &mut out[..rows * n_out]),
            CpuMat::Int8(m) => packed_matmul(
                m,
                &x[..rows * n_in],
                rows,
                &mut out[..rows * n_out],
                self.exact,
            ),
            CpuMat::Int4(m) => packed_matmul(
                m,
                &x[..rows * n_in],
                rows,
                &mut out[..rows * n_out],
                self.exact,
            ),
            CpuMat::Int2(m) => packed_matmul(
                m,
                &x[..rows * n_in],
                rows,
                &mut out[..rows * n_out],
                self.exact,
            ),
        }
        Ok(())
    }

    fn matmul_batch(
        &self,
        x: &Vec<f32>,
        w: &CpuMat,
        out: &mut Vec<f32>,
        rows: usize,
    ) -> Result<()> {
        if rows >= BATCH_BLOCKED_MIN_ROWS && !self.exact {
            let (n_out, n_in) = w.dims();
            check_len("matmul x", x.len(), rows * n_in)?;
            check_len("matmul out", out.len(), rows * n_out)?;
            let (x, y) = (&x[..rows * n_in], &mut out[..rows * n_out]);
            let done = match w {
                CpuMat::F16 { data, .. } => f16gemm::f16_gemm(data, n_out, n_in, x, rows, y),
                CpuMat::F16Panels(_)
                | CpuMat::Int8Panels(_)
                | CpuMat::Int4Panels(_)
                | CpuMat::Int2Panels(_) => false,
                CpuMat::Int8(m) => qgemm_vnni::packed_gemm(m, x, rows, y),
                CpuMat::Int4(m) => qgemm_vnni::packed_gemm(m, x, rows, y),
                CpuMat::Int2(m) => qgemm_vnni::packed_gemm(m, x, rows, y),
                CpuMat::F32 { .. } => false,
            };
            if done {
                return Ok(());
            }
        }
        self.matmul(x, w, out, rows)
    }

    fn matmuls(
        &self,
        x: &Vec<f32>,
        products: &mut [(&CpuMat, &mut Vec<f32>)],
        rows: usize,
        independent_rows: bool,
    ) -> Result<()> {
        for (w, out) in products.iter() {
            let (n_out, n_in) = w.dims();
            check_len("matmul x", x.len(), rows * n_in)?;
            check_len("matmul out", out.len(), rows * n_out)?;
        }
        let _mode = worker_pool::use_threading(self.threading);
        if panel_products(x, products, rows) {
            return Ok(());
        }
        crate::backend::matmuls_one_by_one(self, x, products, rows, independent_rows)
    }

    fn add_bias(&self, x: &mut Vec<f32>, bias: &Vec<f32>, rows: usize, width: usize) -> Result<()> {
        check_len("add_bias x", x.len(), rows * width)?;
        check_len("add_bias bias", bias.len(), width)?;
        for row in x[..rows * width].chunks_exact_mut(width) {
            row.iter_mut().zip(bias).for_each(|(a, b)| *a += b);
        }
        Ok(())
    }

    fn rope_impl(&self, x: &mut Vec<f32>, p: &RopeParams) -> Result<()> {
        let RopeParams {
            rows,
            n_heads,
            head_dim,
            pos0,
            theta,
            style,
        } = *p;
        kernels::rope_rows(x, rows, n_heads, head_dim, pos0, theta, style);
        Ok(())
    }

    fn alloc_cache(&self, len: usize) -> Result<KvCache> {
        KvCache::zeroed(self.kv, len)
    }

    fn cache_len(&self, cache: &KvCache) -> usize {
        cache.len()
    }

    fn copy_cache(
        &self,
        src: &KvCache,
        dst: &mut KvCache,
        rows: usize,
        width: usize,
    ) -> Result<()> {
        dst.copy_rows_from(src, rows, width)
    }

    fn store_rows(
        &self,
        src: &Vec<f32>,
        cache: &mut KvCache,
        rows: usize,
        width: usize,
        pos0: usize,
    ) -> Result<()> {
        cache.store(src, rows, width, pos0)
    }

    fn attention_impl(
        &self,
        q: &Vec<f32>,
        k_cache: &KvCache,
        v_cache: &KvCache,
        out: &mut Vec<f32>,
        shape: &AttentionShape,
    ) -> Result<()> {
        let _mode = worker_pool::use_threading(self.threading);
        match (k_cache, v_cache) {
            (KvCache::F32(k), KvCache::F32(v)) => attention_f32(q, k, v, out, shape),
            (KvCache::F16(k), KvCache::F16(v)) => attention_f16(q, k, v, out, shape),
            _ => {
                return Err(Error::invalid(
                    "attention: the key and value caches differ in precision",
                ))
            }
        }
        Ok(())
    }

    fn attention_batch_impl(&self, jobs: &mut [AttentionJob<'_, Self>]) -> Result<()> {
        let _mode = worker_pool::use_threading(self.threading);
        if attention_batch::attention_f16_batch(jobs) {
            return Ok(());
        }
        for j in jobs.iter_mut() {
            self.attention_impl(j.q, j.k_cache, j.v_cache, j.out, &j.shape)?;
        }
        Ok(())
    }

    fn swiglu(&self, gate: &Vec<f32>, up: &Vec<f32>, out: &mut Vec<f32>, len: usize) -> Result<()> {
        check_len("swiglu gate", gate.len(), len)?;
        check_len("swiglu up", up.len(), len)?;
        check_len("swiglu out", out.len(), len)?;
        let (gate, up) = (&gate[..len], &up[..len]);
        let run = |start: usize, o: &mut [f32]| {
            let end = start + o.len();
            vexp::swiglu(&gate[start..end], &up[start..end], o);
        };
        if len < SWIGLU_PARALLEL_MIN {
            run(0, &mut out[..len]);
        } else {
            // From one decode row's hidden width up (with the vector `exp`, leaving up to
            // five rows on one thread measured no faster).
            let _mode = worker_pool::use_threading(self.threading);
            let chunk = len.div_ceil(worker_pool::threads());
            worker_pool::for_each_chunk(&mut out[..len], chunk, |i, o| run(i * chunk, o));
        }
        Ok(())
    }

    fn argmax(&self, x: &Vec<f32>, len: usize) -> Result<u32> {
        check_len("argmax", x.len(), len)?;
        Ok(argmax(&x[..len]) as u32)
    }

    fn argmax_rows(&self, x: &Vec<f32>, rows: usize, len: usize, out: &mut [u32]) -> Result<()> {
        let n = super::argmax_rows_len(rows, len, out.len())?;
        check_len("argmax rows", x.len(), n)?;
        // A classifier row is long enough that the other threads are worth waking for it.
        let _mode = worker_pool::use_threading(self.threading);
        worker_pool::for_each_chunk(&mut out[..rows], 1, |r, o| {
            o[0] = argmax(&x[r * len..(r + 1) * len]) as u32;
        });
        Ok(())
    }

    fn layer_norm_impl(
        &self,
        x: &Vec<f32>,
        g: &Vec<f32>,
        b: &Vec<f32>,
        out: &mut Vec<f32>,
        shape: &NormShape,
    ) -> Result<()> {
        let (n, dim) = (shape.rows * shape.dim, shape.dim);
        encoder_ops::layer_norm(&x[..n], &g[..dim], &b[..dim], &mut out[..n], dim, shape.eps);
        Ok(())
    }

    fn gelu_impl(&self, x: &mut Vec<f32>, len: usize) -> Result<()> {
        x[..len].iter_mut().for_each(|v| *v = encoder_ops::gelu(*v));
        Ok(())
    }

    fn attention_full_impl(
        &self,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        out: &mut Vec<f32>,
        shape: &FullAttentionShape,
    ) -> Result<()> {
        encoder_ops::attention_full(q, k, v, out, shape);
        Ok(())
    }

    fn mean_rows_impl(
        &self,
        x: &Vec<f32>,
        out: &mut Vec<f32>,
        rows: usize,
        width: usize,
    ) -> Result<()> {
        encoder_ops::mean_rows(x, &mut out[..width], rows);
        Ok(())
    }

    fn add(&self, x: &mut Vec<f32>, y: &Vec<f32>, len: usize) -> Result<()> {
        check_len("add x", x.len(), len)?;
        check_len("add y", y.len(), len)?;
        x[..len]
            .iter_mut()
            .zip(&y[..len])
            .for_each(|(a, b)| *a += b);
        Ok(())
    }
}

/// Causal grouped-query attention on f32 caches (the reference): one task per query row and
/// head, parallel when the work is large.
fn attention_f32(
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    out: &mut [f32],
    shape: &AttentionShape,
) {
    let AttentionShape {
        rows,
        pos0,
        n_heads,
        n_kv_heads,
        head_dim,
    } = *shape;
    let q_dim = n_heads * head_dim;
    let kv_dim = n_kv_heads * head_dim;
    let group = n_heads / n_kv_heads;
    let work = rows * n_heads * (pos0 + rows) * head_dim;
    let task = |(idx, o): (usize, &mut [f32])| {
        let (r, h) = (idx / n_heads, idx % n_heads);
        let qh = &q[r * q_dim + h * head_dim..r * q_dim + (h + 1) * head_dim];
        kernels::attend_head(
            qh,
            k_cache,
            v_cache,
            pos0 + r + 1,
            kv_dim,
            (h / group) * head_dim,
            o,
        );
    };
    let out_rows = out[..rows * q_dim].chunks_exact_mut(head_dim).enumerate();
    if work >= 1 << 16 {
        out_rows.par_bridge().for_each(task);
    } else {
        out_rows.for_each(task);
    }
}

/// Causal grouped-query attention on FP16 caches: one task per query row and KV head, whose
/// query heads share each cached row read ([`attention_f16::attend_group_f16`]), on the
/// worker pool when the work is large.
fn attention_f16(
    q: &[f32],
    k_cache: &[half::f16],
    v_cache: &[half::f16],
    out: &mut [f32],
    shape: &AttentionShape,
) {
    let AttentionShape {
        rows,
        pos0,
        n_heads,
        n_kv_heads,
        head_dim,
    } = *shape;
    let q_dim = n_heads * head_dim;
    let kv_dim = n_kv_heads * head_dim;
    let width = (n_heads / n_kv_heads) * head_dim;
    let work = rows * n_heads * (pos0 + rows) * head_dim;
    let task = |(idx, o): (usize, &mut [f32])| {
        let (r, g) = (idx / n_kv_heads, idx % n_kv_heads);
        let at = r * q_dim + g * width;
        attention_f16::attend_group_f16(
            &q[at..at + width],
            k_cache,
            v_cache,
            pos0 + r + 1,
            kv_dim,
            g * head_dim,
            head_dim,
            o,
        );
    };
    if work >= 1 << 16 {
        worker_pool::for_each_chunk(&mut out[..rows * q_dim], width, |i, o| task((i, o)));
    } else {
        out[..rows * q_dim]
            .chunks_mut(width)
            .enumerate()
            .for_each(task);
    }
}

/// Runs several products of one input as one job when every matrix is in the same panel
/// layout and width ([`f16panel`], or [`qpanel`] of one group size); returns false (nothing
/// written) otherwise. The lengths were checked by the caller.
fn panel_products(x: &[f32], products: &mut [(&CpuMat, &mut Vec<f32>)], rows: usize) -> bool {
    let Some(first) = products.first().map(|(w, _)| *w) else {
        return true;
    };
    let n_in = first.dims().1;
    macro_rules! same_layout {
        ($variant:ident, $run:expr) => {{
            let mut group = Vec::with_capacity(products.len());
            for (w, out) in products.iter_mut() {
                let CpuMat::$variant(m) = w else {
                    return false;
                };
                let (n_out, width) = m.dims();
                if width != n_in {
                    return false;
                }
                group.push((m, &mut out[..rows * n_out]));
            }
            $run(&mut group[..])
        }};
    }
    let x = &x[..rows * n_in];
    match first {
        CpuMat::F16Panels(_) => same_layout!(F16Panels, |g: &mut [_]| {
            f16panel::F16Panels::matmul_many(g, x, rows);
            true
        }),
        CpuMat::Int8Panels(_) => {
            same_layout!(Int8Panels, |g: &mut [_]| qpanel::QPanels::matmul_many(
                g, x, rows
            ))
        }
        CpuMat::Int4Panels(_) => {
            same_layout!(Int4Panels, |g: &mut [_]| qpanel::QPanels::matmul_many(
                g, x, rows
            ))
        }
        CpuMat::Int2Panels(_) => {
            same_layout!(Int2Panels, |g: &mut [_]| qpanel::QPanels::matmul_many(
                g, x, rows
            ))
        }
        _ => false,
    }
}

/// Matrix product on a packed matrix, never dequantising it whole: one input row uses the SIMD
/// kernels of [`qgemv`] where the CPU has them, else [`Packed::row_dot`] (per group
/// `s * (sum q*x - z * sum x)`) per output; several rows use [`qgemv::packed_gemm`] on AVX-512,
/// else dequantise each weight row once into a per-task buffer and dot it with every input
/// row. `exact` keeps f32 activations ([`CpuBackend::exact`]).
fn packed_matmul<const B: u32>(
    m: &Packed<B>,
    x: &[f32],
    rows: usize,
    out: &mut [f32],
    exact: bool,
) {
    let (n_out, n_in) = m.dims();
    if rows == 1 && qgemv::packed_gemv_on_f32(exact, m, x, out) {
        return;
    }
    if rows <= 1 {
        matmul_rows(rows, n_in, n_out, x, out, |o, xr| m.row_dot(o, xr));
        return;
    }
    if qgemv::packed_gemm_on_f32(exact, m, x, rows, out) {
        return;
    }
    matmul_widened_rows(rows, n_in, n_out, x, out, |o, wrow| {
        m.dequantize_row_into(o, wrow)
    });
}

/// `out[r, o] = sum_k w[o, k] * x[r, k]` for several input rows, where `widen(o, buf)` writes
/// weight row `o` as f32 into a per-task buffer: each weight row is widened once for all
/// input rows (packed and FP16 matrices share this), and dotted with them four at a time on
/// AVX2 + FMA ([`dots_avx2`]) where the CPU has it.
pub(crate) fn matmul_widened_rows(
    rows: usize,
    n_in: usize,
    n_out: usize,
    x: &[f32],
    out: &mut [f32],
    widen: impl Fn(usize, &mut [f32]) + Sync,
) {
    let x = &x[..rows * n_in];
    let cols: Vec<Vec<f32>> = (0..n_out)
        .into_par_iter()
        .with_min_len(8)
        .map_init(
            || vec![0.0f32; n_in],
            |wrow, o| {
                widen(o, wrow);
                let mut col = vec![0.0f32; rows];
                if !dots_avx2::dots_into(wrow, x, &mut col) {
                    for (r, c) in col.iter_mut().enumerate() {
                        *c = dot(wrow, &x[r * n_in..(r + 1) * n_in]);
                    }
                }
                col
            },
        )
        .collect();
    scatter_columns(cols, n_out, out);
}

/// Writes per-output columns (`cols[o][r]`) into row-major `out[r, o]`.
fn scatter_columns(cols: Vec<Vec<f32>>, n_out: usize, out: &mut [f32]) {
    for (o, col) in cols.into_iter().enumerate() {
        for (r, v) in col.into_iter().enumerate() {
            out[r * n_out + o] = v;
        }
    }
}

/// Computes `out[r, o] = f(o, x[r, :])` for every row and output, parallel over outputs when
/// the matrix is large enough (one row: on the worker pool, 16 outputs per task; several: on
/// rayon); each weight row is read once for all `rows` inputs.
pub fn matmul_rows(
    rows: usize,
    n_in: usize,
    n_out: usize,
    x: &[f32],
    out: &mut [f32],
    f: impl Fn(usize, &[f32]) -> f32 + Sync,
) {
    if rows == 1 {
        let body = |(o, y): (usize, &mut f32)| *y = f(o, x);
        if n_out >= PAR_MIN_ROWS && n_out * n_in >= 1 << 14 {
            let chunk = worker_pool::stream_chunk(n_out, 16);
            worker_pool::for_each_chunk(&mut out[..n_out], chunk, |t, ys| {
                ys.iter_mut()
                    .enumerate()
                    .for_each(|(i, y)| body((t * chunk + i, y)))
            });
        } else {
            out.iter_mut().enumerate().for_each(body);
        }
        return;
    }
    // Several rows: compute the transposed block per output, then scatter.
    let cols: Vec<Vec<f32>> = (0..n_out)
        .into_par_iter()
        .with_min_len(8)
        .map(|o| {
            (0..rows)
                .map(|r| f(o, &x[r * n_in..(r + 1) * n_in]))
                .collect()
        })
        .collect();
    scatter_columns(cols, n_out, out);
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_kv;
