#!/usr/bin/env python3
"""Expected token ids of SmolLM2's GGUF vocabulary for tests/gguf_smollm2.rs.

The reference tokenizer is built with the Python `tokenizers` package the way Hugging Face's
SmolLM2 tokenizer.json is: byte-level BPE over the GGUF tokens and merges, the pre-tokenizer
Digits(individual) then ByteLevel (GPT-2 regex), control tokens as special added tokens, no BOS
(`tokenizer.ggml.add_bos_token` is false). pip install gguf numpy tokenizers.

Run from the repository root:
  python3 scripts/gguf_tokenizer_reference.py ../shared/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
"""

import json
import sys

import gguf
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

STRINGS = [
    "Hello, world!",
    "The year 2024 had 366 days; 3.14159 is pi.",
    "  leading spaces and\ttabs\n\nnew lines   ",
    "naïve café, Zürich, 東京, 😀 emoji",
    "def add(a, b):\n    return a + b  # sum\n",
    "<|im_start|>user\nWhat is 12*34?<|im_end|>\n<|im_start|>assistant\n",
    "x<|im_end|>y<|endoftext|>z",
    "don't won't it's I'm we'll they've",
    "JSON: {\"name\": \"Ada\", \"age\": 36}",
    "a    b\n\n\n  c",
    "1234567890",
    "",
]


def field_strings(reader, key):
    f = reader.fields[key]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


def build_tokenizer(path):
    """The reference tokenizer of the GGUF file at `path`."""
    r = gguf.GGUFReader(path)
    tokens = field_strings(r, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in field_strings(r, "tokenizer.ggml.merges")]
    types = [int(r.fields["tokenizer.ggml.token_type"].parts[i][0])
             for i in r.fields["tokenizer.ggml.token_type"].data]
    assert bytes(r.fields["tokenizer.ggml.pre"].parts[-1]).decode() == "smollm"
    vocab = {t: i for i, t in reversed(list(enumerate(tokens)))}
    tok = Tokenizer(models.BPE(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True)
                            for t, ty in zip(tokens, types) if ty == 3])
    return tok


def main(path):
    tok = build_tokenizer(path)
    cases = []
    for s in STRINGS:
        ids = tok.encode(s, add_special_tokens=False).ids
        cases.append({"text": s, "ids": ids})
    out = "tests/fixtures/gguf/smollm2_tokens.json"
    with open(out, "w") as f:
        f.write('{"tokenizer": "SmolLM2-135M-Instruct.Q4_1.gguf", "cases": [\n')
        f.write(",\n".join(json.dumps(c, ensure_ascii=False) for c in cases))
        f.write("\n]}\n")
    print(f"wrote {out}: {len(cases)} strings")


if __name__ == "__main__":
    main(sys.argv[1])
