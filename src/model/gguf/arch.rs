//! GGUF architectures `llama` and `qwen2` onto the engine's [`ModelConfig`] and
//! [`ModelWeights`].
//!
//! The hyper-parameters are `{arch}.*` metadata keys; tensors are found by name (`blk.N.attn_q.
//! weight`, ...), since files keep them sorted as text rather than in layer order. llama.cpp's
//! converter permutes the q and k rows of `llama` models so that rotary embeddings rotate
//! interleaved pairs (`x[2i]`, `x[2i+1]`) and leaves `qwen2` models in the rotate-half order
//! (its NEOX RoPE), so the two map onto [`RopeStyle::Interleaved`] and
//! [`RopeStyle::RotateHalf`]. A model without `output.weight` shares the embedding as its
//! classifier.

use super::GgufFile;
use crate::model::{LayerWeights, ModelConfig, ModelWeights, RopeStyle, Tensor};
use crate::{Error, Result};

/// The architectures this loader maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgufArch {
    /// `llama` (Llama 1-3, SmolLM, Mistral-style without sliding windows): no biases.
    Llama,
    /// `qwen2`: biases on the q, k and v projections.
    Qwen2,
}

impl GgufArch {
    /// The architecture named by `general.architecture`.
    pub fn of(file: &GgufFile) -> Result<Self> {
        let name = file
            .get("general.architecture")
            .ok_or_else(|| corrupt(file, "general.architecture is missing".into()))?
            .as_str()
            .ok_or_else(|| corrupt(file, "general.architecture is not a string".into()))?;
        match name {
            "llama" => Ok(GgufArch::Llama),
            "qwen2" => Ok(GgufArch::Qwen2),
            other => Err(Error::Unsupported(format!(
                "GGUF architecture \"{other}\" in {}; supported: llama, qwen2",
                file.path().display()
            ))),
        }
    }

    /// The metadata prefix and the name in messages.
    pub fn name(self) -> &'static str {
        match self {
            GgufArch::Llama => "llama",
            GgufArch::Qwen2 => "qwen2",
        }
    }
}

fn corrupt(file: &GgufFile, msg: String) -> Error {
    Error::corrupt(file.path(), format!("GGUF: {msg}"))
}

/// Typed reads of `{arch}.*` keys; errors name the file and the key.
struct Keys<'a> {
    file: &'a GgufFile,
    arch: GgufArch,
}

impl Keys<'_> {
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.arch.name())
    }

    fn opt_usize(&self, k: &str) -> Result<Option<usize>> {
        let key = self.key(k);
        match self.file.get(&key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| corrupt(self.file, format!("{key} = {v} is not a count"))),
        }
    }

    fn usize(&self, k: &str) -> Result<usize> {
        self.opt_usize(k)?
            .ok_or_else(|| corrupt(self.file, format!("{} is missing", self.key(k))))
    }

    fn opt_f32(&self, k: &str) -> Result<Option<f32>> {
        let key = self.key(k);
        match self.file.get(&key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(|x| Some(x as f32))
                .ok_or_else(|| corrupt(self.file, format!("{key} = {v} is not a number"))),
        }
    }
}

/// A token id under `key` in the tokenizer metadata, if present.
fn token_id(file: &GgufFile, key: &str) -> Result<Option<u32>> {
    match file.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| corrupt(file, format!("{key} = {v} is not a token id"))),
    }
}

/// The engine configuration the metadata describes (tied embeddings decided later by the
/// tensors present).
pub fn config(file: &GgufFile) -> Result<ModelConfig> {
    let arch = GgufArch::of(file)?;
    let k = Keys { file, arch };
    if let Some(v) = file.get(&k.key("rope.scaling.type")) {
        if v.as_str() != Some("none") {
            return Err(Error::Unsupported(format!(
                "{} = {v} in {} (only unscaled RoPE is implemented)",
                k.key("rope.scaling.type"),
                file.path().display()
            )));
        }
    }
    let dim = k.usize("embedding_length")?;
    let n_heads = k.usize("attention.head_count")?;
    if n_heads == 0 {
        return Err(corrupt(
            file,
            format!("{} is 0", k.key("attention.head_count")),
        ));
    }
    let head_dim = match k.opt_usize("attention.key_length")? {
        Some(h) => h,
        None => dim / n_heads,
    };
    if let Some(rot) = k.opt_usize("rope.dimension_count")? {
        if rot != head_dim {
            return Err(Error::Unsupported(format!(
                "partial rotary embeddings ({} = {rot}, head dim {head_dim}) in {}",
                k.key("rope.dimension_count"),
                file.path().display()
            )));
        }
    }
    let vocab_size = match k.opt_usize("vocab_size")? {
        Some(v) => v,
        None => match file.info("token_embd.weight") {
            Some(info) if info.dims.len() == 2 => info.dims[1] as usize,
            _ => {
                return Err(corrupt(
                    file,
                    "token_embd.weight is missing or not 2-D".into(),
                ))
            }
        },
    };
    let mut eos_tokens = Vec::new();
    for key in [
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.eom_token_id",
    ] {
        if let Some(id) = token_id(file, key)? {
            if !eos_tokens.contains(&id) {
                eos_tokens.push(id);
            }
        }
    }
    let c = ModelConfig {
        dim,
        hidden_dim: k.usize("feed_forward_length")?,
        n_layers: k.usize("block_count")?,
        n_heads,
        n_kv_heads: k.opt_usize("attention.head_count_kv")?.unwrap_or(n_heads),
        head_dim,
        vocab_size,
        max_seq_len: k.usize("context_length")?,
        rope_theta: k.opt_f32("rope.freq_base")?.unwrap_or(10000.0),
        rope_style: match arch {
            GgufArch::Llama => RopeStyle::Interleaved,
            GgufArch::Qwen2 => RopeStyle::RotateHalf,
        },
        norm_eps: k
            .opt_f32("attention.layer_norm_rms_epsilon")?
            .unwrap_or(1e-5),
        tied_embeddings: file.info("output.weight").is_none(),
        qkv_bias: arch == GgufArch::Qwen2,
        bos_token: token_id(file, "tokenizer.ggml.bos_token_id")?,
        eos_tokens,
    };
    c.validate().map_err(|e| corrupt(file, e.to_string()))?;
    Ok(c)
}

/// The model's weights: dense tensors as views of the map, quantized ones dequantized to f32.
pub fn weights(file: &GgufFile) -> Result<ModelWeights> {
    let config = config(file)?;
    let (d, h, q, kv, v) = (
        config.dim,
        config.hidden_dim,
        config.q_dim(),
        config.kv_dim(),
        config.vocab_size,
    );
    let get = |name: &str, shape: &[usize]| -> Result<Tensor> {
        let t = file
            .tensor(name)?
            .ok_or_else(|| corrupt(file, format!("tensor {name} is missing")))?;
        if t.shape() != shape {
            return Err(corrupt(
                file,
                format!(
                    "tensor {name} has shape {:?} (file order {:?}), expected {shape:?}",
                    t.shape(),
                    file.info(name).map(|i| i.dims.clone()).unwrap_or_default()
                ),
            ));
        }
        Ok(t)
    };
    let embedding = get("token_embd.weight", &[v, d])?;
    let final_norm = get("output_norm.weight", &[d])?;
    let classifier = match config.tied_embeddings {
        true => None,
        false => Some(get("output.weight", &[v, d])?),
    };
    let mut layers = Vec::new();
    layers
        .try_reserve_exact(config.n_layers)
        .map_err(|_| Error::OutOfMemory(format!("{} layers", config.n_layers)))?;
    for i in 0..config.n_layers {
        let t = |s: &str, shape: &[usize]| get(&format!("blk.{i}.{s}"), shape);
        let bias = |s: &str, len: usize| match config.qkv_bias {
            true => t(s, &[len]).map(Some),
            false => Ok(None),
        };
        layers.push(LayerWeights {
            attn_norm: t("attn_norm.weight", &[d])?,
            wq: t("attn_q.weight", &[q, d])?,
            wk: t("attn_k.weight", &[kv, d])?,
            wv: t("attn_v.weight", &[kv, d])?,
            wo: t("attn_output.weight", &[d, q])?,
            bq: bias("attn_q.bias", q)?,
            bk: bias("attn_k.bias", kv)?,
            bv: bias("attn_v.bias", kv)?,
            ffn_norm: t("ffn_norm.weight", &[d])?,
            w_gate: t("ffn_gate.weight", &[h, d])?,
            w_up: t("ffn_up.weight", &[h, d])?,
            w_down: t("ffn_down.weight", &[d, h])?,
        });
    }
    let w = ModelWeights {
        config,
        embedding,
        layers,
        final_norm,
        classifier,
    };
    w.check_shapes().map_err(|e| corrupt(file, e.to_string()))?;
    Ok(w)
}
