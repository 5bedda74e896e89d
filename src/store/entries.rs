//! A variant file cut into residency entries (one per transformer block, plus one for the
//! embedding, final norm and classifier), and the way back from an entry's bytes to weights.
//!
//! An entry is read as one extent per tensor: the tensor's 4 KiB-aligned payload *with* its
//! zero padding (so every read is whole O_DIRECT blocks), placed back to back in the
//! destination. Each extent carries the crc32 of its padded bytes, derived from the directory's
//! crc32 of the payload, so the streaming pipeline verifies every tensor while it copies.
//! [`decode_layer`] and [`decode_globals`] then rebuild the weights from the entry's bytes
//! without touching the file again.

use super::format::{round_up, TensorEntry, VariantIndex, ALIGN};
use super::read::decode;
use crate::model::{LayerWeights, ModelConfig, Tensor};
use crate::quant::WeightMatrix;
use crate::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

/// Which entry of a variant file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryPart {
    /// Transformer block `i`.
    Layer(usize),
    /// The tensors outside the blocks: embedding, final norm, classifier.
    Globals,
}

/// One tensor of an entry: which directory entry, and where its bytes land.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    /// Index into [`VariantIndex::tensors`].
    pub tensor: usize,
    /// Offset of the payload inside the entry's bytes.
    pub dest: u64,
    /// Bytes read from the file: the payload rounded up to 4096 (its zero padding included).
    pub padded_len: u64,
    /// crc32 of those `padded_len` bytes (payload then zeros).
    pub padded_crc32: u32,
}

/// The tensors of one entry in file order, placed back to back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryLayout {
    /// What the entry holds.
    pub part: EntryPart,
    /// Its tensors.
    pub tensors: Vec<Placed>,
}

impl EntryLayout {
    /// Total bytes of the entry (sum of the padded payloads).
    pub fn total_len(&self) -> u64 {
        self.tensors.iter().map(|p| p.padded_len).sum()
    }
}

/// crc32 of `len` payload bytes whose crc is `crc`, followed by zeros up to `padded_len`.
fn padded_crc(crc: u32, len: u64, padded_len: u64) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial_len(crc, len);
    let zeros = [0u8; ALIGN as usize];
    let mut rest = padded_len - len;
    while rest > 0 {
        let n = rest.min(ALIGN);
        h.update(&zeros[..n as usize]);
        rest -= n;
    }
    h.finalize()
}

/// The layout of `part` in the variant `idx`; an error when the directory has no tensor of it.
pub fn entry_layout(idx: &VariantIndex, part: EntryPart) -> Result<EntryLayout> {
    let mut tensors = Vec::new();
    let mut dest = 0u64;
    for (i, t) in idx.tensors.iter().enumerate() {
        let belongs = match part {
            EntryPart::Layer(l) => t.layer == Some(l),
            EntryPart::Globals => t.layer.is_none(),
        };
        if !belongs {
            continue;
        }
        let padded_len = round_up(t.len.max(1), ALIGN);
        tensors.push(Placed {
            tensor: i,
            dest,
            padded_len,
            padded_crc32: padded_crc(t.crc32, t.len, padded_len),
        });
        dest += padded_len;
    }
    if tensors.is_empty() {
        return Err(Error::invalid(format!(
            "the variant has no tensors for {part:?}"
        )));
    }
    Ok(EntryLayout { part, tensors })
}

/// The embedding, final norm and classifier of a variant.
#[derive(Clone, Debug)]
pub struct Globals {
    /// Token embedding `[vocab, dim]`.
    pub embedding: Tensor,
    /// Final RMSNorm weight `[dim]`.
    pub final_norm: Tensor,
    /// Classifier `[vocab, dim]`; `None` when tied to the embedding.
    pub classifier: Option<WeightMatrix>,
}

/// Decodes the tensors of `layout` from `bytes` (the entry as the pool holds it) into a map by
/// name, checking each payload's crc32 when `verify`. Errors name the tensor.
fn decode_entry<'a>(
    path: &Path,
    idx: &'a VariantIndex,
    layout: &EntryLayout,
    bytes: &[u8],
    verify: bool,
) -> Result<HashMap<&'a str, WeightMatrix>> {
    if (bytes.len() as u64) < layout.total_len() {
        return Err(Error::corrupt(
            path,
            format!(
                "entry {:?} holds {} bytes, its tensors need {}",
                layout.part,
                bytes.len(),
                layout.total_len()
            ),
        ));
    }
    let mut out = HashMap::new();
    for p in &layout.tensors {
        let t: &TensorEntry = idx
            .tensors
            .get(p.tensor)
            .ok_or_else(|| Error::Internal(format!("tensor index {} out of range", p.tensor)))?;
        let payload = &bytes[p.dest as usize..(p.dest + t.len) as usize];
        if verify && crc32fast::hash(payload) != t.crc32 {
            return Err(Error::corrupt(
                path,
                format!(
                    "tensor {}: crc32 checksum mismatch (payload at offset {})",
                    t.name, t.offset
                ),
            ));
        }
        let m = decode(t, payload)
            .map_err(|e| Error::corrupt(path, format!("tensor {}: {e}", t.name)))?;
        out.insert(t.name.as_str(), m);
    }
    Ok(out)
}

/// Rebuilds block `i` of the variant `idx` (file `path`, named in errors) from `bytes`, the
/// entry laid out by `entry_layout(idx, EntryPart::Layer(i))`. With `verify`, every payload's
/// crc32 is checked again (the streaming pipeline already checks the padded extents).
pub fn decode_layer(
    path: &Path,
    idx: &VariantIndex,
    layout: &EntryLayout,
    bytes: &[u8],
    verify: bool,
) -> Result<LayerWeights<WeightMatrix>> {
    let EntryPart::Layer(i) = layout.part else {
        return Err(Error::invalid("decode_layer needs the layout of a layer"));
    };
    let mut map = decode_entry(path, idx, layout, bytes, verify)?;
    let l = assemble_layer(path, &idx.meta.config, i, &mut map)?;
    no_extra(path, &map)?;
    Ok(l)
}

/// Rebuilds the embedding, final norm and classifier from the globals entry's `bytes`.
pub fn decode_globals(
    path: &Path,
    idx: &VariantIndex,
    layout: &EntryLayout,
    bytes: &[u8],
    verify: bool,
) -> Result<Globals> {
    if layout.part != EntryPart::Globals {
        return Err(Error::invalid(
            "decode_globals needs the layout of the globals",
        ));
    }
    let mut map = decode_entry(path, idx, layout, bytes, verify)?;
    let g = assemble_globals(path, &idx.meta.config, &mut map)?;
    no_extra(path, &map)?;
    Ok(g)
}

/// Reads only the globals entry (embedding, final norm, classifier) of the variant file at
/// `path`: its index, then each global tensor's padded payload with positioned reads, so a
/// caller that needs the embedding table (the controller) does not read the transformer
/// blocks. With `verify`, every payload's crc32 is checked.
pub fn read_globals(path: &Path, verify: bool) -> Result<Globals> {
    use std::os::unix::fs::FileExt;
    let idx = super::read::read_index(path)?;
    let layout = entry_layout(&idx, EntryPart::Globals)?;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = vec![0u8; layout.total_len() as usize];
    for p in &layout.tensors {
        let t = &idx.tensors[p.tensor];
        let dst = &mut bytes[p.dest as usize..(p.dest + t.len) as usize];
        file.read_exact_at(dst, t.offset).map_err(|e| {
            Error::corrupt(
                path,
                format!(
                    "tensor {}: reading {} bytes at offset {}: {e}",
                    t.name, t.len, t.offset
                ),
            )
        })?;
    }
    decode_globals(path, &idx, &layout, &bytes, verify)
}

/// An error naming a decoded tensor that is not part of the model.
pub(super) fn no_extra(path: &Path, map: &HashMap<&str, WeightMatrix>) -> Result<()> {
    match map.keys().next() {
        Some(extra) => Err(Error::corrupt(
            path,
            format!("tensor {extra} is not part of the model"),
        )),
        None => Ok(()),
    }
}

/// Takes the matrix `name` out of `map`, checking its shape (`[n, 0]` means a vector of `n`).
fn take(
    path: &Path,
    map: &mut HashMap<&str, WeightMatrix>,
    name: &str,
    shape: [usize; 2],
) -> Result<WeightMatrix> {
    let m = map
        .remove(name)
        .ok_or_else(|| Error::corrupt(path, format!("tensor {name} is missing")))?;
    let ok = match &m {
        WeightMatrix::Dense(t) => {
            t.shape() == &shape[..] || (shape[1] == 0 && t.shape() == &shape[..1])
        }
        _ => m.dims() == (shape[0], shape[1]),
    };
    if !ok {
        return Err(Error::corrupt(
            path,
            format!("tensor {name} has the wrong shape for the model config (expected {shape:?})"),
        ));
    }
    Ok(m)
}

/// Takes the dense vector or table `name` out of `map`.
fn take_dense(
    path: &Path,
    map: &mut HashMap<&str, WeightMatrix>,
    name: &str,
    shape: [usize; 2],
) -> Result<Tensor> {
    match take(path, map, name, shape)? {
        WeightMatrix::Dense(t) => Ok(t),
        _ => Err(Error::corrupt(path, format!("tensor {name} must be dense"))),
    }
}

/// Assembles block `i` from the decoded tensors in `map` (removing them).
pub(super) fn assemble_layer(
    path: &Path,
    c: &ModelConfig,
    i: usize,
    map: &mut HashMap<&str, WeightMatrix>,
) -> Result<LayerWeights<WeightMatrix>> {
    let (d, h, q, kv) = (c.dim, c.hidden_dim, c.q_dim(), c.kv_dim());
    let n = |s: &str| format!("layers.{i}.{s}");
    let bias = |map: &mut HashMap<&str, WeightMatrix>, s: &str, len: usize| {
        if c.qkv_bias {
            take_dense(path, map, &n(s), [len, 0]).map(Some)
        } else {
            Ok(None)
        }
    };
    let (bq, bk, bv) = (
        bias(map, "bq", q)?,
        bias(map, "bk", kv)?,
        bias(map, "bv", kv)?,
    );
    Ok(LayerWeights {
        attn_norm: take_dense(path, map, &n("attn_norm"), [d, 0])?,
        wq: take(path, map, &n("wq"), [q, d])?,
        wk: take(path, map, &n("wk"), [kv, d])?,
        wv: take(path, map, &n("wv"), [kv, d])?,
        wo: take(path, map, &n("wo"), [d, q])?,
        bq,
        bk,
        bv,
        ffn_norm: take_dense(path, map, &n("ffn_norm"), [d, 0])?,
        w_gate: take(path, map, &n("w_gate"), [h, d])?,
        w_up: take(path, map, &n("w_up"), [h, d])?,
        w_down: take(path, map, &n("w_down"), [d, h])?,
    })
}

/// Assembles the embedding, final norm and classifier from `map` (removing them).
pub(super) fn assemble_globals(
    path: &Path,
    c: &ModelConfig,
    map: &mut HashMap<&str, WeightMatrix>,
) -> Result<Globals> {
    let embedding = take_dense(path, map, "embedding", [c.vocab_size, c.dim])?;
    let final_norm = take_dense(path, map, "final_norm", [c.dim, 0])?;
    let classifier = match map.contains_key("classifier") {
        true => Some(take(path, map, "classifier", [c.vocab_size, c.dim])?),
        false => None,
    };
    Ok(Globals {
        embedding,
        final_norm,
        classifier,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_crc_equals_crc_of_padded_bytes() {
        let payload: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut padded = payload.clone();
        padded.resize(8192, 0);
        let got = padded_crc(crc32fast::hash(&payload), 5000, 8192);
        assert_eq!(got, crc32fast::hash(&padded));
        assert_eq!(padded_crc(crc32fast::hash(&padded), 8192, 8192), got);
    }

    #[test]
    fn the_variant_manifest_marker_matches_the_loader() {
        assert_eq!(
            crate::model::load::VARIANT_MANIFEST,
            super::super::MANIFEST_FILE
        );
    }
}
