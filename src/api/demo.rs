//! Built-in models: seeded synthetic LLaMA-shape weights with the byte tokenizer, so a host can
//! smoke-test the whole path (open, route, run, stats) without any file. The C ABI opens them
//! through the model paths `builtin:demo` and `builtin:tiny`.

use super::{Engine, EngineBuilder};
use crate::model::synthetic::{preset, synthetic_weights};
use crate::model::tokenizer::{ByteTokenizer, BYTE_VOCAB};
use crate::model::DType;
use crate::{Error, Result};

/// Prefix of the model sources that name a built-in model instead of a file.
pub const BUILTIN_PREFIX: &str = "builtin:";

/// The built-in models: source name and the synthetic preset it uses.
pub const BUILTIN_MODELS: [(&str, &str); 2] = [
    // The model of the `demo` subcommand (a few million parameters).
    ("builtin:demo", "small"),
    // A stories260K-shaped model: fast enough for tests in debug builds.
    ("builtin:tiny", "tiny"),
];

/// Seed of the built-in models' weights (the `demo` subcommand's default seed).
pub const BUILTIN_SEED: u64 = 7;

impl Engine {
    /// Whether `source` names a built-in model (it starts with `builtin:`).
    pub fn is_builtin(source: &str) -> bool {
        source.starts_with(BUILTIN_PREFIX)
    }

    /// Starts building an engine over the built-in model `source` (`builtin:demo` or
    /// `builtin:tiny`): seeded synthetic weights with the byte tokenizer.
    ///
    /// Route a task, run it while streaming tokens (stopping early from the callback), and
    /// read the engine's counters:
    ///
    /// ```
    /// use agentcompress::{Device, Engine, GenerateParams};
    ///
    /// let engine = Engine::builtin("builtin:tiny")?.device(Device::Cpu).build()?;
    /// let route = engine.route("Say hello.")?;
    /// println!("{} (expected cost {:.2}): {:?}", route.precision, route.expected_cost, route.reasons);
    ///
    /// let params = GenerateParams { max_new_tokens: 8, stop_at_eos: false, ..Default::default() };
    /// let mut streamed = String::new();
    /// let result = engine.run("Say hello.", &params, |t| {
    ///     streamed.push_str(t.text);
    ///     t.index + 1 < 4 // stop after four tokens
    /// })?;
    /// assert!(result.output.cancelled);
    /// assert_eq!(result.output.ids.len(), 4);
    /// assert_eq!(result.output.text, streamed);
    ///
    /// let stats = engine.stats();
    /// assert_eq!((stats.tasks, stats.tokens), (1, 4));
    /// assert_eq!(stats.per_precision[result.route.precision], 1);
    /// # Ok::<(), agentcompress::Error>(())
    /// ```
    pub fn builtin(source: &str) -> Result<EngineBuilder> {
        let (_, preset_name) = BUILTIN_MODELS
            .iter()
            .find(|(name, _)| *name == source)
            .ok_or_else(|| {
                let known: Vec<&str> = BUILTIN_MODELS.iter().map(|(n, _)| *n).collect();
                Error::invalid(format!(
                    "unknown built-in model '{source}' (known: {})",
                    known.join(", ")
                ))
            })?;
        let mut cfg = preset(preset_name)?;
        cfg.vocab_size = BYTE_VOCAB;
        let weights = synthetic_weights(&cfg, BUILTIN_SEED, DType::F32)?;
        Ok(Engine::from_weights(weights).tokenizer(Box::new(ByteTokenizer)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Device;

    #[test]
    fn builtin_models_open_and_unknown_names_are_listed() {
        for (name, _) in BUILTIN_MODELS {
            assert!(Engine::is_builtin(name));
        }
        let e = Engine::builtin("builtin:tiny")
            .unwrap()
            .device(Device::Cpu)
            .build()
            .unwrap();
        assert_eq!(e.config().vocab_size, BYTE_VOCAB);
        assert_eq!(e.config().n_layers, 5);
        let err = match Engine::builtin("builtin:huge") {
            Ok(_) => panic!("an unknown built-in name must fail"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("builtin:huge") && err.contains("builtin:demo"),
            "{err}"
        );
        assert!(!Engine::is_builtin("model.bin"));
    }
}
