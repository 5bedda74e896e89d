//! Property tests of the packed formats: pack/unpack round trips, dequantisation error bounds,
//! and the CPU kernels on packed data against dequantise-then-f32, over random shapes and
//! group sizes including partial last groups.

use agentcompress::backend::cpu::CpuBackend;
use agentcompress::backend::Backend;
use agentcompress::model::Tensor;
use agentcompress::quant::int2_params::{
    decode_scale, decode_zero, encode_scale, encode_zero, Int2Params,
};
use agentcompress::quant::packed::packed_byte_len;
use agentcompress::quant::quantizer::{quantize_asym, quantize_int8, quantize_matrix, Method};
use agentcompress::quant::{Int2Matrix, Int4Matrix, Int8Matrix, WeightMatrix};
use agentcompress::util::rng::Rng;
use half::f16;
use proptest::prelude::*;

fn weights(seed: u64, n: usize) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n)
        .map(|_| r.normal() * 0.1 + r.uniform(-0.02, 0.02))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn codes_round_trip_through_the_packing(
        out in 1usize..5, inp in 1usize..300, gsel in 0usize..3, seed in any::<u64>()
    ) {
        let mut r = Rng::new(seed);
        let g4 = [32, 64, 128][gsel];
        let ng = inp.div_ceil(g4);
        let c4: Vec<i32> = (0..out * inp).map(|_| r.below(16) as i32).collect();
        let s: Vec<f16> = (0..out * ng).map(|_| f16::from_f32(r.uniform(0.01, 1.0))).collect();
        let z: Vec<f16> = (0..out * ng).map(|_| f16::from_f32(r.uniform(0.0, 15.0))).collect();
        let m = Int4Matrix::pack(out, inp, g4, &c4, s.clone(), z.clone()).unwrap();
        let deq = m.dequantize();
        for i in 0..out * inp {
            let (row, k) = (i / inp, i % inp);
            prop_assert_eq!(m.code(row, k), c4[i]);
            let gi = row * ng + k / g4;
            prop_assert_eq!(deq[i], (c4[i] as f32 - z[gi].to_f32()) * s[gi].to_f32());
        }
        prop_assert_eq!(m.row_words() * 4 % 16, 0);
        let back = Int4Matrix::from_parts(out, inp, g4, m.words().to_vec(), s, z).unwrap();
        prop_assert_eq!(back.dequantize(), deq);

        let g2 = [32, 64, 64][gsel];
        let ng2 = inp.div_ceil(g2);
        let c2: Vec<i32> = (0..out * inp).map(|_| r.below(4) as i32).collect();
        let m2 = Int2Matrix::pack(out, inp, g2, &c2, vec![f16::ONE; out * ng2], vec![f16::ZERO; out * ng2]).unwrap();
        for (i, &c) in c2.iter().enumerate() {
            prop_assert_eq!(m2.code(i / inp, i % inp), c);
        }
        let c8: Vec<i32> = (0..out * inp).map(|_| r.below(255) as i32 - 127).collect();
        let m8 = Int8Matrix::pack(out, inp, inp, &c8, vec![f16::ONE; out], vec![]).unwrap();
        prop_assert_eq!(m8.dequantize(), c8.iter().map(|&c| c as f32).collect::<Vec<_>>());
    }

    #[test]
    fn int2_parameter_codes_round_trip_through_bytes_and_decode(
        out in 1usize..6, inp in prop_oneof![Just(172usize), 1usize..400], gsel in 0usize..2,
        seed in any::<u64>()
    ) {
        let mut r = Rng::new(seed);
        let g = [32, 64][gsel];
        let ng = inp.div_ceil(g);
        let codes: Vec<i32> = (0..out * inp).map(|_| r.below(4) as i32).collect();
        let sup: Vec<f16> = (0..out).map(|_| f16::from_f32(r.uniform(1e-4, 4.0))).collect();
        let mut sc: Vec<u8> = (0..out * ng).map(|_| r.below(256) as u8).collect();
        let zc: Vec<u8> = (0..out * ng).map(|_| r.below(16) as u8).collect();
        for row in 0..out {
            sc[row * ng + row % ng] = 0; // the row's largest scale is its super-scale
        }
        let params = Int2Params::new(ng, sup.clone(), sc.clone(), zc.clone()).unwrap();
        let m = Int2Matrix::pack_int2(out, inp, g, &codes, params.clone()).unwrap();
        for i in 0..out * ng {
            prop_assert_eq!(m.scales()[i], decode_scale(sup[i / ng], sc[i]));
            prop_assert_eq!(m.zeros()[i], decode_zero(zc[i]));
        }
        for (i, &c) in codes.iter().enumerate() {
            prop_assert_eq!(m.code(i / inp, i % inp), c);
        }
        // The stored bytes give back the same codes, and the matrix they rebuild is identical.
        let zero_bytes = params.packed_zero_codes();
        prop_assert_eq!(zero_bytes.len(), out * ng.div_ceil(2));
        let back = Int2Params::from_bytes(out, ng, params.scale_codes(), &zero_bytes, &params.super_scale_bytes()).unwrap();
        prop_assert_eq!(&back, &params);
        let rebuilt = Int2Matrix::from_int2_parts(out, inp, g, m.words().to_vec(), back).unwrap();
        prop_assert_eq!(rebuilt.dequantize(), m.dequantize());
        // Decoded values re-encode losslessly.
        let again = Int2Params::from_decoded(ng, m.scales(), m.zeros()).unwrap();
        prop_assert_eq!(again.decode(), params.decode());
        prop_assert_eq!(m.byte_len(), packed_byte_len(2, out, inp, g));
        prop_assert_eq!(m.byte_len(), m.words().len() * 4 + params.byte_len());
    }

    #[test]
    fn scale_and_zero_codes_encode_to_the_nearest_grid_point(
        sup in 0.02f32..60.0, ratio in 0.0f32..9.0, z in -1.0f32..4.0
    ) {
        let sup = f16::from_f32(sup);
        for c in 0..=255u8 {
            prop_assert_eq!(encode_scale(sup, decode_scale(sup, c).to_f32()), c);
        }
        let s = sup.to_f32() * (-ratio * std::f32::consts::LN_2).exp();
        let c = encode_scale(sup, s);
        let d = decode_scale(sup, c).to_f32();
        if ratio < 255.0 / 32.0 {
            prop_assert!((d - s).abs() <= 0.0115 * s, "{} -> {} ({})", s, d, c);
        } else {
            prop_assert!(c >= 254);
        }
        let zc = encode_zero(z);
        let zd = decode_zero(zc).to_f32();
        prop_assert!((zd - z.clamp(0.0, 3.75)).abs() <= 0.125 + 1e-3, "{} -> {}", z, zd);
    }

    #[test]
    fn dequantisation_error_is_within_half_a_step(
        out in 1usize..4, inp in 1usize..260, gsel in 0usize..3, seed in any::<u64>()
    ) {
        let w = weights(seed, out * inp);
        let g = [32, 64, 128][gsel];
        let m4 = quantize_asym::<4>(&w, out, inp, g, Method::Rtn, None).unwrap();
        let m2 = quantize_asym::<2>(&w, out, inp, g.min(64), Method::Rtn, None).unwrap();
        let m8 = quantize_int8(&w, out, inp, inp).unwrap();
        for (deq, grp, sc) in [
            (m4.dequantize(), g, m4.scales()),
            (m2.dequantize(), g.min(64), m2.scales()),
            (m8.dequantize(), inp, m8.scales()),
        ] {
            let ng = inp.div_ceil(grp);
            for i in 0..out * inp {
                let s = sc[(i / inp) * ng + (i % inp) / grp].to_f32();
                let err = (deq[i] - w[i]).abs();
                prop_assert!(err <= 0.56 * s + 1e-6, "element {}: err {} step {}", i, err, s);
            }
        }
    }

    #[test]
    fn packed_matmul_matches_dequantised_f32(
        rows in 1usize..4, out in 1usize..70, inp in 1usize..300, bsel in 0usize..3,
        gsel in 0usize..3, seed in any::<u64>()
    ) {
        let bits = [8u32, 4, 2][bsel];
        let group = match bits {
            8 => [inp, 16, 32][gsel],
            4 => [32, 64, 128][gsel],
            _ => [32, 64, 64][gsel],
        };
        let w = weights(seed, out * inp);
        let m = quantize_matrix(&w, out, inp, bits, group, Method::Als, None).unwrap();
        let deq = m.dequantize();
        let x = weights(seed ^ 0xabc, rows * inp);
        // The packed format against its own dequantization: f32 activations (the int8
        // activation blocks of the VNNI path have their own bound in `qgemv_vnni`'s tests).
        let be = CpuBackend::exact();
        let packed = be.upload_matrix(&m).unwrap();
        let dense = be
            .upload_matrix(&WeightMatrix::Dense(Tensor::from_f32(&deq, vec![out, inp])))
            .unwrap();
        let (mut yp, mut yd) = (vec![0.0; rows * out], vec![0.0; rows * out]);
        be.matmul(&x, &packed, &mut yp, rows).unwrap();
        be.matmul(&x, &dense, &mut yd, rows).unwrap();
        for r in 0..rows {
            for o in 0..out {
                let mag: f32 = (0..inp).map(|k| (deq[o * inp + k] * x[r * inp + k]).abs()).sum();
                let (a, b) = (yp[r * out + o], yd[r * out + o]);
                prop_assert!((a - b).abs() <= 1e-5 * (1.0 + mag), "row {} out {}: {} vs {}", r, o, a, b);
            }
        }
    }
}
