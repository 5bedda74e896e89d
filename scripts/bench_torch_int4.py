#!/usr/bin/env python3
"""Baselines for `agentcompress bench kernels`, timed in the same device session:
PyTorch's tinygemm INT4 kernel (torch.ops.aten._weight_int4pack_mm, group 128) and cuBLAS FP16
(torch.matmul) at the same shapes and batch sizes, with CUDA events, median of many runs,
inputs rotated so the weights exceed L2. Prints one table (microseconds, GB/s of weight bytes).

Usage (on the GPU machine): python3 scripts/bench_torch_int4.py [--shapes 28672x8192,...] [--m 1,16]
"""
import argparse
import statistics

import torch


def time_us(fn, iters=50, warmup=10):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e3)
    return statistics.median(times)


def pack_int4(n, k, group, inner_k_tiles, gen):
    """Random 4-bit codes [n, k] packed the way _convert_weight_to_int4pack expects."""
    codes = torch.randint(0, 16, (n, k), dtype=torch.int32, device="cuda", generator=gen)
    try:
        u8 = ((codes[:, ::2] << 4) | codes[:, 1::2]).to(torch.uint8)
        packed = torch.ops.aten._convert_weight_to_int4pack(u8, inner_k_tiles)
    except RuntimeError:
        packed = torch.ops.aten._convert_weight_to_int4pack(codes, inner_k_tiles)
    scales = torch.rand(k // group, n, 1, device="cuda", generator=gen, dtype=torch.float32) * 0.02 + 0.001
    zeros = torch.rand(k // group, n, 1, device="cuda", generator=gen, dtype=torch.float32) * 0.1
    sz = torch.cat([scales, zeros], dim=2).to(torch.bfloat16).contiguous()
    return packed, sz


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="8192x8192,28672x8192,8192x28672")
    ap.add_argument("--m", default="1,4,16,64,2048")
    ap.add_argument("--group", type=int, default=128)
    args = ap.parse_args()
    torch.manual_seed(0)
    gen = torch.Generator(device="cuda")
    gen.manual_seed(0)
    props = torch.cuda.get_device_properties(0)
    print(f"device: {props.name}, torch {torch.__version__}, cuda {torch.version.cuda}")
    # Copy bandwidth of this device, measured now.
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    copy_us = time_us(lambda: dst.copy_(src), iters=20)
    copy_gbs = 2 * src.numel() / copy_us / 1e3
    print(f"HBM copy: {copy_gbs:.0f} GB/s (read+write of 1 GiB)")
    rows = []
    for shape in args.shapes.split(","):
        n, k = (int(x) for x in shape.split("x"))
        # Enough copies of the weights to exceed L2 (50 MB) when rotated.
        copies = max(2, int(200e6 // (n * k * 2)) + 1)
        w16 = [torch.randn(n, k, device="cuda", dtype=torch.float16, generator=gen) * 0.02 for _ in range(copies)]
        int4 = [pack_int4(n, k, args.group, 8, gen) for _ in range(copies)]
        for m in (int(x) for x in args.m.split(",")):
            x16 = torch.randn(m, k, device="cuda", dtype=torch.float16, generator=gen)
            xbf = x16.to(torch.bfloat16)
            i = [0]

            def fp16():
                i[0] = (i[0] + 1) % copies
                return torch.matmul(x16, w16[i[0]].t())

            def tiny():
                i[0] = (i[0] + 1) % copies
                p, sz = int4[i[0]]
                return torch.ops.aten._weight_int4pack_mm(xbf, p, args.group, sz)

            t16 = time_us(fp16)
            try:
                t4 = time_us(tiny)
            except RuntimeError as e:  # an unsupported shape for tinygemm
                print(f"tinygemm failed at {shape} m={m}: {e}")
                t4 = float("nan")
            b16 = n * k * 2
            b4 = n * k // 2 + (k // args.group) * n * 4
            rows.append((shape, m, t16, b16 / t16 / 1e3, t4, b4 / t4 / 1e3, 2 * m * n * k / t16 / 1e6))
        del w16, int4
        torch.cuda.empty_cache()
    print()
    print("| shape (N x K) | M | cuBLAS FP16 us | FP16 GB/s | torch INT4 g128 us | INT4 GB/s | FP16 TFLOP/s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.1f} | {r[3]:.0f} | {r[4]:.1f} | {r[5]:.0f} | {r[6]:.1f} |")


if __name__ == "__main__":
    main()
