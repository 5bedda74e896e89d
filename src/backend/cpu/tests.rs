//! Tests of the CPU backend's kernels against straightforward float64 formulas.

use super::*;
use crate::backend::NormShape;
use crate::model::RopeStyle;
use crate::util::rng::Rng;

fn close(a: &[f32], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len());
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x as f64 - y).abs() <= tol * (1.0 + y.abs()),
            "element {i}: {x} vs {y}"
        );
    }
}

#[test]
fn matmul_matches_f64_at_odd_sizes_single_and_batched() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(11);
    for &(rows, out, inp) in &[(1, 3, 5), (1, 300, 172), (3, 97, 64), (7, 129, 33)] {
        let w = rng.vec_uniform(out * inp, 1.0);
        let x = rng.vec_uniform(rows * inp, 1.0);
        let m = be
            .upload_matrix(&WeightMatrix::Dense(Tensor::from_f32(&w, vec![out, inp])))
            .unwrap();
        let mut y = vec![f32::NAN; rows * out];
        be.matmul(&x, &m, &mut y, rows).unwrap();
        let want: Vec<f64> = (0..rows)
            .flat_map(|r| {
                let (w, x) = (&w, &x);
                (0..out).map(move |o| {
                    (0..inp)
                        .map(|i| w[o * inp + i] as f64 * x[r * inp + i] as f64)
                        .sum()
                })
            })
            .collect();
        close(&y, &want, 1e-5);
    }
}

#[test]
fn f16_matrices_upload_to_the_same_values() {
    let be = CpuBackend::new();
    let vals = [0.5f32, -1.25, 2.0, 3.0, -0.75, 1.0];
    let bytes: Vec<u8> = vals
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    let m = be
        .upload_matrix(&WeightMatrix::Dense(Tensor::from_bytes(
            &bytes,
            vec![2, 3],
            DType::F16,
        )))
        .unwrap();
    let mut y = vec![0.0; 2];
    be.matmul(&vec![1.0, 2.0, 3.0], &m, &mut y, 1).unwrap();
    assert_eq!(y, vec![0.5 - 2.5 + 6.0, 3.0 - 1.5 + 3.0]);
}

#[test]
fn rmsnorm_rope_swiglu_match_formulas() {
    let be = CpuBackend::new();
    let x = vec![1.0, -2.0, 3.0, 0.5];
    let w = vec![1.0, 0.5, 2.0, -1.0];
    let mut out = vec![0.0; 4];
    be.rmsnorm(
        &x,
        &w,
        &mut out,
        &NormShape {
            rows: 1,
            dim: 4,
            eps: 1e-5,
        },
    )
    .unwrap();
    let rms = ((1.0 + 4.0 + 9.0 + 0.25) / 4.0f64 + 1e-5).sqrt();
    close(&out, &[1.0 / rms, -1.0 / rms, 6.0 / rms, -0.5 / rms], 1e-6);

    // Interleaved pairs (0,1),(2,3) vs rotate-half pairs (0,2),(1,3) at position 3.
    for (style, pairs) in [
        (RopeStyle::Interleaved, [(0, 1), (2, 3)]),
        (RopeStyle::RotateHalf, [(0, 2), (1, 3)]),
    ] {
        let mut h = x.clone();
        let p = RopeParams {
            rows: 1,
            n_heads: 1,
            head_dim: 4,
            pos0: 3,
            theta: 10000.0,
            style,
        };
        be.rope(&mut h, &p).unwrap();
        let mut want = [0f64; 4];
        for (i, &(j, k)) in pairs.iter().enumerate() {
            let a = 3.0 / 10000f64.powf(2.0 * i as f64 / 4.0);
            want[j] = x[j] as f64 * a.cos() - x[k] as f64 * a.sin();
            want[k] = x[j] as f64 * a.sin() + x[k] as f64 * a.cos();
        }
        close(&h, &want, 1e-5);
    }

    let mut o = vec![0.0; 2];
    be.swiglu(&vec![1.0, -3.0], &vec![2.0, 0.5], &mut o, 2)
        .unwrap();
    close(
        &o,
        &[2.0 / (1.0 + (-1f64).exp()), 0.5 * -3.0 / (1.0 + 3f64.exp())],
        1e-6,
    );
}

#[test]
fn attention_is_causal_grouped_and_matches_softmax() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(5);
    let (rows, pos0, nh, nkv, hd) = (3, 2, 4, 2, 6);
    let (qd, kvd) = (nh * hd, nkv * hd);
    let q = rng.vec_uniform(rows * qd, 1.0);
    let k = rng.vec_uniform((pos0 + rows) * kvd, 1.0);
    let v = rng.vec_uniform((pos0 + rows) * kvd, 1.0);
    let mut out = vec![f32::NAN; rows * qd];
    let shape = AttentionShape {
        rows,
        pos0,
        n_heads: nh,
        n_kv_heads: nkv,
        head_dim: hd,
    };
    let (kc, vc) = (KvCache::from(k.clone()), KvCache::from(v.clone()));
    be.attention(&q, &kc, &vc, &mut out, &shape).unwrap();
    let mut want = vec![0f64; rows * qd];
    for r in 0..rows {
        for h in 0..nh {
            let kh = h / (nh / nkv);
            let len = pos0 + r + 1;
            let s: Vec<f64> = (0..len)
                .map(|t| {
                    (0..hd)
                        .map(|i| q[r * qd + h * hd + i] as f64 * k[t * kvd + kh * hd + i] as f64)
                        .sum::<f64>()
                        / (hd as f64).sqrt()
                })
                .collect();
            let m = s.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
            for i in 0..hd {
                want[r * qd + h * hd + i] = (0..len)
                    .map(|t| (s[t] - m).exp() / z * v[t * kvd + kh * hd + i] as f64)
                    .sum();
            }
        }
    }
    close(&out, &want, 1e-5);
}

#[test]
fn bad_sizes_and_tokens_are_errors_not_panics() {
    let be = CpuBackend::new();
    let m = be
        .upload_matrix(&WeightMatrix::Dense(Tensor::from_f32(
            &[1.0; 6],
            vec![2, 3],
        )))
        .unwrap();
    let mut y = vec![0.0; 1];
    assert!(be.matmul(&vec![1.0; 3], &m, &mut y, 1).is_err());
    let mut e = vec![0.0; 3];
    let err = be.embed(&m, &[5], &mut e).unwrap_err().to_string();
    assert!(err.contains("token id 5"), "{err}");
    assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), 1);
}

#[test]
fn attention_wrapper_checks_the_shape_before_the_kernel_runs() {
    let be = CpuBackend::new();
    let shape = AttentionShape {
        rows: 2,
        pos0: 3,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 8,
    };
    let (q, k) = (vec![0.0; 64], vec![0.0; 80]);
    let mut out = vec![7.0; 64];
    let e = be
        .attention(
            &q,
            &k[..79].to_vec().into(),
            &k.clone().into(),
            &mut out,
            &shape,
        )
        .unwrap_err();
    assert!(e.to_string().contains("attention k cache"), "{e}");
    let bad = AttentionShape {
        n_kv_heads: 3,
        ..shape
    };
    let big = KvCache::from(vec![0.0; 1000]);
    let e = be.attention(&q, &big, &big, &mut out, &bad).unwrap_err();
    assert!(e.to_string().contains("n_kv_heads 3"), "{e}");
    assert!(
        out.iter().all(|&v| v == 7.0),
        "nothing written on a bad shape"
    );
}

#[test]
fn exact_backend_keeps_f32_activations_in_packed_products() {
    // The exact backend agrees with `row_dot` to f32 rounding at 1 and 5 rows; the default
    // one (int8 activations where the CPU has VNNI) within its activation quantization error.
    let mut rng = Rng::new(21);
    let m = crate::backend::cpu::qgemv::tests::random_matrix::<4>(37, 200, 64, &mut rng);
    let w = WeightMatrix::Int4(m.clone());
    for rows in [1, 5] {
        let x: Vec<f32> = (0..rows * 200)
            .map(|_| rng.next_f32() * 2.0 - 1.0)
            .collect();
        for (be, rel) in [(CpuBackend::exact(), 1e-5), (CpuBackend::new(), 2e-2)] {
            let cw = be.upload_matrix(&w).unwrap();
            let mut y = vec![f32::NAN; rows * 37];
            be.matmul(&x, &cw, &mut y, rows).unwrap();
            let (mut err, mut norm) = (0.0f64, 0.0f64);
            for r in 0..rows {
                for o in 0..37 {
                    let want = m.row_dot(o, &x[r * 200..(r + 1) * 200]) as f64;
                    err += (y[r * 37 + o] as f64 - want).powi(2);
                    norm += want * want;
                }
            }
            let rel_err = (err / norm).sqrt();
            assert!(
                rel_err <= rel,
                "{be:?} rows {rows}: relative L2 error {rel_err}"
            );
        }
    }
}

#[test]
fn copy_rows_moves_the_asked_rows_and_the_host_fallback_agrees() {
    use crate::backend::RowCopy;
    let be = CpuBackend::new();
    let src: Vec<f32> = (0..5 * 3).map(|i| i as f32).collect();
    let mut dst = vec![-1.0f32; 3 * 3 + 1];
    let c = RowCopy {
        from: 3,
        to: 1,
        rows: 2,
        width: 3,
    };
    be.copy_rows(&src, &mut dst, &c).unwrap();
    assert_eq!(
        dst,
        [-1.0, -1.0, -1.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, -1.0]
    );
    let mut host = vec![-1.0f32; 10];
    crate::backend::host_fallback::copy_rows(&be, &src, &mut host, &c).unwrap();
    assert_eq!(host, dst);
    // Rows past the source, a destination too short, and an overflow are named errors.
    let e = be
        .copy_rows(&src, &mut dst, &RowCopy { from: 4, ..c })
        .unwrap_err();
    assert!(e.to_string().contains("copy_rows source"), "{e}");
    let e = be
        .copy_rows(&src, &mut dst, &RowCopy { to: 2, ..c })
        .unwrap_err();
    assert!(e.to_string().contains("copy_rows destination"), "{e}");
    let e = be
        .copy_rows(
            &src,
            &mut dst,
            &RowCopy {
                from: usize::MAX,
                ..c
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("overflow"), "{e}");
}

#[test]
fn several_products_of_one_input_equal_the_products_one_by_one() {
    use crate::backend::cpu::qgemv::tests::random_matrix;
    let mut rng = Rng::new(31);
    let inp = 192;
    let f16 = |rng: &mut Rng, out: usize| {
        let w: Vec<u8> = (0..out * inp)
            .flat_map(|_| half::f16::from_f32(rng.next_f32() - 0.5).to_le_bytes())
            .collect();
        WeightMatrix::Dense(Tensor::from_bytes(&w, vec![out, inp], DType::F16))
    };
    // One layout (Q, K, V of INT4 or of FP16), and a mixture that takes the one-by-one path.
    let sets: Vec<Vec<WeightMatrix>> = vec![
        [64, 32, 32]
            .map(|o| WeightMatrix::Int4(random_matrix::<4>(o, inp, 64, &mut rng)))
            .to_vec(),
        [48, 17].map(|o| f16(&mut rng, o)).to_vec(),
        vec![
            WeightMatrix::Int8(random_matrix::<8>(40, inp, inp, &mut rng)),
            f16(&mut rng, 9),
            WeightMatrix::Int2(random_matrix::<2>(20, inp, 64, &mut rng)),
        ],
    ];
    for be in [CpuBackend::new(), CpuBackend::exact()] {
        for set in &sets {
            let mats: Vec<CpuMat> = set.iter().map(|w| be.upload_matrix(w).unwrap()).collect();
            for (rows, independent) in [(1, false), (3, false), (5, true), (40, true)] {
                let x: Vec<f32> = (0..rows * inp).map(|_| rng.next_f32() - 0.5).collect();
                let mut ys: Vec<Vec<f32>> = mats
                    .iter()
                    .map(|m| vec![f32::NAN; rows * m.dims().0])
                    .collect();
                let mut products: Vec<(&CpuMat, &mut Vec<f32>)> =
                    mats.iter().zip(ys.iter_mut()).collect();
                be.matmuls(&x, &mut products, rows, independent).unwrap();
                for (m, y) in mats.iter().zip(&ys) {
                    let mut alone = vec![f32::NAN; y.len()];
                    if independent {
                        be.matmul_batch(&x, m, &mut alone, rows).unwrap();
                    } else {
                        be.matmul(&x, m, &mut alone, rows).unwrap();
                    }
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(y), bits(&alone), "{be:?} {:?} rows {rows}", m.dims());
                }
            }
        }
    }
    // A short output is a typed error, not a panic.
    let be = CpuBackend::new();
    let m = be.upload_matrix(&sets[0][0]).unwrap();
    let mut short = vec![0.0f32; 10];
    let err = be
        .matmuls(&vec![0.0; inp], &mut [(&m, &mut short)], 1, false)
        .unwrap_err();
    assert!(err.to_string().contains("matmul out"), "{err}");
}

#[test]
fn argmax_agrees_with_the_one_pass_rule_on_ties_nans_and_signed_zeros() {
    use crate::backend::cpu::kernels::argmax_scalar;
    let mut rng = Rng::new(41);
    let specials = [f32::NAN, -0.0, 0.0, f32::NEG_INFINITY, f32::INFINITY, 2.0];
    for len in [0, 1, 15, 16, 17, 33, 100, 49152] {
        for trial in 0..20 {
            let mut x: Vec<f32> = (0..len).map(|_| (rng.below(8) as f32) - 4.0).collect();
            for _ in 0..trial % 4 {
                if len > 0 {
                    let i = rng.below(len as u64) as usize;
                    x[i] = specials[rng.below(specials.len() as u64) as usize];
                }
            }
            assert_eq!(argmax(&x), argmax_scalar(&x), "{x:?}");
        }
    }
    assert_eq!(argmax(&[f32::NAN, 1.0, 3.0]), 2);
    assert_eq!(argmax(&[-0.0, 0.0]), 0);
}

#[test]
fn argmax_rows_takes_each_rows_argmax_and_refuses_bad_shapes() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(43);
    let (rows, len) = (16, 1000);
    let mut x: Vec<f32> = (0..rows * len)
        .map(|_| (rng.below(50) as f32) - 25.0)
        .collect();
    x[3 * len + 7] = f32::NAN;
    x.extend([9e9; 5]); // past the rows asked for: never read
    let mut out = vec![u32::MAX; rows + 1];
    be.argmax_rows(&x, rows, len, &mut out).unwrap();
    for r in 0..rows {
        let want = argmax(&x[r * len..(r + 1) * len]) as u32;
        assert_eq!(out[r], want, "row {r}");
    }
    assert_eq!(out[rows], u32::MAX, "room past the rows is left alone");
    // The trait's default (the rows read to the host, then each row's argmax) agrees.
    let mut host = vec![0; rows];
    crate::backend::host_argmax_rows(&be, &x, rows, len, &mut host).unwrap();
    assert_eq!(host, out[..rows]);
    let err = |r: usize, l: usize, room: usize, buf: usize| {
        be.argmax_rows(&x[..buf].to_vec(), r, l, &mut vec![0; room])
            .unwrap_err()
            .to_string()
    };
    assert!(err(2, 0, 2, 10).contains("empty row"));
    assert!(err(3, 10, 2, 30).contains("room for 2"));
    assert!(err(3, 10, 3, 29).contains("argmax rows"));
    let mut room = vec![0; 2];
    let huge = be.argmax_rows(&x, 2, usize::MAX, &mut room).unwrap_err();
    assert!(huge.to_string().contains("overflows"), "{huge}");
}
