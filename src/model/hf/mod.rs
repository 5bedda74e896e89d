//! Loader for Hugging Face LLaMA-family checkpoints: a directory with `config.json` and
//! `model.safetensors` (or shards listed by `model.safetensors.index.json`).
//!
//! Files are memory-mapped; every tensor is a zero-copy view (float32, float16 or bfloat16).
//! Hugging Face stores q/k for the rotate-half RoPE convention, so the config says
//! [`RopeStyle::RotateHalf`](crate::model::RopeStyle::RotateHalf). Every failure is a typed
//! [`crate::Error`] naming the file and the problem.

pub mod config;
pub mod safetensors;
pub mod source;
mod strict_json;

pub use config::{Arch, HfConfig};
pub use source::TensorSource;

use crate::model::input_file::read_text_bounded;
use crate::model::{LayerWeights, ModelWeights};
use crate::{Error, Result};
use std::path::Path;

/// Name of the configuration file that marks a Hugging Face checkpoint directory.
pub const CONFIG_FILE: &str = "config.json";

/// Largest `config.json` or shard index read; real ones are a few kilobytes to a few megabytes.
pub const MAX_CONFIG_BYTES: u64 = 64 << 20;

/// Reads and parses `dir/config.json`.
pub fn read_config(dir: &Path) -> Result<HfConfig> {
    let path = dir.join(CONFIG_FILE);
    let text = read_text_bounded(&path, MAX_CONFIG_BYTES, "config.json")?;
    config::parse(&path, &text)
}

/// Loads the checkpoint in `dir`.
pub fn load(dir: &Path) -> Result<ModelWeights> {
    let hf = read_config(dir)?;
    let src = TensorSource::open(dir)?;
    let weights = assemble(hf, &src, dir)?;
    // After assembly, so a tensor missing from the header is named as such rather than as the
    // hole it leaves; before any weight is used.
    src.check_layout()?;
    Ok(weights)
}

/// Builds [`ModelWeights`] from the named tensors, checking every shape against the config.
fn assemble(hf: HfConfig, src: &TensorSource, dir: &Path) -> Result<ModelWeights> {
    let mut config = hf.model;
    let (d, h, q, kv, v) = (
        config.dim,
        config.hidden_dim,
        config.q_dim(),
        config.kv_dim(),
        config.vocab_size,
    );
    let embedding = src.get("model.embed_tokens.weight", &[v, d])?;
    let final_norm = src.get("model.norm.weight", &[d])?;
    config.tied_embeddings = hf.tie_word_embeddings || !src.contains("lm_head.weight");
    let classifier = if config.tied_embeddings {
        None
    } else {
        Some(src.get("lm_head.weight", &[v, d])?)
    };
    let layers = (0..config.n_layers)
        .map(|i| {
            let p = |s: &str| format!("model.layers.{i}.{s}");
            let t = |s: &str, shape: &[usize]| src.get(&p(s), shape);
            let bias = |s: &str, len: usize| -> Result<Option<_>> {
                match config.qkv_bias {
                    true => Ok(Some(t(s, &[len])?)),
                    false => Ok(None),
                }
            };
            Ok(LayerWeights {
                attn_norm: t("input_layernorm.weight", &[d])?,
                wq: t("self_attn.q_proj.weight", &[q, d])?,
                wk: t("self_attn.k_proj.weight", &[kv, d])?,
                wv: t("self_attn.v_proj.weight", &[kv, d])?,
                wo: t("self_attn.o_proj.weight", &[d, q])?,
                bq: bias("self_attn.q_proj.bias", q)?,
                bk: bias("self_attn.k_proj.bias", kv)?,
                bv: bias("self_attn.v_proj.bias", kv)?,
                ffn_norm: t("post_attention_layernorm.weight", &[d])?,
                w_gate: t("mlp.gate_proj.weight", &[h, d])?,
                w_up: t("mlp.up_proj.weight", &[h, d])?,
                w_down: t("mlp.down_proj.weight", &[d, h])?,
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
        .map_err(|e| Error::corrupt(dir, format!("Hugging Face checkpoint: {e}")))?;
    Ok(w)
}
