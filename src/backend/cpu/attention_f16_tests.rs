//! The register-tiled value accumulation against the in-memory one: the same FMAs in the same
//! order, so the same bits, for every head width it takes and every group size.

use super::*;
use crate::util::rng::Rng;

#[test]
fn register_tiled_values_give_the_bits_of_the_in_memory_accumulation() {
    if !super::super::simd::avx512f() {
        eprintln!("SKIPPED: this CPU lacks AVX-512F/F16C");
        return;
    }
    let mut rng = Rng::new(5);
    for hd in [64, 128] {
        for group in 1..=5 {
            let (len, kv_off) = (37, hd);
            let kv_dim = 2 * hd + 16;
            let p: Vec<f32> = (0..group * len).map(|_| rng.next_f32()).collect();
            let v: Vec<f16> = (0..len * kv_dim)
                .map(|_| f16::from_f32(rng.next_f32() * 2.0 - 1.0))
                .collect();
            let start: Vec<f32> = (0..group * hd).map(|_| rng.next_f32()).collect();
            let (mut tiled, mut memory) = (start.clone(), start);
            // SAFETY: the CPU was checked; every row holds `kv_off + hd <= kv_dim` columns.
            unsafe {
                values_avx512(&p, &v, len, kv_dim, kv_off, hd, &mut tiled);
                values_memory_avx512(&p, &v, len, kv_dim, kv_off, hd, &mut memory);
            }
            let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&tiled), bits(&memory), "hd {hd}, group {group}");
        }
    }
}

#[test]
fn vector_softmax_matches_an_f64_softmax_at_every_tail_length() {
    if !super::super::simd::avx512f() {
        eprintln!("SKIPPED: this CPU lacks AVX-512F");
        return;
    }
    let mut rng = Rng::new(11);
    for len in 1..=70 {
        let row: Vec<f32> = (0..len).map(|_| (rng.next_f32() - 0.5) * 40.0).collect();
        let mut got = row.clone();
        softmax_rows(&mut got, len);
        // The differences from the maximum are f32 in any f32 softmax; exact from there on.
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e = |x: f32| ((x - max) as f64).exp();
        let sum: f64 = row.iter().map(|&x| e(x)).sum();
        for (&x, &g) in row.iter().zip(&got) {
            let want = e(x) / sum;
            assert!(
                (g as f64 - want).abs() <= 1e-6 * want.max(1e-30) + 1e-37,
                "len {len}: {g} vs {want}"
            );
        }
    }
}

#[test]
fn whole_row_attention_gives_each_head_the_bits_of_the_per_group_attention() {
    let mut rng = Rng::new(9);
    for (hd, n_kv, group) in [(64, 3, 3), (64, 1, 4), (128, 2, 2), (32, 2, 3), (80, 2, 1)] {
        for len in [1, 15, 16, 17, 63, 64, 65, 130, 300] {
            let kv_dim = n_kv * hd;
            let q_len = n_kv * group * hd;
            let q: Vec<f32> = (0..q_len).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
            let cache = |rng: &mut Rng| -> Vec<f16> {
                (0..len * kv_dim)
                    .map(|_| f16::from_f32(rng.next_f32() * 2.0 - 1.0))
                    .collect()
            };
            let (k, v) = (cache(&mut rng), cache(&mut rng));
            let mut whole = vec![0.0f32; q_len];
            attend_row_f16(&q, &k, &v, len, n_kv, hd, &mut whole);
            let width = group * hd;
            let mut per_group = vec![0.0f32; q_len];
            for g in 0..n_kv {
                let qg = &q[g * width..(g + 1) * width];
                let og = &mut per_group[g * width..(g + 1) * width];
                attend_group_f16(qg, &k, &v, len, kv_dim, g * hd, hd, og);
            }
            let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&whole),
                bits(&per_group),
                "hd {hd}, {n_kv} KV heads, len {len}"
            );
        }
    }
}
