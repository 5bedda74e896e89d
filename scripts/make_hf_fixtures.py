#!/usr/bin/env python3
"""Generates the tiny Hugging Face checkpoints under tests/fixtures/hf/ with `transformers`.

Each fixture is a directory holding what `save_pretrained` writes (config.json, safetensors,
maybe a shard index) plus `logits.json`: the logits transformers computes in float32 for a fixed
token sequence, at every position. tests/model_loading.rs loads each directory with our loader,
runs our CPU forward pass and compares.

For the float16 / bfloat16 fixtures the reference is computed with the *stored* (rounded) weights
upcast to float32, so the comparison tests our loading, not half-precision arithmetic.

Weights are re-drawn from a seeded normal distribution at a scale that gives O(1) logits
(transformers' own init, std 0.02 and zero biases, would make almost any loader look right).

Usage (a throwaway venv outside the repository; CPU wheels from PyPI are enough):
    python3 -m venv /tmp/hfvenv
    /tmp/hfvenv/bin/pip install torch transformers safetensors
    /tmp/hfvenv/bin/python scripts/make_hf_fixtures.py
The committed fixtures were generated with the versions recorded in tests/fixtures/hf/README.md.
"""

import json
import math
import os
import shutil
import sys

import safetensors
import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "hf")
TOKENS = [1, 17, 5, 99, 42, 3, 64, 7, 120, 11, 0, 88]
SEED = 1234


def randomize(model, seed):
    """Re-draws every parameter: matrices ~ N(0, 1/fan_in), norms ~ 1 + N(0, 0.1^2), biases
    ~ N(0, 0.1^2), embeddings ~ N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name.endswith("norm.weight"):
                value = 1.0 + 0.1 * noise
            elif name.endswith(".bias"):
                value = 0.1 * noise
            elif "embed_tokens" in name:
                value = noise
            else:
                value = noise / math.sqrt(p.shape[1])
            p.copy_(value.to(p.dtype))


def reference_logits(model):
    """Float32 logits for TOKENS at every position, as a list of rows."""
    with torch.no_grad():
        ids = torch.tensor([TOKENS], dtype=torch.long)
        out = model(input_ids=ids).logits[0].to(torch.float32)
    return [[float("%.7g" % x) for x in row] for row in out.tolist()]


def make(name, cls, config, dtype=torch.float32, max_shard_size=None):
    """Builds, saves and records one fixture."""
    torch.manual_seed(SEED)
    config._attn_implementation = "eager"
    model = cls(config).to(torch.float32).eval()
    randomize(model, SEED + sum(map(ord, name)))
    if config.tie_word_embeddings:
        model.tie_weights()
    # Round to the storage type, then compute the reference from exactly those values.
    model = model.to(dtype)
    out = os.path.join(ROOT, name)
    shutil.rmtree(out, ignore_errors=True)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(out, **kwargs)
    # A fresh float32 model holding the stored values: `model.to(dtype)` also rounded the
    # non-persistent RoPE frequency buffers, which a checkpoint never carries.
    ref = cls(config).eval()
    ref.load_state_dict({k: v.to(torch.float32) for k, v in model.state_dict().items()})
    logits = reference_logits(ref)
    with open(os.path.join(out, "logits.json"), "w") as f:
        json.dump(
            {
                "tokens": TOKENS,
                "vocab_size": config.vocab_size,
                "stored_dtype": str(dtype).replace("torch.", ""),
                "logits": logits,
            },
            f,
            separators=(",", ":"),
        )
    files = sorted(os.listdir(out))
    size = sum(os.path.getsize(os.path.join(out, x)) for x in files)
    print(f"{name}: {files} ({size} bytes)")


def common(**kw):
    base = dict(
        num_hidden_layers=2,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        hidden_act="silu",
        bos_token_id=1,
        eos_token_id=2,
    )
    base.update(kw)
    return base


def main():
    os.makedirs(ROOT, exist_ok=True)
    versions = (
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"safetensors {safetensors.__version__}, python {sys.version.split()[0]}"
    )
    print("versions:", versions)
    # (a) Llama-2 style: MHA, tied embeddings, theta 10000, float32.
    make(
        "llama2_tied_f32",
        LlamaForCausalLM,
        LlamaConfig(**common(
            hidden_size=32, intermediate_size=64, num_attention_heads=4,
            num_key_value_heads=4, vocab_size=128, rope_theta=10000.0,
            tie_word_embeddings=True)),
    )
    # (b) Llama-3 style: GQA, untied, theta 500000, a list of EOS ids, float32.
    make(
        "llama3_gqa_f32",
        LlamaForCausalLM,
        LlamaConfig(**common(
            hidden_size=48, intermediate_size=64, num_attention_heads=6,
            num_key_value_heads=2, vocab_size=200, rope_theta=500000.0,
            tie_word_embeddings=False, eos_token_id=[2, 3])),
    )
    # (c) Qwen2: q/k/v biases, GQA, untied, float32.
    make(
        "qwen2_bias_f32",
        Qwen2ForCausalLM,
        Qwen2Config(**common(
            hidden_size=32, intermediate_size=64, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=150, rope_theta=1000000.0,
            tie_word_embeddings=False, use_sliding_window=False)),
    )
    # (d) half precisions: Llama in float16 with an explicit head_dim (q width != hidden),
    # Qwen2 in bfloat16 with tied embeddings.
    make(
        "llama_headdim_f16",
        LlamaForCausalLM,
        LlamaConfig(**common(
            hidden_size=32, intermediate_size=48, num_attention_heads=4,
            num_key_value_heads=2, head_dim=12, vocab_size=128, rope_theta=10000.0,
            tie_word_embeddings=True)),
        dtype=torch.float16,
    )
    make(
        "qwen2_tied_bf16",
        Qwen2ForCausalLM,
        Qwen2Config(**common(
            hidden_size=32, intermediate_size=48, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=128, rope_theta=10000.0,
            tie_word_embeddings=True, use_sliding_window=False)),
        dtype=torch.bfloat16,
    )
    # (e) sharded float32 checkpoint with model.safetensors.index.json.
    make(
        "llama_sharded_f32",
        LlamaForCausalLM,
        LlamaConfig(**common(
            hidden_size=32, intermediate_size=48, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=128, rope_theta=10000.0,
            tie_word_embeddings=False)),
        max_shard_size="40KB",
    )
    with open(os.path.join(ROOT, "README.md"), "w") as f:
        f.write(
            "# Hugging Face loader fixtures\n\n"
            "Generated by `scripts/make_hf_fixtures.py` (do not edit by hand) with "
            f"{versions}.\n\n"
            "Each directory is a tiny random checkpoint written by `save_pretrained`, plus "
            "`logits.json`: transformers' float32 logits for `tokens` at every position "
            "(for float16/bfloat16 fixtures, computed from the stored weights upcast to float32).\n"
        )


if __name__ == "__main__":
    main()
