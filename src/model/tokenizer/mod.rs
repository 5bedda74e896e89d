//! Tokenizers: llama2.c `tokenizer.bin`, Hugging Face `tokenizer.json` and GGUF metadata,
//! behind one trait with the model's chat template,
//! plus a streaming decoder that turns token ids into text as they are generated.

mod byte;
pub mod chat;
mod embedded;
mod gguf;
mod hf;
pub mod llama2c;
mod load;
mod stream;

pub use chat::{routing_text, ChatMessage, ChatTemplate};
pub use embedded::{embeddable_tokenizer, embedded_tokenizer, EMBEDDED_HF_NAME};
pub use gguf::{gguf_tokenizer, gguf_tokenizer_from_file};
pub use hf::HfTokenizer;
pub use llama2c::Llama2cTokenizer;
pub use load::load_tokenizer;

pub use byte::{ByteTokenizer, BYTE_VOCAB};
pub use stream::StreamDecoder;

use crate::Result;

/// Largest tokenizer file read (`tokenizer.bin`, `tokenizer.json`, `tokenizer_config.json`);
/// the biggest real vocabularies are far smaller, and the bound keeps a wrong path from being
/// read until memory runs out.
pub const MAX_TOKENIZER_BYTES: u64 = 256 << 20;

/// Text to token ids and back.
pub trait Tokenizer: Send + Sync {
    /// Encodes `text`, prepending the beginning-of-sequence token when `add_bos` is set.
    fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>>;
    /// Decodes a sequence of ids to text (special tokens such as BOS/EOS produce no text).
    fn decode(&self, ids: &[u32]) -> Result<String>;
    /// Number of tokens in the vocabulary.
    fn vocab_size(&self) -> usize;
    /// The beginning-of-sequence id, if any.
    fn bos_id(&self) -> Option<u32>;
    /// The end-of-sequence id, if any.
    fn eos_id(&self) -> Option<u32>;
    /// The chat template the model ships, if any.
    fn chat_template(&self) -> Option<&ChatTemplate> {
        None
    }
}
