//! The forward pass agrees with itself: prefill in chunks of any size gives the same logits as
//! token-by-token decoding, for every shape feature (GQA, q/k/v biases, both RoPE styles).

use agentcompress::backend::cpu::CpuBackend;
use agentcompress::engine::Model;
use agentcompress::model::synthetic::{preset, synthetic_weights};
use agentcompress::model::{DType, RopeStyle};

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn chunked_prefill_equals_step_by_step_decode() {
    for (style, bias, kv) in [
        (RopeStyle::Interleaved, false, 4),
        (RopeStyle::RotateHalf, true, 2),
        (RopeStyle::RotateHalf, false, 8),
    ] {
        let mut cfg = preset("tiny").unwrap();
        cfg.rope_style = style;
        cfg.qkv_bias = bias;
        cfg.n_kv_heads = kv;
        cfg.tied_embeddings = !bias;
        let w = synthetic_weights(&cfg, 99, DType::F32).unwrap();
        let m = Model::new(CpuBackend::new(), &w).unwrap();
        let tokens: Vec<u32> = (0..11)
            .map(|i| (i * 37 + 5) % cfg.vocab_size as u32)
            .collect();

        let mut one = m.new_state(1).unwrap();
        let stepwise = m.forward(&mut one, &tokens, true).unwrap();
        for chunk in [3, 11, 64] {
            let mut s = m.new_state(chunk).unwrap();
            let all = m.forward(&mut s, &tokens, true).unwrap();
            let d = max_diff(&all, &stepwise);
            assert!(
                d < 1e-4,
                "{style:?} bias={bias} kv={kv} chunk={chunk}: max diff {d}"
            );
            assert_eq!(s.pos(), tokens.len());
        }
        // Continuing after a prefill equals a longer prefill.
        let mut s = m.new_state(4).unwrap();
        m.forward(&mut s, &tokens[..7], false).unwrap();
        let tail = m.forward(&mut s, &tokens[7..], false).unwrap();
        let v = cfg.vocab_size;
        assert!(max_diff(&tail, &stepwise[(tokens.len() - 1) * v..]) < 1e-4);
    }
}

#[test]
fn context_overflow_and_empty_input_are_errors() {
    let mut cfg = preset("tiny").unwrap();
    cfg.max_seq_len = 8;
    let w = synthetic_weights(&cfg, 1, DType::F32).unwrap();
    let m = Model::new(CpuBackend::new(), &w).unwrap();
    let mut s = m.new_state(4).unwrap();
    assert!(m.forward(&mut s, &[], false).is_err());
    let e = m.forward(&mut s, &[1; 9], false).unwrap_err().to_string();
    assert!(e.contains("exceeds the model's context of 8"), "{e}");
    let e = m.forward(&mut s, &[600], false).unwrap_err().to_string();
    assert!(e.contains("600"), "{e}");
}

/// `forward_into` writes what `forward` returns, replacing whatever the buffer held (longer
/// or shorter), and rejects an empty input as `forward` does.
#[test]
fn forward_into_reuses_a_buffer_and_matches_forward() {
    let cfg = preset("tiny").unwrap();
    let w = synthetic_weights(&cfg, 5, DType::F32).unwrap();
    let m = Model::new(CpuBackend::new(), &w).unwrap();
    let v = cfg.vocab_size;
    let tokens: Vec<u32> = (0..9).map(|i| (i * 11 + 3) % v as u32).collect();
    let mut a = m.new_state(4).unwrap();
    let mut b = m.new_state(4).unwrap();
    let mut buf = vec![f32::NAN; 3 * v + 17];
    for (span, all) in [(0..5, true), (5..6, false), (6..9, true)] {
        let want = m.forward(&mut a, &tokens[span.clone()], all).unwrap();
        m.forward_into(&mut b, &tokens[span.clone()], all, &mut buf)
            .unwrap();
        let rows = if all { span.len() } else { 1 };
        assert_eq!(buf.len(), rows * v, "{span:?}");
        let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&buf), bits(&want), "{span:?}");
    }
    assert_eq!(a.pos(), b.pos());
    assert!(m.forward_into(&mut b, &[], true, &mut buf).is_err());
}
