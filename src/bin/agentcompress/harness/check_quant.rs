//! Differential checks of the quantized CUDA kernels against the CPU oracle (which computes on
//! the same packed matrices): every precision and group size, the GEMV (decode) and GEMM
//! (prefill) paths, aligned and odd shapes (172 in-features, partial groups, out not a
//! multiple of the block rows), outputs poisoned with NaN first; then whole quantized models
//! (stories260K when present, a synthetic odd-shaped model always) for prefill logits,
//! teacher-forced decode logits and free-running greedy tokens.
//!
//! Called by [`super::check::run_all`], so `agentcompress gpu-check` and
//! `harness/cuda_diff_tests.rs` run these too.

use super::check::{compare, CheckReport, CheckRow, Status};
use agentcompress::backend::cpu::{self, CpuBackend};
use agentcompress::backend::cuda::CudaBackend;
use agentcompress::backend::Backend;
use agentcompress::engine::Model;
use agentcompress::model::{synthetic, DType, ModelConfig, ModelWeights, Tensor};
use agentcompress::quant::quantizer::{quantize_matrix, Method};
use agentcompress::quant::WeightMatrix;
use agentcompress::util::rng::Rng;
use agentcompress::Result;
use std::path::Path;

/// `(bits, group)` of every format checked; group 0 means one group per row (INT8 only).
pub const FORMATS: [(u32, usize); 8] = [
    (8, 0),
    (8, 16),
    (8, 128),
    (4, 32),
    (4, 64),
    (4, 128),
    (2, 32),
    (2, 64),
];

/// `(rows, out, in)` of the kernel checks: GEMV tiles 1/2/4/8 and the GEMM, with odd shapes.
/// The two 8200-in shapes have so few row blocks and so many chunks that the GEMV splits K
/// across blocks (2 to 8 splits by format: atomic adds into the zeroed output) with a partial
/// last group.
const SHAPES: [(usize, usize, usize); 13] = [
    (1, 1000, 1024),
    (1, 45, 8200),
    (3, 21, 8200),
    (1, 37, 172),
    (2, 130, 172),
    (3, 77, 256),
    (5, 64, 96),
    (8, 45, 520),
    (9, 33, 172),
    (16, 200, 1024),
    (32, 129, 172),
    (33, 65, 172),
    (130, 260, 512),
];

/// Relative L2 tolerance of the quantized products: f16 activations and f16 dequantized
/// weights (the CPU computes in f32 on the same codes).
const KERNEL_TOL: f64 = 3e-3;
/// Logit tolerance of the quantized models.
const MODEL_TOL: f64 = 2e-2;

fn label(bits: u32, group: usize) -> String {
    if group == 0 {
        format!("int{bits} per-channel")
    } else {
        format!("int{bits} g{group}")
    }
}

/// Random weights `[out, inp]` (never exactly zero) quantized to `bits` with `group`.
fn rand_quant(
    rng: &mut Rng,
    out: usize,
    inp: usize,
    bits: u32,
    group: usize,
) -> Result<WeightMatrix> {
    let a = (3.0 / inp as f32).sqrt();
    let w: Vec<f32> = (0..out * inp)
        .map(|_| rng.uniform(-a, a) + a * 1e-3)
        .collect();
    let g = if group == 0 { inp } else { group };
    quantize_matrix(&w, out, inp, bits, g, Method::Rtn, None)
}

/// Runs every quantized kernel check and model check, appending to `rep`.
pub fn run_all(gpu: &CudaBackend, stories: Option<&Path>, seed: u64, rep: &mut CheckReport) {
    let mut rng = Rng::new(seed ^ 0x9a17);
    for (bits, group) in FORMATS {
        for &(rows, out, inp) in &SHAPES {
            let name = format!(
                "{} {}",
                agentcompress::backend::cuda::quant::path_name(rows),
                label(bits, group)
            );
            let case = format!("M {rows} N {out} K {inp}");
            let r = check_qmatmul(gpu, &mut rng, rows, out, inp, bits, group, &name, &case);
            rep.push_result(&name, &case, r);
        }
    }
    model_checks(gpu, stories, seed, rep);
}

#[allow(clippy::too_many_arguments)]
fn check_qmatmul(
    gpu: &CudaBackend,
    rng: &mut Rng,
    rows: usize,
    out: usize,
    inp: usize,
    bits: u32,
    group: usize,
    name: &str,
    case: &str,
) -> Result<CheckRow> {
    let w = rand_quant(rng, out, inp, bits, group)?;
    let x: Vec<f32> = (0..rows * inp)
        .map(|_| rng.uniform(-1.0, 1.0) + 1e-3)
        .collect();
    let cpu = CpuBackend::new();
    let cw = cpu.upload_matrix(&w)?;
    let mut co = vec![0.0; rows * out];
    cpu.matmul(&x, &cw, &mut co, rows)?;
    let gw = gpu.upload_matrix(&w)?;
    let gx = gpu.upload_vec(&x)?;
    let mut go = gpu.alloc(rows * out)?;
    gpu.fill(&mut go, rows * out, f32::NAN)?;
    gpu.matmul(&gx, &gw, &mut go, rows)?;
    let mut host = vec![0.0; rows * out];
    gpu.read(&go, &mut host)?;
    gpu.synchronize()?;
    let mut row = compare(name, case, &host, &co, KERNEL_TOL);
    let unwritten = host.iter().filter(|v| v.is_nan()).count();
    if unwritten > 0 {
        row.note = format!("{unwritten} outputs unwritten (NaN); {}", row.note);
    }
    Ok(row)
}

/// Quantizes every projection matrix of `w` to `bits` with `group` (0: per channel) by RTN.
pub fn quantize_weights(
    w: &ModelWeights,
    bits: u32,
    group: usize,
) -> Result<ModelWeights<WeightMatrix>> {
    w.clone().try_map(|_, _, t: Tensor| {
        let (out, inp) = (t.shape()[0], t.shape()[1]);
        let g = if group == 0 { inp } else { group };
        quantize_matrix(&t.to_f32_vec(), out, inp, bits, g, Method::Rtn, None)
    })
}

fn model_checks(gpu: &CudaBackend, stories: Option<&Path>, seed: u64, rep: &mut CheckReport) {
    let mut bases: Vec<(String, Result<ModelWeights>)> = Vec::new();
    let odd = synthetic::preset("small").map(|c| ModelConfig {
        dim: 128,
        hidden_dim: 300,
        n_layers: 2,
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 64,
        vocab_size: 1000,
        max_seq_len: 256,
        ..c
    });
    bases.push((
        "synthetic odd (hid 300)".into(),
        odd.and_then(|c| synthetic::synthetic_weights(&c, seed + 3, DType::F32)),
    ));
    let path = stories.map(Path::to_path_buf).or_else(|| {
        super::check::stories_candidates()
            .into_iter()
            .find(|p| p.is_file())
    });
    match path {
        Some(p) if p.is_file() => bases.push((
            "stories260K".into(),
            agentcompress::model::llama2c::load(&p),
        )),
        _ => rep.push_skip(
            "qmodel",
            "stories260K",
            "stories260K.bin not found; pass --stories PATH".into(),
        ),
    }
    for (name, w) in bases {
        let w = match w {
            Ok(w) => w,
            Err(e) => {
                rep.push_result("qmodel", &name, Err(e));
                continue;
            }
        };
        for (bits, group) in FORMATS {
            let case = format!("{name} {}", label(bits, group));
            let r = quantize_weights(&w, bits, group)
                .and_then(|q| qmodel_check(gpu, &case, &q, seed, rep));
            if let Err(e) = r {
                rep.push_result("qmodel", &case, Err(e));
            }
        }
    }
}

/// Prefill logits, teacher-forced decode logits and free-running greedy tokens of one
/// quantized model on both backends.
fn qmodel_check(
    gpu: &CudaBackend,
    name: &str,
    w: &ModelWeights<WeightMatrix>,
    seed: u64,
    rep: &mut CheckReport,
) -> Result<()> {
    let cfg = w.config.clone();
    let vocab = cfg.vocab_size;
    let cm = Model::new(CpuBackend::with_kv(cpu::KvPrecision::F32), w)?;
    let gm = Model::new(gpu.clone(), w)?;
    let mut rng = Rng::new(seed ^ 0x5eed);
    let plen = 40.min(cfg.max_seq_len / 4).max(2);
    let mut prompt: Vec<u32> = vec![cfg.bos_token.unwrap_or(1)];
    prompt.extend((1..plen).map(|_| rng.below(vocab as u64) as u32));
    let steps = 24.min(cfg.max_seq_len - plen - 1);

    // Prefill in chunks of 16 rows (the GEMM path), every row's logits.
    let (mut cs, mut gs) = (cm.new_state(16)?, gm.new_state(16)?);
    let cl = cm.forward(&mut cs, &prompt, true)?;
    let gl = gm.forward(&mut gs, &prompt, true)?;
    rep.rows.push(compare(
        "qmodel-prefill",
        &format!("{name} {plen} tok"),
        &gl,
        &cl,
        MODEL_TOL,
    ));

    // Teacher-forced decode (the GEMV path): both consume the CPU's greedy token.
    let mut tok = cpu::argmax(&cl[(plen - 1) * vocab..]) as u32;
    let (mut c_log, mut g_log) = (vec![0.0; vocab], vec![0.0; vocab]);
    let (mut worst, mut max_err) = (None::<CheckRow>, 0.0f64);
    let mut mismatch = Vec::new();
    for i in 0..steps {
        cm.step(&mut cs, tok, &mut c_log)?;
        gm.step(&mut gs, tok, &mut g_log)?;
        let row = compare("qmodel-decode", "", &g_log, &c_log, MODEL_TOL);
        max_err = max_err.max(row.max_abs);
        let (ct, gt) = (cpu::argmax(&c_log), cpu::argmax(&g_log));
        if ct != gt && ((c_log[ct] - c_log[gt]) as f64) > 2.0 * row.max_abs {
            mismatch.push(format!("step {i}: cpu {ct} gpu {gt}"));
        }
        if worst
            .as_ref()
            .is_none_or(|w| row.rel_err > w.rel_err || row.status == Status::Fail)
        {
            worst = Some(row);
        }
        tok = ct as u32;
    }
    if let Some(mut wr) = worst {
        wr.case = format!("{name} {steps} steps (worst)");
        if !mismatch.is_empty() {
            wr.status = Status::Fail;
            wr.note = format!(
                "argmax differs beyond the logit error: {}",
                mismatch.join("; ")
            );
        }
        rep.rows.push(wr);
    }

    // Free-running greedy: the token ids must be identical (near-ties are reported, not failed).
    rep.rows.push(super::check::greedy_row(
        "qmodel-greedy",
        name,
        &cm,
        &gm,
        &prompt,
        16,
        steps,
        max_err,
    )?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_check_format_is_legal_for_every_shape_and_the_cpu_agrees_with_dequantize() {
        let mut rng = Rng::new(3);
        for (bits, group) in FORMATS {
            for &(rows, out, inp) in &SHAPES[..3] {
                let w = rand_quant(&mut rng, out, inp, bits, group).unwrap();
                let x: Vec<f32> = (0..rows * inp).map(|_| rng.uniform(-1.0, 1.0)).collect();
                let cpu = CpuBackend::new();
                let cw = cpu.upload_matrix(&w).unwrap();
                let mut co = vec![0.0; rows * out];
                cpu.matmul(&x, &cw, &mut co, rows).unwrap();
                let d = w.dequantize();
                let want: Vec<f32> = (0..rows * out)
                    .map(|i| {
                        (0..inp)
                            .map(|k| d[(i % out) * inp + k] * x[(i / out) * inp + k])
                            .sum()
                    })
                    .collect();
                let r = compare("cpu", &label(bits, group), &co, &want, 1e-5);
                assert_eq!(r.status, Status::Pass, "{r:?}");
            }
        }
    }
}
