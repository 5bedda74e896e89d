//! The `Backend` trait: the kernels a transformer forward pass needs, and nothing of the model.
//!
//! The forward pass in [`crate::engine`] is written once over this trait. A backend owns device
//! memory for activations ([`Backend::Buf`], logically f32) and uploaded weights
//! ([`Backend::Mat`], any precision). Activations are row-major `[rows, width]`.
//! The CPU backend is the reference every other backend is tested against.

pub mod checks;
pub mod cpu;
pub mod cuda;

pub use checks::{AttentionShape, RopeParams};

use crate::quant::WeightMatrix;
use crate::Result;

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
    /// `out[r, :] = x[r, :] / rms(x[r, :]) * w` over `rows` rows of width `dim`.
    fn rmsnorm(
        &self,
        x: &Self::Buf,
        w: &Self::Buf,
        out: &mut Self::Buf,
        rows: usize,
        dim: usize,
        eps: f32,
    ) -> Result<()>;
    /// `out[r, o] = sum_i x[r, i] * w[o, i]` for `rows` rows; `w` is `[out, in]`.
    fn matmul(&self, x: &Self::Buf, w: &Self::Mat, out: &mut Self::Buf, rows: usize) -> Result<()>;
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
    /// Layer norm with gain and bias: `out[r, :] = (x[r, :] - mean) / sqrt(var + eps) * g + b`
    /// over `rows` rows of width `dim` (population variance). The default runs
    /// [`cpu::encoder_ops::layer_norm`] on host copies.
    #[allow(clippy::too_many_arguments)]
    fn layer_norm(
        &self,
        x: &Self::Buf,
        g: &Self::Buf,
        b: &Self::Buf,
        out: &mut Self::Buf,
        rows: usize,
        dim: usize,
        eps: f32,
    ) -> Result<()> {
        let (mut hx, mut hg, mut hb) = (vec![0.0; rows * dim], vec![0.0; dim], vec![0.0; dim]);
        self.read(x, &mut hx)?;
        self.read(g, &mut hg)?;
        self.read(b, &mut hb)?;
        let mut ho = vec![0.0; rows * dim];
        cpu::encoder_ops::layer_norm(&hx, &hg, &hb, &mut ho, dim, eps);
        self.write(out, &ho)
    }
    /// `x = gelu(x)` (tanh approximation) in place over the first `len` elements. The default
    /// runs [`cpu::encoder_ops::gelu`] on a host copy.
    fn gelu(&self, x: &mut Self::Buf, len: usize) -> Result<()> {
        let mut h = vec![0.0; len];
        self.read(x, &mut h)?;
        h.iter_mut().for_each(|v| *v = cpu::encoder_ops::gelu(*v));
        self.write(x, &h)
    }
    /// Unmasked (bidirectional) multi-head attention: each of `n_q` query rows attends to all
    /// `n_k` key/value rows. `q` and `out` are `[n_q, n_heads * head_dim]`, `k` and `v` are
    /// `[n_k, n_heads * head_dim]`; scores are scaled by `1/sqrt(head_dim)`. The default runs
    /// [`cpu::encoder_ops::attention_full`] on host copies.
    #[allow(clippy::too_many_arguments)]
    fn attention_full(
        &self,
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        out: &mut Self::Buf,
        n_q: usize,
        n_k: usize,
        n_heads: usize,
        head_dim: usize,
    ) -> Result<()> {
        if n_k == 0 {
            return Err(crate::Error::invalid("attention_full over zero keys"));
        }
        let w = n_heads * head_dim;
        let (mut hq, mut hk, mut hv) = (vec![0.0; n_q * w], vec![0.0; n_k * w], vec![0.0; n_k * w]);
        self.read(q, &mut hq)?;
        self.read(k, &mut hk)?;
        self.read(v, &mut hv)?;
        let mut ho = vec![0.0; n_q * w];
        cpu::encoder_ops::attention_full(&hq, &hk, &hv, &mut ho, n_q, n_k, n_heads, head_dim);
        self.write(out, &ho)
    }
    /// `out[c] = mean over r of x[r, c]` for `rows >= 1` rows of width `width`. The default
    /// runs [`cpu::encoder_ops::mean_rows`] on a host copy.
    fn mean_rows(
        &self,
        x: &Self::Buf,
        out: &mut Self::Buf,
        rows: usize,
        width: usize,
    ) -> Result<()> {
        if rows == 0 {
            return Err(crate::Error::invalid("mean over zero rows"));
        }
        let mut hx = vec![0.0; rows * width];
        self.read(x, &mut hx)?;
        let mut ho = vec![0.0; width];
        cpu::encoder_ops::mean_rows(&hx, &mut ho, rows);
        self.write(out, &ho)
    }
    /// Waits for all queued work.
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}
