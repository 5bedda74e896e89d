//! Differential check of the controller on the GPU: the encoder kernels (`layer_norm`, `gelu`,
//! `attention_full`, `mean_rows`) against the CPU oracle at aligned and odd sizes, then the
//! whole [`DeviceController`] on CUDA against the same controller on the CPU backend, over
//! several tasks (1 token, a few, exactly k, more than k) of the small and the reference
//! configurations.
//!
//! CUDA stores weight matrices and the embedding table as FP16, so the CPU side runs the same
//! FP16-rounded weights in f32: what remains is activation rounding (the tensor-core product
//! rounds its input rows to FP16) and summation order. The note gives the largest output
//! difference from the unrounded f32 controller ([`agentcompress::controller::PackedController`]) too.

use super::check::{compare, CheckReport, CheckRow};
use agentcompress::backend::cpu::CpuBackend;
use agentcompress::backend::cuda::CudaBackend;
use agentcompress::backend::{Backend, FullAttentionShape, NormShape};
use agentcompress::controller::{Controller, ControllerConfig, ControllerOutput, DeviceController};
use agentcompress::util::rng::Rng;
use agentcompress::Result;
use half::f16;

/// Relative L2 tolerance of the encoder kernels (f32 throughout, only summation order differs).
const OP_TOL: f64 = 1e-5;
/// Relative L2 tolerance of the whole controller (pooled vector and outputs).
const CONTROLLER_TOL: f64 = 1e-2;

/// Runs the encoder-kernel and controller checks.
pub fn run_all(gpu: &CudaBackend, seed: u64, rep: &mut CheckReport) {
    run_with(gpu, seed, &["small", "reference"], rep);
}

/// [`run_all`] on any backend `gpu` (compared with the CPU backend), for the controller
/// configurations `configs`.
pub(crate) fn run_with<G: Backend + Clone>(
    gpu: &G,
    seed: u64,
    configs: &[&str],
    rep: &mut CheckReport,
) {
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(seed ^ 0xc0de);
    for &(rows, dim) in &[(32usize, 512usize), (5, 173), (1, 64)] {
        let case = format!("rows {rows} dim {dim}");
        let r = check_layer_norm(gpu, &cpu, &mut rng, rows, dim, &case);
        rep.push_result("layer_norm", &case, r);
    }
    for &len in &[32 * 1024usize, 1001] {
        let case = format!("len {len}");
        let r = check_gelu(gpu, &cpu, &mut rng, len, &case);
        rep.push_result("gelu", &case, r);
    }
    for &(n_q, n_k, heads, hd) in &[
        (32usize, 32usize, 8usize, 64usize),
        (7, 7, 3, 12),
        (1, 32, 4, 64),
        (1, 1, 4, 16),
        (5, 300, 2, 33),
    ] {
        let case = format!("q {n_q} k {n_k} heads {heads} hd {hd}");
        let shape = FullAttentionShape {
            n_q,
            n_k,
            n_heads: heads,
            head_dim: hd,
        };
        let r = check_attention_full(gpu, &cpu, &mut rng, shape, &case);
        rep.push_result("attn-full", &case, r);
    }
    for &(rows, width) in &[(32usize, 512usize), (3, 300)] {
        let case = format!("rows {rows} width {width}");
        let r = check_mean_rows(gpu, &cpu, &mut rng, rows, width, &case);
        rep.push_result("mean_rows", &case, r);
    }
    for &name in configs {
        if let Err(e) = check_controller(gpu, name, seed, rep) {
            rep.push_result("controller", name, Err(e));
        }
    }
}

/// Uploads `v` to both backends.
fn both<G: Backend>(gpu: &G, v: &[f32]) -> Result<(G::Buf, Vec<f32>)> {
    Ok((gpu.upload_vec(v)?, v.to_vec()))
}

/// A NaN-filled device buffer (unwritten outputs fail the comparison).
fn poisoned<G: Backend>(gpu: &G, len: usize) -> Result<G::Buf> {
    gpu.upload_vec(&vec![f32::NAN; len])
}

/// The first `len` elements of a device buffer.
fn down<G: Backend>(gpu: &G, b: &G::Buf, len: usize) -> Result<Vec<f32>> {
    let mut h = vec![0.0; len];
    gpu.read(b, &mut h)?;
    gpu.synchronize()?;
    Ok(h)
}

fn check_layer_norm<G: Backend>(
    gpu: &G,
    cpu: &CpuBackend,
    rng: &mut Rng,
    rows: usize,
    dim: usize,
    case: &str,
) -> Result<CheckRow> {
    // An offset mean, so a kernel that skipped the mean subtraction fails.
    let x: Vec<f32> = rng
        .vec_uniform(rows * dim, 2.0)
        .into_iter()
        .map(|v| v + 3.0)
        .collect();
    let (gx, hx) = both(gpu, &x)?;
    let (gg, hg) = both(gpu, &rng.vec_uniform(dim, 1.5))?;
    let (gb, hb) = both(gpu, &rng.vec_uniform(dim, 1.0))?;
    let mut go = poisoned(gpu, rows * dim)?;
    let shape = NormShape {
        rows,
        dim,
        eps: 1e-5,
    };
    gpu.layer_norm(&gx, &gg, &gb, &mut go, &shape)?;
    let mut ho = vec![0.0; rows * dim];
    cpu.layer_norm(&hx, &hg, &hb, &mut ho, &shape)?;
    Ok(compare(
        "layer_norm",
        case,
        &down(gpu, &go, rows * dim)?,
        &ho,
        OP_TOL,
    ))
}

fn check_gelu<G: Backend>(
    gpu: &G,
    cpu: &CpuBackend,
    rng: &mut Rng,
    len: usize,
    case: &str,
) -> Result<CheckRow> {
    let (mut gx, mut hx) = both(gpu, &rng.vec_uniform(len, 5.0))?;
    gpu.gelu(&mut gx, len)?;
    cpu.gelu(&mut hx, len)?;
    Ok(compare("gelu", case, &down(gpu, &gx, len)?, &hx, OP_TOL))
}

fn check_attention_full<G: Backend>(
    gpu: &G,
    cpu: &CpuBackend,
    rng: &mut Rng,
    shape: FullAttentionShape,
    case: &str,
) -> Result<CheckRow> {
    let (n_q, n_k) = (shape.n_q, shape.n_k);
    let w = shape.n_heads * shape.head_dim;
    let (gq, hq) = both(gpu, &rng.vec_uniform(n_q * w, 1.0))?;
    let (gk, hk) = both(gpu, &rng.vec_uniform(n_k * w, 1.0))?;
    let (gv, hv) = both(gpu, &rng.vec_uniform(n_k * w, 1.0))?;
    let mut go = poisoned(gpu, n_q * w)?;
    gpu.attention_full(&gq, &gk, &gv, &mut go, &shape)?;
    let mut ho = vec![0.0; n_q * w];
    cpu.attention_full(&hq, &hk, &hv, &mut ho, &shape)?;
    Ok(compare(
        "attn-full",
        case,
        &down(gpu, &go, n_q * w)?,
        &ho,
        OP_TOL,
    ))
}

fn check_mean_rows<G: Backend>(
    gpu: &G,
    cpu: &CpuBackend,
    rng: &mut Rng,
    rows: usize,
    width: usize,
    case: &str,
) -> Result<CheckRow> {
    let (gx, hx) = both(gpu, &rng.vec_uniform(rows * width, 1.0))?;
    let mut go = poisoned(gpu, width)?;
    gpu.mean_rows(&gx, &mut go, rows, width)?;
    let mut ho = vec![0.0; width];
    cpu.mean_rows(&hx, &mut ho, rows, width)?;
    Ok(compare(
        "mean_rows",
        case,
        &down(gpu, &go, width)?,
        &ho,
        OP_TOL,
    ))
}

/// Rounds `v` to the nearest FP16 values (what the CUDA backend stores).
fn round_f16(v: &mut [f32]) {
    v.iter_mut().for_each(|x| *x = f16::from_f32(*x).to_f32());
}

/// A seeded controller with non-trivial norms and biases (a fresh one has unit gains and zero
/// biases, which would hide a kernel that ignored them).
fn test_controller(cfg: ControllerConfig, seed: u64) -> Result<Controller> {
    let mut c = Controller::new(cfg, seed)?;
    c.jitter_norms_and_biases(seed ^ 0x5eed, 0.3, 0.1);
    Ok(c)
}

/// The controller `c` with every weight matrix rounded to FP16 (biases and norms stay f32, as
/// the CUDA backend keeps them).
fn rounded(c: &Controller) -> Controller {
    let mut r = c.clone();
    round_f16(&mut r.proj.w);
    for l in &mut r.layers {
        for m in [
            &mut l.wq, &mut l.wk, &mut l.wv, &mut l.wo, &mut l.ff1, &mut l.ff2,
        ] {
            round_f16(&mut m.w);
        }
    }
    for m in r.head.linears_mut() {
        round_f16(&mut m.w);
    }
    r
}

/// Complexity, pruning, sparsity and the four precision logits.
fn outputs(o: &ControllerOutput) -> Vec<f32> {
    let mut v = vec![o.complexity, o.pruning, o.sparsity];
    v.extend(o.precision_logits.into_array());
    v
}

fn check_controller<G: Backend + Clone>(
    gpu: &G,
    name: &str,
    seed: u64,
    rep: &mut CheckReport,
) -> Result<()> {
    let (embed, vocab) = (64, 512);
    let cfg = ControllerConfig::named(name, embed)?;
    let k = cfg.k;
    let c = test_controller(cfg, seed)?;
    let mut table = Rng::new(seed ^ 0x7ab1e).vec_uniform(vocab * embed, 1.0);
    round_f16(&mut table);
    let r = rounded(&c);
    let on_gpu = DeviceController::new(gpu.clone(), &r, &table)?;
    let on_cpu = DeviceController::new(CpuBackend::new(), &r, &table)?;
    let exact = c.packed_with(agentcompress::controller::ControllerPrecision::F32);
    let mut rng = Rng::new(seed ^ 0x7a5c);
    for len in [1usize, 7, k, k + 9] {
        let ids: Vec<u32> = (0..len).map(|_| rng.below(vocab as u64) as u32).collect();
        let case = format!("{name} {len} tokens");
        let r = (|| {
            let (ge, ce) = (on_gpu.encode(&ids)?, on_cpu.encode(&ids)?);
            let mut row = compare(
                "controller",
                &format!("{case} pooled"),
                &ge.pooled,
                &ce.pooled,
                CONTROLLER_TOL,
            );
            let tokens = compare("controller", "", &ge.tokens, &ce.tokens, CONTROLLER_TOL);
            if tokens.status != super::check::Status::Pass {
                row.status = super::check::Status::Fail;
            }
            row.note = format!(
                "tokens rel {:.2e} max_abs {:.2e} {}",
                tokens.rel_err, tokens.max_abs, row.note
            );
            Ok(row)
        })();
        rep.push_result("controller", &format!("{case} pooled"), r);
        let r = (|| {
            let go = outputs(&on_gpu.predict(&ids)?);
            let co = outputs(&on_cpu.predict(&ids)?);
            let eo = outputs(&exact.predict(&table, &ids)?);
            let mut row = compare(
                "controller",
                &format!("{case} outputs"),
                &go,
                &co,
                CONTROLLER_TOL,
            );
            let vs_f32 = go
                .iter()
                .zip(&eo)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            row.note = format!("max_abs vs f32 weights {vs_f32:.2e} {}", row.note);
            Ok(row)
        })();
        rep.push_result("controller", &format!("{case} outputs"), r);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::check::Status;

    #[test]
    fn the_check_runs_end_to_end_with_the_cpu_standing_in_for_the_gpu() {
        // Without a GPU the check still runs through every case (CPU against CPU): every row
        // is there and passes, so on CUDA only the numbers can differ.
        let mut rep = CheckReport::default();
        run_with(&CpuBackend::new(), 7, &["small"], &mut rep);
        let names = ["layer_norm", "gelu", "attn-full", "mean_rows", "controller"];
        for (name, want) in names.iter().zip([3, 2, 5, 2, 8]) {
            let n = rep.rows.iter().filter(|r| r.name == *name).count();
            assert_eq!(n, want, "{name} rows\n{}", rep.table());
        }
        assert!(
            rep.rows.iter().all(|r| r.status == Status::Pass),
            "{}",
            rep.table()
        );
        // The note reports the distance from the unrounded f32 controller, which is not zero
        // (FP16-rounded weights) but small.
        let outs: Vec<_> = rep
            .rows
            .iter()
            .filter(|r| r.case.ends_with("outputs"))
            .collect();
        assert_eq!(outs.len(), 4);
        assert!(outs.iter().all(|r| r.note.contains("vs f32 weights")));
    }
}
