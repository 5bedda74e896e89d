//! Flags shared by the subcommands that open a model.

use agentcompress::api::{open_variant, Device, Engine, VariantOpenOptions};
use agentcompress::model::load::{detect_format, ModelFormat};
use agentcompress::quant::Precision;
use agentcompress::{Error, Result};
use clap::Args;
use std::path::PathBuf;

/// Which model to open and where to run it.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model: a llama2.c `.bin` file, a GGUF file (llama, qwen2), a Hugging Face directory
    /// (config.json + *.safetensors) or a variant directory written by `quantize`
    /// (manifest.json + *.acv).
    #[arg(long, short = 'm')]
    pub model: PathBuf,
    /// Tokenizer file (llama2.c tokenizer.bin or Hugging Face tokenizer.json); default: the one
    /// beside the model.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Device: auto (CUDA when present, else CPU), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Precision to open from a variant directory: fp16, int8, int4 or int2 (default fp16;
    /// an error for other model formats, which hold one precision).
    #[arg(long)]
    pub precision: Option<Precision>,
}

/// Parses a byte count with an optional binary suffix: `1048576`, `64K`, `64M`, `2G` (also
/// `64MiB`, `64MB`; every suffix means powers of 1024).
pub fn parse_bytes(s: &str) -> Result<u64> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits);
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(Error::invalid(format!("byte count '{s}': unknown suffix"))),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| Error::invalid(format!("byte count '{s}' does not start with a number")))?;
    n.checked_mul(1u64 << shift)
        .filter(|&v| v > 0)
        .ok_or_else(|| Error::invalid(format!("byte count '{s}' is zero or too large")))
}

/// An error naming `flag` unless `path` is a regular file (a device such as `/dev/zero` or a
/// FIFO would be read without end).
pub fn require_regular_file(path: &std::path::Path, flag: &str) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_file() {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{flag} {} is not a regular file",
            path.display()
        )))
    }
}

impl ModelArgs {
    /// Opens the engine these flags describe.
    pub fn open(&self) -> Result<Engine> {
        self.open_with(None, 0)
    }

    /// Opens the engine; a variant directory with `pool_budget` streams its blocks through a
    /// pool of that many bytes, keeping up to `upload_budget` bytes of uploaded blocks on the
    /// backend (an error for other model formats).
    pub fn open_with(&self, pool_budget: Option<u64>, upload_budget: u64) -> Result<Engine> {
        let device: Device = self.device.parse()?;
        if let Some(t) = &self.tokenizer {
            require_regular_file(t, "--tokenizer")?;
        }
        if detect_format(&self.model)? == ModelFormat::VariantStore {
            let opts = VariantOpenOptions {
                precision: self.precision.unwrap_or(Precision::Fp16),
                device,
                tokenizer: self.tokenizer.clone(),
                pool_budget,
                upload_budget,
                ..Default::default()
            };
            return open_variant(&self.model, &opts);
        }
        if let Some(p) = self.precision {
            return Err(Error::invalid(format!(
                "--precision {p} needs a variant directory (see `agentcompress quantize`); {} holds one precision",
                self.model.display()
            )));
        }
        if pool_budget.is_some() || upload_budget > 0 {
            return Err(Error::invalid(
                "--pool-budget and --device-cache need a variant directory (see `agentcompress quantize`)",
            ));
        }
        let mut b = Engine::builder(&self.model).device(device);
        if let Some(t) = &self.tokenizer {
            b = b.tokenizer_path(t);
        }
        b.build()
    }
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn byte_counts_with_suffixes() {
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert_eq!(parse_bytes("64K").unwrap(), 64 << 10);
        assert_eq!(parse_bytes("64M").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("2GiB").unwrap(), 2 << 30);
        assert!(parse_bytes("12Q").unwrap_err().to_string().contains("12Q"));
        assert!(parse_bytes("M").is_err() && parse_bytes("0").is_err());
    }
}
