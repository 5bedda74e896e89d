//! Quantized (INT8 / INT4 / INT2 weight-only) matrices on the CUDA backend: upload of the
//! store's packed layout as is (no re-packing: see `src/quant/packed.rs` for the format and
//! `kernels/qgemv.cu` / `kernels/qgemm.cu` for how the kernels read it) and the launches.
//!
//! Decode (`rows <= 8`) runs the register-dequantising GEMV (`qgemv_b{BITS}_m{1,2,4,8}`) on an
//! f16 copy of the activations padded with zeros to the packed row length (plus 32-element sums
//! for the INT4 / INT2 group-sum math), split across K over `gridDim.y` blocks when the rows
//! alone give fewer than 8 blocks per SM; more rows run the
//! tensor-core GEMM that dequantises tiles into shared memory (`qgemm_s_b{BITS}` with 32-row
//! tiles up to 32 rows, `qgemm_b{BITS}` with 128-row tiles beyond).

use super::{cuda_err, CudaBackend};
use crate::quant::{Packed, WeightMatrix};
use crate::{Error, Result};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg,
};
use std::sync::{Arc, Mutex};

/// Largest activation row count served by the GEMV kernels; more rows use the GEMM.
pub const GEMV_MAX_ROWS: usize = 8;
/// Largest row count served by the skinny GEMM (32-row tiles); more rows use 128-row tiles.
pub const SKINNY_MAX_ROWS: usize = 32;
/// Activation tile widths of the GEMV kernels, smallest first.
const GEMV_TILES: [usize; 4] = [1, 2, 4, 8];
/// The kernel family serving `rows` activation rows (for check and bench labels).
pub fn path_name(rows: usize) -> &'static str {
    if rows <= GEMV_MAX_ROWS {
        "qgemv"
    } else if rows <= SKINNY_MAX_ROWS {
        "qgemm-skinny"
    } else {
        "qgemm"
    }
}

/// Blocks per SM the GEMV grid should reach before it splits K across blocks.
const GEMV_BLOCKS_PER_SM: usize = 8;
/// Fewest 16-byte chunks per row a K-split may take (2 per lane: one loop step).
const GEMV_MIN_SPLIT_CHUNKS: usize = 64;

/// K-splits of the GEMV: 1 while `blocks` fill `sms * GEMV_BLOCKS_PER_SM`, else enough splits
/// to get there, each keeping at least `GEMV_MIN_SPLIT_CHUNKS` chunks of the row.
fn gemv_splits(blocks: usize, chunks: usize, sms: usize) -> usize {
    let want = (sms * GEMV_BLOCKS_PER_SM) / blocks.max(1);
    want.min(chunks / GEMV_MIN_SPLIT_CHUNKS).clamp(1, 8)
}

/// Output rows per GEMV block (4 warps x R rows; R = 4 for tiles 1 and 2, 2 otherwise).
fn gemv_rows_per_block(tile: usize) -> usize {
    if tile <= 2 {
        16
    } else {
        8
    }
}

/// A packed weight matrix resident on the device, in the store's layout.
pub struct QMat {
    bits: u32,
    out: usize,
    inp: usize,
    group: usize,
    n_groups: usize,
    row_words: usize,
    codes: CudaSlice<u32>,
    scales: CudaSlice<u16>,
    /// Zero points (one dummy element for INT8, which has none).
    zeros: CudaSlice<u16>,
}

impl QMat {
    /// `(out, in)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.out, self.inp)
    }

    /// Bits per code (8, 4 or 2).
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Weights per group.
    pub fn group_size(&self) -> usize {
        self.group
    }

    /// Bytes on the device: codes plus scales plus zeros (what one product must read).
    pub fn byte_len(&self) -> usize {
        self.out * self.row_words * 4
            + self.out * self.n_groups * 2 * if self.bits == 8 { 1 } else { 2 }
    }

    /// Codes per 16-byte chunk.
    fn codes_per_chunk(&self) -> usize {
        128 / self.bits as usize
    }

    /// 16-byte chunks per row.
    fn chunks(&self) -> usize {
        self.row_words / 4
    }

    /// Builds a matrix from device buffers already holding the packed layout (benchmarks
    /// fill them on the device). Lengths are checked against the format.
    #[allow(clippy::too_many_arguments)]
    pub fn from_device(
        bits: u32,
        out: usize,
        inp: usize,
        group: usize,
        codes: CudaSlice<u32>,
        scales: CudaSlice<u16>,
        zeros: CudaSlice<u16>,
    ) -> Result<QMat> {
        match bits {
            8 => Packed::<8>::check_group(inp, group)?,
            4 => Packed::<4>::check_group(inp, group)?,
            2 => Packed::<2>::check_group(inp, group)?,
            b => return Err(Error::invalid(format!("no {b}-bit packed format"))),
        }
        let n_groups = inp.div_ceil(group);
        let row_words = crate::quant::packed::row_stride_bytes(bits, inp, group) / 4;
        let want_z = if bits == 8 { 1 } else { out * n_groups };
        if codes.len() < out * row_words || scales.len() < out * n_groups || zeros.len() < want_z {
            return Err(Error::invalid(format!(
                "INT{bits} [{out}, {inp}] group {group}: device buffers of {} words, {} scales, {} zeros are too small",
                codes.len(),
                scales.len(),
                zeros.len()
            )));
        }
        Ok(QMat {
            bits,
            out,
            inp,
            group,
            n_groups,
            row_words,
            codes,
            scales,
            zeros,
        })
    }
}

/// The quantized kernels of one device plus the f16 activation scratch of the GEMV path.
pub(crate) struct QuantState {
    /// `gemv[b][t]`: bits index b (0: INT8, 1: INT4, 2: INT2), tile index t (1, 2, 4, 8 rows).
    gemv: Vec<Vec<CudaFunction>>,
    gemm: Vec<CudaFunction>,
    /// `gemm_s[b]`: the skinny (32-row tile) GEMM.
    gemm_s: Vec<CudaFunction>,
    to_f16: CudaFunction,
    /// Benchmark fill kernels.
    pub(crate) fill_words: CudaFunction,
    pub(crate) fill_halves: CudaFunction,
    /// Held only around the GEMV's launches on the stream, never across rayon work.
    x16: Mutex<GemvScratch>,
}

/// Device scratch of the GEMV path: the f16 activations and their 32-element sums.
struct GemvScratch {
    x16: CudaSlice<u16>,
    xsum: CudaSlice<f32>,
}

fn bits_index(bits: u32) -> usize {
    match bits {
        8 => 0,
        4 => 1,
        _ => 2,
    }
}

impl QuantState {
    /// Compiles (or loads from the disk cache) `qgemv.cu` and `qgemm.cu` for `arch`.
    pub(crate) fn new(ctx: &Arc<CudaContext>, stream: &Arc<CudaStream>, arch: i32) -> Result<Self> {
        let gv = super::kernels::module(ctx, "qgemv.cu", arch)?;
        let gm = super::kernels::module(ctx, "qgemm.cu", arch)?;
        let mut gemv = Vec::new();
        let mut gemm = Vec::new();
        let mut gemm_s = Vec::new();
        for bits in [8u32, 4, 2] {
            let mut row = Vec::new();
            for t in GEMV_TILES {
                row.push(super::kernels::func(&gv, &format!("qgemv_b{bits}_m{t}"))?);
            }
            gemv.push(row);
            gemm.push(super::kernels::func(&gm, &format!("qgemm_b{bits}"))?);
            gemm_s.push(super::kernels::func(&gm, &format!("qgemm_s_b{bits}"))?);
        }
        Ok(QuantState {
            gemv,
            gemm,
            gemm_s,
            to_f16: super::kernels::func(&gv, "qx_to_f16")?,
            fill_words: super::kernels::func(&gv, "qfill_words")?,
            fill_halves: super::kernels::func(&gv, "qfill_halves")?,
            x16: Mutex::new(GemvScratch {
                x16: stream.alloc_zeros(1 << 16).map_err(cuda_err)?,
                xsum: stream.alloc_zeros(1 << 11).map_err(cuda_err)?,
            }),
        })
    }
}

fn i32_of(what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| {
        Error::invalid(format!(
            "{what} = {v} does not fit the kernels' 32-bit sizes"
        ))
    })
}

/// Uploads a packed matrix as it is; `Dense` is not handled here.
pub fn upload(be: &CudaBackend, m: &WeightMatrix) -> Result<QMat> {
    let s = be.stream();
    fn parts<const B: u32>(p: &Packed<B>) -> (&[u32], &[half::f16], &[half::f16]) {
        (p.words(), p.scales(), p.zeros())
    }
    let (bits, (out, inp), group, (words, scales, zeros)) = match m {
        WeightMatrix::Int8(p) => (8, p.dims(), p.group_size(), parts(p)),
        WeightMatrix::Int4(p) => (4, p.dims(), p.group_size(), parts(p)),
        WeightMatrix::Int2(p) => (2, p.dims(), p.group_size(), parts(p)),
        WeightMatrix::Dense(_) => {
            return Err(Error::Internal(
                "dense matrix passed to the quantized upload".into(),
            ))
        }
    };
    if out == 0 || inp == 0 {
        return Err(Error::invalid(format!(
            "empty INT{bits} matrix [{out}, {inp}]"
        )));
    }
    let codes = s.clone_htod(words).map_err(cuda_err)?;
    let sc: Vec<u16> = scales.iter().map(|h| h.to_bits()).collect();
    let scales = s.clone_htod(&sc).map_err(cuda_err)?;
    let zeros = if zeros.is_empty() {
        s.alloc_zeros(1).map_err(cuda_err)?
    } else {
        let z: Vec<u16> = zeros.iter().map(|h| h.to_bits()).collect();
        s.clone_htod(&z).map_err(cuda_err)?
    };
    QMat::from_device(bits, out, inp, group, codes, scales, zeros)
}

/// `out[rows, out] = x[rows, in] W^T` on a packed matrix (lengths checked by the caller).
pub fn matmul(
    be: &CudaBackend,
    x: &CudaSlice<f32>,
    w: &QMat,
    out: &mut CudaSlice<f32>,
    rows: usize,
) -> Result<()> {
    if rows == 0 {
        return Ok(());
    }
    let q = be.quant();
    let s = be.stream();
    let bi = bits_index(w.bits);
    let (n, k) = (
        i32_of("out features", w.out)?,
        i32_of("in features", w.inp)?,
    );
    let (ng, group) = (i32_of("groups", w.n_groups)?, i32_of("group", w.group)?);
    if rows <= GEMV_MAX_ROWS {
        let ti = GEMV_TILES
            .iter()
            .position(|&t| t >= rows)
            .unwrap_or(GEMV_TILES.len() - 1);
        let tile = GEMV_TILES[ti];
        let xs = w.chunks() * w.codes_per_chunk();
        let mut scratch = q
            .x16
            .lock()
            .map_err(|_| Error::Internal("quant scratch lock poisoned".into()))?;
        // The kernels read `tile` rows of x16 (rows >= `rows` are never used but must exist).
        let need = tile * xs;
        if scratch.x16.len() < need {
            scratch.x16 = s.alloc_zeros(need.next_power_of_two()).map_err(cuda_err)?;
        }
        // 32-element activation sums of the INT4 / INT2 group-sum path (INT8 uses none).
        let xsb = if w.bits == 8 { 0 } else { xs / 32 };
        if scratch.xsum.len() < tile * xsb {
            scratch.xsum = s
                .alloc_zeros((tile * xsb).next_power_of_two())
                .map_err(cuda_err)?;
        }
        let GemvScratch { x16, xsum } = &mut *scratch;
        let blocks = w.out.div_ceil(gemv_rows_per_block(tile));
        let splits = gemv_splits(blocks, w.chunks(), be.sm_count());
        let (xs32, m32) = (i32_of("padded in features", xs)?, i32_of("rows", rows)?);
        let (xsb32, zero_out) = (i32_of("sub-blocks", xsb)?, (splits > 1) as i32);
        let cfg = LaunchConfig {
            grid_dim: (xs.div_ceil(256) as u32, rows as u32, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = s.launch_builder(&q.to_f16);
        b.arg(x)
            .arg(&mut *x16)
            .arg(&mut *xsum)
            .arg(&mut *out)
            .arg(&k)
            .arg(&xs32)
            .arg(&xsb32)
            .arg(&n)
            .arg(&zero_out);
        // SAFETY: x holds rows * in (checked by the caller); x16 holds tile * xs >= rows * xs,
        // xsum tile * xsb, out rows * out (zeroed only when the GEMV splits K).
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
        let chunks = i32_of("chunks", w.chunks())?;
        let cfg = LaunchConfig {
            grid_dim: (blocks as u32, splits as u32, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = s.launch_builder(&q.gemv[bi][ti]);
        b.arg(&w.codes)
            .arg(&w.scales)
            .arg(&w.zeros)
            .arg(&*x16)
            .arg(&*xsum)
            .arg(out)
            .arg(&n)
            .arg(&m32)
            .arg(&chunks)
            .arg(&ng)
            .arg(&group)
            .arg(&xs32)
            .arg(&xsb32);
        // SAFETY: codes/scales/zeros match the format (QMat::from_device); x16 / xsum rows <
        // rows are written above and rows >= `rows` are never read; out holds rows * out
        // (checked by the caller) and was zeroed above when splits > 1 (atomic adds).
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    } else {
        let (m, rw) = (i32_of("rows", rows)?, i32_of("row words", w.row_words)?);
        let vec = (w.inp % 4 == 0) as i32;
        let (f, bm) = if rows <= SKINNY_MAX_ROWS {
            (&q.gemm_s[bi], 32)
        } else {
            (&q.gemm[bi], 128)
        };
        let cfg = LaunchConfig {
            grid_dim: (w.out.div_ceil(128) as u32, rows.div_ceil(bm) as u32, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = s.launch_builder(f);
        b.arg(x)
            .arg(&w.codes)
            .arg(&w.scales)
            .arg(&w.zeros)
            .arg(out)
            .arg(&m)
            .arg(&n)
            .arg(&k)
            .arg(&rw)
            .arg(&ng)
            .arg(&group)
            .arg(&vec);
        // SAFETY: as above; the kernel bounds every load by M, N and K.
        unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemv_tiles_cover_every_decode_row_count() {
        for rows in 1..=GEMV_MAX_ROWS {
            let t = GEMV_TILES.iter().find(|&&t| t >= rows).copied();
            assert!(
                t.is_some_and(|t| t < 2 * rows || t == 1),
                "rows {rows} -> {t:?}"
            );
        }
        assert_eq!(gemv_rows_per_block(1), 16);
        assert_eq!(gemv_rows_per_block(8), 8);
        assert_eq!(path_name(8), "qgemv");
        assert_eq!(path_name(9), "qgemm-skinny");
        assert_eq!(path_name(33), "qgemm");
        // Big grids never split; small ones split up to the chunk limit.
        assert_eq!(gemv_splits(1792, 128, 132), 1);
        assert_eq!(gemv_splits(512, 256, 132), 2);
        assert_eq!(gemv_splits(512, 128, 132), 2);
        assert_eq!(gemv_splits(3, 63, 132), 1);
        assert_eq!(gemv_splits(3, 4096, 132), 8);
    }
}
