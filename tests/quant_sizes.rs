//! Bits per weight of the four precisions at Llama-2-7B shape, computed arithmetically from the
//! packers' byte lengths (no weights allocated), and checked against a real packed matrix.

use agentcompress::model::synthetic::preset;
use agentcompress::quant::packed::packed_byte_len;
use agentcompress::quant::quantizer::{quantize_matrix, Method};
use agentcompress::quant::{size_report, Precision, QuantConfig};

#[test]
fn llama2_7b_bits_per_weight() {
    let c = preset("llama2-7b").unwrap();
    // The projection matrices alone: the classifier kept FP16 (by default it is INT8 in every
    // quantized variant, which the check after the loop covers).
    let cfg = QuantConfig {
        keep_classifier_fp16: true,
        ..QuantConfig::default()
    };
    for p in Precision::ALL {
        let r = size_report(&c, p, &cfg);
        let (bpw, total) = (r.quantized_bits_per_weight(), r.total_bits_per_weight());
        eprintln!(
            "{p}: matrices {bpw:.4} bits/weight, whole model {total:.4}, {} bytes",
            r.total_bytes
        );
        let nominal = p.bits() as f64;
        // Parameter bits per weight above nominal: FP16 scales (and zeros) per group for
        // INT8/INT4; for INT2 a u8 scale code and a 4-bit zero code per group plus one FP16
        // super-scale per row (of at least `dim` weights).
        let overhead = match p {
            Precision::Fp16 => 0.0,
            Precision::Int8 => 16.0 / c.dim.min(c.hidden_dim) as f64,
            Precision::Int4 => 32.0 / cfg.int4_group as f64,
            Precision::Int2 => 12.0 / cfg.int2_group as f64 + 16.0 / c.dim as f64,
        };
        assert!(
            bpw >= nominal && bpw <= nominal + overhead + 1e-9,
            "{p}: {bpw}"
        );
        assert!(
            bpw <= nominal * 1.10,
            "{p}: {bpw} is over 10% above {nominal}"
        );
        assert!(
            total > bpw || p == Precision::Fp16,
            "FP16 embedding adds to the total"
        );
    }
    // INT2's compact parameters: (128 + 8 + 4) / 64 = 2.1875 bits plus 16 bits per row.
    let i2 = size_report(&c, Precision::Int2, &cfg).quantized_bits_per_weight();
    assert!(i2 > 2.1875 && i2 <= 2.2, "{i2}");
    // The default INT8 classifier (one FP16 scale per row) saves just under half its FP16
    // bytes in every quantized variant and changes nothing in FP16.
    let (v, d) = (c.vocab_size as u64, c.dim as u64);
    for p in Precision::ALL {
        let fp16_cls = size_report(&c, p, &cfg).total_bytes;
        let int8_cls = size_report(&c, p, &QuantConfig::default()).total_bytes;
        let saved = if p == Precision::Fp16 {
            0
        } else {
            v * d - 2 * v
        };
        assert_eq!(fp16_cls - int8_cls, saved, "{p}");
    }
}

#[test]
fn arithmetic_sizes_match_a_real_packed_matrix() {
    // One odd-shaped matrix: 40 x 172 (partial last groups).
    let (out, inp) = (40, 172);
    let w: Vec<f32> = (0..out * inp)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) * 1e-3)
        .collect();
    for (bits, g) in [
        (8u32, 172usize),
        (8, 32),
        (4, 32),
        (4, 128),
        (2, 32),
        (2, 64),
    ] {
        let m = quantize_matrix(&w, out, inp, bits, g, Method::Rtn, None).unwrap();
        assert_eq!(
            m.byte_len(),
            packed_byte_len(bits, out, inp, g),
            "INT{bits} g{g}"
        );
    }
}
