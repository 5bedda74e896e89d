#!/usr/bin/env python3
"""Writes the GGUF fixtures of tests/gguf.rs with the `gguf` Python package (pip install gguf numpy).

tests/fixtures/gguf/blocks.gguf holds one small tensor of every ggml type the crate dequantizes
(F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K), named by its type
in lower case, plus one metadata entry of every value type and a non-default alignment.
The 32-element types are quantized from random values by the package's quantizers; the K-quants
(which the package only dequantizes) are random block bytes with finite f16 scales.
tests/fixtures/gguf/expected/<name>.f32 is the package's reference dequantization of each
tensor, raw little-endian float32.

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


if __name__ == "__main__":
    main()
