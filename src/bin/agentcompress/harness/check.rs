//! Differential checks of the CUDA backend against the CPU oracle: every kernel on fresh random
//! non-zero inputs at aligned and odd sizes (outputs poisoned with NaN first), and whole models
//! (synthetic presets, stories260K when present) for logits and greedy tokens.
//!
//! Shared by `agentcompress gpu-check` and its test `harness/cuda_diff_tests.rs`, so both run
//! the same checks.

use super::ids_tokenizer::IdsOnly;
use agentcompress::backend::cpu::{self, CpuBackend};
use agentcompress::backend::cuda::{AttnPath, CudaBackend};
use agentcompress::backend::{AttentionShape, Backend, NormShape, RopeParams};
use agentcompress::engine::{
    generate, generate_speculative, GenerateParams, Model, SpeculativeParams,
};
use agentcompress::model::{synthetic, DType, ModelConfig, ModelWeights, RopeStyle, Tensor};
use agentcompress::quant::{quantize_model, Precision, QuantConfig};
use agentcompress::util::rng::Rng;
use agentcompress::Result;
use half::f16;
use std::path::{Path, PathBuf};

/// Outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Within tolerance.
    Pass,
    /// Outside tolerance, unwritten or non-finite output, or an error.
    Fail,
    /// Not run (input missing); never counted as a pass.
    Skip,
}

/// One line of the check report.
#[derive(Clone, Debug)]
pub struct CheckRow {
    /// Kernel or model name.
    pub name: String,
    /// Shape or case description.
    pub case: String,
    /// Outcome.
    pub status: Status,
    /// `||gpu - cpu|| / ||cpu||`.
    pub rel_err: f64,
    /// Largest `|gpu - cpu|`.
    pub max_abs: f64,
    /// Tolerance on `rel_err`.
    pub tol: f64,
    /// Elements outside the element-wise tolerance (non-finite ones included).
    pub bad: usize,
    /// First bad element, or a note.
    pub note: String,
}

/// Every check's result.
#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    /// One row per check, in run order.
    pub rows: Vec<CheckRow>,
}

impl CheckReport {
    /// Number of failed checks.
    pub fn failed(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| r.status == Status::Fail)
            .count()
    }

    /// A fixed-width table of every row.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<14} {:<34} {:<4} {:>9} {:>9} {:>7} {:>5} {}\n",
            "check", "case", "stat", "rel_err", "max_abs", "tol", "bad", "note"
        );
        for r in &self.rows {
            let st = match r.status {
                Status::Pass => "ok",
                Status::Fail => "FAIL",
                Status::Skip => "SKIP",
            };
            let note: String = r.note.chars().take(90).collect();
            s.push_str(&format!(
                "{:<14} {:<34} {:<4} {:>9.2e} {:>9.2e} {:>7.0e} {:>5} {}\n",
                r.name, r.case, st, r.rel_err, r.max_abs, r.tol, r.bad, note
            ));
        }
        s
    }

    /// One line per check name: cases run, failed and skipped, and the worst case.
    pub fn summary(&self) -> String {
        let mut names: Vec<&str> = Vec::new();
        for r in &self.rows {
            if !names.contains(&r.name.as_str()) {
                names.push(&r.name);
            }
        }
        let mut s = format!(
            "{:<14} {:>5} {:>4} {:>4}  {:>9}  {}\n",
            "check", "cases", "fail", "skip", "worst_rel", "worst case / first note"
        );
        for n in names {
            let rows: Vec<&CheckRow> = self.rows.iter().filter(|r| r.name == n).collect();
            let fail = rows.iter().filter(|r| r.status == Status::Fail).count();
            let skip = rows.iter().filter(|r| r.status == Status::Skip).count();
            let worst = rows
                .iter()
                .filter(|r| r.status != Status::Skip)
                .max_by(|a, b| {
                    let key = |r: &CheckRow| {
                        if r.rel_err.is_nan() {
                            f64::INFINITY
                        } else {
                            r.rel_err
                        }
                    };
                    key(a).total_cmp(&key(b))
                });
            let (wrel, wcase) = worst
                .map(|w| (w.rel_err, format!("{} {}", w.case, w.note)))
                .unwrap_or((
                    0.0,
                    rows.first().map(|r| r.note.clone()).unwrap_or_default(),
                ));
            let wcase: String = wcase.chars().take(80).collect();
            s.push_str(&format!(
                "{:<14} {:>5} {:>4} {:>4}  {:>9.2e}  {}\n",
                n,
                rows.len(),
                fail,
                skip,
                wrel,
                wcase
            ));
        }
        s
    }

    /// Every failed row in full (untruncated notes), for the log.
    pub fn failures(&self) -> String {
        self.rows
            .iter()
            .filter(|r| r.status == Status::Fail)
            .map(|r| format!("FAIL {} [{}]: {}\n", r.name, r.case, r.note))
            .collect()
    }

    /// Adds `r`'s row, or a failing row naming the error.
    pub(crate) fn push_result(&mut self, name: &str, case: &str, r: Result<CheckRow>) {
        match r {
            Ok(row) => self.rows.push(row),
            Err(e) => self.rows.push(CheckRow {
                name: name.into(),
                case: case.into(),
                status: Status::Fail,
                rel_err: f64::NAN,
                max_abs: f64::NAN,
                tol: 0.0,
                bad: 0,
                note: format!("error: {e}"),
            }),
        }
    }

    /// Adds a skipped row (an input was missing) with the reason.
    pub(crate) fn push_skip(&mut self, name: &str, case: &str, note: String) {
        self.rows.push(CheckRow {
            name: name.into(),
            case: case.into(),
            status: Status::Skip,
            rel_err: 0.0,
            max_abs: 0.0,
            tol: 0.0,
            bad: 0,
            note,
        });
    }
}

/// Compares `gpu` with `cpu`: relative L2 error within `tol`, every element finite and within
/// `16 * tol * (|cpu| + rms(cpu))`.
pub fn compare(name: &str, case: &str, gpu: &[f32], cpu: &[f32], tol: f64) -> CheckRow {
    let n = cpu.len().min(gpu.len());
    let (mut num, mut den, mut max_abs) = (0.0f64, 0.0f64, 0.0f64);
    for i in 0..n {
        let d = gpu[i] as f64 - cpu[i] as f64;
        num += d * d;
        den += (cpu[i] as f64).powi(2);
        if d.abs() > max_abs || d.is_nan() {
            max_abs = if d.is_nan() {
                f64::NAN
            } else {
                d.abs().max(max_abs)
            };
        }
    }
    let rms = (den / n.max(1) as f64).sqrt();
    let mut bad = 0;
    let mut first = None;
    for i in 0..n {
        let (g, c) = (gpu[i] as f64, cpu[i] as f64);
        let lim = 16.0 * tol * (c.abs() + rms);
        if !g.is_finite() || (g - c).abs() > lim {
            bad += 1;
            if first.is_none() {
                first = Some(format!("first bad [{i}]: gpu {g:.6e} cpu {c:.6e}"));
            }
        }
    }
    let rel = (num / den.max(f64::MIN_POSITIVE)).sqrt();
    let ok = bad == 0 && rel <= tol && gpu.len() == cpu.len();
    CheckRow {
        name: name.into(),
        case: case.into(),
        status: if ok { Status::Pass } else { Status::Fail },
        rel_err: rel,
        max_abs,
        tol,
        bad,
        note: first.unwrap_or_else(|| {
            if gpu.len() != cpu.len() {
                format!("length {} vs {}", gpu.len(), cpu.len())
            } else {
                String::new()
            }
        }),
    }
}

/// Random f32 values in ±scale, none exactly zero.
fn rand_vec(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let v = rng.uniform(-scale, scale);
            if v == 0.0 {
                scale * 0.5
            } else {
                v
            }
        })
        .collect()
}

/// A random FP16 host matrix `[out, inp]` (identical on both backends).
fn rand_f16(rng: &mut Rng, out: usize, inp: usize, scale: f32) -> Tensor {
    let bits: Vec<u16> = rand_vec(rng, out * inp, scale)
        .into_iter()
        .map(|v| f16::from_f32(v).to_bits())
        .collect();
    Tensor::from_bytes(bytemuck::cast_slice(&bits), vec![out, inp], DType::F16)
}

struct Ctx<'a> {
    gpu: &'a CudaBackend,
    cpu: CpuBackend,
    rng: Rng,
}

impl Ctx<'_> {
    fn up(&self, v: &[f32]) -> Result<cudarc::driver::CudaSlice<f32>> {
        self.gpu.upload_vec(v)
    }
    fn poisoned(&self, len: usize) -> Result<cudarc::driver::CudaSlice<f32>> {
        let mut b = self.gpu.alloc(len)?;
        self.gpu.fill(&mut b, len, f32::NAN)?;
        Ok(b)
    }
    fn down(&self, b: &cudarc::driver::CudaSlice<f32>, len: usize) -> Result<Vec<f32>> {
        let mut h = vec![0.0; len];
        self.gpu.read(b, &mut h)?;
        self.gpu.synchronize()?;
        Ok(h)
    }
}

/// Runs every kernel check and every model check. `stories` is the path of
/// `stories260K.bin` (skipped, visibly, when `None` or missing).
pub fn run_all(gpu: &CudaBackend, stories: Option<&Path>, seed: u64) -> CheckReport {
    let mut rep = CheckReport::default();
    let mut c = Ctx {
        gpu,
        cpu: CpuBackend::exact(),
        rng: Rng::new(seed),
    };
    kernel_checks(&mut c, &mut rep);
    model_checks(gpu, stories, seed, &mut rep);
    super::check_quant::run_all(gpu, stories, seed, &mut rep);
    super::check_controller::run_all(gpu, seed, &mut rep);
    let stories_path = stories
        .map(Path::to_path_buf)
        .or_else(|| stories_candidates().into_iter().find(|p| p.is_file()));
    super::check_stream::run_all(gpu, stories_path.as_deref(), &mut rep);
    rep
}

fn kernel_checks(c: &mut Ctx<'_>, rep: &mut CheckReport) {
    for &(vocab, dim, rows) in &[(1000usize, 256usize, 7usize), (37, 13, 3)] {
        let case = format!("vocab {vocab} dim {dim} rows {rows}");
        let r = check_embed(c, vocab, dim, rows, &case);
        rep.push_result("embed", &case, r);
    }
    for &(rows, dim) in &[(3usize, 4096usize), (5, 173), (1, 8192)] {
        let case = format!("rows {rows} dim {dim}");
        let r = check_rmsnorm(c, rows, dim, &case);
        rep.push_result("rmsnorm", &case, r);
    }
    for &(rows, heads, hd, pos0) in &[
        (4usize, 8usize, 128usize, 17usize),
        (3, 3, 8, 1000),
        (1, 32, 64, 4095),
    ] {
        for style in [RopeStyle::Interleaved, RopeStyle::RotateHalf] {
            let case = format!("{rows}x{heads}x{hd} pos0 {pos0} {style:?}");
            let r = check_rope(c, rows, heads, hd, pos0, style, &case);
            rep.push_result("rope", &case, r);
        }
    }
    for &n in &[3 * 4096usize, 1237] {
        let case = format!("len {n}");
        let r = check_elementwise(c, n, &case);
        match r {
            Ok(rows) => rep.rows.extend(rows),
            Err(e) => rep.push_result("elementwise", &case, Err(e)),
        }
    }
    for &(rows, width) in &[(4usize, 1024usize), (3, 173)] {
        let case = format!("rows {rows} width {width}");
        let r = check_bias(c, rows, width, &case);
        rep.push_result("add_bias", &case, r);
    }
    for &(rows, out, inp, tol) in &[
        (1usize, 4096usize, 4096usize, 2e-5),
        (1, 8192, 8192, 2e-5),
        (1, 1000, 1032, 2e-5),
        (1, 37, 173, 2e-5),
        (2, 129, 72, 2e-3),
        (300, 520, 4096, 2e-3),
        (33, 65, 173, 2e-3),
        (128, 256, 256, 2e-3),
    ] {
        let path = if rows == 1 {
            if inp % 8 == 0 {
                "gemv"
            } else {
                "gemv-scalar"
            }
        } else if inp % 8 == 0 {
            "gemm"
        } else {
            "gemm-scalar"
        };
        let case = format!("M {rows} N {out} K {inp}");
        let r = check_matmul(c, rows, out, inp, tol, path, &case);
        rep.push_result(path, &case, r);
    }
    for &(out, inp) in &[(8192usize, 8192usize), (1000, 1032), (37, 264)] {
        for (vi, vname) in c.gpu.gemv_variant_names().into_iter().enumerate().skip(1) {
            let case = format!("N {out} K {inp}");
            let r = check_gemv_variant(c, vi, out, inp, vname, &case);
            rep.push_result(vname, &case, r);
        }
    }
    for &(rows, pos0, h, kv, hd) in &[
        (1usize, 4095usize, 32usize, 8usize, 128usize),
        (1, 1000, 8, 8, 64),
        (1, 0, 4, 2, 128),
        (1, 32767, 64, 8, 128),
        (77, 0, 8, 2, 128),
        (64, 300, 12, 1, 64),
        (5, 10, 8, 4, 8),
        (6, 64, 4, 4, 48),
        (200, 0, 4, 4, 64),
        (130, 70, 8, 1, 128),
    ] {
        let case = format!("rows {rows} pos0 {pos0} h {h}/{kv} hd {hd}");
        let name = if rows == 1 {
            "attn-decode"
        } else {
            "attn-split"
        };
        let r = check_attention(c, AttnPath::Split, rows, pos0, h, kv, hd, name, &case);
        rep.push_result(name, &case, r);
        if hd == 64 || hd == 128 {
            let r = check_attention(
                c,
                AttnPath::FlashBm64,
                rows,
                pos0,
                h,
                kv,
                hd,
                "attn-flash64",
                &case,
            );
            rep.push_result("attn-flash64", &case, r);
            let r = check_attention(
                c,
                AttnPath::FlashNoPrefetch,
                rows,
                pos0,
                h,
                kv,
                hd,
                "attn-flash-np",
                &case,
            );
            rep.push_result("attn-flash-np", &case, r);
            let r = check_attention(
                c,
                AttnPath::Flash,
                rows,
                pos0,
                h,
                kv,
                hd,
                "attn-flash",
                &case,
            );
            rep.push_result("attn-flash", &case, r);
        }
    }
    for &(rows, width, pos0) in &[(3usize, 256usize, 5usize), (1, 1024, 0)] {
        let case = format!("rows {rows} width {width} pos0 {pos0}");
        let r = check_store_rows(c, rows, width, pos0, &case);
        rep.push_result("store_rows", &case, r);
    }
    for &(n, planted_nan) in &[(32000usize, false), (32000, true), (1, false), (1025, true)] {
        let case = format!(
            "len {n}{}",
            if planted_nan { " with NaN + tie" } else { "" }
        );
        let r = check_argmax(c, n, planted_nan, &case);
        rep.push_result("argmax", &case, r);
    }
}

fn check_embed(
    c: &mut Ctx<'_>,
    vocab: usize,
    dim: usize,
    rows: usize,
    case: &str,
) -> Result<CheckRow> {
    let table = rand_f16(&mut c.rng, vocab, dim, 1.0);
    let toks: Vec<u32> = (0..rows)
        .map(|_| c.rng.below(vocab as u64) as u32)
        .collect();
    let gt = c.gpu.upload_matrix(&table.clone().into())?;
    let ct = c.cpu.upload_matrix(&table.into())?;
    let mut go = c.poisoned(rows * dim)?;
    c.gpu.embed(&gt, &toks, &mut go)?;
    let mut co = vec![0.0; rows * dim];
    c.cpu.embed(&ct, &toks, &mut co)?;
    // The bad-token path must be a typed error, not a launch.
    let bad = c.gpu.embed(&gt, &[vocab as u32], &mut go).is_err();
    let mut row = compare("embed", case, &c.down(&go, rows * dim)?, &co, 0.0);
    if !bad {
        row.status = Status::Fail;
        row.note = "out-of-vocabulary token was accepted".into();
    }
    Ok(row)
}

fn check_rmsnorm(c: &mut Ctx<'_>, rows: usize, dim: usize, case: &str) -> Result<CheckRow> {
    let x = rand_vec(&mut c.rng, rows * dim, 2.0);
    let w = rand_vec(&mut c.rng, dim, 1.0);
    let mut go = c.poisoned(rows * dim)?;
    let shape = NormShape {
        rows,
        dim,
        eps: 1e-5,
    };
    c.gpu.rmsnorm(&c.up(&x)?, &c.up(&w)?, &mut go, &shape)?;
    let mut co = vec![0.0; rows * dim];
    c.cpu.rmsnorm(&x, &w, &mut co, &shape)?;
    Ok(compare(
        "rmsnorm",
        case,
        &c.down(&go, rows * dim)?,
        &co,
        1e-5,
    ))
}

#[allow(clippy::too_many_arguments)]
fn check_rope(
    c: &mut Ctx<'_>,
    rows: usize,
    heads: usize,
    hd: usize,
    pos0: usize,
    style: RopeStyle,
    case: &str,
) -> Result<CheckRow> {
    let n = rows * heads * hd;
    let x = rand_vec(&mut c.rng, n, 1.0);
    let mut g = c.up(&x)?;
    let p = RopeParams {
        rows,
        n_heads: heads,
        head_dim: hd,
        pos0,
        theta: 10000.0,
        style,
    };
    c.gpu.rope(&mut g, &p)?;
    let mut cx = x.clone();
    c.cpu.rope(&mut cx, &p)?;
    // Angles up to ~4e3 rad: one ulp of the angle is ~5e-4 rad.
    Ok(compare(
        "rope",
        case,
        &c.down(&g, n)?,
        &cx,
        2e-4 * (1.0 + pos0 as f64 / 1000.0),
    ))
}

fn check_elementwise(c: &mut Ctx<'_>, n: usize, case: &str) -> Result<Vec<CheckRow>> {
    let a = rand_vec(&mut c.rng, n, 4.0);
    let b = rand_vec(&mut c.rng, n, 2.0);
    let (ga, gb) = (c.up(&a)?, c.up(&b)?);
    let mut go = c.poisoned(n)?;
    c.gpu.swiglu(&ga, &gb, &mut go, n)?;
    let mut co = vec![0.0; n];
    c.cpu.swiglu(&a, &b, &mut co, n)?;
    let r1 = compare("swiglu", case, &c.down(&go, n)?, &co, 1e-5);
    let mut gx = c.up(&a)?;
    c.gpu.add(&mut gx, &gb, n)?;
    let mut cx = a.clone();
    c.cpu.add(&mut cx, &b, n)?;
    let r2 = compare("add", case, &c.down(&gx, n)?, &cx, 0.0);
    Ok(vec![r1, r2])
}

fn check_bias(c: &mut Ctx<'_>, rows: usize, width: usize, case: &str) -> Result<CheckRow> {
    let x = rand_vec(&mut c.rng, rows * width, 1.0);
    let b = rand_vec(&mut c.rng, width, 0.1);
    let mut g = c.up(&x)?;
    c.gpu.add_bias(&mut g, &c.up(&b)?, rows, width)?;
    let mut cx = x.clone();
    c.cpu.add_bias(&mut cx, &b, rows, width)?;
    Ok(compare(
        "add_bias",
        case,
        &c.down(&g, rows * width)?,
        &cx,
        0.0,
    ))
}

#[allow(clippy::too_many_arguments)]
fn check_matmul(
    c: &mut Ctx<'_>,
    rows: usize,
    out: usize,
    inp: usize,
    tol: f64,
    name: &str,
    case: &str,
) -> Result<CheckRow> {
    let w = rand_f16(&mut c.rng, out, inp, (3.0 / inp as f32).sqrt());
    let x = rand_vec(&mut c.rng, rows * inp, 1.0);
    let gw = c.gpu.upload_matrix(&w.clone().into())?;
    let cw = c.cpu.upload_matrix(&w.into())?;
    let mut go = c.poisoned(rows * out)?;
    c.gpu.matmul(&c.up(&x)?, &gw, &mut go, rows)?;
    let mut co = vec![0.0; rows * out];
    c.cpu.matmul(&x, &cw, &mut co, rows)?;
    Ok(compare(name, case, &c.down(&go, rows * out)?, &co, tol))
}

fn check_gemv_variant(
    c: &mut Ctx<'_>,
    vi: usize,
    out: usize,
    inp: usize,
    name: &str,
    case: &str,
) -> Result<CheckRow> {
    let w = rand_f16(&mut c.rng, out, inp, (3.0 / inp as f32).sqrt());
    let x = rand_vec(&mut c.rng, inp, 1.0);
    let gw = c.gpu.upload_matrix(&w.clone().into())?;
    let cw = c.cpu.upload_matrix(&w.into())?;
    let mut go = c.poisoned(out)?;
    c.gpu.gemv_variant(vi, &c.up(&x)?, &gw, &mut go)?;
    let mut co = vec![0.0; out];
    c.cpu.matmul(&x, &cw, &mut co, 1)?;
    Ok(compare(name, case, &c.down(&go, out)?, &co, 2e-5))
}

#[allow(clippy::too_many_arguments)]
fn check_attention(
    c: &mut Ctx<'_>,
    path: AttnPath,
    rows: usize,
    pos0: usize,
    h: usize,
    kv: usize,
    hd: usize,
    name: &str,
    case: &str,
) -> Result<CheckRow> {
    let len = pos0 + rows;
    let q = rand_vec(&mut c.rng, rows * h * hd, 3.0);
    let k = rand_vec(&mut c.rng, len * kv * hd, 1.0);
    let v = rand_vec(&mut c.rng, len * kv * hd, 1.0);
    let mut go = c.poisoned(rows * h * hd)?;
    let shape = AttentionShape {
        rows,
        pos0,
        n_heads: h,
        n_kv_heads: kv,
        head_dim: hd,
    };
    c.gpu
        .attention_path(path, &c.up(&q)?, &c.up(&k)?, &c.up(&v)?, &mut go, &shape)?;
    let mut co = vec![0.0; rows * h * hd];
    c.cpu
        .attention(&q, &k.clone().into(), &v.clone().into(), &mut co, &shape)?;
    // The tensor-core path rounds Q, K, V and P to f16.
    let tol = if path == AttnPath::Split { 1e-4 } else { 5e-3 };
    Ok(compare(name, case, &c.down(&go, rows * h * hd)?, &co, tol))
}

fn check_store_rows(
    c: &mut Ctx<'_>,
    rows: usize,
    width: usize,
    pos0: usize,
    case: &str,
) -> Result<CheckRow> {
    let src = rand_vec(&mut c.rng, rows * width, 1.0);
    let cache0 = rand_vec(&mut c.rng, (pos0 + rows + 2) * width, 1.0);
    let mut g = c.up(&cache0)?;
    c.gpu.store_rows(&c.up(&src)?, &mut g, rows, width, pos0)?;
    let mut cc = cpu::KvCache::from(cache0.clone());
    c.cpu.store_rows(&src, &mut cc, rows, width, pos0)?;
    let cc = cc.to_f32_vec();
    Ok(compare(
        "store_rows",
        case,
        &c.down(&g, cc.len())?,
        &cc,
        0.0,
    ))
}

fn check_argmax(c: &mut Ctx<'_>, n: usize, planted: bool, case: &str) -> Result<CheckRow> {
    let mut x = rand_vec(&mut c.rng, n, 5.0);
    if planted && n > 8 {
        let a = 1 + c.rng.below(n as u64 / 2) as usize;
        let b = a + 1 + c.rng.below((n - a - 1) as u64) as usize;
        x[a] = 100.0;
        x[b] = 100.0;
        x[0] = f32::NAN;
        x[n - 1] = f32::NAN;
        x[a / 2 + 1] = f32::NAN;
    }
    let g = c.gpu.argmax(&c.up(&x)?, n)?;
    let want = cpu::argmax(&x) as u32;
    let ok = g == want;
    Ok(CheckRow {
        name: "argmax".into(),
        case: case.into(),
        status: if ok { Status::Pass } else { Status::Fail },
        rel_err: if ok { 0.0 } else { 1.0 },
        max_abs: 0.0,
        tol: 0.0,
        bad: usize::from(!ok),
        note: if ok {
            String::new()
        } else {
            format!("gpu {g} cpu {want}")
        },
    })
}

/// Rounds every matrix (and the embedding) of `w` to FP16, so both backends see identical
/// weights and only activation arithmetic differs.
pub fn to_f16_weights(w: ModelWeights) -> Result<ModelWeights> {
    fn conv(t: Tensor) -> Tensor {
        if t.dtype() == DType::F16 {
            return t;
        }
        let bits: Vec<u16> = t
            .to_f32_vec()
            .iter()
            .map(|&v| f16::from_f32(v).to_bits())
            .collect();
        Tensor::from_bytes(bytemuck::cast_slice(&bits), t.shape().to_vec(), DType::F16)
    }
    let mut w = w.try_map(|_, _, m: Tensor| Ok(conv(m)))?;
    w.embedding = conv(w.embedding);
    Ok(w)
}

/// Where `stories260K.bin` may be, relative to the current folder and the crate root.
pub fn stories_candidates() -> Vec<PathBuf> {
    let mut v = vec![
        PathBuf::from(".gpu/stories260K.bin"),
        PathBuf::from("shared/models/stories260K/stories260K.bin"),
        PathBuf::from("../shared/models/stories260K/stories260K.bin"),
    ];
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    v.push(root.join("../shared/models/stories260K/stories260K.bin"));
    v.push(root.join("../../shared/models/stories260K/stories260K.bin"));
    v
}

fn model_checks(gpu: &CudaBackend, stories: Option<&Path>, seed: u64, rep: &mut CheckReport) {
    let mut cases: Vec<(String, Result<ModelWeights>)> = Vec::new();
    let synth = |cfg: Result<ModelConfig>, s: u64| {
        cfg.and_then(|c| synthetic::synthetic_weights(&c, s, DType::F32))
    };
    cases.push(("syn tiny".into(), synth(synthetic::preset("tiny"), seed)));
    cases.push((
        "syn small".into(),
        synth(synthetic::preset("small"), seed + 1),
    ));
    let biased = synthetic::preset("small").map(|c| ModelConfig {
        qkv_bias: true,
        n_layers: 2,
        ..c
    });
    cases.push(("syn small+bias".into(), synth(biased, seed + 2)));
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
    cases.push(("syn hid300".into(), synth(odd, seed + 3)));
    let hd128 = synthetic::preset("small").map(|c| ModelConfig {
        dim: 512,
        hidden_dim: 1024,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 128,
        vocab_size: 2000,
        max_seq_len: 512,
        ..c
    });
    cases.push(("syn hd128 gqa".into(), synth(hd128, seed + 4)));
    for (name, w) in cases {
        let r = w.and_then(|w| model_check(gpu, &name, w, seed, rep));
        if let Err(e) = r {
            rep.push_result("model", &name, Err(e));
        }
    }
    let path = stories
        .map(Path::to_path_buf)
        .or_else(|| stories_candidates().into_iter().find(|p| p.is_file()));
    match path {
        Some(p) if p.is_file() => {
            let r = agentcompress::model::llama2c::load(&p)
                .and_then(|w| model_check(gpu, "stories260K", w, seed, rep));
            if let Err(e) = r {
                rep.push_result("model", "stories260K", Err(e));
            }
        }
        other => rep.push_skip(
            "model",
            "stories260K",
            format!(
                "stories260K.bin not found ({}); pass --stories PATH",
                other
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "searched .gpu/, shared/, ../shared/".into())
            ),
        ),
    }
}

/// Prefill logits, teacher-forced decode logits and free-running greedy tokens of one model
/// on both backends.
fn model_check<B: Backend + Clone>(
    gpu: &B,
    name: &str,
    w: ModelWeights,
    seed: u64,
    rep: &mut CheckReport,
) -> Result<()> {
    let w = to_f16_weights(w)?;
    let cfg = w.config.clone();
    let vocab = cfg.vocab_size;
    let cm = Model::new(CpuBackend::exact(), &w)?;
    let gm = Model::new(gpu.clone(), &w)?;
    // The draft of the speculation row: INT4 of the same weights, on the device too.
    let gd = Model::new(
        gpu.clone(),
        &quantize_model(&w, Precision::Int4, &QuantConfig::default(), None)?,
    )?;
    drop(w);
    let mut rng = Rng::new(seed ^ 0x5eed);
    let plen = 70.min(cfg.max_seq_len / 4).max(2);
    let mut prompt: Vec<u32> = vec![cfg.bos_token.unwrap_or(1)];
    prompt.extend((1..plen).map(|_| rng.below(vocab as u64) as u32));
    let steps = 32.min(cfg.max_seq_len - plen - 1);

    // Prefill, chunked (64 rows per call), every row's logits.
    let (mut cs, mut gs) = (cm.new_state(64)?, gm.new_state(64)?);
    let cl = cm.forward(&mut cs, &prompt, true)?;
    let gl = gm.forward(&mut gs, &prompt, true)?;
    let case = format!("{name} prefill {plen} tok");
    rep.rows
        .push(compare("model-prefill", &case, &gl, &cl, 1e-2));

    // Teacher-forced decode: both consume the CPU's greedy token.
    let mut tok = cpu::argmax(&cl[(plen - 1) * vocab..]) as u32;
    let (mut c_log, mut g_log) = (vec![0.0; vocab], vec![0.0; vocab]);
    let mut worst: Option<CheckRow> = None;
    let mut max_err = 0.0f64;
    let mut real_mismatch = Vec::new();
    for i in 0..steps {
        cm.step(&mut cs, tok, &mut c_log)?;
        gm.step(&mut gs, tok, &mut g_log)?;
        let row = compare("model-decode", "", &g_log, &c_log, 1e-2);
        max_err = max_err.max(row.max_abs);
        let (ct, gt) = (cpu::argmax(&c_log), cpu::argmax(&g_log));
        if ct != gt {
            let margin = (c_log[ct] - c_log[gt]) as f64;
            if margin > 2.0 * row.max_abs {
                real_mismatch.push(format!("step {i}: cpu {ct} gpu {gt} margin {margin:.3e}"));
            }
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
        if !real_mismatch.is_empty() {
            wr.status = Status::Fail;
            wr.note = format!(
                "argmax differs beyond the logit error: {}",
                real_mismatch.join("; ")
            );
        }
        rep.rows.push(wr);
    }

    // Free-running greedy: CPU with host argmax, GPU with the device argmax (step_greedy).
    rep.rows.push(greedy_row(
        "model-greedy",
        name,
        &cm,
        &gm,
        &prompt,
        64,
        steps,
        max_err,
    )?);
    rep.rows.push(speculation_row(
        name, &cm, &gm, &gd, &prompt, steps, max_err,
    )?);
    Ok(())
}

/// Greedy speculation on the device (target `gm`, draft `gd`) against the target's own greedy
/// generation on the device: the ids must be the same. A verify's multi-row products may round
/// differently from one-row steps, so a first difference passes as a near-tie when the CPU
/// oracle's logits there separate the two tokens by no more than twice the decode's logit
/// error, and fails otherwise.
fn speculation_row<G: Backend>(
    name: &str,
    cm: &Model<CpuBackend>,
    gm: &Model<G>,
    gd: &Model<G>,
    prompt: &[u32],
    steps: usize,
    max_err: f64,
) -> Result<CheckRow> {
    let tok = IdsOnly(cm.config().vocab_size);
    let params = GenerateParams {
        max_new_tokens: steps,
        stop_at_eos: false,
        context: prompt.len() + steps + 1,
        ..Default::default()
    };
    let plain = generate(gm, &tok, prompt, &params, |_| true)?;
    let spec_params = SpeculativeParams::default();
    let spec = generate_speculative(gm, gd, &tok, prompt, &params, &spec_params, |_| true)?;
    let n = plain.ids.len();
    let same = plain
        .ids
        .iter()
        .zip(&spec.ids)
        .take_while(|(a, b)| a == b)
        .count();
    let stats = spec.speculation.unwrap_or_default();
    let kept = format!(
        "{} of {} drafts kept over {} verifies",
        stats.accepted, stats.drafted, stats.verifies
    );
    let (status, note) = if same == n && spec.ids.len() == n {
        (Status::Pass, format!("{n}/{n} identical; {kept}"))
    } else if same < n && same < spec.ids.len() {
        let (want, got) = (plain.ids[same], spec.ids[same]);
        let mut ids = prompt.to_vec();
        ids.extend_from_slice(&plain.ids[..same]);
        let mut cs = cm.new_state(64)?;
        let l = cm.forward(&mut cs, &ids, false)?;
        let margin = (l[want as usize] - l[got as usize]).abs() as f64;
        if margin <= 2.0 * max_err {
            let note = format!("near-tie at token {same} ({want} vs {got}, margin {margin:.2e})");
            (Status::Pass, format!("{note}; {kept}"))
        } else {
            let note = format!(
                "differs at token {same}: target {want}, speculation {got} (margin {margin:.3e})"
            );
            (Status::Fail, note)
        }
    } else {
        let note = format!("{} tokens against the target's {n}", spec.ids.len());
        (Status::Fail, note)
    };
    Ok(CheckRow {
        name: "model-spec".into(),
        case: format!("{name} {steps} tokens, int4 draft"),
        status,
        rel_err: 0.0,
        max_abs: max_err,
        tol: 0.0,
        bad: n - same,
        note,
    })
}

/// Free-running greedy decode of `steps` tokens after `prompt` on the CPU oracle (host argmax)
/// and on `gm` (device argmax, `step_greedy`). Passes when every token id matches; a divergence
/// whose CPU logit margin is within twice the measured logit error `max_err` is a near-tie,
/// reported in the note but not failed.
#[allow(clippy::too_many_arguments)]
pub(crate) fn greedy_row<G: Backend>(
    row: &str,
    name: &str,
    cm: &Model<CpuBackend>,
    gm: &Model<G>,
    prompt: &[u32],
    chunk: usize,
    steps: usize,
    max_err: f64,
) -> Result<CheckRow> {
    let vocab = cm.config().vocab_size;
    let (mut cs, mut gs) = (cm.new_state(chunk)?, gm.new_state(chunk)?);
    let cl = cm.forward(&mut cs, prompt, false)?;
    let gl = gm.forward(&mut gs, prompt, false)?;
    let mut c_log = vec![0.0f32; vocab];
    let (mut ct, mut gt) = (
        cpu::argmax(&cl) as u32,
        gm.backend().argmax(&gm.backend().upload_vec(&gl)?, vocab)?,
    );
    c_log.copy_from_slice(&cl[..vocab]);
    let (mut same, mut status, mut note) = (0, Status::Pass, String::new());
    for i in 0..steps {
        if ct != gt {
            let margin = (c_log[ct as usize] - c_log[gt as usize]) as f64;
            if margin <= 2.0 * max_err {
                note = format!("near-tie at step {i} (cpu {ct} gpu {gt}, margin {margin:.2e}); {same} tokens matched first");
            } else {
                status = Status::Fail;
                note = format!("diverged at step {i}: cpu {ct} gpu {gt} (cpu margin {margin:.3e}, logit err {max_err:.2e})");
            }
            break;
        }
        same += 1;
        cm.step(&mut cs, ct, &mut c_log)?;
        ct = cpu::argmax(&c_log) as u32;
        gt = gm.step_greedy(&mut gs, gt)?;
    }
    Ok(CheckRow {
        name: row.into(),
        case: format!("{name} {steps} tokens"),
        status,
        rel_err: 0.0,
        max_abs: max_err,
        tol: 0.0,
        bad: steps - same,
        note: if note.is_empty() {
            format!("{same}/{steps} identical")
        } else {
            note
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The model harness itself, run CPU against CPU: every row must pass with zero error,
    /// so a failure on the GPU can only come from the GPU side.
    #[test]
    fn model_harness_passes_cpu_against_cpu() {
        let c = synthetic::preset("tiny").unwrap();
        let w = synthetic::synthetic_weights(&c, 5, DType::F32).unwrap();
        let mut rep = CheckReport::default();
        model_check(&CpuBackend::exact(), "tiny", w, 5, &mut rep).unwrap();
        assert_eq!(rep.rows.len(), 4, "{}", rep.table());
        assert_eq!(rep.failed(), 0, "{}", rep.table());
        assert!(rep.rows.iter().all(|r| r.max_abs == 0.0), "{}", rep.table());
        assert!(rep.rows[2].note.contains("identical"), "{}", rep.table());
        // Speculation from the INT4 draft gives the target's own ids.
        assert!(rep.rows[3].note.contains("identical;"), "{}", rep.table());
        assert!(rep.rows[3].note.contains("drafts kept"), "{}", rep.table());
        let summary = rep.summary();
        assert_eq!(summary.lines().count(), 5, "{summary}");
        assert!(summary.contains("model-greedy"), "{summary}");
        assert!(summary.contains("model-spec"), "{summary}");
    }

    #[test]
    fn f16_weights_are_f16_everywhere() {
        let c = synthetic::preset("tiny").unwrap();
        let w = to_f16_weights(synthetic::synthetic_weights(&c, 1, DType::F32).unwrap()).unwrap();
        assert_eq!(w.embedding.dtype(), DType::F16);
        assert!(w
            .layers
            .iter()
            .all(|l| l.matrices().iter().all(|(_, m)| m.dtype() == DType::F16)));
    }
}
