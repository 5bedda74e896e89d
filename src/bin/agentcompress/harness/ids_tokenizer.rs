//! A tokenizer for harnesses that feed token ids: it encodes no text and decodes every id to
//! nothing, so generation runs on ids alone (benchmarks and checks over whole vocabularies).

use agentcompress::model::tokenizer::Tokenizer;
use agentcompress::{Error, Result};

/// Ids only, over a vocabulary of `.0` tokens, with neither BOS nor EOS.
pub struct IdsOnly(pub usize);

impl Tokenizer for IdsOnly {
    fn encode(&self, _: &str, _: bool) -> Result<Vec<u32>> {
        Err(Error::invalid("this harness feeds token ids, not text"))
    }
    fn decode(&self, _: &[u32]) -> Result<String> {
        Ok(String::new())
    }
    fn vocab_size(&self) -> usize {
        self.0
    }
    fn bos_id(&self) -> Option<u32> {
        None
    }
    fn eos_id(&self) -> Option<u32> {
        None
    }
}
