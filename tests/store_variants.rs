//! The variant store: round trips of all four precisions, alignment of payloads and layer
//! ranges, and clear errors for corrupt, truncated and wrong-version files.

use agentcompress::backend::cpu::CpuBackend;
use agentcompress::engine::Model;
use agentcompress::model::synthetic::{preset, synthetic_weights};
use agentcompress::model::{DType, ModelWeights, Tensor};
use agentcompress::quant::{quantize_model, Precision, QuantConfig, WeightMatrix};
use agentcompress::store::{
    load_variant, read_globals, read_index, write_variant, LoadOptions, Segment, VariantIndex,
};
use std::path::Path;

fn dense() -> ModelWeights<Tensor> {
    let mut c = preset("tiny").unwrap();
    c.max_seq_len = 16;
    synthetic_weights(&c, 21, DType::F32).unwrap()
}

fn write(
    dir: &Path,
    p: Precision,
) -> (ModelWeights<WeightMatrix>, VariantIndex, std::path::PathBuf) {
    let cfg = QuantConfig::default();
    let w = quantize_model(&dense(), p, &cfg, None).unwrap();
    let path = dir.join(format!("{p}.acv"));
    let idx = write_variant(
        &path,
        &w,
        p.name(),
        &cfg,
        Some(("tokenizer.bin", b"tok-bytes")),
    )
    .unwrap();
    (w, idx, path)
}

fn logits(w: &ModelWeights<WeightMatrix>) -> Vec<f32> {
    let m = Model::new(CpuBackend::new(), w).unwrap();
    let mut st = m.new_state(8).unwrap();
    m.forward(&mut st, &[1, 5, 9, 300], true).unwrap()
}

#[test]
fn every_precision_round_trips_bit_exactly_with_aligned_layers() {
    let dir = tempfile::tempdir().unwrap();
    for p in Precision::ALL {
        let (w, written, path) = write(dir.path(), p);
        let (back, idx) = load_variant(&path, LoadOptions::default()).unwrap();
        assert_eq!(idx.tokenizer.as_deref(), Some(&b"tok-bytes"[..]));
        assert_eq!(idx.meta.precision, p.name());
        assert_eq!(idx.tensors, written.tensors);
        assert_eq!(logits(&w), logits(&back), "{p}");
        let file_len = std::fs::metadata(&path).unwrap().len();
        assert_eq!(file_len, idx.file_len);
        let segs = read_index(&path).unwrap().segments();
        assert_eq!(segs.len(), 2 + w.config.n_layers);
        assert_eq!(segs[0].segment, Segment::Embedding);
        assert_eq!(segs[1].segment, Segment::Layer(0));
        assert_eq!(segs.last().unwrap().segment, Segment::Head);
        for (a, b) in segs.iter().zip(&segs[1..]) {
            assert_eq!(a.offset + a.len, b.offset, "segments are contiguous");
        }
        assert!(segs
            .iter()
            .all(|s| s.offset % 4096 == 0 && s.len % 4096 == 0));
        assert_eq!(segs.last().map(|s| s.offset + s.len), Some(file_len));
        for t in &idx.tensors {
            assert_eq!(t.offset % 4096, 0, "{}", t.name);
            assert_eq!(t.scales_offset % 256, 0);
            assert_eq!(t.zeros_offset % 256, 0);
        }
    }
}

#[test]
fn a_flipped_payload_byte_names_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let (_, idx, path) = write(dir.path(), Precision::Int4);
    let t = idx.tensor("layers.2.w_up").unwrap();
    let mut b = std::fs::read(&path).unwrap();
    b[(t.offset + t.len / 2) as usize] ^= 0x10;
    std::fs::write(&path, &b).unwrap();
    let e = load_variant(&path, LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tensor layers.2.w_up") && e.contains("checksum"),
        "{e}"
    );
    // Skipping verification is explicit, and then the file loads.
    assert!(load_variant(
        &path,
        LoadOptions {
            verify_checksums: false
        }
    )
    .is_ok());
}

#[test]
fn a_truncated_file_names_the_first_missing_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let (_, idx, path) = write(dir.path(), Precision::Int2);
    let t = idx.tensor("layers.3.wo").unwrap();
    let b = std::fs::read(&path).unwrap();
    std::fs::write(&path, &b[..(t.offset + 10) as usize]).unwrap();
    let e = load_variant(&path, LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tensor layers.3.wo") && e.contains("truncated"),
        "{e}"
    );
    let e = read_index(&path).unwrap_err().to_string();
    assert!(e.contains("tensor layers.3.wo"), "{e}");
}

#[test]
fn wrong_version_or_magic_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, path) = write(dir.path(), Precision::Int8);
    let good = std::fs::read(&path).unwrap();
    let mut b = good.clone();
    b[8..12].copy_from_slice(&7u32.to_le_bytes());
    std::fs::write(&path, &b).unwrap();
    let e = load_variant(&path, LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("`version` is 7"), "{e}");
    let mut b = good.clone();
    b[0] = b'X';
    std::fs::write(&path, &b).unwrap();
    let e = read_index(&path).unwrap_err().to_string();
    assert!(e.contains("`magic`"), "{e}");
    let mut b = good;
    b[70] ^= 1; // inside the metadata JSON
    std::fs::write(&path, &b).unwrap();
    let e = read_index(&path).unwrap_err().to_string();
    assert!(e.contains("`header_crc`"), "{e}");
}

#[test]
fn int2_stores_its_compact_codes_and_bad_ones_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (w, idx, path) = write(dir.path(), Precision::Int2);
    let (back, _) = load_variant(&path, LoadOptions::default()).unwrap();
    let (WeightMatrix::Int2(a), WeightMatrix::Int2(b)) =
        (&w.layers[1].w_down, &back.layers[1].w_down)
    else {
        panic!("INT2 variant holds INT2 matrices");
    };
    assert_eq!(a.int2_params(), b.int2_params());
    assert_eq!(a.scales(), b.scales());
    let t = idx.tensor("layers.1.w_down").unwrap();
    let (out, inp) = a.dims();
    let ng = inp.div_ceil(t.group);
    assert_eq!(t.len, t.super_scales_offset + 2 * out as u64);
    assert_eq!(t.super_scales_offset % 256, 0);
    assert!(t.zeros_offset >= t.scales_offset + (out * ng) as u64);
    let no_crc = LoadOptions {
        verify_checksums: false,
    };
    // A zero super-scale and an out-of-grid padding nibble are named, tensor and field.
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    let at = (t.offset + t.super_scales_offset) as usize;
    bad[at..at + 2].copy_from_slice(&[0, 0]);
    std::fs::write(&path, &bad).unwrap();
    let e = load_variant(&path, no_crc).unwrap_err().to_string();
    assert!(
        e.contains("tensor layers.1.w_down") && e.contains("super-scale of row 0"),
        "{e}"
    );
    if ng % 2 == 1 {
        let mut bad = good.clone();
        bad[(t.offset + t.zeros_offset) as usize + ng / 2] |= 0x50;
        std::fs::write(&path, &bad).unwrap();
        let e = load_variant(&path, no_crc).unwrap_err().to_string();
        assert!(
            e.contains("tensor layers.1.w_down") && e.contains("nibble"),
            "{e}"
        );
    }
}

#[test]
fn random_corruption_without_checksums_never_panics() {
    for p in [Precision::Int4, Precision::Int2] {
        random_corruption(p);
    }
}

fn random_corruption(p: Precision) {
    let dir = tempfile::tempdir().unwrap();
    let (_, idx, path) = write(dir.path(), p);
    let good = std::fs::read(&path).unwrap();
    let covered = |at: u64| {
        at < idx.data_start
            || idx
                .tensors
                .iter()
                .any(|t| (t.offset..t.offset + t.len).contains(&at))
    };
    let mut rng = agentcompress::util::rng::Rng::new(17);
    let bad_path = dir.path().join("bad.acv");
    for _ in 0..64 {
        let mut b = good.clone();
        // Half the flips land in the header region, half anywhere.
        let span = if rng.below(2) == 0 {
            4096
        } else {
            b.len() as u64
        };
        let at = rng.below(span) as usize;
        b[at] ^= 1 << rng.below(8);
        std::fs::write(&bad_path, &b).unwrap();
        let opts = LoadOptions {
            verify_checksums: false,
        };
        // Either it loads (payload noise) or it fails with a message; it must not panic.
        if let Err(e) = load_variant(&bad_path, opts) {
            assert!(!e.to_string().is_empty());
        }
        // Every byte but alignment padding is covered by the header or a tensor checksum.
        if covered(at as u64) {
            assert!(
                load_variant(&bad_path, LoadOptions::default()).is_err(),
                "flip at {at}"
            );
        }
    }
}

#[test]
fn read_globals_reads_the_globals_alone_and_checks_them() {
    let dir = tempfile::tempdir().unwrap();
    for p in Precision::ALL {
        let (w, idx, path) = write(dir.path(), p);
        let g = read_globals(&path, true).unwrap();
        assert_eq!(g.embedding.to_f32_vec(), w.embedding.to_f32_vec(), "{p}");
        assert_eq!(g.final_norm.to_f32_vec(), w.final_norm.to_f32_vec(), "{p}");
        assert_eq!(g.classifier.is_some(), w.classifier.is_some(), "{p}");
        // A flipped byte inside a block's payload is not read at all ...
        let block = idx.tensors.iter().find(|t| t.layer == Some(0)).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[block.offset as usize] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        assert!(read_globals(&path, true).is_ok(), "{p}");
        // ... while one inside the embedding is caught and named.
        let emb = idx.tensors.iter().find(|t| t.layer.is_none()).unwrap();
        bytes[emb.offset as usize] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let err = read_globals(&path, true).unwrap_err().to_string();
        assert!(
            err.contains(&emb.name) && err.contains("crc32"),
            "{p}: {err}"
        );
    }
}
