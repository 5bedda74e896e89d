//! CPU benchmarks of the packed products (`agentcompress bench cpu-kernels`): per shape and
//! input row count, the int8-activation VNNI kernels on the panel layout the CPU backend
//! uploads packed weights in ([`QPanels`]) against the same kernels on the row-major packed
//! layout, the f32-activation AVX-512 kernels on the same packed matrix and the FP16 product of
//! the same shape (the panel layout the CPU backend uploads FP16 weights in), timed
//! interleaved in one run (fastest of `iters` samples, each a batch of calls lasting at least
//! a few milliseconds: load from other processes only ever adds time). GB/s counts the weight bytes a call reads (packed codes + scales +
//! zeros, or FP16).

use agentcompress::backend::cpu::f16panel::F16Panels;
use agentcompress::backend::cpu::qpanel::QPanels;
use agentcompress::backend::cpu::{qgemv, qgemv_vnni};
use agentcompress::quant::int2_params::{decode_scale, decode_zero};
use agentcompress::quant::Packed;
use agentcompress::util::rng::Rng;
use agentcompress::{Error, Result};
use half::f16;
use std::time::Instant;

/// SmolLM2-135M's products (q/o, gate/up, down, classifier) and the Llama-2-7B square shape.
pub const SHAPES: [(usize, usize); 5] = [
    (576, 576),
    (1536, 576),
    (576, 1536),
    (49152, 576),
    (4096, 4096),
];
/// Input rows timed (decode, short and long prefill).
pub const ROWS: [usize; 3] = [1, 8, 64];

/// One measured line of the table.
pub struct CpuBenchRow {
    /// `(out, in)`.
    pub shape: (usize, usize),
    /// Input rows.
    pub rows: usize,
    /// Format label.
    pub format: &'static str,
    /// Weight bytes read per call.
    pub bytes: usize,
    /// Seconds per call (fastest sample) of the VNNI kernel on the panel layout.
    pub panel: f64,
    /// VNNI kernel on the row-major packed layout.
    pub vnni: f64,
    /// f32-activation AVX-512 kernel.
    pub f32: f64,
    /// FP16 product of the same shape.
    pub fp16: f64,
    /// FP16 bytes of the shape.
    pub fp16_bytes: usize,
}

/// A packed matrix of random codes and scales (INT2 parameters on their compact grid).
fn random_packed<const BITS: u32>(
    out: usize,
    inp: usize,
    group: usize,
    rng: &mut Rng,
) -> Result<Packed<BITS>> {
    let ng = inp.div_ceil(group);
    let words = out * agentcompress::quant::packed::row_stride_bytes(BITS, inp, group) / 4;
    let mut codes: Vec<u32> = (0..words).map(|_| rng.next_u64() as u32).collect();
    if BITS == 8 {
        // INT8 codes lie in [-127, 127]: no byte may be 0x80.
        codes.iter_mut().for_each(|w| {
            let b = w.to_le_bytes().map(|v| if v == 0x80 { 0x81 } else { v });
            *w = u32::from_le_bytes(b);
        });
    }
    let mut scales = Vec::with_capacity(out * ng);
    let mut zeros = Vec::new();
    for _ in 0..out {
        let sup = f16::from_f32(0.005 + 0.02 * rng.next_f32());
        for g in 0..ng {
            if BITS == 2 {
                scales.push(decode_scale(
                    sup,
                    if g == 0 { 0 } else { rng.below(64) as u8 },
                ));
                zeros.push(decode_zero(rng.below(16) as u8));
            } else {
                scales.push(f16::from_f32(0.001 + 0.02 * rng.next_f32()));
                if BITS == 4 {
                    zeros.push(f16::from_f32(15.0 * rng.next_f32()));
                }
            }
        }
    }
    Packed::<BITS>::from_parts(out, inp, group, codes, scales, zeros)
}

/// Fastest seconds per call of `f`, from `iters` batches interleaved by the caller; `batch`
/// is chosen on the first use so a batch lasts at least 3 ms.
struct Timer {
    batch: usize,
    samples: Vec<f64>,
}

impl Timer {
    fn new(f: &mut dyn FnMut()) -> Self {
        f(); // warm-up (page faults, scratch buffers)
        let t = Instant::now();
        f();
        let one = t.elapsed().as_secs_f64().max(1e-7);
        Timer {
            batch: ((3e-3 / one).ceil() as usize).clamp(1, 10_000),
            samples: Vec::new(),
        }
    }

    fn sample(&mut self, f: &mut dyn FnMut()) {
        let t = Instant::now();
        for _ in 0..self.batch {
            f();
        }
        self.samples
            .push(t.elapsed().as_secs_f64() / self.batch as f64);
    }

    fn fastest(&self) -> f64 {
        self.samples.iter().copied().fold(f64::INFINITY, f64::min)
    }
}

/// Times every shape, row count and format; `iters` interleaved samples each.
pub fn run(
    iters: usize,
    shapes: &[(usize, usize)],
    rows_list: &[usize],
) -> Result<Vec<CpuBenchRow>> {
    if !qgemv_vnni::available() {
        return Err(Error::Unsupported("this CPU lacks AVX512-VNNI".into()));
    }
    let mut rng = Rng::new(1);
    let mut table = Vec::new();
    for &(out, inp) in shapes {
        let m8 = random_packed::<8>(out, inp, inp, &mut rng)?;
        let m4 = random_packed::<4>(out, inp, 128, &mut rng)?;
        let m2 = random_packed::<2>(out, inp, 64, &mut rng)?;
        let w16: Vec<u8> = (0..out * inp)
            .flat_map(|_| f16::from_f32(rng.next_f32() * 0.1 - 0.05).to_le_bytes())
            .collect();
        let p16 = &F16Panels::pack(&w16, out, inp)?;
        for &rows in rows_list {
            let x: Vec<f32> = (0..rows * inp)
                .map(|_| rng.next_f32() * 2.0 - 1.0)
                .collect();
            let mut y = vec![0.0f32; rows * out];
            let mut kernels: Vec<Box<dyn FnMut() + '_>> = Vec::new();
            macro_rules! packed {
                ($m:expr) => {{
                    let (m, x) = ($m, &x);
                    let mut y0 = y.clone();
                    let mut y1 = y.clone();
                    let mut y2 = y.clone();
                    let panels = QPanels::pack(m)?;
                    kernels.push(Box::new(move || panels.matmul(x, rows, &mut y0)));
                    kernels.push(Box::new(move || {
                        qgemv_vnni::packed_product(m, x, rows, &mut y1);
                    }));
                    kernels.push(Box::new(move || {
                        if rows == 1 {
                            qgemv::packed_gemv_on(qgemv::GemvPath::Avx512, m, x, &mut y2);
                        } else {
                            qgemv::packed_gemm_f32(m, x, rows, &mut y2);
                        }
                    }));
                }};
            }
            packed!(&m8);
            packed!(&m4);
            packed!(&m2);
            {
                let x = &x;
                kernels.push(Box::new(move || p16.matmul(x, rows, &mut y)));
            }
            let mut timers: Vec<Timer> =
                kernels.iter_mut().map(|f| Timer::new(f.as_mut())).collect();
            for _ in 0..iters {
                for (t, f) in timers.iter_mut().zip(kernels.iter_mut()) {
                    t.sample(f.as_mut());
                }
            }
            let med: Vec<f64> = timers.iter().map(Timer::fastest).collect();
            let fmts: [(&'static str, usize); 3] = [
                ("INT8 per-channel", m8.byte_len()),
                ("INT4 g128", m4.byte_len()),
                ("INT2 g64", m2.byte_len()),
            ];
            for (i, (format, bytes)) in fmts.into_iter().enumerate() {
                table.push(CpuBenchRow {
                    shape: (out, inp),
                    rows,
                    format,
                    bytes,
                    panel: med[3 * i],
                    vnni: med[3 * i + 1],
                    f32: med[3 * i + 2],
                    fp16: med[9],
                    fp16_bytes: out * inp * 2,
                });
            }
        }
    }
    Ok(table)
}

/// The table as Markdown.
pub fn table(rows: &[CpuBenchRow]) -> String {
    let gbs = |b: usize, s: f64| b as f64 / s / 1e9;
    let mut t = String::from(
        "| shape (out x in) | rows | format | panels us | panels GB/s | row-major VNNI us | f32-act us | FP16 us | FP16 GB/s | row-major / panels | FP16 / panels |\n\
         |---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        t.push_str(&format!(
            "| {}x{} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2}x | {:.2}x |\n",
            r.shape.0,
            r.shape.1,
            r.rows,
            r.format,
            r.panel * 1e6,
            gbs(r.bytes, r.panel),
            r.vnni * 1e6,
            r.f32 * 1e6,
            r.fp16 * 1e6,
            gbs(r.fp16_bytes, r.fp16),
            r.vnni / r.panel,
            r.fp16 / r.panel,
        ));
    }
    t
}
