//! Incremental detokenisation: emits each new piece of text once it is valid UTF-8.

use super::Tokenizer;
use crate::Result;

/// Turns a growing sequence of ids into text deltas. Decodes a short window of recent ids and
/// emits what the newest ids added, holding back incomplete UTF-8 (U+FFFD at the end).
#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl StreamDecoder {
    /// A decoder whose context starts with `prompt_ids` (their text is not emitted).
    pub fn new(prompt_ids: &[u32]) -> Self {
        StreamDecoder {
            ids: prompt_ids.to_vec(),
            prefix_offset: prompt_ids.len().saturating_sub(4),
            read_offset: prompt_ids.len(),
        }
    }

    /// Adds one id; returns the text it completes (possibly empty).
    pub fn push(&mut self, tok: &dyn Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let prefix = tok.decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let full = tok.decode(&self.ids[self.prefix_offset..])?;
        if full.len() > prefix.len() && !full.ends_with('\u{FFFD}') && full.starts_with(&prefix) {
            let delta = full[prefix.len()..].to_string();
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            Ok(delta)
        } else if !full.starts_with(&prefix) {
            // The window re-segmented (rare): emit the new tail conservatively.
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            Ok(String::new())
        } else {
            Ok(String::new())
        }
    }
}
