//! Reading a variant file back into `ModelWeights<WeightMatrix>` (layout in
//! [`super::format`]). Errors name the header field or the tensor that is wrong.

use super::entries::{assemble_globals, assemble_layer, no_extra};
use super::format::*;
use crate::model::{DType, ModelWeights, Tensor};
use crate::quant::int2_params::Int2Params;
use crate::quant::{Packed, WeightMatrix};
use crate::{Error, Result};
use half::f16;
use std::collections::HashMap;
use std::path::Path;

/// How a variant is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Verify the header and every tensor's crc32 (default true; turning it off is explicit).
    pub verify_checksums: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            verify_checksums: true,
        }
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// Parses the header, metadata, tokenizer and directory from the start of a file of
/// `actual_len` bytes; `bytes` must hold at least the whole header region when present.
fn parse_index(path: &Path, bytes: &[u8], actual_len: u64, verify: bool) -> Result<VariantIndex> {
    let bad = |m: String| Error::corrupt(path, m);
    if bytes.len() < HEADER_LEN {
        return Err(bad(format!(
            "file of {} bytes is shorter than the {HEADER_LEN}-byte header",
            bytes.len()
        )));
    }
    if bytes[..8] != MAGIC {
        // The file's own bytes are not echoed: a wrong path may name any file.
        return Err(bad(format!(
            "header field `magic` is not {:?} (not an AgentCompress variant file)",
            String::from_utf8_lossy(&MAGIC)
        )));
    }
    let version = u32_at(bytes, 8);
    if version != VERSION {
        return Err(bad(format!(
            "header field `version` is {version}; this build reads version {VERSION}"
        )));
    }
    let crc = u32_at(bytes, 12);
    if u64_at(bytes, 56) != 0 {
        return Err(bad("header field `reserved` is not zero".into()));
    }
    let (meta_len, tok_len, dir_len) = (u64_at(bytes, 16), u64_at(bytes, 24), u64_at(bytes, 32));
    let (data_start, file_len) = (u64_at(bytes, 40), u64_at(bytes, 48));
    let body_end = (HEADER_LEN as u64)
        .checked_add(meta_len)
        .and_then(|v| v.checked_add(tok_len))
        .and_then(|v| v.checked_add(dir_len))
        .ok_or_else(|| bad("header lengths overflow".into()))?;
    if data_start % ALIGN != 0 || data_start < body_end {
        return Err(bad(format!(
            "header field `data_start` = {data_start} is not a 4096-aligned offset after the {body_end}-byte header"
        )));
    }
    if file_len % ALIGN != 0 || file_len < data_start {
        return Err(bad(format!(
            "header field `file_len` = {file_len} is not a 4096-aligned length after data_start {data_start}"
        )));
    }
    if (bytes.len() as u64) < data_start {
        return Err(bad(format!(
            "file of {actual_len} bytes is truncated inside its header region ({data_start} bytes)"
        )));
    }
    let body = &bytes[HEADER_LEN..data_start as usize];
    if verify && crc32fast::hash(body) != crc {
        return Err(bad(
            "header field `header_crc` does not match the metadata/tokenizer/directory bytes"
                .into(),
        ));
    }
    let (m0, t0, d0) = (0usize, meta_len as usize, (meta_len + tok_len) as usize);
    let meta: Meta =
        serde_json::from_slice(&body[m0..t0]).map_err(|e| bad(format!("metadata JSON: {e}")))?;
    let tokenizer = (tok_len > 0).then(|| body[t0..d0].to_vec());
    let tensors: Vec<TensorEntry> = serde_json::from_slice(&body[d0..d0 + dir_len as usize])
        .map_err(|e| bad(format!("tensor directory JSON: {e}")))?;
    for t in &tensors {
        let end = t.offset.checked_add(t.len);
        if t.offset % ALIGN != 0 || t.offset < data_start || end.is_none_or(|e| e > file_len) {
            return Err(bad(format!(
                "tensor {}: payload at {}+{} is not a 4096-aligned range inside the data ({data_start}..{file_len})",
                t.name, t.offset, t.len
            )));
        }
        if end.is_some_and(|e| e > actual_len) {
            return Err(bad(format!(
                "tensor {}: payload {}..{} runs past the end of the {actual_len}-byte file (truncated; header says {file_len})",
                t.name,
                t.offset,
                t.offset + t.len
            )));
        }
    }
    if actual_len < file_len {
        return Err(bad(format!(
            "file is {actual_len} bytes, header field `file_len` says {file_len} (truncated padding)"
        )));
    }
    Ok(VariantIndex {
        meta,
        tokenizer,
        tensors,
        data_start,
        file_len,
    })
}

/// Reads only the header and directory of a variant file (for readers that fetch payloads
/// themselves, e.g. with O_DIRECT).
pub fn read_index(path: &Path) -> Result<VariantIndex> {
    use std::io::Read;
    let io = |e| Error::io(path, e);
    let mut f = std::fs::File::open(path).map_err(io)?;
    let actual = f.metadata().map_err(io)?.len();
    let mut head = vec![0u8; HEADER_LEN.min(actual as usize)];
    f.read_exact(&mut head).map_err(io)?;
    let data_start = if head.len() == HEADER_LEN && head[..8] == MAGIC {
        u64_at(&head, 40).min(actual)
    } else {
        head.len() as u64
    };
    let mut all = head;
    all.resize(data_start as usize, 0);
    f.read_exact(&mut all[HEADER_LEN.min(data_start as usize)..])
        .map_err(io)?;
    parse_index(path, &all, actual, true)
}

fn f16s(b: &[u8]) -> Vec<f16> {
    b.chunks_exact(2)
        .map(|c| f16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// The byte lengths of a packed payload's parameter parts, in payload order: INT8 scales;
/// INT4 scales, zeros; INT2 scale codes, packed zero codes, super-scales.
fn part_lens(bits: u32, out: usize, ng: usize) -> Option<Vec<usize>> {
    let groups = out.checked_mul(ng)?;
    Some(match bits {
        8 => vec![groups.checked_mul(2)?],
        2 => vec![
            groups,
            out.checked_mul(ng.div_ceil(2))?,
            out.checked_mul(2)?,
        ],
        _ => vec![groups.checked_mul(2)?, groups.checked_mul(2)?],
    })
}

fn packed<const B: u32>(t: &TensorEntry, p: &[u8]) -> Result<Packed<B>> {
    let (out, inp) = (t.shape[0], t.shape[1]);
    Packed::<B>::check_group(inp, t.group)?;
    let ng = inp.div_ceil(t.group);
    let stride = crate::quant::packed::row_stride_bytes(B, inp, t.group);
    let too_big = || Error::invalid(format!("shape {:?} is too large", t.shape));
    let code_len = out.checked_mul(stride).ok_or_else(too_big)?;
    let lens = part_lens(B, out, ng).ok_or_else(too_big)?;
    let offsets = [t.scales_offset, t.zeros_offset, t.super_scales_offset];
    let names = match B {
        2 => ["scale codes", "zero codes", "super-scales"],
        _ => ["scales", "zeros", "super-scales"],
    };
    let mut end = code_len;
    let mut parts: Vec<&[u8]> = Vec::with_capacity(lens.len());
    for ((&len, &off), name) in lens.iter().zip(&offsets).zip(names) {
        let at = usize::try_from(off).map_err(|_| too_big())?;
        match at.checked_add(len) {
            Some(e) if at >= end && e <= p.len() => {
                parts.push(&p[at..e]);
                end = e;
            }
            _ => {
                return Err(Error::invalid(format!(
                    "{name} ({len} bytes at offset {off}) do not fit the {}-byte payload after byte {end}",
                    p.len()
                )))
            }
        }
    }
    let words = p[..code_len]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    match (B, &parts[..]) {
        (2, &[codes, zeros, supers]) => {
            let params = Int2Params::from_bytes(out, ng, codes, zeros, supers)?;
            Packed::<B>::from_int2_parts(out, inp, t.group, words, params)
        }
        (8, &[scales]) => Packed::<B>::from_parts(out, inp, t.group, words, f16s(scales), vec![]),
        (_, &[scales, zeros]) => {
            Packed::<B>::from_parts(out, inp, t.group, words, f16s(scales), f16s(zeros))
        }
        _ => Err(Error::Internal(format!("INT{B} has no payload layout"))),
    }
}

/// Builds the tensor or matrix of one entry from its payload.
pub(super) fn decode(t: &TensorEntry, p: &[u8]) -> Result<WeightMatrix> {
    let dense = |d: DType| -> Result<WeightMatrix> {
        let n = t.shape.iter().try_fold(d.size(), |a, &x| a.checked_mul(x));
        if n != Some(p.len()) {
            return Err(Error::invalid(format!(
                "{} bytes do not hold shape {:?}",
                p.len(),
                t.shape
            )));
        }
        Ok(WeightMatrix::Dense(Tensor::from_bytes(
            p,
            t.shape.clone(),
            d,
        )))
    };
    if !matches!(
        t.format,
        TensorFormat::F32 | TensorFormat::F16 | TensorFormat::Bf16
    ) && t.shape.len() != 2
    {
        return Err(Error::invalid(format!(
            "packed shape {:?} is not 2-D",
            t.shape
        )));
    }
    match t.format {
        TensorFormat::F32 => dense(DType::F32),
        TensorFormat::F16 => dense(DType::F16),
        TensorFormat::Bf16 => dense(DType::BF16),
        TensorFormat::Int8 => Ok(WeightMatrix::Int8(packed(t, p)?)),
        TensorFormat::Int4 => Ok(WeightMatrix::Int4(packed(t, p)?)),
        TensorFormat::Int2 => Ok(WeightMatrix::Int2(packed(t, p)?)),
    }
}

/// Loads a variant file: its weights (ready for `engine::Model::new`) and its index
/// (metadata, embedded tokenizer bytes, directory).
///
/// This reads any variant file; a variant a manifest lists is loaded through
/// [`super::ListedVariant::load`], which also checks the header against the manifest.
pub fn load_variant(
    path: &Path,
    opts: LoadOptions,
) -> Result<(ModelWeights<WeightMatrix>, VariantIndex)> {
    load_variant_checked(path, opts, |_| Ok(()))
}

/// [`load_variant`] with `check` run on the parsed header before any tensor is decoded.
pub(super) fn load_variant_checked(
    path: &Path,
    opts: LoadOptions,
    check: impl FnOnce(&VariantIndex) -> Result<()>,
) -> Result<(ModelWeights<WeightMatrix>, VariantIndex)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let idx = parse_index(path, &bytes, bytes.len() as u64, opts.verify_checksums)?;
    check(&idx)?;
    let mut by_name: HashMap<&str, WeightMatrix> = HashMap::new();
    for t in &idx.tensors {
        let p = &bytes[t.offset as usize..(t.offset + t.len) as usize];
        if opts.verify_checksums && crc32fast::hash(p) != t.crc32 {
            return Err(Error::corrupt(
                path,
                format!(
                    "tensor {}: crc32 checksum mismatch (payload at offset {})",
                    t.name, t.offset
                ),
            ));
        }
        let m =
            decode(t, p).map_err(|e| Error::corrupt(path, format!("tensor {}: {e}", t.name)))?;
        by_name.insert(&t.name, m);
    }
    let c = idx.meta.config.clone();
    c.validate()?;
    let g = assemble_globals(path, &c, &mut by_name)?;
    let layers = (0..c.n_layers)
        .map(|i| assemble_layer(path, &c, i, &mut by_name))
        .collect::<Result<Vec<_>>>()?;
    no_extra(path, &by_name)?;
    Ok((
        ModelWeights {
            config: c,
            embedding: g.embedding,
            layers,
            final_norm: g.final_norm,
            classifier: g.classifier,
        },
        idx,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::quantizer::{quantize_asym, Method};

    #[test]
    fn misplaced_int2_parts_are_named() {
        let w: Vec<f32> = (0..3 * 100)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) * 0.01)
            .collect();
        let m = quantize_asym::<2>(&w, 3, 100, 64, Method::Rtn, None).unwrap();
        let p = m.int2_params().unwrap();
        let mut payload = m.packed_bytes(); // 3 rows x 32 bytes
        payload.extend_from_slice(p.scale_codes()); // at 96
        payload.extend_from_slice(&p.packed_zero_codes()); // at 102
        payload.extend_from_slice(&p.super_scale_bytes()); // at 105
        let mut t = TensorEntry {
            name: "layers.0.wq".into(),
            layer: Some(0),
            format: TensorFormat::Int2,
            shape: vec![3, 100],
            group: 64,
            offset: 0,
            len: payload.len() as u64,
            scales_offset: 96,
            zeros_offset: 102,
            super_scales_offset: 105,
            crc32: 0,
        };
        let WeightMatrix::Int2(back) = decode(&t, &payload).unwrap() else {
            panic!("an INT2 entry decodes to INT2");
        };
        assert_eq!(back.dequantize(), m.dequantize());
        t.super_scales_offset = 106;
        let e = decode(&t, &payload).unwrap_err().to_string();
        assert!(e.contains("super-scales (6 bytes at offset 106)"), "{e}");
        t.super_scales_offset = 105;
        t.zeros_offset = 100;
        let e = decode(&t, &payload).unwrap_err().to_string();
        assert!(e.contains("zero codes (3 bytes at offset 100)"), "{e}");
    }
}
