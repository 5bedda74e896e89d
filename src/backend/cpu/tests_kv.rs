//! Attention on the FP16 key/value cache: against a float64 formula on the same (rounded)
//! cache, against the f32 cache at a stated tolerance, and prefill against decode.

use super::*;
use crate::util::rng::Rng;

/// `(rows, pos0, n_heads, n_kv_heads, head_dim)`: decode and prefill rows, GQA groups of 1
/// (MHA), 2, 3 (SmolLM2) and all heads (MQA), head widths on and off the 16-lane kernel.
const SHAPES: [(usize, usize, usize, usize, usize); 8] = [
    (1, 0, 1, 1, 16),
    (1, 37, 9, 3, 64),
    (5, 3, 8, 2, 64),
    (3, 2, 4, 2, 6),
    (2, 20, 6, 6, 32),
    (4, 0, 12, 1, 48),
    (1, 300, 8, 4, 16),
    (7, 11, 6, 3, 24),
];

struct Case {
    shape: AttentionShape,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

fn case(rng: &mut Rng, (rows, pos0, nh, nkv, hd): (usize, usize, usize, usize, usize)) -> Case {
    let len = pos0 + rows;
    Case {
        shape: AttentionShape {
            rows,
            pos0,
            n_heads: nh,
            n_kv_heads: nkv,
            head_dim: hd,
        },
        q: rng.vec_uniform(rows * nh * hd, 3.0),
        k: rng.vec_uniform(len * nkv * hd, 1.0),
        v: rng.vec_uniform(len * nkv * hd, 1.0),
    }
}

/// Fresh caches of `be` holding `c`'s keys and values, stored through the backend as the
/// engine stores them.
fn caches(be: &CpuBackend, c: &Case) -> (KvCache, KvCache) {
    let s = &c.shape;
    let (kvd, len) = (s.n_kv_heads * s.head_dim, s.pos0 + s.rows);
    let mut kc = be.alloc_cache(len * kvd + 5).unwrap();
    let mut vc = be.alloc_cache(len * kvd + 5).unwrap();
    be.store_rows(&c.k, &mut kc, len, kvd, 0).unwrap();
    be.store_rows(&c.v, &mut vc, len, kvd, 0).unwrap();
    (kc, vc)
}

/// Runs the attention of `c` on fresh caches ([`caches`]).
fn run(be: &CpuBackend, c: &Case) -> Vec<f32> {
    let s = &c.shape;
    let (kc, vc) = caches(be, c);
    let mut out = vec![f32::NAN; s.rows * s.n_heads * s.head_dim];
    be.attention(&c.q, &kc, &vc, &mut out, s).unwrap();
    out
}

/// Causal grouped-query attention in float64 on keys and values `k`, `v`.
fn reference(c: &Case, k: &[f32], v: &[f32]) -> Vec<f64> {
    let s = &c.shape;
    let (hd, nh, nkv) = (s.head_dim, s.n_heads, s.n_kv_heads);
    let (qd, kvd) = (nh * hd, nkv * hd);
    let mut want = vec![0f64; s.rows * qd];
    for r in 0..s.rows {
        for h in 0..nh {
            let kh = h / (nh / nkv);
            let len = s.pos0 + r + 1;
            let sc: Vec<f64> = (0..len)
                .map(|t| {
                    (0..hd)
                        .map(|i| c.q[r * qd + h * hd + i] as f64 * k[t * kvd + kh * hd + i] as f64)
                        .sum::<f64>()
                        / (hd as f64).sqrt()
                })
                .collect();
            let m = sc.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = sc.iter().map(|x| (x - m).exp()).sum();
            for i in 0..hd {
                want[r * qd + h * hd + i] = (0..len)
                    .map(|t| (sc[t] - m).exp() / z * v[t * kvd + kh * hd + i] as f64)
                    .sum();
            }
        }
    }
    want
}

fn max_err(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs() / (1.0 + w.abs()))
        .fold(0.0, f64::max)
}

fn rounded(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect()
}

#[test]
fn f16_cache_attention_matches_f64_on_the_rounded_cache() {
    // Only f32 arithmetic separates the kernel from the formula once K and V are rounded as
    // the cache rounds them: 1e-5 relative.
    let be = CpuBackend::with_kv(KvPrecision::F16);
    let mut rng = Rng::new(21);
    for s in SHAPES {
        let c = case(&mut rng, s);
        let got = run(&be, &c);
        let want = reference(&c, &rounded(&c.k), &rounded(&c.v));
        let e = max_err(&got, &want);
        assert!(e <= 1e-5, "{s:?}: error {e:e}");
    }
}

#[test]
fn f16_cache_stays_within_its_rounding_of_the_f32_cache() {
    // Rounding K and V to FP16 (relative 2^-11) with |q| <= 3 and |k|, |v| <= 1 moves each
    // output by well under 5e-3 relative; the f32 cache stays within 1e-5 of the formula.
    let (f16b, f32b) = (
        CpuBackend::with_kv(KvPrecision::F16),
        CpuBackend::with_kv(KvPrecision::F32),
    );
    let mut rng = Rng::new(22);
    for s in SHAPES {
        let c = case(&mut rng, s);
        let want = reference(&c, &c.k, &c.v);
        let exact = run(&f32b, &c);
        assert!(max_err(&exact, &want) <= 1e-5, "{s:?} f32");
        let e = max_err(&run(&f16b, &c), &want);
        assert!(e <= 5e-3, "{s:?}: f16 error {e:e}");
        let diff = max_err(
            &run(&f16b, &c),
            &exact.iter().map(|&x| x as f64).collect::<Vec<_>>(),
        );
        assert!(
            diff > 0.0 || c.shape.pos0 + c.shape.rows == 1,
            "{s:?}: f16 path not taken"
        );
    }
}

#[test]
fn prefill_rows_equal_decode_steps_on_the_f16_cache() {
    // The same rows attended all at once (prefill) and one at a time as the cache fills
    // (decode) give identical outputs: each row sees exactly its causal prefix.
    let be = CpuBackend::new();
    assert_eq!(be.kv_precision(), KvPrecision::F16);
    let mut rng = Rng::new(23);
    for (rows, nh, nkv, hd) in [(9usize, 9usize, 3usize, 64usize), (6, 4, 2, 6)] {
        let c = case(&mut rng, (rows, 0, nh, nkv, hd));
        let all = run(&be, &c);
        let (qd, kvd) = (nh * hd, nkv * hd);
        let mut kc = be.alloc_cache(rows * kvd).unwrap();
        let mut vc = be.alloc_cache(rows * kvd).unwrap();
        for r in 0..rows {
            be.store_rows(&c.k[r * kvd..(r + 1) * kvd].to_vec(), &mut kc, 1, kvd, r)
                .unwrap();
            be.store_rows(&c.v[r * kvd..(r + 1) * kvd].to_vec(), &mut vc, 1, kvd, r)
                .unwrap();
            let shape = AttentionShape {
                rows: 1,
                pos0: r,
                ..c.shape
            };
            let mut out = vec![f32::NAN; qd];
            be.attention(
                &c.q[r * qd..(r + 1) * qd].to_vec(),
                &kc,
                &vc,
                &mut out,
                &shape,
            )
            .unwrap();
            assert_eq!(
                out,
                all[r * qd..(r + 1) * qd],
                "row {r} of {rows}x{nh}/{nkv}x{hd}"
            );
        }
    }
}

#[test]
fn mixed_precision_caches_are_an_error() {
    let be = CpuBackend::new();
    let shape = AttentionShape {
        rows: 1,
        pos0: 0,
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 4,
    };
    let k = KvCache::zeroed(KvPrecision::F16, 4).unwrap();
    let v = KvCache::zeroed(KvPrecision::F32, 4).unwrap();
    let mut out = vec![0.0; 8];
    let e = be
        .attention(&vec![0.0; 8], &k, &v, &mut out, &shape)
        .unwrap_err();
    assert!(e.to_string().contains("differ in precision"), "{e}");
}

/// `cases` through one `attention_batch` call.
fn run_batch(be: &CpuBackend, cases: &[Case]) -> Result<Vec<Vec<f32>>> {
    let stores: Vec<_> = cases.iter().map(|c| caches(be, c)).collect();
    let mut outs: Vec<Vec<f32>> = cases
        .iter()
        .map(|c| vec![f32::NAN; c.shape.rows * c.shape.n_heads * c.shape.head_dim])
        .collect();
    let mut jobs: Vec<AttentionJob<'_, CpuBackend>> = cases
        .iter()
        .zip(&stores)
        .zip(&mut outs)
        .map(|((c, (k, v)), out)| job(c, (k, v), out, c.shape))
        .collect();
    be.attention_batch(&mut jobs)?;
    drop(jobs);
    Ok(outs)
}

#[test]
fn batched_attention_gives_each_sequence_its_own_bits() {
    let mut rng = Rng::new(11);
    // Short contexts (run on the calling thread) and long ones (spread over the threads),
    // mixed shapes of one model and of several.
    for (seqs, shapes) in [
        (16, &[(1, 30, 9, 3, 64)][..]),
        (16, &[(1, 400, 9, 3, 64), (2, 250, 9, 3, 64)][..]),
        (5, &SHAPES[..]),
        (3, &[(1, 5, 2, 1, 8), (2, 1, 4, 2, 6)][..]),
    ] {
        for kv in [KvPrecision::F16, KvPrecision::F32] {
            let be = CpuBackend::with_kv(kv);
            let cases: Vec<Case> = (0..seqs)
                .map(|i| case(&mut rng, shapes[i % shapes.len()]))
                .collect();
            let batched = run_batch(&be, &cases).unwrap();
            for (c, got) in cases.iter().zip(&batched) {
                let alone = run(&be, c);
                assert_eq!(
                    got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    alone.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    "{kv:?} {:?}",
                    c.shape
                );
            }
        }
    }
}

/// A job of `c`'s query over caches `k`, `v` into `out`, with `shape`.
fn job<'a>(
    c: &'a Case,
    (k, v): (&'a KvCache, &'a KvCache),
    out: &'a mut Vec<f32>,
    shape: AttentionShape,
) -> AttentionJob<'a, CpuBackend> {
    AttentionJob {
        q: &c.q,
        k_cache: k,
        v_cache: v,
        out,
        shape,
    }
}

#[test]
fn batched_attention_checks_every_shape_and_cache() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(12);
    let good = case(&mut rng, (1, 4, 2, 1, 4));
    let (k, v) = caches(&be, &good);
    let f32_cache = KvCache::zeroed(KvPrecision::F32, k.len()).unwrap();
    let bad_shape = AttentionShape {
        n_kv_heads: 3,
        ..good.shape
    };
    // The second job is wrong in each case: an output too short, a head grouping that does
    // not divide, caches that differ in precision (the one-sequence error, named).
    for (second_out, second_shape, second_v) in [
        (3, good.shape, &v),
        (8, bad_shape, &v),
        (8, good.shape, &f32_cache),
    ] {
        let (mut out, mut out2) = (vec![0.0; 8], vec![0.0; second_out]);
        let mut jobs = vec![
            job(&good, (&k, &v), &mut out, good.shape),
            job(&good, (&k, second_v), &mut out2, second_shape),
        ];
        let e = be.attention_batch(&mut jobs).unwrap_err();
        if std::ptr::eq(second_v, &f32_cache) {
            assert!(e.to_string().contains("differ in precision"), "{e}");
        }
    }
}
