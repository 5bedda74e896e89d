//! The llama2.c `tokenizer.bin` tokenizer: a SentencePiece-derived BPE vocabulary with scores.
//!
//! File layout (little-endian): `i32 max_token_length`, then until the end of the file, per token:
//! `f32 score`, `i32 byte_length`, the piece's bytes. Ids 0, 1, 2 are `<unk>`, BOS and EOS; ids
//! 3..=258 are the raw-byte tokens `<0x00>`..`<0xFF>`. Spaces are stored as plain spaces.
//!
//! Encoding follows llama2.c exactly: optional BOS, a dummy-prefix space token when the text is
//! non-empty, one token per UTF-8 character (byte tokens when the character is not a piece),
//! then repeated merging of the adjacent pair whose concatenation is a piece with the best score
//! (leftmost on ties). The merge loop runs on a linked list with a priority queue, O(n log n),
//! and picks exactly the pair llama2.c's quadratic scan picks.

use super::{Tokenizer, MAX_TOKENIZER_BYTES};
use crate::model::input_file::read_bounded;
use crate::{Error, Result};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::path::Path;

/// Id of the beginning-of-sequence token.
pub const BOS_ID: u32 = 1;
/// Id of the end-of-sequence token.
pub const EOS_ID: u32 = 2;
/// Id of the raw-byte token `<0x00>`; byte `b` is id `b + BYTE_OFFSET`.
const BYTE_OFFSET: u32 = 3;
/// llama2.c only merges pairs whose score beats this initial "best score".
const MIN_MERGE_SCORE: f32 = -1e10;

/// A llama2.c vocabulary: pieces, their merge scores and a hash map from piece to id.
#[derive(Debug, Clone)]
pub struct Llama2cTokenizer {
    pieces: Vec<Box<[u8]>>,
    scores: Vec<f32>,
    lookup: HashMap<Box<[u8]>, u32>,
    max_token_length: usize,
    /// The dummy-prefix token (the piece " "), or the byte token for 0x20 when there is none.
    space_id: u32,
}

impl Llama2cTokenizer {
    /// Reads a `tokenizer.bin` file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = read_bounded(path, MAX_TOKENIZER_BYTES, "tokenizer.bin")?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses the contents of a `tokenizer.bin`; `path` only names the source in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let mut r = Reader { bytes, pos: 0 };
        let max_len = r.i32().ok_or_else(|| {
            Error::corrupt(path, "tokenizer.bin is shorter than its 4-byte header")
        })?;
        if max_len <= 0 || max_len > 1 << 16 {
            return Err(Error::corrupt(
                path,
                format!("implausible max_token_length {max_len}"),
            ));
        }
        let max_token_length = max_len as usize;
        let mut pieces = Vec::new();
        let mut scores = Vec::new();
        while !r.at_end() {
            let index = pieces.len();
            let start = r.pos;
            let broken = |what: String| {
                Error::corrupt(
                    path,
                    format!("token {index} (at byte {start}) is truncated: {what}"),
                )
            };
            let score = r.f32().ok_or_else(|| broken("missing score".into()))?;
            let len = r
                .i32()
                .ok_or_else(|| broken("missing byte length".into()))?;
            if len < 0 || len as usize > max_token_length {
                return Err(Error::corrupt(
                    path,
                    format!(
                        "token {index} (at byte {start}) has byte length {len}, outside \
                         0..={max_token_length} (the header's max_token_length)"
                    ),
                ));
            }
            let remain = r.bytes.len() - r.pos;
            let piece = r
                .take(len as usize)
                .ok_or_else(|| broken(format!("needs {len} bytes, {remain} remain")))?;
            if score.is_nan() {
                return Err(Error::corrupt(
                    path,
                    format!("token {index} has a NaN score"),
                ));
            }
            pieces.push(Box::from(piece));
            // `+ 0.0` turns -0.0 into 0.0 so that ties compare as llama2.c's `>` does.
            scores.push(score + 0.0);
        }
        let needed = (BYTE_OFFSET + 256) as usize;
        if pieces.len() < needed {
            return Err(Error::corrupt(
                path,
                format!(
                    "vocabulary has {} tokens, needs at least {needed} (specials and byte tokens)",
                    pieces.len()
                ),
            ));
        }
        for b in 0..=255u8 {
            let id = (b as u32 + BYTE_OFFSET) as usize;
            let expected = format!("<0x{b:02X}>");
            if *pieces[id] != *expected.as_bytes() {
                return Err(Error::corrupt(
                    path,
                    format!(
                        "token {id} should be the byte token {expected}, found {:?}",
                        String::from_utf8_lossy(&pieces[id])
                    ),
                ));
            }
        }
        let mut lookup = HashMap::with_capacity(pieces.len());
        for (id, piece) in pieces.iter().enumerate() {
            // On duplicate pieces the first id wins.
            lookup.entry(piece.clone()).or_insert(id as u32);
        }
        let space_id = lookup
            .get(&b" "[..])
            .copied()
            .unwrap_or(b' ' as u32 + BYTE_OFFSET);
        Ok(Llama2cTokenizer {
            pieces,
            scores,
            lookup,
            max_token_length,
            space_id,
        })
    }

    /// The longest piece in bytes, as the file's header declares it.
    pub fn max_token_length(&self) -> usize {
        self.max_token_length
    }

    /// The id of `piece`, if it is in the vocabulary.
    pub fn piece_id(&self, piece: &[u8]) -> Option<u32> {
        self.lookup.get(piece).copied()
    }

    /// The bytes of token `id` as stored (byte tokens read `<0xNN>`).
    pub fn piece(&self, id: u32) -> Option<&[u8]> {
        self.pieces.get(id as usize).map(|p| &p[..])
    }

    /// Merges adjacent tokens in place, best score first (leftmost on ties), like llama2.c.
    fn merge(&self, ids: &mut Vec<u32>) {
        let n = ids.len();
        if n < 2 {
            return;
        }
        let mut next: Vec<usize> = (1..=n).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut buf = Vec::with_capacity(2 * self.max_token_length);
        let mut heap = BinaryHeap::new();
        for left in 0..n - 1 {
            self.push_candidate(&mut heap, &mut buf, ids, left, left + 1);
        }
        while let Some(c) = heap.pop() {
            let stale =
                next[c.left] != c.right || ids[c.left] != c.left_id || ids[c.right] != c.right_id;
            if stale {
                continue;
            }
            ids[c.left] = c.merged;
            let after = next[c.right];
            next[c.left] = after;
            if after < n {
                prev[after] = c.left;
            }
            next[c.right] = usize::MAX; // dead
            if prev[c.left] < n {
                self.push_candidate(&mut heap, &mut buf, ids, prev[c.left], c.left);
            }
            if after < n {
                self.push_candidate(&mut heap, &mut buf, ids, c.left, after);
            }
        }
        // Node 0 is never removed (only right-hand nodes are), so the list starts there.
        let mut out = Vec::with_capacity(n);
        let mut i = 0;
        while i < n {
            out.push(ids[i]);
            i = next[i];
        }
        *ids = out;
    }

    fn push_candidate(
        &self,
        heap: &mut BinaryHeap<Candidate>,
        buf: &mut Vec<u8>,
        ids: &[u32],
        left: usize,
        right: usize,
    ) {
        let (left_id, right_id) = (ids[left], ids[right]);
        buf.clear();
        buf.extend_from_slice(&self.pieces[left_id as usize]);
        buf.extend_from_slice(&self.pieces[right_id as usize]);
        if let Some(&merged) = self.lookup.get(&buf[..]) {
            let score = self.scores[merged as usize];
            if score > MIN_MERGE_SCORE {
                heap.push(Candidate {
                    score,
                    left,
                    right,
                    left_id,
                    right_id,
                    merged,
                });
            }
        }
    }
}

impl Tokenizer for Llama2cTokenizer {
    fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(text.len() + 2);
        if add_bos {
            ids.push(BOS_ID);
        }
        if !text.is_empty() {
            ids.push(self.space_id);
        }
        let mut utf8 = [0u8; 4];
        for ch in text.chars() {
            let bytes = ch.encode_utf8(&mut utf8).as_bytes();
            match self.lookup.get(bytes) {
                Some(&id) => ids.push(id),
                None => ids.extend(bytes.iter().map(|&b| b as u32 + BYTE_OFFSET)),
            }
        }
        self.merge(&mut ids);
        Ok(ids)
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        let mut prev = None;
        for &id in ids {
            let piece = self.pieces.get(id as usize).ok_or_else(|| {
                Error::invalid(format!(
                    "token id {id} is outside the vocabulary of {}",
                    self.pieces.len()
                ))
            })?;
            if id != BOS_ID && id != EOS_ID {
                if (BYTE_OFFSET..BYTE_OFFSET + 256).contains(&id) {
                    bytes.push((id - BYTE_OFFSET) as u8);
                } else if prev == Some(BOS_ID) && piece.first() == Some(&b' ') {
                    bytes.extend_from_slice(&piece[1..]);
                } else {
                    bytes.extend_from_slice(piece);
                }
            }
            prev = Some(id);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    fn bos_id(&self) -> Option<u32> {
        Some(BOS_ID)
    }

    fn eos_id(&self) -> Option<u32> {
        Some(EOS_ID)
    }
}

/// A possible merge of the adjacent nodes `left` and `right` (which held `left_id`, `right_id`).
#[derive(Debug)]
struct Candidate {
    score: f32,
    left: usize,
    right: usize,
    left_id: u32,
    right_id: u32,
    merged: u32,
}

impl Ord for Candidate {
    /// Higher score first; on equal scores the leftmost pair (node order is list order).
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

/// A little-endian cursor that returns `None` instead of reading past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn i32(&mut self) -> Option<i32> {
        let b = self.take(4)?;
        Some(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn f32(&mut self) -> Option<f32> {
        self.i32().map(|v| f32::from_bits(v as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// Serialises a vocabulary in the tokenizer.bin layout: specials, 256 byte tokens, `extra`.
    fn vocab_bytes(extra: &[(&str, f32)]) -> Vec<u8> {
        let mut pieces: Vec<(Vec<u8>, f32)> = vec![
            (b"<unk>".to_vec(), 0.0),
            (b"\n<s>\n".to_vec(), 0.0),
            (b"\n</s>\n".to_vec(), 0.0),
        ];
        pieces.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>").into_bytes(), 0.0)));
        pieces.extend(extra.iter().map(|(p, s)| (p.as_bytes().to_vec(), *s)));
        let max = pieces.iter().map(|(p, _)| p.len()).max().unwrap_or(0) as i32;
        let mut out = max.to_le_bytes().to_vec();
        for (p, s) in pieces {
            out.extend(s.to_le_bytes());
            out.extend((p.len() as i32).to_le_bytes());
            out.extend(p);
        }
        out
    }

    fn tok(extra: &[(&str, f32)]) -> Llama2cTokenizer {
        Llama2cTokenizer::from_bytes(&vocab_bytes(extra), Path::new("test.bin")).unwrap()
    }

    /// The quadratic scan of llama2.c's encode, to check the priority-queue merge against.
    fn naive_merge(t: &Llama2cTokenizer, ids: &mut Vec<u32>) {
        loop {
            let mut best: Option<(f32, u32, usize)> = None;
            for i in 0..ids.len().saturating_sub(1) {
                let mut merged = t.pieces[ids[i] as usize].to_vec();
                merged.extend_from_slice(&t.pieces[ids[i + 1] as usize]);
                if let Some(&id) = t.lookup.get(&merged[..]) {
                    let s = t.scores[id as usize];
                    if s > best.map_or(MIN_MERGE_SCORE, |b| b.0) {
                        best = Some((s, id, i));
                    }
                }
            }
            match best {
                Some((_, id, i)) => {
                    ids[i] = id;
                    ids.remove(i + 1);
                }
                None => return,
            }
        }
    }

    /// `rel` under `$AGENTCOMPRESS_MODELS` or the nearest `shared/models` above the crate, or
    /// `None` after printing why the test skips.
    fn shared_model(rel: &str) -> Option<PathBuf> {
        let dir = match std::env::var_os("AGENTCOMPRESS_MODELS") {
            Some(d) => Some(PathBuf::from(d)),
            None => std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .ancestors()
                .skip(1)
                .map(|a| a.join("shared").join("models"))
                .find(|d| d.is_dir()),
        };
        let found = dir.map(|d| d.join(rel)).filter(|p| p.exists());
        if found.is_none() {
            eprintln!("skipped: {rel} not found (set AGENTCOMPRESS_MODELS)");
        }
        found
    }

    #[test]
    fn merges_best_score_first_and_leftmost_on_ties() {
        // "ab" beats "bc", so "abc" becomes ["ab", "c"] even though "bc" exists.
        let t = tok(&[
            (" ", -9.0),
            ("a", -9.0),
            ("b", -9.0),
            ("c", -9.0),
            ("ab", -1.0),
            ("bc", -2.0),
        ]);
        let id = |p: &str| t.piece_id(p.as_bytes()).unwrap();
        assert_eq!(
            t.encode("abc", false).unwrap(),
            vec![id(" "), id("ab"), id("c")]
        );
        // Equal scores: the leftmost pair merges first, which then blocks the other.
        let t = tok(&[(" ", -9.0), ("x", -9.0), ("xx", -1.0)]);
        let id = |p: &str| t.piece_id(p.as_bytes()).unwrap();
        assert_eq!(
            t.encode("xxx", true).unwrap(),
            vec![BOS_ID, id(" "), id("xx"), id("x")]
        );
    }

    #[test]
    fn unknown_characters_fall_back_to_bytes_and_decode_back() {
        let t = tok(&[(" ", -9.0), ("h", -9.0), ("i", -9.0), (" h", -1.0)]);
        let ids = t.encode("hi€", true).unwrap();
        let euro: Vec<u32> = "€".bytes().map(|b| b as u32 + BYTE_OFFSET).collect();
        assert_eq!(&ids[ids.len() - 3..], &euro[..]);
        assert_eq!(t.decode(&ids).unwrap(), "hi€");
        // Without a " " piece the dummy prefix is the byte token for a space.
        let t = tok(&[("a", -1.0)]);
        assert_eq!(
            t.encode("a", false).unwrap(),
            vec![0x20 + BYTE_OFFSET, t.piece_id(b"a").unwrap()]
        );
    }

    #[test]
    fn decode_strips_leading_space_only_after_bos_and_skips_specials() {
        let t = tok(&[(" ", -9.0), (" hi", -1.0), ("yo", -2.0)]);
        let hi = t.piece_id(b" hi").unwrap();
        assert_eq!(t.decode(&[BOS_ID, hi, hi, EOS_ID]).unwrap(), "hi hi");
        assert_eq!(t.decode(&[hi]).unwrap(), " hi");
        assert!(t.encode("", true).unwrap() == vec![BOS_ID]);
        assert!(t.encode("", false).unwrap().is_empty());
        let err = t.decode(&[9999]).unwrap_err().to_string();
        assert!(err.contains("9999"), "{err}");
    }

    #[test]
    fn partial_byte_tokens_decode_lossily() {
        let t = tok(&[(" ", -1.0)]);
        let first_two: Vec<u32> = "€"
            .bytes()
            .take(2)
            .map(|b| b as u32 + BYTE_OFFSET)
            .collect();
        assert_eq!(t.decode(&first_two).unwrap(), "\u{FFFD}");
    }

    #[test]
    fn corrupt_files_name_the_token() {
        let good = vocab_bytes(&[(" ", -1.0)]);
        let p = Path::new("bad.bin");
        let msg = |bytes: &[u8]| {
            Llama2cTokenizer::from_bytes(bytes, p)
                .unwrap_err()
                .to_string()
        };
        assert!(msg(&good[..2]).contains("header"));
        // Cut inside the bytes of token 5 (each early token is 8 + len bytes).
        let mut off = 4;
        for _ in 0..5 {
            let len = i32::from_le_bytes(good[off + 4..off + 8].try_into().unwrap()) as usize;
            off += 8 + len;
        }
        let m = msg(&good[..off + 9]);
        assert!(m.contains("token 5") && m.contains("bad.bin"), "{m}");
        // Absurd length for token 0.
        let mut bad = good.clone();
        bad[8..12].copy_from_slice(&i32::MAX.to_le_bytes());
        let m = msg(&bad);
        assert!(m.contains("token 0") && m.contains("byte length"), "{m}");
        // A byte token out of place.
        let mut bad = good.clone();
        let at = bad.windows(6).position(|w| w == b"<0x41>").unwrap();
        bad[at + 3] = b'9';
        assert!(msg(&bad).contains("token 68"));
    }

    #[test]
    fn heap_merge_matches_quadratic_scan_on_tok512() {
        let Some(path) = shared_model("stories260K/tok512.bin") else {
            return;
        };
        let t = Llama2cTokenizer::from_file(&path).unwrap();
        let mut rng = crate::util::rng::Rng::new(7);
        let alphabet: Vec<char> = "abcdefghilmnoprstuwy  .,!'\"\nTLSOéü😀".chars().collect();
        for _ in 0..200 {
            let len = rng.below(40) as usize;
            let text: String = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize])
                .collect();
            let fast = t.encode(&text, true).unwrap();
            let mut slow = vec![BOS_ID];
            if !text.is_empty() {
                slow.push(t.space_id);
            }
            for ch in text.chars() {
                let mut b = [0u8; 4];
                let s = ch.encode_utf8(&mut b).as_bytes();
                match t.piece_id(s) {
                    Some(id) => slow.push(id),
                    None => slow.extend(s.iter().map(|&x| x as u32 + BYTE_OFFSET)),
                }
            }
            naive_merge(&t, &mut slow);
            assert_eq!(fast, slow, "{text:?}");
            assert_eq!(t.decode(&fast).unwrap(), text);
        }
    }
}
