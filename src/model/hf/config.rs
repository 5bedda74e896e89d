//! `config.json` of a Hugging Face LLaMA-family checkpoint to a [`ModelConfig`].
//!
//! Reads `LlamaForCausalLM` (Llama-2 and Llama-3 style) and `Qwen2ForCausalLM` configs from any
//! transformers version: `rope_theta` may sit at the top level (older files) or inside
//! `rope_parameters` (newer ones); `head_dim` is used when present; `eos_token_id` may be an
//! integer or a list. Features the engine does not implement (rope scaling other than the
//! default, attention or MLP biases on Llama, sliding-window attention, activations other than
//! SiLU) are rejected with [`Error::Unsupported`] naming the feature.

use crate::model::{ModelConfig, RopeStyle};
use crate::{Error, Result};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The model families this loader understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// `LlamaForCausalLM`: no biases.
    Llama,
    /// `Qwen2ForCausalLM`: biases on the q, k and v projections.
    Qwen2,
}

/// A parsed `config.json`: the engine config plus what the tensor loader needs to know.
#[derive(Clone, Debug)]
pub struct HfConfig {
    /// The model family.
    pub arch: Arch,
    /// The engine's view of the shape and hyper-parameters.
    pub model: ModelConfig,
    /// Whether `config.json` asks for the classifier to share the embedding.
    pub tie_word_embeddings: bool,
}

/// Typed access to the fields of a config object; errors name the file and the field.
struct Fields<'a> {
    path: PathBuf,
    obj: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn corrupt(&self, msg: String) -> Error {
        Error::corrupt(&self.path, msg)
    }

    /// A field that is absent or JSON `null` reads as `None`.
    fn get(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| {
                    self.corrupt(format!("\"{key}\" = {v} is not a non-negative integer"))
                }),
        }
    }

    fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?
            .ok_or_else(|| self.corrupt(format!("required field \"{key}\" is missing")))
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.corrupt(format!("\"{key}\" = {v} is not a number"))),
        }
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.corrupt(format!("\"{key}\" = {v} is not a boolean"))),
        }
    }

    fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.corrupt(format!("\"{key}\" = {v} is not a string"))),
        }
    }

    /// A token id field holding an integer or a list of integers.
    fn token_ids(&self, key: &str) -> Result<Vec<u32>> {
        let bad = || {
            self.corrupt(format!(
                "\"{key}\" is not a token id or a list of token ids"
            ))
        };
        let one = |v: &Value| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(bad)
        };
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a.iter().map(one).collect(),
            Some(v) => Ok(vec![one(v)?]),
        }
    }

    /// The same accessors over a nested object field, if present.
    fn nested(&self, key: &str) -> Result<Option<Fields<'_>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(obj)) => Ok(Some(Fields {
                path: self.path.clone(),
                obj,
            })),
            Some(v) => Err(self.corrupt(format!("\"{key}\" = {v} is not an object"))),
        }
    }
}

/// Reads the architecture from `architectures` (or, failing that, `model_type`).
fn arch(f: &Fields) -> Result<Arch> {
    let names: Vec<String> = match f.get("architectures") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| f.corrupt("\"architectures\" holds a non-string".into()))?,
        Some(v) => return Err(f.corrupt(format!("\"architectures\" = {v} is not a list"))),
        None => Vec::new(),
    };
    for n in &names {
        match n.as_str() {
            "LlamaForCausalLM" => return Ok(Arch::Llama),
            "Qwen2ForCausalLM" => return Ok(Arch::Qwen2),
            _ => {}
        }
    }
    let model_type = f.opt_str("model_type")?;
    match (names.is_empty(), model_type) {
        (true, Some("llama")) => Ok(Arch::Llama),
        (true, Some("qwen2")) => Ok(Arch::Qwen2),
        _ => {
            Err(Error::Unsupported(format!(
            "architecture {} (model_type {}) in {}; supported: LlamaForCausalLM, Qwen2ForCausalLM",
            if names.is_empty() { "<none>".to_string() } else { names.join(", ") },
            model_type.unwrap_or("<none>"),
            f.path.display()
        )))
        }
    }
}

/// Rejects a rope-scaling block whose type is anything but the plain default.
fn check_rope_type(f: &Fields, block: &Fields, key: &str) -> Result<()> {
    let ty = match block.opt_str("rope_type")? {
        Some(t) => Some(t),
        None => block.opt_str("type")?,
    };
    match ty {
        None | Some("default") => Ok(()),
        Some(t) => Err(Error::Unsupported(format!(
            "{key} type \"{t}\" in {} (only the default RoPE is implemented)",
            f.path.display()
        ))),
    }
}

/// Parses the text of `config.json` found at `path`.
pub fn parse(path: &Path, text: &str) -> Result<HfConfig> {
    let json: Value = serde_json::from_str(text)
        .map_err(|e| Error::corrupt(path, format!("config.json is not valid JSON: {e}")))?;
    let Value::Object(obj) = &json else {
        return Err(Error::corrupt(path, "config.json is not a JSON object"));
    };
    let f = Fields {
        path: path.to_path_buf(),
        obj,
    };
    let arch = arch(&f)?;
    let unsupported = |what: String| {
        Err(Error::Unsupported(format!(
            "{what} in {} is not implemented",
            path.display()
        )))
    };
    if let Some(act) = f.opt_str("hidden_act")? {
        if act != "silu" {
            return unsupported(format!("hidden_act \"{act}\" (only silu)"));
        }
    }
    if arch == Arch::Llama && f.opt_bool("attention_bias")? == Some(true) {
        return unsupported("attention_bias = true (a bias on the output projection)".into());
    }
    if f.opt_bool("mlp_bias")? == Some(true) {
        return unsupported("mlp_bias = true".into());
    }
    if arch == Arch::Qwen2 && f.opt_bool("use_sliding_window")? == Some(true) {
        return unsupported("use_sliding_window = true".into());
    }
    if let Some(Value::Array(types)) = f.get("layer_types") {
        if let Some(t) = types.iter().find(|t| t.as_str() != Some("full_attention")) {
            return unsupported(format!("layer type {t} (only full_attention)"));
        }
    }
    if let Some(block) = f.nested("rope_scaling")? {
        check_rope_type(&f, &block, "rope_scaling")?;
    }
    let mut rope_theta = f.opt_f64("rope_theta")?;
    if let Some(block) = f.nested("rope_parameters")? {
        check_rope_type(&f, &block, "rope_parameters")?;
        rope_theta = rope_theta.or(block.opt_f64("rope_theta")?);
    }

    let dim = f.usize("hidden_size")?;
    let n_heads = f.usize("num_attention_heads")?;
    if n_heads == 0 {
        return Err(f.corrupt("\"num_attention_heads\" is 0".into()));
    }
    let head_dim = match f.opt_usize("head_dim")? {
        Some(h) => h,
        None if dim % n_heads == 0 => dim / n_heads,
        None => {
            return Err(f.corrupt(format!(
                "hidden_size {dim} is not divisible by num_attention_heads {n_heads} and no head_dim is given"
            )))
        }
    };
    let default_ctx = match arch {
        Arch::Llama => 2048,
        Arch::Qwen2 => 32768,
    };
    let model = ModelConfig {
        dim,
        hidden_dim: f.usize("intermediate_size")?,
        n_layers: f.usize("num_hidden_layers")?,
        n_heads,
        n_kv_heads: f.opt_usize("num_key_value_heads")?.unwrap_or(n_heads),
        head_dim,
        vocab_size: f.usize("vocab_size")?,
        max_seq_len: f
            .opt_usize("max_position_embeddings")?
            .unwrap_or(default_ctx),
        rope_theta: rope_theta.unwrap_or(10000.0) as f32,
        rope_style: RopeStyle::RotateHalf,
        norm_eps: f.opt_f64("rms_norm_eps")?.unwrap_or(1e-6) as f32,
        tied_embeddings: false,
        qkv_bias: arch == Arch::Qwen2,
        bos_token: f.token_ids("bos_token_id")?.first().copied(),
        eos_tokens: f.token_ids("eos_token_id")?,
    };
    model
        .validate()
        .map_err(|e| Error::corrupt(path, e.to_string()))?;
    Ok(HfConfig {
        arch,
        model,
        tie_word_embeddings: f.opt_bool("tie_word_embeddings")?.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LLAMA3: &str = r#"{
        "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 96,
        "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2,
        "vocab_size": 300, "max_position_embeddings": 128, "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0, "bos_token_id": 1, "eos_token_id": [2, 7],
        "tie_word_embeddings": false, "hidden_act": "silu"
    }"#;

    fn parse_str(s: &str) -> Result<HfConfig> {
        parse(Path::new("/x/config.json"), s)
    }

    #[test]
    fn reads_a_llama3_style_config() {
        let c = parse_str(LLAMA3).unwrap();
        assert_eq!(c.arch, Arch::Llama);
        let m = &c.model;
        assert_eq!((m.dim, m.n_heads, m.n_kv_heads, m.head_dim), (64, 8, 2, 8));
        assert_eq!(m.rope_theta, 500000.0);
        assert_eq!(m.rope_style, RopeStyle::RotateHalf);
        assert_eq!(m.eos_tokens, vec![2, 7]);
        assert_eq!(m.bos_token, Some(1));
        assert!(!m.qkv_bias && !c.tie_word_embeddings);
    }

    #[test]
    fn reads_rope_theta_from_rope_parameters_and_explicit_head_dim() {
        let s = LLAMA3
            .replace("\"rope_theta\": 500000.0", "\"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 1234.0}, \"head_dim\": 16")
            .replace("[2, 7]", "5");
        let c = parse_str(&s).unwrap();
        assert_eq!(c.model.rope_theta, 1234.0);
        assert_eq!(c.model.head_dim, 16);
        assert_eq!(c.model.eos_tokens, vec![5]);
    }

    #[test]
    fn rejects_llama3_rope_scaling_by_name() {
        let s = LLAMA3.replace(
            "\"hidden_act\"",
            "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0}, \"hidden_act\"",
        );
        let e = parse_str(&s).unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)), "{e}");
        assert!(e.to_string().contains("llama3"), "{e}");
    }

    #[test]
    fn qwen2_has_qkv_bias_and_missing_fields_are_named() {
        let s = LLAMA3.replace("LlamaForCausalLM", "Qwen2ForCausalLM");
        assert!(parse_str(&s).unwrap().model.qkv_bias);
        let s = LLAMA3.replace("\"intermediate_size\": 96,", "");
        let e = parse_str(&s).unwrap_err().to_string();
        assert!(
            e.contains("intermediate_size") && e.contains("config.json"),
            "{e}"
        );
        let s = LLAMA3.replace("\"vocab_size\": 300", "\"vocab_size\": -3");
        assert!(parse_str(&s)
            .unwrap_err()
            .to_string()
            .contains("vocab_size"));
    }
}
