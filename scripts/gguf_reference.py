#!/usr/bin/env python3
"""Independent greedy reference for SmolLM2-135M-Instruct (GGUF), for tests/gguf_smollm2.rs.

A plain numpy forward pass written from the GGUF / llama.cpp conventions, sharing nothing with
the Rust engine: tensors dequantized by the `gguf` package, float64 arithmetic, RMSNorm, RoPE on
interleaved pairs (the converter permuted q/k rows for it), grouped-query attention over cached keys and values, SwiGLU,
classifier tied to the embedding. Chat prompts are rendered by hand in ChatML (the model's
template) and tokenized by the reference tokenizer of scripts/gguf_tokenizer_reference.py.
Greedy decoding stops at <|im_end|>; each step's top-two logit margin is recorded, and the
expected ids are cut before the first step whose margin is below MIN_MARGIN (a near-tie that
float32 rounding could flip).

pip install gguf numpy tokenizers; run from the repository root:
  python3 scripts/gguf_reference.py ../shared/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
"""

import json
import os
import sys

import numpy as np
import gguf
from gguf.quants import dequantize

sys.path.insert(0, os.path.dirname(__file__))
from gguf_tokenizer_reference import build_tokenizer  # noqa: E402

DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
# (system message or None for the template's default, user message)
PROMPTS = [
    (None, "What is the capital of France?"),
    (None, "Write a Python function that returns the square of a number."),
    ("You are a concise assistant.", "List three primary colors."),
]
STEPS = 16
MIN_MARGIN = 0.05
EOS = 2


def render(system, user):
    return (f"<|im_start|>system\n{system or DEFAULT_SYSTEM}<|im_end|>\n"
            f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")


class Model:
    def __init__(self, path):
        r = gguf.GGUFReader(path)
        self.meta = {k: f.contents() for k, f in r.fields.items()
                     if not k.startswith("tokenizer.ggml")}
        self.t = {}
        for t in r.tensors:
            w = dequantize(t.data, t.tensor_type).astype(np.float64)
            # GGUF lists shapes innermost first; the data is row-major (out, in).
            self.t[t.name] = w.reshape([int(d) for d in reversed(t.shape)])
        m = self.meta
        self.n_layers = m["llama.block_count"]
        self.n_heads = m["llama.attention.head_count"]
        self.n_kv = m["llama.attention.head_count_kv"]
        self.dim = m["llama.embedding_length"]
        self.hd = self.dim // self.n_heads
        self.theta = float(m["llama.rope.freq_base"])
        self.eps = float(m["llama.attention.layer_norm_rms_epsilon"])
        assert "output.weight" not in self.t

    def norm(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def rope(self, x, start):
        # x: (seq, heads, hd) at positions start..; rotate pairs (2i, 2i+1) by
        # pos * theta^(-2i/hd).
        seq = x.shape[0]
        inv = self.theta ** (-np.arange(0, self.hd, 2, dtype=np.float64) / self.hd)
        pos = np.arange(start, start + seq, dtype=np.float64)
        ang = pos[:, None] * inv[None, :]
        cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
        return out

    def new_cache(self):
        """Keys and values of the positions seen so far, per layer."""
        return [(np.zeros((0, self.n_kv, self.hd)), np.zeros((0, self.n_kv, self.hd)))
                for _ in range(self.n_layers)]

    def logits(self, ids, cache):
        """Logits after `ids`, which follow the positions already in `cache` (extended)."""
        t = self.t
        x = t["token_embd.weight"][ids]
        seq = len(ids)
        start = cache[0][0].shape[0]
        # Query i (position start + i) sees keys 0..=start + i.
        mask = np.triu(np.full((seq, start + seq), -np.inf), start + 1)
        group = self.n_heads // self.n_kv
        for i in range(self.n_layers):
            p = f"blk.{i}."
            h = self.norm(x, t[p + "attn_norm.weight"])
            q = (h @ t[p + "attn_q.weight"].T).reshape(seq, self.n_heads, self.hd)
            k = (h @ t[p + "attn_k.weight"].T).reshape(seq, self.n_kv, self.hd)
            v = (h @ t[p + "attn_v.weight"].T).reshape(seq, self.n_kv, self.hd)
            q, k = self.rope(q, start), self.rope(k, start)
            k = np.concatenate([cache[i][0], k])
            v = np.concatenate([cache[i][1], v])
            cache[i] = (k, v)
            att = np.empty((seq, self.n_heads, self.hd))
            for hh in range(self.n_heads):
                kv = hh // group
                s = q[:, hh, :] @ k[:, kv, :].T / np.sqrt(self.hd) + mask
                s = np.exp(s - s.max(axis=-1, keepdims=True))
                s /= s.sum(axis=-1, keepdims=True)
                att[:, hh, :] = s @ v[:, kv, :]
            x = x + att.reshape(seq, -1) @ t[p + "attn_output.weight"].T
            h = self.norm(x, t[p + "ffn_norm.weight"])
            g = h @ t[p + "ffn_gate.weight"].T
            u = h @ t[p + "ffn_up.weight"].T
            x = x + (g / (1.0 + np.exp(-g)) * u) @ t[p + "ffn_down.weight"].T
        x = self.norm(x[-1], t["output_norm.weight"])
        return x @ t["token_embd.weight"].T


def main(path):
    tok = build_tokenizer(path)
    model = Model(path)
    cases = []
    for system, user in PROMPTS:
        ids = tok.encode(render(system, user), add_special_tokens=False).ids
        out, margins = [], []
        cache = model.new_cache()
        for _ in range(STEPS):
            lg = model.logits(out[-1:] if out else ids, cache)
            top2 = np.sort(lg)[-2:]
            nxt = int(np.argmax(lg))
            margin = float(top2[1] - top2[0])
            if margin < MIN_MARGIN:
                break
            margins.append(round(margin, 4))
            if nxt == EOS:
                out.append(nxt)
                break
            out.append(nxt)
        print(system, "|", user, "->", repr(tok.decode(out)), "min margin", min(margins))
        cases.append({"system": system, "user": user, "prompt_ids": ids, "expected": out,
                      "margins": margins})
    dst = "tests/fixtures/gguf/smollm2_greedy.json"
    with open(dst, "w") as f:
        f.write('{"model": "SmolLM2-135M-Instruct.Q4_1.gguf", "min_margin": %s, "cases": [\n'
                % MIN_MARGIN)
        f.write(",\n".join(json.dumps(c, ensure_ascii=False) for c in cases))
        f.write("\n]}\n")
    print("wrote", dst)


if __name__ == "__main__":
    main(sys.argv[1])
