//! The `Backend` trait: the kernels a transformer forward pass needs, and nothing of the model.
//!
//! The forward pass in [`crate::engine`] is written once over this trait. A backend owns device
//! memory for activations ([`Backend::Buf`], logically f32) and uploaded weights
//! ([`Backend::Mat`], any precision). Activations are row-major `[rows, width]`.
//! The CPU backend is the reference every other backend is tested against.

pub mod checks;
pub mod cpu;
pub mod cuda;
pub mod host_fallback;

pub use checks::{AttentionShape, FullAttentionShape, NormShape, RopeParams, RowCopy};

use crate::quant::WeightMatrix;
use crate::Result;

/// One sequence's part of [`Backend::attention_batch`]: its query rows, its key and value
/// caches, its output rows and its shape (as [`Backend::attention`] takes them).
pub struct AttentionJob<'a, B: Backend> {
    /// Query rows, `[shape.rows, n_heads * head_dim]`.
    pub q: &'a B::Buf,
    /// The sequence's key cache.
    pub k_cache: &'a B::Cache,
    /// The sequence's value cache.
    pub v_cache: &'a B::Cache,
    /// Output rows, `[shape.rows, n_heads * head_dim]`.
    pub out: &'a mut B::Buf,
    /// Rows, positions and head grouping.
    pub shape: AttentionShape,
}

/// Kernels over opaque activation buffers and uploaded weights.
pub trait Backend: Send + Sync {
    /// An activation buffer (logically f32).
    type Buf: Send + Sync;
    /// An uploaded weight matrix `[out, in]`, in the precision it was uploaded in.
    type Mat: Send + Sync;
    /// One layer's key or value cache `[rows, kv_dim]`, in the backend's cache precision
    /// (f32 on CUDA, FP16 by default on the CPU).
    type Cache: Send + Sync;

    /// A short human-readable name ("cpu", "cuda:0 NVIDIA H100 ...").
    fn name(&self) -> String;

    /// Uploads a weight matrix (dense or packed).
    fn upload_matrix(&self, m: &WeightMatrix) -> Result<Self::Mat>;
    /// Uploads a vector (norm weight, bias) as an activation-type buffer.
    fn upload_vec(&self, v: &[f32]) -> Result<Self::Buf>;
    /// Allocates a buffer of `len` elements (contents unspecified).
    fn alloc(&self, len: usize) -> Result<Self::Buf>;
    /// Copies `src` into the start of `dst`.
    fn write(&self, dst: &mut Self::Buf, src: &[f32]) -> Result<()>;
    /// Copies the first `dst.len()` elements of `src` to the host.
    fn read(&self, src: &Self::Buf, dst: &mut [f32]) -> Result<()>;
    /// The number of elements `buf` holds (what the provided wrappers check sizes against).
    fn buf_len(&self, buf: &Self::Buf) -> usize;

    /// `out[r, :] = table[tokens[r], :]` for an embedding table `[vocab, dim]`.
    fn embed(&self, table: &Self::Mat, tokens: &[u32], out: &mut Self::Buf) -> Result<()>;
    /// `out[r, :] = x[r, :] / rms(x[r, :]) * w` over `shape.rows` rows of width `shape.dim`.
    /// Checks the buffer sizes once for every backend, then runs [`Backend::rmsnorm_impl`].
    fn rmsnorm(
        &self,
        x: &Self::Buf,
        w: &Self::Buf,
        out: &mut Self::Buf,
        shape: &NormShape,
    ) -> Result<()> {
        shape.check(
            "rmsnorm",
            self.buf_len(x),
            self.buf_len(out),
            &[("weight", self.buf_len(w))],
        )?;
        self.rmsnorm_impl(x, w, out, shape)
    }
    /// The backend's RMSNorm kernel, called by [`Backend::rmsnorm`] after the size check.
    fn rmsnorm_impl(
        &self,
        x: &Self::Buf,
        w: &Self::Buf,
        out: &mut Self::Buf,
        shape: &NormShape,
    ) -> Result<()>;
    /// `out[r, o] = sum_i x[r, i] * w[o, i]` for `rows` rows; `w` is `[out, in]`.
    fn matmul(&self, x: &Self::Buf, w: &Self::Mat, out: &mut Self::Buf, rows: usize) -> Result<()>;
    /// [`Backend::matmul`] over rows of independent sequences (a batched decode step), which
    /// need not give each row the bits a one-row product gives it: a backend may run its
    /// fastest multi-row kernel from fewer rows than it would for [`Backend::matmul`], whose
    /// few-row products stay bit-identical to one-row products (speculative verification
    /// relies on that). The default is [`Backend::matmul`].
    fn matmul_batch(
        &self,
        x: &Self::Buf,
        w: &Self::Mat,
        out: &mut Self::Buf,
        rows: usize,
    ) -> Result<()> {
        self.matmul(x, w, out, rows)
    }
    /// Several products of one input, `out_i = x w_i^T` over `rows` rows (a layer's Q, K and
    /// V; its gate and up), each equal bit for bit to [`Backend::matmul`]'s or, with
    /// `independent_rows`, to [`Backend::matmul_batch`]'s. A backend may run them as one job
    /// (one dispatch, one quantization of `x`); the default runs them one after another.
    fn matmuls(
        &self,
        x: &Self::Buf,
        products: &mut [(&Self::Mat, &mut Self::Buf)],
        rows: usize,
        independent_rows: bool,
    ) -> Result<()> {
        matmuls_one_by_one(self, x, products, rows, independent_rows)
    }
    /// `x[r, :] += bias` over `rows` rows of width `bias.len()`.
    fn add_bias(
        &self,
        x: &mut Self::Buf,
        bias: &Self::Buf,
        rows: usize,
        width: usize,
    ) -> Result<()>;
    /// Rotary embedding in place on `p.rows` rows of `p.n_heads` heads of width `p.head_dim`;
    /// row `r` is at position `p.pos0 + r`. Checks the buffer size ([`RopeParams::check`]) once
    /// for every backend, then runs [`Backend::rope_impl`].
    fn rope(&self, x: &mut Self::Buf, p: &RopeParams) -> Result<()> {
        p.check(self.buf_len(x))?;
        self.rope_impl(x, p)
    }
    /// The backend's rotary-embedding kernel, called by [`Backend::rope`] after the size check
    /// (callers use that one).
    fn rope_impl(&self, x: &mut Self::Buf, p: &RopeParams) -> Result<()>;
    /// Allocates a key/value cache of `len` elements (contents unspecified).
    fn alloc_cache(&self, len: usize) -> Result<Self::Cache>;
    /// The number of elements `cache` holds.
    fn cache_len(&self, cache: &Self::Cache) -> usize;
    /// Copies the first `rows` rows of width `width` of `src` into the start of `dst` (what
    /// growing a cache needs).
    fn copy_cache(
        &self,
        src: &Self::Cache,
        dst: &mut Self::Cache,
        rows: usize,
        width: usize,
    ) -> Result<()>;
    /// Copies `rows` rows of width `width` from `src` into `cache` starting at row `pos0`,
    /// in the cache's precision.
    fn store_rows(
        &self,
        src: &Self::Buf,
        cache: &mut Self::Cache,
        rows: usize,
        width: usize,
        pos0: usize,
    ) -> Result<()>;
    /// Causal grouped-query attention for `shape.rows` query rows at positions
    /// `pos0..pos0+rows` against the first `pos0 + rows` rows of the key and value caches
    /// (`[max_seq, kv_dim]`). `q` and `out` are `[rows, n_heads * head_dim]`. Checks the
    /// buffer sizes and the head grouping ([`AttentionShape::check`]) once for every backend,
    /// then runs [`Backend::attention_impl`].
    fn attention(
        &self,
        q: &Self::Buf,
        k_cache: &Self::Cache,
        v_cache: &Self::Cache,
        out: &mut Self::Buf,
        shape: &AttentionShape,
    ) -> Result<()> {
        shape.check(
            self.buf_len(q),
            self.buf_len(out),
            self.cache_len(k_cache),
            self.cache_len(v_cache),
        )?;
        self.attention_impl(q, k_cache, v_cache, out, shape)
    }
    /// [`Backend::attention`] for several sequences at once, each over its own caches (the
    /// sequences of a batched decode step), so a backend can spread all of them over its
    /// threads as one job instead of one small job per sequence. Checks every job's shape
    /// ([`AttentionShape::check`]), then runs [`Backend::attention_batch_impl`].
    fn attention_batch(&self, jobs: &mut [AttentionJob<'_, Self>]) -> Result<()>
    where
        Self: Sized,
    {
        for j in jobs.iter() {
            j.shape.check(
                self.buf_len(j.q),
                self.buf_len(j.out),
                self.cache_len(j.k_cache),
                self.cache_len(j.v_cache),
            )?;
        }
        self.attention_batch_impl(jobs)
    }
    /// The backend's attention over several sequences, called by [`Backend::attention_batch`]
    /// after the shape checks. The default runs [`Backend::attention_impl`] per job.
    fn attention_batch_impl(&self, jobs: &mut [AttentionJob<'_, Self>]) -> Result<()>
    where
        Self: Sized,
    {
        for j in jobs.iter_mut() {
            self.attention_impl(j.q, j.k_cache, j.v_cache, j.out, &j.shape)?;
        }
        Ok(())
    }
    /// The backend's attention kernel, called by [`Backend::attention`] after the shape check
    /// (callers use that one).
    fn attention_impl(
        &self,
        q: &Self::Buf,
        k_cache: &Self::Cache,
        v_cache: &Self::Cache,
        out: &mut Self::Buf,
        shape: &AttentionShape,
    ) -> Result<()>;
    /// `out = silu(gate) * up` elementwise over `len` elements.
    fn swiglu(
        &self,
        gate: &Self::Buf,
        up: &Self::Buf,
        out: &mut Self::Buf,
        len: usize,
    ) -> Result<()>;
    /// `x += y` elementwise over `len` elements.
    fn add(&self, x: &mut Self::Buf, y: &Self::Buf, len: usize) -> Result<()>;
    /// Index of the largest of the first `len` elements (first one on ties).
    fn argmax(&self, x: &Self::Buf, len: usize) -> Result<u32> {
        let mut host = vec![0.0; len];
        self.read(x, &mut host)?;
        Ok(cpu::argmax(&host) as u32)
    }
    /// Index of the largest element of each of the first `rows` rows of `x` (row-major, `len`
    /// elements a row; first one on ties, [`cpu::argmax`]'s rule) into `out[..rows]`: what a
    /// greedy batched step needs of its logits, without handing them to the host.
    fn argmax_rows(&self, x: &Self::Buf, rows: usize, len: usize, out: &mut [u32]) -> Result<()> {
        host_argmax_rows(self, x, rows, len, out)
    }
    /// Layer norm with gain and bias: `out[r, :] = (x[r, :] - mean) / sqrt(var + eps) * g + b`
    /// over `shape.rows` rows of width `shape.dim` (population variance). Checks the buffer
    /// sizes, then runs [`Backend::layer_norm_impl`].
    fn layer_norm(
        &self,
        x: &Self::Buf,
        g: &Self::Buf,
        b: &Self::Buf,
        out: &mut Self::Buf,
        shape: &NormShape,
    ) -> Result<()> {
        shape.check(
            "layer_norm",
            self.buf_len(x),
            self.buf_len(out),
            &[("gain", self.buf_len(g)), ("bias", self.buf_len(b))],
        )?;
        self.layer_norm_impl(x, g, b, out, shape)
    }
    /// The backend's layer norm, called by [`Backend::layer_norm`] after the size check. The
    /// default runs on host copies ([`host_fallback::layer_norm`]).
    fn layer_norm_impl(
        &self,
        x: &Self::Buf,
        g: &Self::Buf,
        b: &Self::Buf,
        out: &mut Self::Buf,
        shape: &NormShape,
    ) -> Result<()> {
        host_fallback::layer_norm(self, x, g, b, out, shape)
    }
    /// Copies `c.rows` rows of `c.width` elements from row `c.from` of `src` on to row `c.to`
    /// of `dst` on (a prefill that wants the last token's logits only classifies that row; a
    /// batched decode step moves each sequence's row in and out of the batch). Checks both
    /// sizes ([`RowCopy::check`]), then runs [`Backend::copy_rows_impl`].
    fn copy_rows(&self, src: &Self::Buf, dst: &mut Self::Buf, c: &RowCopy) -> Result<()> {
        c.check(self.buf_len(src), self.buf_len(dst))?;
        self.copy_rows_impl(src, dst, c)
    }
    /// The backend's row copy, called by [`Backend::copy_rows`] after the size checks. The
    /// default goes through the host ([`host_fallback::copy_rows`]).
    fn copy_rows_impl(&self, src: &Self::Buf, dst: &mut Self::Buf, c: &RowCopy) -> Result<()> {
        host_fallback::copy_rows(self, src, dst, c)
    }
    /// `x = gelu(x)` (tanh approximation) in place over the first `len` elements. Checks the
    /// buffer size, then runs [`Backend::gelu_impl`].
    fn gelu(&self, x: &mut Self::Buf, len: usize) -> Result<()> {
        checks::check_len("gelu", self.buf_len(x), len)?;
        self.gelu_impl(x, len)
    }
    /// The backend's GELU, called by [`Backend::gelu`] after the size check. The default runs
    /// on a host copy ([`host_fallback::gelu`]).
    fn gelu_impl(&self, x: &mut Self::Buf, len: usize) -> Result<()> {
        host_fallback::gelu(self, x, len)
    }
    /// Unmasked (bidirectional) multi-head attention: each of `shape.n_q` query rows attends
    /// to all `shape.n_k` key/value rows. `q` and `out` are `[n_q, n_heads * head_dim]`, `k`
    /// and `v` are `[n_k, n_heads * head_dim]`; scores are scaled by `1/sqrt(head_dim)`. Checks
    /// the shape ([`FullAttentionShape::check`]), then runs [`Backend::attention_full_impl`].
    fn attention_full(
        &self,
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        out: &mut Self::Buf,
        shape: &FullAttentionShape,
    ) -> Result<()> {
        shape.check(
            self.buf_len(q),
            self.buf_len(k),
            self.buf_len(v),
            self.buf_len(out),
        )?;
        self.attention_full_impl(q, k, v, out, shape)
    }
    /// The backend's bidirectional attention, called by [`Backend::attention_full`] after the
    /// shape check. The default runs on host copies ([`host_fallback::attention_full`]).
    fn attention_full_impl(
        &self,
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        out: &mut Self::Buf,
        shape: &FullAttentionShape,
    ) -> Result<()> {
        host_fallback::attention_full(self, q, k, v, out, shape)
    }
    /// `out[c] = mean over r of x[r, c]` for `rows >= 1` rows of width `width`. Checks the
    /// sizes, then runs [`Backend::mean_rows_impl`].
    fn mean_rows(
        &self,
        x: &Self::Buf,
        out: &mut Self::Buf,
        rows: usize,
        width: usize,
    ) -> Result<()> {
        checks::check_len("mean_rows x", self.buf_len(x), rows * width)?;
        checks::check_len("mean_rows out", self.buf_len(out), width)?;
        if rows == 0 {
            return Err(crate::Error::invalid("mean over zero rows"));
        }
        self.mean_rows_impl(x, out, rows, width)
    }
    /// The backend's row mean, called by [`Backend::mean_rows`] after the checks. The default
    /// runs on a host copy ([`host_fallback::mean_rows`]).
    fn mean_rows_impl(
        &self,
        x: &Self::Buf,
        out: &mut Self::Buf,
        rows: usize,
        width: usize,
    ) -> Result<()> {
        host_fallback::mean_rows(self, x, out, rows, width)
    }
    /// Waits for all queued work.
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}

/// [`Backend::matmuls`] one product after another (its default, and a backend's fallback
/// when its matrices cannot run as one job).
pub fn matmuls_one_by_one<B: Backend + ?Sized>(
    be: &B,
    x: &B::Buf,
    products: &mut [(&B::Mat, &mut B::Buf)],
    rows: usize,
    independent_rows: bool,
) -> Result<()> {
    for (w, out) in products.iter_mut() {
        if independent_rows {
            be.matmul_batch(x, w, out, rows)?;
        } else {
            be.matmul(x, w, out, rows)?;
        }
    }
    Ok(())
}

thread_local! {
    /// [`host_argmax_rows`]'s host copy, kept between calls: a batched decode step calls it
    /// every step with the same size (a plain `Cell`, taken for the call and put back).
    static HOST_ROWS: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// [`Backend::argmax_rows`] on the host: the rows read back, then each row's argmax (the
/// trait's default).
pub fn host_argmax_rows<B: Backend + ?Sized>(
    be: &B,
    x: &B::Buf,
    rows: usize,
    len: usize,
    out: &mut [u32],
) -> Result<()> {
    let n = argmax_rows_len(rows, len, out.len())?;
    let mut host = HOST_ROWS.take();
    if host.len() < n {
        // On failure the cell is left empty, which is all the next call needs.
        host = crate::model::input_file::try_filled(n, 0.0)?;
    }
    let read = be.read(x, &mut host[..n]);
    if read.is_ok() {
        for (o, row) in out.iter_mut().zip(host[..n].chunks_exact(len)) {
            *o = cpu::argmax(row) as u32;
        }
    }
    HOST_ROWS.set(host);
    read
}

/// Checks an [`Backend::argmax_rows`] call (rows of at least one element, room in `out` for
/// every row) and returns the elements it reads.
pub fn argmax_rows_len(rows: usize, len: usize, out: usize) -> Result<usize> {
    if len == 0 {
        return Err(crate::Error::invalid("argmax of an empty row"));
    }
    if out < rows {
        return Err(crate::Error::invalid(format!(
            "argmax of {rows} rows into room for {out}"
        )));
    }
    rows.checked_mul(len)
        .ok_or_else(|| crate::Error::invalid("argmax rows size overflows"))
}
