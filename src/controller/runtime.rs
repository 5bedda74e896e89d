//! The controller's inference form: every token-wise linear map packed once for the fast CPU
//! product, position codes precomputed, and the forward pass's buffers reused across tasks.
//! Training keeps working on [`Controller`] and packs again when it is done.
//!
//! Two precisions ([`ControllerPrecision`]) for the projection and the encoder's maps (wq, wk,
//! wv, wo, ff1, ff2; the pooling head, layer norms and attention stay f32):
//! - [`ControllerPrecision::F32`] ([`crate::controller::kernels::gemm`]) computes what
//!   [`Controller::predict`] computes, up to f32 summation order (tested below);
//! - [`ControllerPrecision::Int8`] ([`crate::controller::kernels::gemm_i8`]) quantises the weights per
//!   output row and the activations per token, with exact integer sums (AVX512-VNNI). Against
//!   the f32 form, complexity moves by a few 1e-3 (at most about 1.3e-2 measured) and the
//!   argmax precision agrees on all but near-tied inputs (the tests below state the
//!   measurements and bounds).
//!
//! [`Controller::packed`] (what the engine and router use) picks
//! [`ControllerPrecision::detect`]: INT8 where the CPU has AVX512-VNNI (about three times as
//! fast there), f32 elsewhere (the portable integer kernel is a correctness fallback, not
//! tuned for speed).

use super::encoder::{
    gather_rows, input_rows, layer_forward, mean_rows, position_code, Controller, ControllerOutput,
    Encoded, Head, LayerScratch,
};
use super::kernels::gemm::{gemm_path, GemmPath};
use super::kernels::gemm_i8::{i8_path, I8Path};
use super::layers::{LayerNorm, Linear, PackedLinear};
use super::ControllerConfig;
use crate::util::scratch_pool::ScratchPool;
use crate::Result;

/// The arithmetic of a [`PackedController`]'s token-wise linear maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControllerPrecision {
    /// f32 weights and activations: the training forward's results up to summation order.
    F32,
    /// INT8 weights (per output row) and activations (per token), exact integer products.
    Int8,
}

impl ControllerPrecision {
    /// The default for this CPU: [`ControllerPrecision::Int8`] where AVX512-VNNI runs the
    /// integer kernel, else [`ControllerPrecision::F32`].
    pub fn detect() -> Self {
        Self::for_kernel(i8_path())
    }

    /// The default when the best integer kernel is `path`: INT8 only on VNNI.
    pub fn for_kernel(path: I8Path) -> Self {
        match path {
            I8Path::Vnni => ControllerPrecision::Int8,
            I8Path::Portable => ControllerPrecision::F32,
        }
    }

    /// The precision's name as benchmarks print it.
    pub fn name(self) -> &'static str {
        match self {
            ControllerPrecision::F32 => "f32",
            ControllerPrecision::Int8 => "int8",
        }
    }
}

impl Default for ControllerPrecision {
    fn default() -> Self {
        Self::detect()
    }
}

/// One encoder layer in packed form.
#[derive(Clone, Debug)]
struct PackedLayer {
    ln1: LayerNorm,
    ln2: LayerNorm,
    /// `[wq, wk, wv, wo, ff1, ff2]`.
    maps: [PackedLinear; 6],
}

/// Buffers of one forward pass.
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    layer: LayerScratch,
}

/// A [`Controller`] packed for inference (see the module documentation). Shareable across
/// threads; each prediction takes a set of scratch buffers out of a pool for its duration
/// (concurrent ones, and ones nested by rayon's work stealing, use separate sets).
pub struct PackedController {
    config: ControllerConfig,
    precision: ControllerPrecision,
    proj: PackedLinear,
    layers: Vec<PackedLayer>,
    ln_f: LayerNorm,
    head: Head,
    pool_k: PackedLinear,
    pool_v: PackedLinear,
    /// Position codes `[k, d_model]`.
    positions: Vec<f32>,
    scratch: ScratchPool<Scratch>,
}

impl Controller {
    /// Packs the controller for inference at the CPU's default precision
    /// ([`ControllerPrecision::detect`]; copies the weights, pack again after training).
    pub fn packed(&self) -> PackedController {
        self.packed_with(ControllerPrecision::detect())
    }

    /// Packs the controller at `precision` (INT8 runs on the CPU's best integer kernel).
    pub fn packed_with(&self, precision: ControllerPrecision) -> PackedController {
        self.pack_maps(precision, i8_path())
    }

    /// Packs the controller in INT8 on the integer kernel `path` (the portable one where the
    /// CPU lacks it): for tests and benchmarks of a particular kernel.
    pub fn packed_int8_on(&self, path: I8Path) -> PackedController {
        self.pack_maps(ControllerPrecision::Int8, path)
    }

    fn pack_maps(&self, precision: ControllerPrecision, path: I8Path) -> PackedController {
        let c = &self.config;
        let d = c.d_model;
        let positions = (0..c.k * d)
            .map(|j| position_code(j / d, j % d, d))
            .collect();
        let pack = |l: &Linear| match precision {
            ControllerPrecision::F32 => l.pack(),
            ControllerPrecision::Int8 => l.pack_int8(path),
        };
        PackedController {
            config: c.clone(),
            precision,
            proj: pack(&self.proj),
            layers: self
                .layers
                .iter()
                .map(|l| PackedLayer {
                    ln1: l.ln1.clone(),
                    ln2: l.ln2.clone(),
                    maps: [&l.wq, &l.wk, &l.wv, &l.wo, &l.ff1, &l.ff2].map(pack),
                })
                .collect(),
            ln_f: self.ln_f.clone(),
            head: self.head.clone(),
            pool_k: self.head.pk.pack(),
            pool_v: self.head.pv.pack(),
            positions,
            scratch: ScratchPool::new(),
        }
    }
}

impl PackedController {
    /// The controller's sizes.
    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// The precision of the token-wise linear maps.
    pub fn precision(&self) -> ControllerPrecision {
        self.precision
    }

    /// The f32 matrix-product kernel this process uses (attention, the pooling head, and
    /// every map at [`ControllerPrecision::F32`]).
    pub fn gemm_path(&self) -> GemmPath {
        gemm_path()
    }

    /// The integer kernel of the INT8 maps (`None` at [`ControllerPrecision::F32`]).
    pub fn int8_path(&self) -> Option<I8Path> {
        self.proj.int8_path()
    }

    /// Runs the projection and the encoder over gathered embeddings `[n, embed_dim]`
    /// (as [`Controller::encode`]).
    pub fn encode(&self, emb: &[f32]) -> Result<Encoded> {
        let n = input_rows(&self.config, emb)?;
        let mut s = self.scratch.take().unwrap_or_default();
        let enc = in_pool(|| self.encode_rows(emb, n, &mut s));
        self.scratch.give(s);
        Ok(enc)
    }

    /// Predicts complexity and policy for a task (as [`Controller::predict`]).
    pub fn predict(&self, table: &[f32], ids: &[u32]) -> Result<ControllerOutput> {
        let emb = gather_rows(&self.config, table, ids)?;
        let n = input_rows(&self.config, &emb)?;
        let mut s = self.scratch.take().unwrap_or_default();
        let out = in_pool(|| {
            let enc = self.encode_rows(&emb, n, &mut s);
            let (mut k, mut v) = (Vec::new(), Vec::new());
            self.pool_k.forward_into(&enc.tokens, enc.n, &mut k);
            self.pool_v.forward_into(&enc.tokens, enc.n, &mut v);
            self.head
                .forward_from_kv(&enc, k, v, self.config.pool_heads)
        });
        self.scratch.give(s);
        Ok(out)
    }

    /// The projection and the encoder over `n` checked rows of `emb`.
    fn encode_rows(&self, emb: &[f32], n: usize, s: &mut Scratch) -> Encoded {
        let c = &self.config;
        let d = c.d_model;
        let Scratch { x, layer } = s;
        self.proj.forward_into(emb, n, x);
        x.iter_mut()
            .zip(&self.positions[..n * d])
            .for_each(|(v, p)| *v += p);
        for l in &self.layers {
            let maps = [0, 1, 2, 3, 4, 5].map(|i| &l.maps[i]);
            layer_forward(&l.ln1, &l.ln2, maps, x, n, c.n_heads, layer);
        }
        let tokens = self.ln_f.forward(x);
        let pooled = mean_rows(&tokens, d);
        Encoded { tokens, n, pooled }
    }
}

/// Runs `f` on a thread of rayon's pool (directly when already on one): a caller outside the
/// pool then hands off once per task instead of once per parallel product (each hand-off
/// blocks and wakes the caller's thread). No lock is held across it: the scratch buffers were
/// taken out of their pool before.
fn in_pool<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    rayon::scope(|_| f())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::Rng;

    use crate::util::max_abs_diff as max_diff;

    fn assert_close(a: &ControllerOutput, b: &ControllerOutput, tol: f32) {
        let fa = [a.complexity, a.pruning, a.sparsity];
        let fb = [b.complexity, b.pruning, b.sparsity];
        assert!(max_diff(&fa, &fb) <= tol, "{a:?} vs {b:?}");
        assert!(max_diff(a.precision_logits.values(), b.precision_logits.values()) <= tol);
        assert!(max_diff(a.precision_probs.values(), b.precision_probs.values()) <= tol);
    }

    #[test]
    fn packed_predictions_match_the_reference_forward() {
        // Ragged widths (not multiples of the 32-column panels) and a short task too.
        let cfg = ControllerConfig::ragged(20);
        for c in [
            Controller::new(cfg, 3).unwrap(),
            Controller::new(ControllerConfig::small(64), 4).unwrap(),
        ] {
            let e = c.config.embed_dim;
            let table = Rng::new(9).vec_uniform(50 * e, 1.0);
            let p = c.packed_with(ControllerPrecision::F32);
            for (i, len) in [1usize, 5, 40].into_iter().enumerate() {
                let ids: Vec<u32> = (0..len).map(|j| ((j * 13 + i) % 50) as u32).collect();
                let emb = c.gather(&table, &ids).unwrap();
                let (want, got) = (c.encode(&emb).unwrap(), p.encode(&emb).unwrap());
                assert_eq!(want.n, got.n);
                assert!(max_diff(&want.tokens, &got.tokens) < 1e-4);
                assert!(max_diff(&want.pooled, &got.pooled) < 1e-4);
                let (a, b) = (
                    c.predict(&table, &ids).unwrap(),
                    p.predict(&table, &ids).unwrap(),
                );
                assert_close(&a, &b, 1e-4);
                // The scratch buffers carry nothing from one task to the next.
                assert_eq!(p.predict(&table, &ids).unwrap(), b);
            }
        }
    }

    #[test]
    fn the_reference_config_agrees_within_tolerance() {
        // Full widths, a few tokens (keeps the debug-build test fast).
        let c = Controller::new(ControllerConfig::reference(16), 1).unwrap();
        let table = Rng::new(2).vec_uniform(30 * 16, 1.0);
        let ids = [3u32, 7, 11, 29];
        let (a, b) = (
            c.predict(&table, &ids).unwrap(),
            c.packed_with(ControllerPrecision::F32)
                .predict(&table, &ids)
                .unwrap(),
        );
        assert_close(&a, &b, 1e-4);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let c = Controller::new(ControllerConfig::small(16), 5).unwrap();
        for precision in [ControllerPrecision::F32, ControllerPrecision::Int8] {
            let p = c.packed_with(precision);
            let t = Rng::new(1).vec_uniform(40 * 16, 1.0);
            assert!(p.predict(&t, &[]).is_err());
            assert!(p.predict(&t, &[41]).unwrap_err().to_string().contains("41"));
            assert!(p.predict(&t[..15], &[1]).is_err());
            assert!(p.encode(&t[..16 * 33]).is_err());
            assert_eq!(p.config(), &c.config);
            assert_eq!(p.precision(), precision);
        }
    }

    /// How far the INT8 form is from the f32 form over `tasks`: the largest complexity
    /// difference, the largest precision-probability difference, and the number of tasks
    /// whose argmax precision differs.
    fn int8_error(c: &Controller, table: &[f32], tasks: &[Vec<u32>]) -> (f32, f32, usize) {
        let (f, q) = (
            c.packed_with(ControllerPrecision::F32),
            c.packed_int8_on(I8Path::Portable),
        );
        let (mut cx, mut pr, mut flips) = (0f32, 0f32, 0);
        for ids in tasks {
            let (a, b) = (
                f.predict(table, ids).unwrap(),
                q.predict(table, ids).unwrap(),
            );
            cx = cx.max((a.complexity - b.complexity).abs());
            pr = pr.max(max_diff(
                a.precision_probs.values(),
                b.precision_probs.values(),
            ));
            flips += usize::from(a.precision() != b.precision());
        }
        eprintln!(
            "int8 vs f32 over {} tasks: complexity {cx:.2e}, probs {pr:.2e}, {flips} argmax flips",
            tasks.len()
        );
        (cx, pr, flips)
    }

    /// `count` tasks of 1..=max_len ids below `vocab`.
    fn tasks(seed: u64, count: usize, max_len: usize, vocab: usize) -> Vec<Vec<u32>> {
        let mut rng = Rng::new(seed);
        (0..count)
            .map(|_| {
                let len = 1 + rng.below(max_len as u64) as usize;
                (0..len).map(|_| rng.below(vocab as u64) as u32).collect()
            })
            .collect()
    }

    // Tolerances of the INT8 form against the f32 form. Measured (release build, tasks of 1
    // to 60 ids): random reference-width controllers, 1,200 tasks: complexity differs by at
    // most 1.3e-2 (mean 3e-3), precision probabilities by at most 1.6e-2, no argmax change;
    // three controllers trained by `agentcompress eval` (small widths, stories260K
    // embeddings), 2,000 tasks each: complexity at most 1.1e-2, probabilities at most
    // 7.7e-2, argmax changes on 0, 12 (0.6%) and 0 tasks, all with the f32 form's top two
    // probabilities within 0.06. The tests below assert complexity < 0.02 and probabilities
    // < 0.03 (their own tasks measure at most 8.4e-3 and 1.7e-2).

    #[test]
    fn int8_agrees_with_f32_on_random_weights() {
        let c = Controller::new(ControllerConfig::small(64), 7).unwrap();
        let table = Rng::new(3).vec_uniform(200 * 64, 1.0);
        let (cx, pr, flips) = int8_error(&c, &table, &tasks(8, 64, 40, 200));
        assert!(cx < 0.02 && pr < 0.03 && flips <= 1, "{cx} {pr} {flips}");
        // The reference widths on a few short tasks (keeps the debug build fast).
        let c = Controller::new(ControllerConfig::reference(16), 1).unwrap();
        let table = Rng::new(2).vec_uniform(30 * 16, 1.0);
        let (cx, pr, flips) = int8_error(&c, &table, &tasks(9, 6, 8, 30));
        assert!(cx < 0.02 && pr < 0.03 && flips == 0, "{cx} {pr} {flips}");
    }

    #[cfg(feature = "train")]
    #[test]
    fn int8_agrees_with_f32_on_trained_weights() {
        use crate::controller::train::{train, Sample, TrainConfig};
        let (embed, vocab) = (32, 80);
        let table = Rng::new(1).vec_uniform(vocab * embed, 1.0);
        let mut c = Controller::new(ControllerConfig::small(embed), 3).unwrap();
        let train_tasks = tasks(4, 32, 40, vocab);
        let samples: Vec<Sample> = train_tasks
            .iter()
            .enumerate()
            .map(|(i, ids)| {
                let hard = ids[0] as f32 / vocab as f32;
                Sample {
                    emb: c.gather(&table, ids).unwrap(),
                    quality: [1.0, 0.99, 1.0 - 0.4 * hard, 0.2].into(),
                    cost: [1.0, 0.6, 0.4, 0.3].into(),
                    complexity: hard,
                    headroom: 0.5,
                    domain: i % 2,
                }
            })
            .collect();
        let before = c.clone();
        let tc = TrainConfig {
            iterations: 60,
            batch: 4,
            outer_lr: 3e-3,
            ..TrainConfig::default()
        };
        train(&mut c, &samples, &tc, 20, |_, _| {}).unwrap();
        assert_ne!(c.layers, before.layers);
        let (cx, pr, flips) = int8_error(&c, &table, &tasks(5, 64, 40, vocab));
        assert!(cx < 0.02 && pr < 0.03 && flips <= 1, "{cx} {pr} {flips}");
    }

    #[test]
    fn the_int8_kernels_give_identical_predictions() {
        // Exact integer sums and shared dequantisation: VNNI (where present) and the
        // portable kernel agree to the bit.
        // Ragged widths too (K not a multiple of 4 or 64, N not a multiple of 32).
        let ragged = ControllerConfig::ragged(22);
        for cfg in [ControllerConfig::small(24), ragged] {
            let e = cfg.embed_dim;
            let c = Controller::new(cfg, 11).unwrap();
            let table = Rng::new(6).vec_uniform(60 * e, 1.0);
            let (v, p) = (
                c.packed_int8_on(I8Path::Vnni),
                c.packed_int8_on(I8Path::Portable),
            );
            assert_eq!(p.int8_path(), Some(I8Path::Portable));
            for ids in tasks(12, 8, 40, 60) {
                assert_eq!(
                    v.predict(&table, &ids).unwrap(),
                    p.predict(&table, &ids).unwrap()
                );
            }
            let (cx, pr, flips) = int8_error(&c, &table, &tasks(13, 16, 40, 60));
            assert!(cx < 0.02 && pr < 0.03 && flips <= 1, "{cx} {pr} {flips}");
        }
    }

    #[test]
    fn the_default_precision_is_int8_only_with_vnni() {
        assert_eq!(
            ControllerPrecision::for_kernel(I8Path::Vnni),
            ControllerPrecision::Int8
        );
        assert_eq!(
            ControllerPrecision::for_kernel(I8Path::Portable),
            ControllerPrecision::F32
        );
        let want = if I8Path::Vnni.available() {
            ControllerPrecision::Int8
        } else {
            ControllerPrecision::F32
        };
        assert_eq!(ControllerPrecision::detect(), want);
        assert_eq!(ControllerPrecision::default(), want);
        let c = Controller::new(ControllerConfig::small(16), 2).unwrap();
        assert_eq!(c.packed().precision(), want);
        assert_eq!(c.packed_with(ControllerPrecision::F32).int8_path(), None);
        // Asking for VNNI where the CPU lacks it runs the portable kernel.
        let on_vnni = c.packed_int8_on(I8Path::Vnni).int8_path();
        assert_eq!(on_vnni, Some(I8Path::detect()));
    }
}
