//! Loading the compiled kernel modules and the launches that need more than one kernel.

use super::{cuda_err, nvrtc, sources, CudaBackend};
use crate::backend::checks::AttentionShape;
use crate::{Error, Result};
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;
use std::sync::Arc;

/// Every kernel function the backend launches.
pub(crate) struct Kernels {
    pub embed: CudaFunction,
    pub rmsnorm: CudaFunction,
    pub rope: CudaFunction,
    pub swiglu: CudaFunction,
    pub add: CudaFunction,
    pub add_bias: CudaFunction,
    pub fill: CudaFunction,
    pub argmax: CudaFunction,
    pub gemv_vec: CudaFunction,
    pub gemv_scalar: CudaFunction,
    pub gemm: CudaFunction,
    pub attn_split: CudaFunction,
    pub attn_combine: CudaFunction,
    pub fill_synthetic: CudaFunction,
    pub flash_d64: CudaFunction,
    pub flash_d128: CudaFunction,
    pub flash_d64_bm64: CudaFunction,
    pub flash_d128_bm64: CudaFunction,
    pub flash_d64_np: CudaFunction,
    pub flash_d128_np: CudaFunction,
    /// The bidirectional encoder's kernels (`kernels/encoder.cu`).
    pub enc: EncoderKernels,
    /// `(name, rows per block, function)` of the GEMV tuning variants (K % 8 == 0).
    pub gemv_variants: Vec<(&'static str, usize, CudaFunction)>,
}

/// The kernels of `kernels/encoder.cu` (see [`super::encoder`]).
pub(crate) struct EncoderKernels {
    pub layernorm: CudaFunction,
    pub gelu: CudaFunction,
    pub attention_full: CudaFunction,
    pub mean_rows: CudaFunction,
}

impl EncoderKernels {
    fn load(m: &Arc<cudarc::driver::CudaModule>) -> Result<Self> {
        Ok(EncoderKernels {
            layernorm: func(m, "layernorm_f32")?,
            gelu: func(m, "gelu_f32")?,
            attention_full: func(m, "attention_full_f32")?,
            mean_rows: func(m, "mean_rows_f32")?,
        })
    }
}

/// GEMV variants compiled beside the default (`gemv_f16_vec`, 4 rows per block).
pub const GEMV_VARIANTS: &[(&str, usize)] = &[
    ("gemv_f16_vec", 4),
    ("gemv_f16_r2u4", 8),
    ("gemv_f16_r8u1", 32),
    ("gemv_f16_r4u2", 16),
];

/// Compiles (or fetches from the disk cache) and loads one translation unit.
pub(crate) fn module(
    ctx: &Arc<CudaContext>,
    file: &str,
    arch: i32,
) -> Result<Arc<cudarc::driver::CudaModule>> {
    let src = sources::source(file)
        .ok_or_else(|| Error::Internal(format!("kernel source {file} not embedded")))?;
    let cubin = nvrtc::compile_cached(file, src, arch)?;
    ctx.load_module(Ptx::from_binary(cubin))
        .map_err(|e| Error::Cuda(format!("loading {file} (sm_{arch}) failed: {e:?}")))
}

pub(crate) fn func(m: &Arc<cudarc::driver::CudaModule>, name: &str) -> Result<CudaFunction> {
    m.load_function(name)
        .map_err(|e| Error::Cuda(format!("kernel {name} missing from its module: {e:?}")))
}

impl Kernels {
    /// Compiles and loads every kernel for compute capability `arch` (e.g. 90).
    pub fn load(ctx: &Arc<CudaContext>, arch: i32) -> Result<Self> {
        // Compile (or fetch from the cache) every translation unit in parallel first; the
        // module loads below then hit the disk cache.
        use rayon::prelude::*;
        sources::KERNEL_SOURCES
            .par_iter()
            .map(|(name, src)| nvrtc::compile_cached(name, src, arch).map(|_| ()))
            .collect::<Result<Vec<()>>>()?;
        let ew = module(ctx, "elementwise.cu", arch)?;
        let gemv = module(ctx, "gemv.cu", arch)?;
        let att = module(ctx, "attention_decode.cu", arch)?;
        let fa = module(ctx, "attention_prefill.cu", arch)?;
        Ok(Kernels {
            embed: func(&module(ctx, "embed.cu", arch)?, "embed_f16")?,
            rmsnorm: func(&module(ctx, "rmsnorm.cu", arch)?, "rmsnorm_f32")?,
            rope: func(&module(ctx, "rope.cu", arch)?, "rope_f32")?,
            swiglu: func(&ew, "swiglu_f32")?,
            add: func(&ew, "add_f32")?,
            add_bias: func(&ew, "add_bias_f32")?,
            fill: func(&ew, "fill_f32")?,
            argmax: func(&module(ctx, "argmax.cu", arch)?, "argmax_f32")?,
            gemv_vec: func(&gemv, "gemv_f16_vec")?,
            gemv_scalar: func(&gemv, "gemv_f16_scalar")?,
            gemm: func(&module(ctx, "gemm.cu", arch)?, "gemm_f16")?,
            attn_split: func(&att, "attn_split")?,
            attn_combine: func(&att, "attn_combine")?,
            fill_synthetic: func(&module(ctx, "synthetic.cu", arch)?, "fill_synthetic_f16")?,
            flash_d64: func(&fa, "flash_attn_d64")?,
            flash_d128: func(&fa, "flash_attn_d128")?,
            flash_d64_bm64: func(&fa, "flash_attn_d64_bm64")?,
            flash_d128_bm64: func(&fa, "flash_attn_d128_bm64")?,
            flash_d64_np: func(&fa, "flash_attn_d64_np")?,
            flash_d128_np: func(&fa, "flash_attn_d128_np")?,
            enc: EncoderKernels::load(&module(ctx, "encoder.cu", arch)?)?,
            gemv_variants: GEMV_VARIANTS
                .iter()
                .map(|&(n, r)| Ok((n, r, func(&gemv, n)?)))
                .collect::<Result<_>>()?,
        })
    }
}

/// How the keys of one attention call are split across blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitPlan {
    /// Number of key splits.
    pub splits: usize,
    /// Keys per split.
    pub chunk: usize,
}

/// Chooses splits so that about four blocks per SM are in flight, with at least 64 keys per
/// split and at most 128 splits.
pub fn split_plan(
    sms: usize,
    rows: usize,
    n_heads: usize,
    n_kv_heads: usize,
    max_len: usize,
) -> SplitPlan {
    let group = n_heads / n_kv_heads.max(1);
    let blocks_per_split = n_kv_heads * group.div_ceil(8) * rows;
    let want = (4 * sms).div_ceil(blocks_per_split.max(1));
    let by_len = max_len.div_ceil(64);
    let splits = want.min(by_len).clamp(1, 128);
    let chunk = max_len.div_ceil(splits).next_multiple_of(8);
    SplitPlan {
        splits: max_len.div_ceil(chunk),
        chunk,
    }
}

/// Which attention kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttnPath {
    /// Split-K flash-decoding (`attn_split` + `attn_combine`): any head_dim <= 128, fp32.
    Split,
    /// Tensor-core FlashAttention-2 prefill (`flash_attn_d64/128`, 128 query rows per block):
    /// f16 operands.
    Flash,
    /// The same kernel with 64 query rows per block and no prefetch (`flash_attn_d*_bm64`).
    FlashBm64,
    /// 128 query rows per block without the register prefetch (`flash_attn_d*_np`).
    FlashNoPrefetch,
}

/// The path [`crate::backend::Backend::attention`] takes: tensor cores for prefill chunks of
/// at least 16 rows with head_dim 64 or 128, split-K otherwise. `AGENTCOMPRESS_ATTN=split`
/// forces the split-K path everywhere.
pub fn default_path(rows: usize, head_dim: usize) -> AttnPath {
    static FORCE_SPLIT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let force = *FORCE_SPLIT.get_or_init(|| {
        std::env::var("AGENTCOMPRESS_ATTN").is_ok_and(|v| v.eq_ignore_ascii_case("split"))
    });
    if !force && rows >= 16 && (head_dim == 64 || head_dim == 128) {
        AttnPath::Flash
    } else {
        AttnPath::Split
    }
}

/// Launches the tensor-core prefill kernel (see `kernels/attention_prefill.cu`).
fn flash(
    be: &CudaBackend,
    path: AttnPath,
    q: &CudaSlice<f32>,
    k_cache: &CudaSlice<f32>,
    v_cache: &CudaSlice<f32>,
    out: &mut CudaSlice<f32>,
    shape: AttentionShape,
) -> Result<()> {
    let AttentionShape {
        rows,
        pos0,
        n_heads,
        n_kv_heads,
        head_dim,
    } = shape;
    let inner = &be.inner;
    let (f, bm) = match (head_dim, path) {
        (64, AttnPath::FlashBm64) => (&inner.k.flash_d64_bm64, 64),
        (128, AttnPath::FlashBm64) => (&inner.k.flash_d128_bm64, 64),
        (64, AttnPath::FlashNoPrefetch) => (&inner.k.flash_d64_np, 128),
        (128, AttnPath::FlashNoPrefetch) => (&inner.k.flash_d128_np, 128),
        (64, _) => (&inner.k.flash_d64, 128),
        (128, _) => (&inner.k.flash_d128, 128),
        (other, _) => {
            return Err(Error::Unsupported(format!(
                "tensor-core attention needs head_dim 64 or 128, got {other}"
            )))
        }
    };
    let scale_log2 = std::f32::consts::LOG2_E / (head_dim as f32).sqrt();
    let (r, p0, nh, nkv) = (rows as i32, pos0 as i32, n_heads as i32, n_kv_heads as i32);
    let cfg = LaunchConfig {
        grid_dim: (rows.div_ceil(bm) as u32, n_heads as u32, 1),
        block_dim: (2 * bm as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut b = inner.stream.launch_builder(f);
    b.arg(q)
        .arg(k_cache)
        .arg(v_cache)
        .arg(out)
        .arg(&r)
        .arg(&p0)
        .arg(&nh)
        .arg(&nkv)
        .arg(&scale_log2);
    // SAFETY: buffer lengths were checked by the caller.
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}

/// Attention through an explicit kernel path (arguments as [`crate::backend::Backend::attention`],
/// already validated by the caller).
pub(crate) fn attention_with(
    be: &CudaBackend,
    path: AttnPath,
    q: &CudaSlice<f32>,
    k_cache: &CudaSlice<f32>,
    v_cache: &CudaSlice<f32>,
    out: &mut CudaSlice<f32>,
    shape: AttentionShape,
) -> Result<()> {
    match path {
        AttnPath::Flash | AttnPath::FlashBm64 | AttnPath::FlashNoPrefetch => {
            flash(be, path, q, k_cache, v_cache, out, shape)
        }
        AttnPath::Split => split(be, q, k_cache, v_cache, out, shape),
    }
}

/// Launches split attention plus the combine kernel (see `kernels/attention_decode.cu`).
fn split(
    be: &CudaBackend,
    q: &CudaSlice<f32>,
    k_cache: &CudaSlice<f32>,
    v_cache: &CudaSlice<f32>,
    out: &mut CudaSlice<f32>,
    shape: AttentionShape,
) -> Result<()> {
    let AttentionShape {
        rows,
        pos0,
        n_heads,
        n_kv_heads,
        head_dim,
    } = shape;
    let inner = &be.inner;
    let s = &inner.stream;
    let max_len = pos0 + rows;
    let plan = split_plan(inner.sms, rows, n_heads, n_kv_heads, max_len);
    let part_len = rows * n_heads * plan.splits * (head_dim + 2);
    let mut scratch = inner
        .scratch
        .lock()
        .map_err(|_| Error::Internal("scratch lock poisoned".into()))?;
    if scratch.part.len() < part_len {
        scratch.part = s
            .alloc_zeros(part_len.next_power_of_two())
            .map_err(cuda_err)?;
    }
    let ml_len = rows * n_heads * plan.splits * 2;
    let (ml, acc) = scratch.part.split_at_mut(ml_len);
    let (mut ml, mut acc) = (ml, acc);
    let group = n_heads / n_kv_heads;
    let gchunks = group.div_ceil(8);
    let scale_log2 = std::f32::consts::LOG2_E / (head_dim as f32).sqrt();
    let (p0, nh, nkv, hd) = (
        pos0 as i32,
        n_heads as i32,
        n_kv_heads as i32,
        head_dim as i32,
    );
    let (chunk, splits) = (plan.chunk as i32, plan.splits as i32);
    let cfg = LaunchConfig {
        grid_dim: (
            plan.splits as u32,
            (n_kv_heads * gchunks) as u32,
            rows as u32,
        ),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut b = s.launch_builder(&inner.k.attn_split);
    b.arg(q)
        .arg(k_cache)
        .arg(v_cache)
        .arg(&mut ml)
        .arg(&mut acc)
        .arg(&p0)
        .arg(&nh)
        .arg(&nkv)
        .arg(&hd)
        .arg(&chunk)
        .arg(&splits)
        .arg(&scale_log2);
    // SAFETY: buffer lengths were checked by the caller; scratch holds the partials.
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    let cfg = LaunchConfig {
        grid_dim: ((rows * n_heads) as u32, 1, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut b = s.launch_builder(&inner.k.attn_combine);
    b.arg(&mut ml)
        .arg(&mut acc)
        .arg(out)
        .arg(&nh)
        .arg(&hd)
        .arg(&splits);
    // SAFETY: as above.
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_plan_covers_every_key_and_fills_the_device() {
        for &(sms, rows, h, kv, len) in &[
            (132, 1, 64, 8, 32768),
            (132, 1, 8, 4, 7),
            (132, 77, 8, 2, 77),
            (132, 1, 32, 32, 4096),
            (108, 3, 12, 1, 1000),
        ] {
            let p = split_plan(sms, rows, h, kv, len);
            assert!(p.splits >= 1 && p.splits <= 128, "{p:?}");
            assert!(p.splits * p.chunk >= len, "{p:?} misses keys of {len}");
            assert!((p.splits - 1) * p.chunk < len, "{p:?} has an empty split");
        }
        assert!(split_plan(132, 1, 64, 8, 32768).splits >= 64);
    }
}
