//! Kernel microbenchmarks on the device, timed with CUDA events (warm-up, then the median of
//! many back-to-back launches), reported beside the device's measured copy bandwidth and
//! cuBLAS at the same shapes, plus whole-model decode of a Llama-2-7B-shaped synthetic model.
//!
//! Every weight matrix and KV cache used here is larger than the H100's 50 MB L2, so each
//! launch streams from HBM without rotating inputs.

use agentcompress::backend::cuda::{libs, AttnPath, CudaBackend, CudaMat};
use agentcompress::backend::{AttentionShape, Backend};
use agentcompress::engine::Model;
use agentcompress::internal::cuda_err;
use agentcompress::model::synthetic;
use agentcompress::{Error, Result};
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};
use std::time::Instant;

/// One benchmark line.
#[derive(Clone, Debug)]
pub struct BenchRow {
    /// What was timed.
    pub name: String,
    /// Shape.
    pub shape: String,
    /// Median time in microseconds.
    pub us: f64,
    /// Achieved bandwidth (bytes that must move / time), GB/s.
    pub gbps: Option<f64>,
    /// Achieved arithmetic rate, TFLOP/s.
    pub tflops: Option<f64>,
    /// The comparison (copy bandwidth, cuBLAS time, floor), as text.
    pub versus: String,
}

/// Formats rows as a fixed-width table.
pub fn table(rows: &[BenchRow]) -> String {
    let mut s = format!(
        "{:<22} {:<34} {:>10} {:>9} {:>9}  {}\n",
        "bench", "shape", "us", "GB/s", "TFLOP/s", "versus"
    );
    let opt = |v: Option<f64>| v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".into());
    for r in rows {
        s.push_str(&format!(
            "{:<22} {:<34} {:>10.1} {:>9} {:>9}  {}\n",
            r.name,
            r.shape,
            r.us,
            opt(r.gbps),
            opt(r.tflops),
            r.versus
        ));
    }
    s
}

/// Median microseconds of `iters` back-to-back runs of `f` after `warmup` runs, from CUDA
/// events recorded between consecutive runs.
pub fn time_us(
    be: &CudaBackend,
    warmup: usize,
    iters: usize,
    mut f: impl FnMut(usize) -> Result<()>,
) -> Result<f64> {
    for i in 0..warmup {
        f(i)?;
    }
    be.synchronize()?;
    let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
    let s = be.stream();
    let mut events = Vec::with_capacity(iters + 1);
    events.push(s.record_event(flags).map_err(cuda_err)?);
    for i in 0..iters {
        f(i)?;
        events.push(s.record_event(flags).map_err(cuda_err)?);
    }
    be.synchronize()?;
    let mut t: Vec<f64> = events
        .windows(2)
        .map(|w| w[0].elapsed_ms(&w[1]).map(|ms| ms as f64 * 1e3))
        .collect::<std::result::Result<_, _>>()
        .map_err(cuda_err)?;
    t.sort_by(|a, b| a.total_cmp(b));
    Ok(t[t.len() / 2])
}

/// A device FP16 matrix `[out, inp]` filled on the GPU with the synthetic generator.
pub fn synthetic_mat(
    be: &CudaBackend,
    out: usize,
    inp: usize,
    seed: u64,
    stream: u64,
) -> Result<CudaMat> {
    let n = out * inp;
    let mut data: CudaSlice<u16> = be.stream().alloc_zeros(n).map_err(cuda_err)?;
    let a = (3.0 / inp as f32).sqrt();
    fill_f16(be, &mut data, n, seed, stream, -a, a)?;
    be.mat_from_device(data, out, inp)
}

fn fill_f16(
    be: &CudaBackend,
    data: &mut CudaSlice<u16>,
    n: usize,
    seed: u64,
    stream: u64,
    lo: f32,
    hi: f32,
) -> Result<()> {
    let nn = n as u64;
    let cfg = LaunchConfig {
        grid_dim: ((n.div_ceil(256)).min(65535 * 4) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut b = be
        .stream()
        .launch_builder(agentcompress::internal::fill_synthetic_kernel(be));
    b.arg(data)
        .arg(&nn)
        .arg(&seed)
        .arg(&stream)
        .arg(&lo)
        .arg(&hi);
    // SAFETY: n <= data.len().
    unsafe { b.launch(cfg) }.map_err(cuda_err)?;
    Ok(())
}

fn rand_dev(be: &CudaBackend, n: usize, seed: u64) -> Result<CudaSlice<f32>> {
    let mut rng = agentcompress::util::rng::Rng::new(seed);
    be.upload_vec(&(0..n).map(|_| rng.uniform(-1.0, 1.0)).collect::<Vec<f32>>())
}

/// cuBLAS `out[M, N] = x[M, K] W[N, K]^T` in FP16 (fp32 compute), column-major view.
pub(crate) struct Blas {
    handle: cudarc::cublas::CudaBlas,
}

impl Blas {
    pub(crate) fn new(be: &CudaBackend) -> Result<Self> {
        libs::ensure_cublas()?;
        let handle = cudarc::cublas::CudaBlas::new(be.stream().clone())
            .map_err(|e| Error::Cuda(format!("cuBLAS init: {e:?}")))?;
        Ok(Blas { handle })
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gemm(
        &self,
        be: &CudaBackend,
        x: &CudaSlice<u16>,
        w: &CudaSlice<u16>,
        out: &mut CudaSlice<u16>,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<()> {
        use cudarc::cublas::sys::{
            cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType_t,
        };
        let s = be.stream();
        let (alpha, beta) = (1.0f32, 0.0f32);
        let (wp, _a) = w.device_ptr(s);
        let (xp, _b) = x.device_ptr(s);
        let (op, _c) = out.device_ptr_mut(s);
        // SAFETY: buffers hold n*k, m*k and m*n halves; leading dimensions match.
        unsafe {
            cudarc::cublas::result::gemm_ex(
                *self.handle.handle(),
                cublasOperation_t::CUBLAS_OP_T,
                cublasOperation_t::CUBLAS_OP_N,
                n as i32,
                m as i32,
                k as i32,
                (&alpha) as *const f32 as *const _,
                wp as *const _,
                cudaDataType_t::CUDA_R_16F,
                k as i32,
                xp as *const _,
                cudaDataType_t::CUDA_R_16F,
                k as i32,
                (&beta) as *const f32 as *const _,
                op as *mut _,
                cudaDataType_t::CUDA_R_16F,
                n as i32,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| Error::Cuda(format!("cuBLAS gemm: {e:?}")))
    }
}

/// Options of [`run_kernels`].
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Timed iterations per kernel (median reported).
    pub iters: usize,
    /// Also time whole-model decode of a Llama-2-7B-shaped model.
    pub model: bool,
    /// Decode steps for the model benchmark.
    pub decode_steps: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            iters: 50,
            model: true,
            decode_steps: 64,
        }
    }
}

/// Device copy bandwidth: a 1 GiB device-to-device copy timed `iters` times (at most 20);
/// returns the median microseconds and GB/s counting bytes read plus written.
pub fn copy_bandwidth(be: &CudaBackend, iters: usize) -> Result<(f64, f64)> {
    let n = 1usize << 28;
    let src = be.alloc(n)?;
    let mut dst = be.alloc(n)?;
    let us = time_us(be, 3, iters.clamp(5, 20), |_| {
        be.stream().memcpy_dtod(&src, &mut dst).map_err(cuda_err)
    })?;
    Ok((us, 2.0 * (n * 4) as f64 / us / 1e3))
}

/// Runs every microbenchmark; failures of single rows are reported in the row, not fatal.
pub fn run_kernels(be: &CudaBackend, opt: &BenchOptions) -> Result<Vec<BenchRow>> {
    let mut rows = Vec::new();
    let it = opt.iters.max(5);

    let (us, copy_gbps) = copy_bandwidth(be, it)?;
    rows.push(BenchRow {
        name: "memcpy d2d".into(),
        shape: "1 GiB".into(),
        us,
        gbps: Some(copy_gbps),
        tflops: None,
        versus: "HBM copy ceiling (read+write)".into(),
    });

    let blas = Blas::new(be);
    if let Err(e) = &blas {
        rows.push(BenchRow {
            name: "cuBLAS".into(),
            shape: "-".into(),
            us: 0.0,
            gbps: None,
            tflops: None,
            versus: format!("unavailable: {e}"),
        });
    }
    let blas = blas.ok();

    for &(nout, k) in &[(8192usize, 8192usize), (28672, 8192), (8192, 28672)] {
        let w = synthetic_mat(be, nout, k, 7, 1)?;
        let x = rand_dev(be, 2048 * k, 11)?;
        let mut out = be.alloc(2048 * nout)?;
        let x16: CudaSlice<u16> = be.stream().alloc_zeros(2048 * k).map_err(cuda_err)?;
        let mut x16 = x16;
        fill_f16(be, &mut x16, 2048 * k, 3, 3, -1.0, 1.0)?;
        let mut o16: CudaSlice<u16> = be.stream().alloc_zeros(2048 * nout).map_err(cuda_err)?;
        // GEMV (decode, M = 1).
        let bytes = (nout * k * 2 + k * 4 + nout * 4) as f64;
        let us = time_us(be, 5, it, |_| be.matmul(&x, &w, &mut out, 1))?;
        let cub = match &blas {
            Some(b) => time_us(be, 5, it, |_| {
                b.gemm(be, &x16, w.data(), &mut o16, 1, nout, k)
            })
            .ok(),
            None => None,
        };
        rows.push(BenchRow {
            name: "gemv f16".into(),
            shape: format!("M 1 N {nout} K {k}"),
            us,
            gbps: Some(bytes / us / 1e3),
            tflops: None,
            versus: format!(
                "{:.0}% of copy BW; cuBLAS {}",
                100.0 * bytes / us / 1e3 / copy_gbps,
                cub.map(|c| format!("{c:.1} us ({:.2}x ours)", c / us))
                    .unwrap_or_else(|| "n/a".into())
            ),
        });
        for (vi, vname) in be.gemv_variant_names().into_iter().enumerate().skip(1) {
            let us = time_us(be, 5, it, |_| be.gemv_variant(vi, &x, &w, &mut out))?;
            rows.push(BenchRow {
                name: vname.trim_start_matches("gemv_f16_").to_string() + " (variant)",
                shape: format!("M 1 N {nout} K {k}"),
                us,
                gbps: Some(bytes / us / 1e3),
                tflops: None,
                versus: format!("{:.0}% of copy BW", 100.0 * bytes / us / 1e3 / copy_gbps),
            });
        }
        // GEMM (prefill, M = 2048).
        let m = 2048;
        let flops = 2.0 * (m * nout * k) as f64;
        let us = time_us(be, 3, it.min(20), |_| be.matmul(&x, &w, &mut out, m))?;
        let cub = match &blas {
            Some(b) => time_us(be, 3, it.min(20), |_| {
                b.gemm(be, &x16, w.data(), &mut o16, m, nout, k)
            })
            .ok(),
            None => None,
        };
        rows.push(BenchRow {
            name: "gemm f16 (mma.sync)".into(),
            shape: format!("M {m} N {nout} K {k}"),
            us,
            gbps: None,
            tflops: Some(flops / us / 1e6),
            versus: format!(
                "cuBLAS {}",
                cub.map(|c| format!(
                    "{c:.1} us = {:.0} TFLOP/s ({:.2}x ours)",
                    flops / c / 1e6,
                    c / us
                ))
                .unwrap_or_else(|| "n/a".into())
            ),
        });
    }

    rows.extend(super::quant_kernel_bench::run_rows(
        be,
        it,
        copy_gbps,
        blas.as_ref(),
    ));

    // Prefill attention: 64 heads x 128, S = 4096, causal.
    {
        let (s_len, h, hd) = (4096usize, 64usize, 128usize);
        let q = rand_dev(be, s_len * h * hd, 21)?;
        let k = rand_dev(be, s_len * h * hd, 22)?;
        let v = rand_dev(be, s_len * h * hd, 23)?;
        let mut o = be.alloc(s_len * h * hd)?;
        let flops = 2.0 * 2.0 * (s_len as f64 * (s_len as f64 + 1.0) / 2.0) * (h * hd) as f64;
        for (path, name) in [
            (AttnPath::Flash, "attn prefill flash"),
            (AttnPath::FlashBm64, "attn prefill flash64"),
            (AttnPath::FlashNoPrefetch, "attn prefill flash-np"),
            (AttnPath::Split, "attn prefill split"),
        ] {
            let us = time_us(be, 2, it.min(10), |_| {
                let shape = AttentionShape {
                    rows: s_len,
                    pos0: 0,
                    n_heads: h,
                    n_kv_heads: h,
                    head_dim: hd,
                };
                be.attention_path(path, &q, &k, &v, &mut o, &shape)
            })?;
            rows.push(BenchRow {
                name: name.into(),
                shape: format!("S {s_len} H {h} hd {hd} causal"),
                us,
                gbps: None,
                tflops: Some(flops / us / 1e6),
                versus: "goal 250 TFLOP/s".into(),
            });
        }
    }
    // Decode attention: 64 query / 8 KV heads, 32768 keys.
    {
        let (len, h, kv, hd) = (32768usize, 64usize, 8usize, 128usize);
        let q = rand_dev(be, h * hd, 31)?;
        let k = rand_dev(be, len * kv * hd, 32)?;
        let v = rand_dev(be, len * kv * hd, 33)?;
        let mut o = be.alloc(h * hd)?;
        let bytes = (2 * len * kv * hd * 4) as f64;
        let us = time_us(be, 5, it, |_| {
            let shape = AttentionShape {
                rows: 1,
                pos0: len - 1,
                n_heads: h,
                n_kv_heads: kv,
                head_dim: hd,
            };
            be.attention(&q, &k, &v, &mut o, &shape)
        })?;
        rows.push(BenchRow {
            name: "attention decode".into(),
            shape: format!("keys {len} H {h}/{kv} hd {hd} f32 KV"),
            us,
            gbps: Some(bytes / us / 1e3),
            tflops: None,
            versus: format!(
                "{:.0}% of copy BW; goal 2400 GB/s",
                100.0 * bytes / us / 1e3 / copy_gbps
            ),
        });
    }
    if opt.model {
        match model_decode(be, opt.decode_steps, copy_gbps) {
            Ok(r) => rows.push(r),
            Err(e) => rows.push(BenchRow {
                name: "decode llama2-7b".into(),
                shape: "-".into(),
                us: 0.0,
                gbps: None,
                tflops: None,
                versus: format!("failed: {e}"),
            }),
        }
    }
    Ok(rows)
}

/// Greedy decode tokens/s of a Llama-2-7B-shaped FP16 model (random weights built on the host,
/// then uploaded), beside the floor set by streaming every weight once per token at copy
/// bandwidth; `bench decode` does the same for every precision.
fn model_decode(be: &CudaBackend, steps: usize, copy_gbps: f64) -> Result<BenchRow> {
    use super::decode_bench::{bytes_per_token, random_variant, time_decode};
    use agentcompress::quant::{Precision, QuantConfig};
    let mut cfg = synthetic::preset("llama2-7b")?;
    cfg.max_seq_len = 1024;
    let t0 = Instant::now();
    let w = random_variant(&cfg, Precision::Fp16, &QuantConfig::default(), 42)?;
    let bytes = bytes_per_token(&w);
    let model = Model::new(be.clone(), &w)?;
    drop(w);
    let build_s = t0.elapsed().as_secs_f64();
    let r = time_decode(&model, Precision::Fp16, bytes, 4, steps)?;
    let floor = r.floor_tokens_per_s(copy_gbps);
    Ok(BenchRow {
        name: "decode llama2-7b".into(),
        shape: format!("{steps} greedy steps, fp16"),
        us: r.seconds_per_token * 1e6,
        gbps: Some(r.gbps()),
        tflops: None,
        versus: format!(
            "{:.1} tok/s; floor {floor:.1} tok/s ({:.0}%); weights built and uploaded in {build_s:.1} s",
            r.tokens_per_s(),
            100.0 * r.tokens_per_s() / floor
        ),
    })
}
