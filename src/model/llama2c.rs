//! Loader for llama2.c `.bin` checkpoints (float32, memory-mapped, zero-copy).
//!
//! Layout: seven little-endian i32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
//! seq_len; a negative vocab_size means an untied classifier follows), then float32 tensors:
//! token_embedding [vocab, dim], rms_att [L, dim], wq [L, q, dim], wk [L, kv, dim],
//! wv [L, kv, dim], wo [L, dim, q], rms_ffn [L, dim], w1 [L, hidden, dim], w2 [L, dim, hidden],
//! w3 [L, hidden, dim], rms_final \[dim\], two legacy RoPE tables of seq_len*head/2 floats each,
//! then wcls [vocab, dim] when untied. RoPE is interleaved, theta 10000, RMSNorm eps 1e-5.

use super::input_file::open_regular;
use super::{DType, LayerWeights, ModelConfig, ModelWeights, RopeStyle, Tensor};
use crate::{Error, Result};
use memmap2::Mmap;
use std::path::Path;
use std::sync::Arc;

/// Size of the header in bytes.
pub const HEADER_BYTES: usize = 28;

/// Reads the seven-integer header into a config, naming the first implausible field.
pub fn parse_header(path: &Path, bytes: &[u8]) -> Result<(ModelConfig, bool)> {
    if bytes.len() < HEADER_BYTES {
        return Err(Error::corrupt(
            path,
            format!(
                "llama2.c header needs {HEADER_BYTES} bytes, file has {}",
                bytes.len()
            ),
        ));
    }
    let field = |i: usize| {
        i32::from_le_bytes([
            bytes[4 * i],
            bytes[4 * i + 1],
            bytes[4 * i + 2],
            bytes[4 * i + 3],
        ])
    };
    let names = [
        "dim",
        "hidden_dim",
        "n_layers",
        "n_heads",
        "n_kv_heads",
        "vocab_size",
        "seq_len",
    ];
    let vals: Vec<i32> = (0..7).map(field).collect();
    for (i, (&v, name)) in vals.iter().zip(names).enumerate() {
        let ok = if i == 5 {
            v != 0 && v.unsigned_abs() <= 1 << 22
        } else {
            v > 0 && v <= 1 << 20
        };
        if !ok {
            return Err(Error::corrupt(
                path,
                format!("llama2.c header field {name} = {v} is out of range"),
            ));
        }
    }
    let (dim, n_heads) = (vals[0] as usize, vals[3] as usize);
    if dim % n_heads != 0 {
        return Err(Error::corrupt(
            path,
            format!("llama2.c header: dim {dim} is not divisible by n_heads {n_heads}"),
        ));
    }
    let tied = vals[5] > 0;
    let config = ModelConfig {
        dim,
        hidden_dim: vals[1] as usize,
        n_layers: vals[2] as usize,
        n_heads,
        n_kv_heads: vals[4] as usize,
        head_dim: dim / n_heads,
        vocab_size: vals[5].unsigned_abs() as usize,
        max_seq_len: vals[6] as usize,
        rope_theta: 10000.0,
        rope_style: RopeStyle::Interleaved,
        norm_eps: 1e-5,
        tied_embeddings: tied,
        qkv_bias: false,
        bos_token: Some(1),
        eos_tokens: vec![2],
    };
    config
        .validate()
        .map_err(|e| Error::corrupt(path, format!("llama2.c header: {e}")))?;
    Ok((config, tied))
}

/// The number of bytes a checkpoint with this config must have, or `None` when that number
/// does not fit in `usize` (a header with huge dimensions describes no file that can exist).
pub fn expected_len(c: &ModelConfig) -> Option<usize> {
    let (d, h, l, q, kv, v) = (
        c.dim,
        c.hidden_dim,
        c.n_layers,
        c.q_dim(),
        c.kv_dim(),
        c.vocab_size,
    );
    let mul = |a: usize, b: usize| a.checked_mul(b);
    let vd = mul(v, d)?;
    let per_layer = [
        mul(2, d)?,
        mul(d, q)?,
        mul(mul(2, d)?, kv)?,
        mul(q, d)?,
        mul(mul(3, d)?, h)?,
    ]
    .into_iter()
    .try_fold(0usize, usize::checked_add)?;
    let floats = [
        vd,
        mul(l, per_layer)?,
        d,
        mul(c.max_seq_len, c.head_dim)?,
        if c.tied_embeddings { 0 } else { vd },
    ]
    .into_iter()
    .try_fold(0usize, usize::checked_add)?;
    mul(4, floats)?.checked_add(HEADER_BYTES)
}

/// Loads a llama2.c checkpoint; tensors borrow from the memory map.
pub fn load(path: &Path) -> Result<ModelWeights> {
    let (file, _) = open_regular(path)?;
    // SAFETY: the map is read-only; a file truncated underneath us is the usual mmap caveat.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let map = Arc::new(map);
    let (config, tied) = parse_header(path, &map)?;
    let need = expected_len(&config).ok_or_else(|| {
        Error::corrupt(
            path,
            format!(
                "llama2.c header describes a checkpoint too large to address ({} layers, dim {}, \
                 hidden_dim {}, vocab {})",
                config.n_layers, config.dim, config.hidden_dim, config.vocab_size
            ),
        )
    })?;
    if map.len() != need {
        return Err(Error::corrupt(
            path,
            format!(
                "llama2.c checkpoint should be {need} bytes for its header ({} layers, dim {}), file has {}{}",
                config.n_layers,
                config.dim,
                map.len(),
                if map.len() < need { " (truncated)" } else { " (trailing data)" }
            ),
        ));
    }
    let (d, h, l, q, kv, v) = (
        config.dim,
        config.hidden_dim,
        config.n_layers,
        config.q_dim(),
        config.kv_dim(),
        config.vocab_size,
    );
    let mut off = HEADER_BYTES;
    let mut take = |shape: Vec<usize>| -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let t = Tensor::mapped(map.clone(), off, shape, DType::F32)
            .map_err(|e| Error::corrupt(path, e.to_string()))?;
        off += 4 * n;
        Ok(t)
    };
    let embedding = take(vec![v, d])?;
    let rms_att = take(vec![l, d])?;
    let wq = take(vec![l, q, d])?;
    let wk = take(vec![l, kv, d])?;
    let wv = take(vec![l, kv, d])?;
    let wo = take(vec![l, d, q])?;
    let rms_ffn = take(vec![l, d])?;
    let w1 = take(vec![l, h, d])?;
    let w2 = take(vec![l, d, h])?;
    let w3 = take(vec![l, h, d])?;
    let final_norm = take(vec![d])?;
    let _rope_tables = take(vec![config.max_seq_len * config.head_dim])?;
    let classifier = if tied { None } else { Some(take(vec![v, d])?) };
    let layer = |t: &Tensor, i: usize| -> Result<Tensor> {
        let s = t.shape()[1..].to_vec();
        t.rows(i, i + 1)?.reshape(s)
    };
    let layers = (0..l)
        .map(|i| {
            Ok(LayerWeights {
                attn_norm: layer(&rms_att, i)?,
                wq: layer(&wq, i)?,
                wk: layer(&wk, i)?,
                wv: layer(&wv, i)?,
                wo: layer(&wo, i)?,
                bq: None,
                bk: None,
                bv: None,
                ffn_norm: layer(&rms_ffn, i)?,
                w_gate: layer(&w1, i)?,
                w_down: layer(&w2, i)?,
                w_up: layer(&w3, i)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let w = ModelWeights {
        config,
        embedding,
        layers,
        final_norm,
        classifier,
    };
    w.check_shapes()
        .map_err(|e| Error::corrupt(path, e.to_string()))?;
    Ok(w)
}
