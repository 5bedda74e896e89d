//! Benchmarks of the quantized products (part of `agentcompress bench kernels`): per shape
//! (8192x8192, 28672x8192, 8192x28672), activation rows M in {1, 4, 16, 64, 2048} and format
//! (INT8 per-channel, INT4 g128, INT2 g64): median time from CUDA events after warm-up, GB/s
//! of packed bytes (codes + scales + zeros), beside cuBLAS FP16 at the same M in the same run.
//! Weight sets are rotated so that the bytes touched between two reuses exceed 120 MB (the
//! H100's L2 is 50 MB). `scripts/bench_torch_int4.py` times PyTorch's INT4 kernel at the same
//! shapes.

use super::kernel_bench::{time_us, BenchRow, Blas};
use agentcompress::backend::cuda::quant::{self, QMat};
use agentcompress::backend::cuda::CudaBackend;
use agentcompress::backend::Backend;
use agentcompress::internal::cuda_err;
use agentcompress::Result;
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

/// Shapes `(out, in)` benchmarked.
pub const SHAPES: [(usize, usize); 3] = [(8192, 8192), (28672, 8192), (8192, 28672)];
/// Activation row counts benchmarked.
pub const ROWS: [usize; 5] = [1, 4, 16, 64, 2048];
/// `(bits, group)` benchmarked (group 0: one group per row).
pub const FORMATS: [(u32, usize); 3] = [(8, 0), (4, 128), (2, 64)];
/// Bytes touched between two uses of one weight set.
const ROTATE_BYTES: usize = 120 << 20;

fn fill_cfg(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(256).clamp(1, 65535 * 4) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn fill_words(be: &CudaBackend, p: &mut CudaSlice<u32>, seed: u32) -> Result<()> {
    let n = p.len() as u64;
    let cfg = fill_cfg(p.len());
    let mut b = be
        .stream()
        .launch_builder(agentcompress::internal::fill_words_kernel(be));
    b.arg(&mut *p).arg(&n).arg(&seed);
    // SAFETY: n is the buffer length.
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}

fn fill_halves(
    be: &CudaBackend,
    p: &mut CudaSlice<u16>,
    seed: u32,
    lo: f32,
    hi: f32,
) -> Result<()> {
    let n = p.len() as u64;
    let cfg = fill_cfg(p.len());
    let mut b = be
        .stream()
        .launch_builder(agentcompress::internal::fill_halves_kernel(be));
    b.arg(&mut *p).arg(&n).arg(&seed).arg(&lo).arg(&hi);
    // SAFETY: n is the buffer length.
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}

/// A random packed matrix filled on the device (random codes, scales in [0.001, 0.02],
/// zeros in [0, 2^bits - 1]).
pub fn random_qmat(
    be: &CudaBackend,
    bits: u32,
    out: usize,
    inp: usize,
    group: usize,
    seed: u32,
) -> Result<QMat> {
    let g = if group == 0 { inp } else { group };
    let ng = inp.div_ceil(g);
    let words = out * agentcompress::quant::packed::row_stride_bytes(bits, inp, g) / 4;
    let s = be.stream();
    let mut codes: CudaSlice<u32> = s.alloc_zeros(words).map_err(cuda_err)?;
    fill_words(be, &mut codes, seed)?;
    let mut scales: CudaSlice<u16> = s.alloc_zeros(out * ng).map_err(cuda_err)?;
    fill_halves(be, &mut scales, seed ^ 0x51, 0.001, 0.02)?;
    let mut zeros: CudaSlice<u16> = s
        .alloc_zeros(if bits == 8 { 1 } else { out * ng })
        .map_err(cuda_err)?;
    fill_halves(
        be,
        &mut zeros,
        seed ^ 0x2e,
        0.0,
        ((1u32 << bits.min(4)) - 1) as f32,
    )?;
    QMat::from_device(bits, out, inp, g, codes, scales, zeros)
}

/// Every quantized benchmark row; a failure becomes a row naming it, never an abort.
pub(crate) fn run_rows(
    be: &CudaBackend,
    iters: usize,
    copy_gbps: f64,
    blas: Option<&Blas>,
) -> Vec<BenchRow> {
    let mut rows = Vec::new();
    for (n, k) in SHAPES {
        if let Err(e) = shape_rows(be, iters, copy_gbps, blas, n, k, &mut rows) {
            rows.push(BenchRow {
                name: "quantized".into(),
                shape: format!("N {n} K {k}"),
                us: 0.0,
                gbps: None,
                tflops: None,
                versus: format!("failed: {e}"),
            });
        }
    }
    rows
}

#[allow(clippy::too_many_arguments)]
fn shape_rows(
    be: &CudaBackend,
    iters: usize,
    copy_gbps: f64,
    blas: Option<&Blas>,
    n: usize,
    k: usize,
    rows: &mut Vec<BenchRow>,
) -> Result<()> {
    let s = be.stream();
    let mmax = *ROWS.iter().max().unwrap_or(&1);
    let mut rng = agentcompress::util::rng::Rng::new(17);
    let x = be.upload_vec(
        &(0..mmax * k)
            .map(|_| rng.uniform(-1.0, 1.0))
            .collect::<Vec<f32>>(),
    )?;
    let mut out = be.alloc(mmax * n)?;
    // cuBLAS FP16 at every M (one weight copy: >= 134 MB, beyond L2).
    let mut cublas = vec![None; ROWS.len()];
    if let Some(bl) = blas {
        let mut w16: CudaSlice<u16> = s.alloc_zeros(n * k).map_err(cuda_err)?;
        let a = (3.0 / k as f32).sqrt();
        fill_halves(be, &mut w16, 5, -a, a)?;
        let mut x16: CudaSlice<u16> = s.alloc_zeros(mmax * k).map_err(cuda_err)?;
        fill_halves(be, &mut x16, 6, -1.0, 1.0)?;
        let mut o16: CudaSlice<u16> = s.alloc_zeros(mmax * n).map_err(cuda_err)?;
        for (i, &m) in ROWS.iter().enumerate() {
            let it = if m >= 1024 { iters.min(20) } else { iters };
            cublas[i] = time_us(be, 3, it, |_| bl.gemm(be, &x16, &w16, &mut o16, m, n, k)).ok();
        }
    }
    for (bits, group) in FORMATS {
        let one = random_qmat(be, bits, n, k, group, 1)?;
        let bytes = one.byte_len();
        let sets_n = ROTATE_BYTES.div_ceil(bytes).clamp(1, 16);
        let mut sets = vec![one];
        for i in 1..sets_n {
            sets.push(random_qmat(be, bits, n, k, group, 1 + i as u32)?);
        }
        let fmt = if group == 0 {
            format!("int{bits} per-ch")
        } else {
            format!("int{bits} g{group}")
        };
        for (i, &m) in ROWS.iter().enumerate() {
            let it = if m >= 1024 { iters.min(20) } else { iters };
            let us = time_us(be, 3, it, |j| {
                quant::matmul(be, &x, &sets[j % sets.len()], &mut out, m)
            })?;
            let flops = 2.0 * (m * n * k) as f64;
            let gbps = bytes as f64 / us / 1e3;
            let cub = cublas[i]
                .map(|c| format!("cuBLAS fp16 {c:.1} us ({:.2}x ours)", c / us))
                .unwrap_or_else(|| "cuBLAS n/a".into());
            let path = quant::path_name(m);
            rows.push(BenchRow {
                name: format!("{path} {fmt}"),
                shape: format!("M {m} N {n} K {k}"),
                us,
                gbps: Some(gbps),
                tflops: Some(flops / us / 1e6),
                versus: format!(
                    "{:.0}% of copy BW; {cub}; {} sets",
                    100.0 * gbps / copy_gbps,
                    sets.len()
                ),
            });
        }
    }
    Ok(())
}
