//! A byte-level tokenizer that needs no vocabulary file: ids 0 `<unk>`, 1 `<s>`, 2 `</s>`,
//! then byte `b` is id `b + 3` (the same ids llama2.c gives its `<0xNN>` byte tokens).
//! Used with synthetic models by the built-in demo and by tests.

use super::Tokenizer;
use crate::Result;

/// Number of ids the byte tokenizer uses.
pub const BYTE_VOCAB: usize = 259;

/// The file-less byte tokenizer.
#[derive(Clone, Copy, Debug, Default)]
pub struct ByteTokenizer;

impl Tokenizer for ByteTokenizer {
    fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(text.len() + 1);
        if add_bos {
            ids.push(1);
        }
        ids.extend(text.bytes().map(|b| b as u32 + 3));
        Ok(ids)
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        let bytes: Vec<u8> = ids
            .iter()
            .filter(|&&i| (3..BYTE_VOCAB as u32).contains(&i))
            .map(|&i| (i - 3) as u8)
            .collect();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn vocab_size(&self) -> usize {
        BYTE_VOCAB
    }

    fn bos_id(&self) -> Option<u32> {
        Some(1)
    }

    fn eos_id(&self) -> Option<u32> {
        Some(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_any_utf8_and_skips_specials() {
        let t = ByteTokenizer;
        let s = "plan: café ✓\n";
        let ids = t.encode(s, true).unwrap();
        assert_eq!(ids[0], 1);
        assert_eq!(ids.len(), s.len() + 1);
        assert_eq!(t.decode(&ids).unwrap(), s);
        assert_eq!(t.decode(&[2, 0, 3 + b'a' as u32]).unwrap(), "a");
    }
}
