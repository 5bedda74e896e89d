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
