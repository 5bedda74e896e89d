#!/usr/bin/env python3
"""Writes the GGUF fixtures of tests/gguf.rs with the `gguf` Python package (pip install gguf numpy).

tests/fixtures/gguf/blocks.gguf holds one small tensor of every ggml type the crate dequantizes
(F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K), named by its type
in lower case, plus one metadata entry of every value type and a non-default alignment.
The 32-element types are quantized from random values by the package's quantizers; the K-quants
(which the package only dequantizes) are random block bytes with finite f16 scales.
tests/fixtures/gguf/expected/<name>.f32 is the package's reference dequantization of each
tensor, raw little-endian float32.

tests/fixtures/gguf/tiny_chat.gguf is a complete small chat model in SmolLM2's layout
(architecture llama, tied classifier, F16 matrices drawn from a seeded generator): a byte-level
BPE tokenizer (`gpt2`, pre-tokenizer `smollm`) of 256 byte tokens, three control tokens at ids
0-2 (`<|endoftext|>`, BOS `<|im_start|>`, EOS `<|im_end|>`), a few merges, `add_bos_token`
false and a ChatML chat template with a default system turn. Its weights are random, so its
text is not meaningful; tests compare engines and variants on it.

Run from the repository root: python3 scripts/make_gguf_fixtures.py
"""

import os

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

OUT = os.path.join("tests", "fixtures", "gguf")
rng = np.random.default_rng(17)

# (type, rows, elements per row): two rows each, so row-major order is exercised.
TYPES = [
    (T.F32, 2, 8),
    (T.F16, 2, 8),
    (T.BF16, 2, 8),
    (T.Q8_0, 2, 64),
    (T.Q4_0, 2, 64),
    (T.Q4_1, 2, 64),
    (T.Q5_0, 2, 64),
    (T.Q5_1, 2, 64),
    (T.Q2_K, 2, 256),
    (T.Q3_K, 2, 256),
    (T.Q4_K, 2, 256),
    (T.Q5_K, 2, 256),
    (T.Q6_K, 2, 256),
]

# Byte offsets of the f16 scale fields inside one K-quant block.
K_F16_FIELDS = {
    T.Q2_K: [80, 82],
    T.Q3_K: [108],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
}


def k_blocks(qtype, rows, cols):
    """Random K-quant bytes for a (rows, cols) tensor, with finite, modest f16 scales."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = rows * cols // block
    data = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    for off in K_F16_FIELDS[qtype]:
        scale = rng.uniform(0.001, 0.05, size=n_blocks).astype(np.float16)
        data[:, off:off + 2] = scale.view(np.uint8).reshape(n_blocks, 2)
    return data.reshape(rows, cols // block * size)


def main():
    os.makedirs(os.path.join(OUT, "expected"), exist_ok=True)
    w = gguf.GGUFWriter(os.path.join(OUT, "blocks.gguf"), "fixture")
    w.add_custom_alignment(64)
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_float32("test.f32", 0.15625)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "héllo, wörld")
    w.add_uint64("test.u64", 2**63 + 5)
    w.add_int64("test.i64", -(2**62))
    w.add_float64("test.f64", -1.0e300)
    w.add_array("test.array_i32", [1, -2, 3])
    w.add_array("test.array_string", ["a", "bc", ""])
    w.add_array("test.array_nested", [[1, 2], [3]])
    for qtype, rows, cols in TYPES:
        name = qtype.name.lower()
        values = rng.standard_normal((rows, cols)).astype(np.float32)
        if qtype == T.F32:
            data = values
            w.add_tensor(name, data)
        elif qtype == T.F16:
            data = values.astype(np.float16)
            w.add_tensor(name, data)
        elif qtype in K_F16_FIELDS:
            data = k_blocks(qtype, rows, cols)
            w.add_tensor(name, data, raw_dtype=qtype)
        else:
            data = quantize(values, qtype)
            w.add_tensor(name, data, raw_dtype=qtype)
        ref = dequantize(data, qtype).astype("<f4")
        assert ref.shape == (rows, cols), (name, ref.shape)
        ref.tofile(os.path.join(OUT, "expected", f"{name}.f32"))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def bytes_to_unicode():
    """GPT-2's byte -> printable character table of byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) \
        + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a tiny test model.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Merges in rank order; every part is a byte token or an earlier merge's result.
MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n", "Ġ s", "r e", "a t", "e n",
          "o r", "Ġ w", "Ġ h", "Ġh e", "s t", "Ġ i", "Ġ o", "Ġ c", "Ġ b", "e s", "a n", "Ġ m",
          "e d", "Ġ d", "o u", "Ġ f", "i s", "Ġ p", "i t", "l l", "Ġhe ll",
          "s y", "sy st", "u s", "us er", "a s", "as s", "ass i", "assi st", "assist an",
          "assistan t", "Ġ y", "Ġy ou", "Ġ 1", "Ġ 2"]


def write_tiny_chat():
    """tests/fixtures/gguf/tiny_chat.gguf (see the module doc)."""
    r = np.random.default_rng(23)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    byte_tokens = list(bytes_to_unicode().values())
    tokens = specials + byte_tokens
    for m in MERGES:
        a, b = m.split(" ")
        assert a in tokens and b in tokens, m
        tokens.append(a + b)
    types = [3] * len(specials) + [1] * (len(tokens) - len(specials))
    dim, hidden, layers, heads, kv_heads = 64, 128, 2, 4, 2
    head = dim // heads
    vocab = len(tokens)
    w = gguf.GGUFWriter(os.path.join(OUT, "tiny_chat.gguf"), "llama")
    w.add_block_count(layers)
    w.add_context_length(256)
    w.add_embedding_length(dim)
    w.add_feed_forward_length(hidden)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(head)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(MERGES)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)

    def mat(rows, cols):
        return (r.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float16)

    def norm(n):
        return (1.0 + 0.1 * r.standard_normal(n)).astype(np.float32)

    tensors = {"token_embd.weight": r.standard_normal((vocab, dim)).astype(np.float16),
               "output_norm.weight": norm(dim)}
    for i in range(layers):
        tensors.update({
            f"blk.{i}.attn_norm.weight": norm(dim),
            f"blk.{i}.attn_q.weight": mat(heads * head, dim),
            f"blk.{i}.attn_k.weight": mat(kv_heads * head, dim),
            f"blk.{i}.attn_v.weight": mat(kv_heads * head, dim),
            f"blk.{i}.attn_output.weight": mat(dim, heads * head),
            f"blk.{i}.ffn_norm.weight": norm(dim),
            f"blk.{i}.ffn_gate.weight": mat(hidden, dim),
            f"blk.{i}.ffn_up.weight": mat(hidden, dim),
            f"blk.{i}.ffn_down.weight": mat(dim, hidden),
        })
    # Sorted by name as text, as converters write them.
    for name in sorted(tensors):
        w.add_tensor(name, tensors[name])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
    write_tiny_chat()
