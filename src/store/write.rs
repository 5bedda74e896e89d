//! Writing a variant file (layout in [`super::format`]).

use super::format::*;
use crate::model::{ModelWeights, Tensor};
use crate::quant::{Packed, QuantConfig, WeightMatrix};
use crate::{Error, Result};
use std::io::Write;
use std::path::Path;

/// One tensor to store: a dense tensor or a matrix.
enum Item<'a> {
    Dense(&'a Tensor),
    Matrix(&'a WeightMatrix),
}

/// A packed payload: the code rows, then each parameter part at a 256-aligned offset (INT8:
/// FP16 scales; INT4: FP16 scales, zeros; INT2: scale codes, packed zero codes, FP16
/// super-scales). Returns the bytes and the parts' offsets (0 where absent).
fn packed_payload<const B: u32>(m: &Packed<B>) -> (Vec<u8>, [u64; 3]) {
    let f16_bytes = |v: &[half::f16]| v.iter().flat_map(|s| s.to_le_bytes()).collect::<Vec<_>>();
    let parts: Vec<Vec<u8>> = match m.int2_params() {
        Some(p) => vec![
            p.scale_codes().to_vec(),
            p.packed_zero_codes(),
            p.super_scale_bytes(),
        ],
        None if m.zeros().is_empty() => vec![f16_bytes(m.scales())],
        None => vec![f16_bytes(m.scales()), f16_bytes(m.zeros())],
    };
    let mut bytes = m.packed_bytes();
    let mut offsets = [0u64; 3];
    for (part, off) in parts.iter().zip(&mut offsets) {
        bytes.resize(round_up(bytes.len() as u64, PART_ALIGN) as usize, 0);
        *off = bytes.len() as u64;
        bytes.extend_from_slice(part);
    }
    (bytes, offsets)
}

/// Payload bytes and a directory entry template (offset and crc filled in by the caller).
fn payload(name: String, layer: Option<usize>, item: &Item<'_>) -> (Vec<u8>, TensorEntry) {
    let dense = |t: &Tensor| {
        (
            t.bytes().to_vec(),
            TensorFormat::dense(t.dtype()),
            t.shape().to_vec(),
        )
    };
    let (bytes, format, shape, group, [so, zo, uo]) = match item {
        Item::Dense(t) => {
            let (b, f, s) = dense(t);
            (b, f, s, 0, [0; 3])
        }
        Item::Matrix(WeightMatrix::Dense(t)) => {
            let (b, f, s) = dense(t);
            (b, f, s, 0, [0; 3])
        }
        Item::Matrix(WeightMatrix::Int8(m)) => {
            let (b, offs) = packed_payload(m);
            let (o, i) = m.dims();
            (b, TensorFormat::Int8, vec![o, i], m.group_size(), offs)
        }
        Item::Matrix(WeightMatrix::Int4(m)) => {
            let (b, offs) = packed_payload(m);
            let (o, i) = m.dims();
            (b, TensorFormat::Int4, vec![o, i], m.group_size(), offs)
        }
        Item::Matrix(WeightMatrix::Int2(m)) => {
            let (b, offs) = packed_payload(m);
            let (o, i) = m.dims();
            (b, TensorFormat::Int2, vec![o, i], m.group_size(), offs)
        }
    };
    let entry = TensorEntry {
        name,
        layer,
        format,
        shape,
        group,
        offset: 0,
        len: bytes.len() as u64,
        scales_offset: so,
        zeros_offset: zo,
        super_scales_offset: uo,
        crc32: crc32fast::hash(&bytes),
    };
    (bytes, entry)
}

/// The model's tensors in forward (file) order.
fn items(w: &ModelWeights<WeightMatrix>) -> Vec<(String, Option<usize>, Item<'_>)> {
    let mut v = vec![("embedding".to_string(), None, Item::Dense(&w.embedding))];
    for (i, l) in w.layers.iter().enumerate() {
        let n = |s: &str| format!("layers.{i}.{s}");
        v.push((n("attn_norm"), Some(i), Item::Dense(&l.attn_norm)));
        for (name, m) in [("wq", &l.wq), ("wk", &l.wk), ("wv", &l.wv), ("wo", &l.wo)] {
            v.push((n(name), Some(i), Item::Matrix(m)));
        }
        for (name, b) in [("bq", &l.bq), ("bk", &l.bk), ("bv", &l.bv)] {
            if let Some(b) = b {
                v.push((n(name), Some(i), Item::Dense(b)));
            }
        }
        v.push((n("ffn_norm"), Some(i), Item::Dense(&l.ffn_norm)));
        for (name, m) in [
            ("w_gate", &l.w_gate),
            ("w_up", &l.w_up),
            ("w_down", &l.w_down),
        ] {
            v.push((n(name), Some(i), Item::Matrix(m)));
        }
    }
    v.push(("final_norm".into(), None, Item::Dense(&w.final_norm)));
    if let Some(c) = &w.classifier {
        v.push(("classifier".into(), None, Item::Matrix(c)));
    }
    v
}

/// Writes `weights` as a variant file at `path`; `tokenizer` is `(file name, bytes)` of the
/// tokenizer to embed. Returns the index of what was written.
pub fn write_variant(
    path: &Path,
    weights: &ModelWeights<WeightMatrix>,
    precision: &str,
    quant: &QuantConfig,
    tokenizer: Option<(&str, &[u8])>,
) -> Result<VariantIndex> {
    let io = |e| Error::io(path, e);
    let meta = Meta {
        config: weights.config.clone(),
        precision: precision.to_string(),
        quant: quant.clone(),
        tokenizer_name: tokenizer.map(|(n, _)| n.to_string()),
    };
    let meta_json = serde_json::to_vec(&meta).map_err(|e| Error::Internal(e.to_string()))?;
    let tok = tokenizer.map(|(_, b)| b).unwrap_or(&[]);
    let items = items(weights);
    // Pass 1: lengths and checksums (payloads are rebuilt in pass 2 to bound memory).
    let mut entries: Vec<TensorEntry> = items
        .iter()
        .map(|(n, l, it)| payload(n.clone(), *l, it).1)
        .collect();
    let fixed = (HEADER_LEN + meta_json.len() + tok.len()) as u64;
    let mut data_start = round_up(fixed + 1, ALIGN);
    let dir_json = loop {
        let mut off = data_start;
        for e in entries.iter_mut() {
            e.offset = off;
            off += round_up(e.len.max(1), ALIGN);
        }
        let dir = serde_json::to_vec(&entries).map_err(|e| Error::Internal(e.to_string()))?;
        if fixed + dir.len() as u64 <= data_start {
            break dir;
        }
        data_start = round_up(fixed + dir.len() as u64, ALIGN);
    };
    let file_len = entries
        .last()
        .map_or(data_start, |e| e.offset + round_up(e.len.max(1), ALIGN));
    let mut body = Vec::with_capacity((data_start - HEADER_LEN as u64) as usize);
    body.extend_from_slice(&meta_json);
    body.extend_from_slice(tok);
    body.extend_from_slice(&dir_json);
    body.resize((data_start - HEADER_LEN as u64) as usize, 0);
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(&MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    for v in [
        meta_json.len() as u64,
        tok.len() as u64,
        dir_json.len() as u64,
        data_start,
        file_len,
        0,
    ] {
        header.extend_from_slice(&v.to_le_bytes());
    }
    let file = std::fs::File::create(path).map_err(io)?;
    let mut f = std::io::BufWriter::with_capacity(1 << 20, file);
    f.write_all(&header).map_err(io)?;
    f.write_all(&body).map_err(io)?;
    for ((n, l, it), e) in items.iter().zip(&entries) {
        let (mut bytes, _) = payload(n.clone(), *l, it);
        bytes.resize(round_up(e.len.max(1), ALIGN) as usize, 0);
        f.write_all(&bytes).map_err(io)?;
    }
    f.flush().map_err(io)?;
    Ok(VariantIndex {
        meta,
        tokenizer: tokenizer.map(|(_, b)| b.to_vec()),
        tensors: entries,
        data_start,
        file_len,
    })
}
