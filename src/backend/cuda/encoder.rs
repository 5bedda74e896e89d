//! Launches of the bidirectional encoder's kernels (`kernels/encoder.cu`): the
//! [`Backend`](crate::backend::Backend) ops `layer_norm`, `gelu`, `attention_full` and
//! `mean_rows` on the CUDA backend. Sizes are checked by the trait's wrappers before these run.

use super::{cuda_err, dim32, elementwise_cfg, CudaBackend};
use crate::backend::{FullAttentionShape, NormShape};
use crate::{Error, Result};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

/// Dynamic shared memory one `attention_full_f32` block may use (the default 48 KiB limit).
const ATTN_SMEM_MAX: usize = 48 * 1024;

/// See [`crate::backend::Backend::layer_norm`].
pub(crate) fn layer_norm(
    be: &CudaBackend,
    x: &CudaSlice<f32>,
    g: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
    out: &mut CudaSlice<f32>,
    shape: &NormShape,
) -> Result<()> {
    let NormShape { rows, dim, eps } = *shape;
    if rows == 0 || dim == 0 {
        return Ok(());
    }
    let d = dim32("dim", dim)?;
    let cfg = LaunchConfig {
        grid_dim: (dim32("rows", rows)? as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut l = be.inner.stream.launch_builder(&be.inner.k.enc.layernorm);
    l.arg(x).arg(g).arg(b).arg(out).arg(&d).arg(&eps);
    // SAFETY: argument types match the kernel; lengths checked by `Backend::layer_norm`.
    unsafe { l.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}

/// See [`crate::backend::Backend::gelu`].
pub(crate) fn gelu(be: &CudaBackend, x: &mut CudaSlice<f32>, len: usize) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    let n = len as u64;
    let mut l = be.inner.stream.launch_builder(&be.inner.k.enc.gelu);
    l.arg(x).arg(&n);
    // SAFETY: argument types match the kernel; n <= x.len().
    unsafe { l.launch(elementwise_cfg(len)) }.map_err(cuda_err)?;
    Ok(())
}

/// See [`crate::backend::Backend::attention_full`].
pub(crate) fn attention_full(
    be: &CudaBackend,
    q: &CudaSlice<f32>,
    k: &CudaSlice<f32>,
    v: &CudaSlice<f32>,
    out: &mut CudaSlice<f32>,
    shape: &FullAttentionShape,
) -> Result<()> {
    let FullAttentionShape {
        n_q,
        n_k,
        n_heads,
        head_dim,
    } = *shape;
    let w = n_heads * head_dim;
    if n_q == 0 || w == 0 {
        return Ok(());
    }
    let smem = (head_dim + n_k) * 4;
    if smem > ATTN_SMEM_MAX {
        return Err(Error::Unsupported(format!(
            "attention_full over {n_k} keys of head width {head_dim} needs {smem} bytes of shared memory (at most {ATTN_SMEM_MAX})"
        )));
    }
    let (nk, h, hd) = (
        dim32("keys", n_k)?,
        dim32("heads", n_heads)?,
        dim32("head_dim", head_dim)?,
    );
    let scale = 1.0 / (head_dim as f32).sqrt();
    let cfg = LaunchConfig {
        grid_dim: (dim32("query rows", n_q)? as u32, h as u32, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: smem as u32,
    };
    let mut l = be
        .inner
        .stream
        .launch_builder(&be.inner.k.enc.attention_full);
    l.arg(q)
        .arg(k)
        .arg(v)
        .arg(out)
        .arg(&nk)
        .arg(&h)
        .arg(&hd)
        .arg(&scale);
    // SAFETY: argument types match the kernel; lengths and shared memory checked above.
    unsafe { l.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}

/// See [`crate::backend::Backend::mean_rows`].
pub(crate) fn mean_rows(
    be: &CudaBackend,
    x: &CudaSlice<f32>,
    out: &mut CudaSlice<f32>,
    rows: usize,
    width: usize,
) -> Result<()> {
    if width == 0 {
        return Ok(());
    }
    let (r, wd) = (dim32("rows", rows)?, dim32("width", width)?);
    let cfg = LaunchConfig {
        grid_dim: (width.div_ceil(256) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut l = be.inner.stream.launch_builder(&be.inner.k.enc.mean_rows);
    l.arg(x).arg(out).arg(&r).arg(&wd);
    // SAFETY: argument types match the kernel; lengths checked above.
    unsafe { l.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}
