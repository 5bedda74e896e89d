use super::*;
use crate::util::rng::Rng;

/// Random row-major FP16 weights (as bytes and values) and f32 inputs.
fn random(rng: &mut Rng, out: usize, inp: usize, rows: usize) -> (Vec<u8>, Vec<f16>, Vec<f32>) {
    let w: Vec<f16> = (0..out * inp)
        .map(|_| f16::from_f32(rng.uniform(-1.0, 1.0)))
        .collect();
    let bytes = w.iter().flat_map(|h| h.to_le_bytes()).collect();
    let x = (0..rows * inp).map(|_| rng.uniform(-1.0, 1.0)).collect();
    (bytes, w, x)
}

/// Ragged shapes: outputs not a multiple of the panel, odd and tiny K.
const SHAPES: [(usize, usize); 6] = [(1, 1), (16, 2), (17, 3), (40, 65), (33, 576), (100, 31)];

#[test]
fn packing_keeps_every_weight_at_its_documented_place() {
    let mut rng = Rng::new(3);
    for (out, inp) in SHAPES {
        let (bytes, w, _) = random(&mut rng, out, inp, 0);
        let m = F16Panels::pack(&bytes, out, inp).unwrap();
        assert_eq!(m.dims(), (out, inp));
        assert_eq!(m.data.len(), out.div_ceil(PANEL) * PANEL * inp);
        for o in 0..out.div_ceil(PANEL) * PANEL {
            for k in 0..inp {
                let got = m.data[((o / PANEL) * inp + k) * PANEL + o % PANEL];
                let want = if o < out { w[o * inp + k] } else { f16::ZERO };
                assert_eq!(got.to_bits(), want.to_bits(), "{out}x{inp} at ({o}, {k})");
            }
        }
        let mut row = vec![0.0f32; inp];
        for o in 0..out {
            m.row_into(o, &mut row);
            let want: Vec<f32> = w[o * inp..(o + 1) * inp]
                .iter()
                .map(|h| h.to_f32())
                .collect();
            assert_eq!(row, want, "row {o} of {out}x{inp}");
        }
    }
}

#[test]
fn packing_rejects_a_byte_count_that_is_not_the_shape() {
    let err = F16Panels::pack(&[0u8; 10], 2, 3).unwrap_err();
    assert!(err.to_string().contains("needs 12 bytes, got 10"), "{err}");
    assert!(F16Panels::pack(&[], usize::MAX, 3).is_err());
}

/// The f32 result is within `(n_in + 2) * 2^-24 * sum |w x|` of the exact product (each
/// product is exact in f64; n FMA roundings plus the final add).
#[test]
fn products_match_an_f64_reference_for_every_row_count() {
    let mut rng = Rng::new(5);
    for (out, inp) in SHAPES {
        for rows in [1, 2, 5, 8, 9, 19] {
            let (bytes, w, x) = random(&mut rng, out, inp, rows);
            let m = F16Panels::pack(&bytes, out, inp).unwrap();
            let mut y = vec![f32::NAN; rows * out];
            m.matmul(&x, rows, &mut y);
            for r in 0..rows {
                for o in 0..out {
                    let (mut exact, mut mag) = (0.0f64, 0.0f64);
                    for k in 0..inp {
                        let p = w[o * inp + k].to_f32() as f64 * x[r * inp + k] as f64;
                        exact += p;
                        mag += p.abs();
                    }
                    let tol = (inp + 2) as f64 * f32::EPSILON as f64 / 2.0 * mag + 1e-30;
                    let got = y[r * out + o] as f64;
                    assert!(
                        (got - exact).abs() <= tol,
                        "{out}x{inp} rows {rows} ({r}, {o}): {got} vs {exact}"
                    );
                }
            }
        }
    }
}

#[test]
fn every_row_count_gives_each_row_the_bits_of_a_one_row_product() {
    let mut rng = Rng::new(7);
    for (out, inp) in [(40, 65), (33, 576), (16, 2), (64, 7), (48, 576)] {
        let rows = 21;
        let (bytes, _, x) = random(&mut rng, out, inp, rows);
        let m = F16Panels::pack(&bytes, out, inp).unwrap();
        let mut all = vec![0.0f32; rows * out];
        m.matmul(&x, rows, &mut all);
        for r in 0..rows {
            let mut one = vec![0.0f32; out];
            m.matmul(&x[r * inp..(r + 1) * inp], 1, &mut one);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&all[r * out..(r + 1) * out]),
                bits(&one),
                "{out}x{inp} row {r}"
            );
        }
    }
}

#[test]
fn avx512_kernels_and_the_portable_kernel_agree_bit_for_bit() {
    if !crate::backend::cpu::simd::avx512f() {
        eprintln!("SKIPPED: this CPU lacks AVX-512F/F16C");
        return;
    }
    let mut rng = Rng::new(11);
    for (out, inp) in SHAPES {
        for rows in [1, 2, 3, 6, 7, 8, 9, 13, 16, 64] {
            let (bytes, _, x) = random(&mut rng, out, inp, rows);
            let m = F16Panels::pack(&bytes, out, inp).unwrap();
            let (mut a, mut b) = (vec![0.0f32; rows * out], vec![1.0f32; rows * out]);
            F16Panels::matmul_many_with(&mut [(&m, &mut a[..])], &x, rows, true);
            F16Panels::matmul_many_with(&mut [(&m, &mut b[..])], &x, rows, false);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "{out}x{inp} rows {rows}");
        }
    }
}

#[test]
fn outputs_past_the_shape_are_never_written() {
    let mut rng = Rng::new(13);
    let (out, inp, rows) = (17, 9, 3);
    let (bytes, _, x) = random(&mut rng, out, inp, rows);
    let m = F16Panels::pack(&bytes, out, inp).unwrap();
    let mut y = vec![-7.0f32; rows * out + 40];
    m.matmul(&x, rows, &mut y);
    assert!(y[rows * out..].iter().all(|&v| v == -7.0));
}

#[test]
fn several_products_of_one_input_as_one_job_give_each_product_its_own_bits() {
    let mut rng = Rng::new(17);
    let (inp, rows) = (40, 5);
    let outs = [33, 16, 7];
    let mats: Vec<F16Panels> = outs
        .iter()
        .map(|&out| {
            let (bytes, _, _) = random(&mut rng, out, inp, 0);
            F16Panels::pack(&bytes, out, inp).unwrap()
        })
        .collect();
    let x: Vec<f32> = (0..rows * inp).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let mut ys: Vec<Vec<f32>> = outs.iter().map(|&o| vec![f32::NAN; rows * o]).collect();
    {
        let mut products: Vec<(&F16Panels, &mut [f32])> = mats
            .iter()
            .zip(ys.iter_mut())
            .map(|(m, y)| (m, &mut y[..]))
            .collect();
        F16Panels::matmul_many(&mut products, &x, rows);
    }
    for (m, y) in mats.iter().zip(&ys) {
        let mut alone = vec![0.0f32; y.len()];
        m.matmul(&x, rows, &mut alone);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(y), bits(&alone), "{:?}", m.dims());
    }
}
