#!/usr/bin/env python3
"""Regenerates the tokenizer test fixtures under tests/fixtures/tokenizer/.

1. llama2c_expected.json: token ids from an independent, deliberately naive Python
   implementation of llama2.c's `encode` (run.c), reading tokenizer.bin directly, for the
   stories260K 512-token vocabulary and the 32,000-token Llama 2 vocabulary.
2. hf_bpe/tokenizer.json + hf_expected.json: a tiny byte-level BPE tokenizer trained
   deterministically with the Hugging Face `tokenizers` Python package, and that package's own
   encodings of a few strings.

Usage (from the repository root; `tokenizers` only needed for step 2):
    python3 -m venv /tmp/tokvenv && /tmp/tokvenv/bin/pip install tokenizers
    /tmp/tokvenv/bin/python scripts/make_tokenizer_fixtures.py [--skip-hf]
"""

import json
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# shared/models beside the checkout (../shared/models) or one level further up.
MODELS = next(
    (m for m in (os.path.join(ROOT, *[".."] * k, "shared", "models") for k in (1, 2))
     if os.path.isdir(m)),
    os.path.join(ROOT, "..", "shared", "models"),
)
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizer")

VOCABS = {
    "tok512": "stories260K/tok512.bin",
    "llama2": "llama2-tokenizer/tokenizer.bin",
}

PROMPTS = [
    "Once upon a time",
    "Once upon a time, there was a little girl named Lily.",
    "Lily's mom said, \"Lily, let's go to the park.\"",
    "One day, Timmy saw a big, red ball!\nHe wanted to play with it.",
    "She had 3 cats and 12 dogs; they ate 45 apples at 10:30.",
    "The café served crème brûlée to the naïve señor.",
    "Tom smiled 😀 and said: “I love the sun ☀️!”",
    "  two leading spaces, tabs\tand trailing space ",
    "\n\nBlank lines\n\n\nbetween paragraphs.\n",
    "Ben's dog—a fluffy one—ran (fast) to the pond... Then it stopped?",
    "日本語のテキストと한국어 text mixed together.",
    "a",
    "",
]


def read_llama2c(path):
    """Returns (pieces as bytes, scores) from a llama2.c tokenizer.bin."""
    with open(path, "rb") as f:
        data = f.read()
    (max_len,) = struct.unpack_from("<i", data, 0)
    pos = 4
    pieces, scores = [], []
    while pos < len(data):
        score, n = struct.unpack_from("<fi", data, pos)
        pos += 8
        assert 0 <= n <= max_len, (len(pieces), n)
        pieces.append(data[pos : pos + n])
        scores.append(score)
        pos += n
    return pieces, scores


def llama2c_encode(pieces, scores, text, bos=True):
    """llama2.c's encode, written from its description: BOS, dummy prefix, characters or byte
    fallback, then repeatedly merge the best-scoring adjacent pair (leftmost on ties, strictly
    better than -1e10), scanning every pair each round."""
    lookup = {}
    for i, p in enumerate(pieces):
        lookup.setdefault(p, i)
    tokens = []
    if bos:
        tokens.append(1)
    if text:
        tokens.append(lookup[b" "])
    for ch in text:
        b = ch.encode("utf-8")
        if b in lookup:
            tokens.append(lookup[b])
        else:
            tokens.extend(x + 3 for x in b)
    while True:
        best_score, best_id, best_idx = -1e10, -1, -1
        for i in range(len(tokens) - 1):
            merged = pieces[tokens[i]] + pieces[tokens[i + 1]]
            mid = lookup.get(merged, -1)
            if mid != -1 and scores[mid] > best_score:
                best_score, best_id, best_idx = scores[mid], mid, i
        if best_idx == -1:
            break
        tokens[best_idx : best_idx + 2] = [best_id]
    return tokens


# Cases worked out by hand from the 512-token vocabulary listing (ids: " " 410, " a" 261,
# " Once" 403, " upon" 407, " time" 378, " c" 280, "a" 412, "f" 431, "é" 485; byte b is b+3).
HAND_TOK512 = [
    # Every word is one piece and each is reachable by merging, so the words survive whole.
    ("Once upon a time", [1, 403, 407, 261, 378]),
    # " c" is the only pair that is a piece ("ca", "af", "fé" are not); "é" is a piece.
    ("café", [1, 280, 412, 431, 485]),
    # U+1F600 is not a piece: its four UTF-8 bytes F0 9F 98 80 become byte tokens.
    ("😀", [1, 410, 0xF0 + 3, 0x9F + 3, 0x98 + 3, 0x80 + 3]),
    ("", [1]),
]

# The ids SentencePiece's own Llama 2 tokenizer gives (widely published); " Once" 9038,
# " upon" 2501, " a" 263, " time" 931.
HAND_LLAMA2 = [("Once upon a time", [1, 9038, 2501, 263, 931])]
HAND = {"tok512": HAND_TOK512, "llama2": HAND_LLAMA2}


def write_json(path, obj):
    """Writes indented JSON, keeping each innermost case (text and id lists) on one line."""

    def fmt(v, depth):
        pad = "  " * (depth + 1)
        if isinstance(v, dict) and not any(isinstance(x, (dict, list)) and x and
                                           isinstance(x, list) and isinstance(x[0], dict)
                                           for x in v.values()) and "text" in v:
            return json.dumps(v, ensure_ascii=False)
        if isinstance(v, dict):
            items = [f"{pad}{json.dumps(k)}: {fmt(x, depth + 1)}" for k, x in v.items()]
            return "{\n" + ",\n".join(items) + "\n" + "  " * depth + "}"
        if isinstance(v, list) and v and isinstance(v[0], dict):
            items = [pad + fmt(x, depth + 1) for x in v]
            return "[\n" + ",\n".join(items) + "\n" + "  " * depth + "]"
        return json.dumps(v, ensure_ascii=False)

    with open(path, "w", encoding="utf-8") as f:
        f.write(fmt(obj, 0) + "\n")
    json.loads(open(path, encoding="utf-8").read())  # check it parses
    print("wrote", path)


def make_llama2c():
    out = {"source": "scripts/make_tokenizer_fixtures.py (naive llama2.c encode)", "vocabs": {}}
    for name, rel in VOCABS.items():
        pieces, scores = read_llama2c(os.path.join(MODELS, rel))
        cases = [{"text": t, "ids": llama2c_encode(pieces, scores, t)} for t in PROMPTS]
        for text, ids in HAND[name]:
            got = llama2c_encode(pieces, scores, text)
            assert got == ids, (name, text, got, ids)
        hand = [{"text": t, "ids": ids} for t, ids in HAND[name]]
        out["vocabs"][name] = {"file": rel, "cases": cases, "by_hand": hand}
    write_json(os.path.join(OUT, "llama2c_expected.json"), out)


HF_CORPUS_WORDS = """
once upon a time there was a little girl named lily she loved to play outside in the park
one day she saw a big red ball she wanted to play with it but it was too high her mom said
lily let us go to the park lily was sad and did not know what to do tim and his dog ran fast
the sun was warm and the sky was blue they sat under a tree and ate apples and bread
the cat jumped on the mat and the bird sang a happy song in the garden every morning
""".split()

HF_STRINGS = [
    "Once upon a time, there was a little girl named Lily.",
    "the cat sat on the mat",
    "She saw 3 big red balls!\nThen she ran home.",
    "The café had crème brûlée 😀",
    "  spaces  and\ttabs ",
    "",
]


def make_hf():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    # A few hundred words, in a fixed order, so training is deterministic.
    corpus = [" ".join(HF_CORPUS_WORDS[i : i + 12]) for i in range(0, len(HF_CORPUS_WORDS), 12)]
    corpus = corpus * 3
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        min_frequency=2,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    d = os.path.join(OUT, "hf_bpe")
    os.makedirs(d, exist_ok=True)
    tok.save(os.path.join(d, "tokenizer.json"), pretty=False)
    cases = []
    for s in HF_STRINGS:
        plain = tok.encode(s, add_special_tokens=False).ids
        with_bos = tok.encode(s, add_special_tokens=True).ids
        assert tok.decode(with_bos, skip_special_tokens=True) == s, s
        cases.append({"text": s, "ids": plain, "ids_with_bos": with_bos})
    out = {
        "source": "scripts/make_tokenizer_fixtures.py (Hugging Face tokenizers, Python)",
        "bos_id": bos,
        "eos_id": eos,
        "vocab_size": tok.get_vocab_size(with_added_tokens=True),
        "cases": cases,
    }
    write_json(os.path.join(OUT, "hf_expected.json"), out)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    make_llama2c()
    if "--skip-hf" not in sys.argv:
        make_hf()
