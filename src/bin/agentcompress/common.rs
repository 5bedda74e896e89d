//! Flags shared by the subcommands that open a model.

use agentcompress::api::{Device, Engine};
use agentcompress::Result;
use clap::Args;
use std::path::PathBuf;

/// Which model to open and where to run it.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model: a llama2.c `.bin` file or a Hugging Face directory (config.json + *.safetensors).
    #[arg(long, short = 'm')]
    pub model: PathBuf,
    /// Tokenizer file (llama2.c tokenizer.bin or Hugging Face tokenizer.json); default: the one
    /// beside the model.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Device: auto (CUDA when present, else CPU), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

impl ModelArgs {
    /// Opens the engine these flags describe.
    pub fn open(&self) -> Result<Engine> {
        let device: Device = self.device.parse()?;
        let mut b = Engine::builder(&self.model).device(device);
        if let Some(t) = &self.tokenizer {
            b = b.tokenizer_path(t);
        }
        b.build()
    }
}
