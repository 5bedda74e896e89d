//! Tests of the panel layout and its kernels: the layout against the packed codes, the VNNI
//! kernels bit for bit against the portable one and against themselves at every row count,
//! and the products against an f64 reference of the same arithmetic and the f32 product.

use super::*;
use crate::backend::cpu::qgemm_vnni::tests::inputs;
use crate::backend::cpu::qgemv::tests::random_matrix;
use crate::backend::cpu::qgemv_vnni::tests::{quantization_bound, reference};
use crate::util::rng::Rng;

/// Ragged shapes and every kind of group: (out, in, group). Outputs not a multiple of the
/// panel, K not a multiple of the block, groups of one block, of several, and one per row.
fn shapes(bits: u32) -> Vec<(usize, usize, usize)> {
    let mut s = vec![
        (1, 32, 32),
        (17, 64, 32),
        (40, 192, 64),
        (33, 576, 128),
        (16, 160, 128),
        (50, 100, 64),
    ];
    if bits == 8 {
        s.extend([(21, 172, 172), (16, 576, 576), (3, 31, 31), (18, 96, 96)]);
    }
    s
}

fn product<const BITS: u32>(m: &QPanels<BITS>, x: &[f32], rows: usize, simd: bool) -> Vec<f32> {
    product_on(m, x, rows, simd, false)
}

/// As [`product`], with AMX tiles for 16 rows or more when `amx`.
fn product_on<const BITS: u32>(
    m: &QPanels<BITS>,
    x: &[f32],
    rows: usize,
    simd: bool,
    amx: bool,
) -> Vec<f32> {
    let mut y = vec![f32::NAN; rows * m.out];
    assert!(QPanels::matmul_many_with(
        &mut [(m, &mut y[..])],
        x,
        rows,
        simd,
        amx
    ));
    y
}

fn bits_of(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

fn check_layout<const BITS: u32>() {
    let mut rng = Rng::new(11 + BITS as u64);
    for (out, inp, group) in shapes(BITS) {
        let m = random_matrix::<BITS>(out, inp, group, &mut rng);
        let q = QPanels::pack(&m).unwrap();
        assert_eq!(q.dims(), (out, inp));
        for o in 0..out {
            for k in 0..inp {
                let want = m.code(o, k) + if BITS == 8 { 128 } else { 0 };
                assert_eq!(
                    q.stored_code(o, k) as i32,
                    want,
                    "INT{BITS} {out}x{inp} ({o}, {k})"
                );
            }
            // The rest of the last block holds the zero code (INT8: 0 + 128).
            for k in inp..inp.div_ceil(32) * 32 {
                let pad = if BITS == 8 { 128 } else { 0 };
                assert_eq!(
                    q.stored_code(o, k),
                    pad,
                    "INT{BITS} {out}x{inp} pad ({o}, {k})"
                );
            }
            for g in 0..q.groups {
                let i = (o / PANEL * q.groups + g) * PANEL + o % PANEL;
                let (s, z) = m.params(o, g);
                assert_eq!(q.scales[i].to_f32(), s);
                if BITS != 8 {
                    assert_eq!(q.zeros[i].to_f32(), z);
                }
            }
        }
    }
}

#[test]
fn packing_keeps_every_code_and_parameter_at_its_documented_place() {
    check_layout::<8>();
    check_layout::<4>();
    check_layout::<2>();
}

#[test]
fn groups_that_split_an_activation_block_are_refused_with_a_typed_error() {
    let mut rng = Rng::new(5);
    let m = random_matrix::<8>(4, 64, 16, &mut rng);
    assert!(!QPanels::supports(&m));
    let err = QPanels::pack(&m).unwrap_err();
    assert!(err.to_string().contains("groups of 16"), "{err}");
}

fn check_products<const BITS: u32>() {
    let mut rng = Rng::new(101 + BITS as u64);
    let simd = super::super::qgemv_vnni::available();
    if !simd {
        eprintln!("SKIPPED (VNNI half): this CPU lacks AVX512-VNNI; checking the portable kernel");
    }
    let amx = simd && super::super::amx::supported();
    if !amx {
        eprintln!("SKIPPED (AMX half): this CPU or OS offers no AMX-INT8 tiles");
    }
    for (out, inp, group) in shapes(BITS) {
        let m = random_matrix::<BITS>(out, inp, group, &mut rng);
        let q = QPanels::pack(&m).unwrap();
        let rows = 40;
        let x = inputs(&mut rng, rows, inp);
        let portable = product(&q, &x, rows, false);
        for r in 0..rows {
            let xr = &x[r * inp..(r + 1) * inp];
            for o in 0..out {
                let v = portable[r * out + o] as f64;
                let (want, mag) = reference(&m, o, xr);
                assert!(
                    (v - want).abs() <= 1e-5 * mag + 1e-9,
                    "INT{BITS} {out}x{inp} g{group} x{r} w{o}: {v} vs reference {want}"
                );
                let f = m.row_dot(o, xr) as f64;
                let tol = quantization_bound(&m, o, xr) + 1e-5 * mag + 1e-6;
                assert!(
                    (v - f).abs() <= tol,
                    "INT{BITS} {out}x{inp} g{group} x{r} w{o}: {v} vs f32 {f} (tol {tol})"
                );
            }
        }
        if !simd {
            continue;
        }
        // Every row count gives every row the same bits, and the VNNI kernels the portable
        // kernel's bits.
        for n in [1, 2, 3, 4, 5, 7, 8, 9, 16, 19, 40] {
            let got = product(&q, &x[..n * inp], n, true);
            assert_eq!(
                bits_of(&got),
                bits_of(&portable[..n * out]),
                "INT{BITS} {out}x{inp} g{group}, {n} rows"
            );
        }
        if !amx {
            continue;
        }
        // AMX tiles (whole tiles of 16 rows and a ragged last one) give the same bits.
        for n in [16, 17, 33, 40] {
            let got = product_on(&q, &x[..n * inp], n, true, true);
            assert_eq!(
                bits_of(&got),
                bits_of(&portable[..n * out]),
                "INT{BITS} {out}x{inp} g{group}, {n} rows on AMX tiles"
            );
        }
    }
}

#[test]
fn int8_products_match_the_reference_and_agree_bit_for_bit_at_every_row_count() {
    check_products::<8>();
}

#[test]
fn int4_products_match_the_reference_and_agree_bit_for_bit_at_every_row_count() {
    check_products::<4>();
}

#[test]
fn int2_products_match_the_reference_and_agree_bit_for_bit_at_every_row_count() {
    check_products::<2>();
}

#[test]
fn a_product_with_no_rows_writes_nothing() {
    let mut rng = Rng::new(9);
    let q = QPanels::pack(&random_matrix::<4>(20, 64, 32, &mut rng)).unwrap();
    let mut y = vec![7.0f32; 4];
    q.matmul(&[], 0, &mut y);
    assert_eq!(y, [7.0; 4]);
}

#[test]
fn several_products_of_one_input_as_one_job_give_each_product_its_own_bits() {
    let mut rng = Rng::new(23);
    let (inp, rows) = (192, 3);
    let mats: Vec<QPanels<4>> = [40, 16, 7]
        .iter()
        .map(|&out| QPanels::pack(&random_matrix::<4>(out, inp, 64, &mut rng)).unwrap())
        .collect();
    let x = inputs(&mut rng, rows, inp);
    let mut ys: Vec<Vec<f32>> = mats.iter().map(|m| vec![f32::NAN; rows * m.out]).collect();
    {
        let mut products: Vec<(&QPanels<4>, &mut [f32])> = mats
            .iter()
            .zip(ys.iter_mut())
            .map(|(m, y)| (m, &mut y[..]))
            .collect();
        assert!(QPanels::matmul_many(&mut products, &x, rows));
    }
    for (m, y) in mats.iter().zip(&ys) {
        assert_eq!(
            bits_of(y),
            bits_of(&product(m, &x, rows, qgemv_vnni_available()))
        );
    }
    // Another group size needs another quantization of the input: refused, nothing written.
    let other = QPanels::pack(&random_matrix::<4>(16, inp, 32, &mut rng)).unwrap();
    let mut a = vec![f32::NAN; rows * 40];
    let mut b = vec![f32::NAN; rows * 16];
    assert!(!QPanels::matmul_many(
        &mut [(&mats[0], &mut a[..]), (&other, &mut b[..])],
        &x,
        rows
    ));
    assert!(a.iter().chain(&b).all(|v| v.is_nan()));
}

fn qgemv_vnni_available() -> bool {
    super::super::qgemv_vnni::available()
}
