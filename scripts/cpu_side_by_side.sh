#!/usr/bin/env bash
# SmolLM2-135M-Instruct on the CPU, our engine beside llama.cpp on the same machine, run by run
# interleaved: prefill of 64 tokens and decode of 64 tokens, 2 threads.
#
#   scripts/cpu_side_by_side.sh [LLAMA_CPP_SRC]
#
# With a llama.cpp source tree: builds llama-bench and llama-quantize from it (CMake, AVX-512 on,
# AMX off, not tuned to this CPU) into $LLAMA_BUILD (default /tmp/llama.cpp-build, outside the
# repository), writes an F16 copy of the Q4_1 GGUF with llama-quantize, and runs llama-bench
# (pp64, tg64) on both files and ours (`bench decode --model`) in turns, $ROUNDS times.
# Without it: runs ours alone and prints llama.cpp's figures as reported in issue #21, labelled
# as such (not measured here).
#
# With LLAMA_AMX=1 as well: builds a second llama-bench with AMX-INT8 on (AVX512-VNNI/BF16, AMX
# tile and int8) into $LLAMA_BUILD-amx and runs the Q4_1 file through it in the same rounds, for
# CPUs that have AMX (llama.cpp uses its AMX path for Q4_0/Q4_1/Q8_0 weights); decode only.
#
# Environment: MODEL (the GGUF), THREADS (2), ROUNDS (3), OURS_PRECISIONS (fp16,int8,int4),
# AGENTCOMPRESS (our binary; default: built here with cargo --release), LLAMA_AMX (0).
set -euo pipefail

SRC="${1:-}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MODEL="${MODEL:-$ROOT/../shared/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf}"
THREADS="${THREADS:-2}"
ROUNDS="${ROUNDS:-3}"
OURS_PRECISIONS="${OURS_PRECISIONS:-fp16,int8,int4}"
LLAMA_BUILD="${LLAMA_BUILD:-/tmp/llama.cpp-build}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

[ -f "$MODEL" ] || { echo "error: model $MODEL not found (set MODEL)" >&2; exit 2; }

if [ -z "${AGENTCOMPRESS:-}" ]; then
    (cd "$ROOT" && cargo build --release --bin agentcompress >&2)
    AGENTCOMPRESS="$ROOT/target/release/agentcompress"
fi

if [ -n "$SRC" ]; then
    [ -f "$SRC/CMakeLists.txt" ] || { echo "error: $SRC is not a llama.cpp source tree" >&2; exit 2; }
    cmake -S "$SRC" -B "$LLAMA_BUILD" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
        -DGGML_AVX512=ON -DGGML_AMX_INT8=OFF -DLLAMA_CURL=OFF >&2
    cmake --build "$LLAMA_BUILD" --target llama-bench llama-quantize -j "$(nproc)" >&2
    if [ "${LLAMA_AMX:-0}" = 1 ]; then
        cmake -S "$SRC" -B "$LLAMA_BUILD-amx" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
            -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AMX_TILE=ON \
            -DGGML_AMX_INT8=ON -DLLAMA_CURL=OFF >&2
        cmake --build "$LLAMA_BUILD-amx" --target llama-bench -j "$(nproc)" >&2
    fi
    F16="$LLAMA_BUILD/$(basename "${MODEL%.gguf}").F16.gguf"
    if [ ! -f "$F16" ]; then
        "$LLAMA_BUILD/bin/llama-quantize" --allow-requantize "$MODEL" "$F16" F16 >&2
    fi
fi

for round in $(seq 1 "$ROUNDS"); do
    echo "round $round of $ROUNDS" >&2
    AGENTCOMPRESS_CPU_THREADS="$THREADS" RAYON_NUM_THREADS="$THREADS" "$AGENTCOMPRESS" bench decode \
        --device cpu --model "$MODEL" --precisions "$OURS_PRECISIONS" \
        --prompt-tokens 64 --steps 64 --repeats 1 --warmup 4 >> "$WORK/ours.txt"
    if [ -n "$SRC" ]; then
        for f in "$F16" "$MODEL"; do
            "$LLAMA_BUILD/bin/llama-bench" -m "$f" -p 64 -n 64 -t "$THREADS" -r 1 -o jsonl \
                >> "$WORK/llama.jsonl"
        done
        if [ "${LLAMA_AMX:-0}" = 1 ]; then
            # Decode only: its AMX prompt kernels have died of SIGILL on a tile load in an
            # OpenMP worker (llama.cpp 0.25.3 of ggml, 2 threads) and gave wrong output before.
            "$LLAMA_BUILD-amx/bin/llama-bench" -m "$MODEL" -p 0 -n 64 -t "$THREADS" -r 1 -o jsonl \
                >> "$WORK/llama-amx.jsonl"
        fi
    fi
done

python3 - "$WORK/ours.txt" "$WORK/llama.jsonl" "$WORK/llama-amx.jsonl" "${SRC:+measured}" <<'EOF'
import json, os, statistics, sys
ours_txt, llama_jsonl, amx_jsonl = sys.argv[1], sys.argv[2], sys.argv[3]
measured = sys.argv[4] if len(sys.argv) > 4 else ""
runs = {}
for line in open(ours_txt):
    cells = [c.strip() for c in line.split("|")]
    if len(cells) > 5 and cells[1] in ("fp16", "int8", "int4", "int2"):
        p = runs.setdefault(cells[1], ([], []))
        p[0].append(float(cells[3]))
        p[1].append(float(cells[4]))
rows = [(f"ours {v.upper()}", statistics.median(pf), statistics.median(dc)) for v, (pf, dc) in runs.items()]
if measured:
    llama = {}
    for path, tag in ((llama_jsonl, ""), (amx_jsonl, " (AMX build)")):
        if not os.path.exists(path):
            continue
        for line in open(path):
            r = json.loads(line)
            kind = "F16" if "F16" in os.path.basename(r["model_filename"]) else r.get("model_type", "Q4_1").split()[-1]
            stage = "pp" if r["n_prompt"] > 0 else "tg"
            llama.setdefault(kind + tag, {}).setdefault(stage, []).append(r["avg_ts"])
    med = lambda xs: statistics.median(xs) if xs else float("nan")
    refs = {k: (med(v.get("pp", [])), med(v.get("tg", []))) for k, v in llama.items()}
    label = "llama.cpp {} (measured here)"
else:
    refs = {"F16": (546.0, 60.5), "Q4_1": (323.0, 128.0)}
    label = "llama.cpp {} (issue #21's figures, not measured here)"
f16 = refs.get("F16")
q41 = refs.get("Q4_1") or next((v for k, v in refs.items() if k != "F16"), None)
amx = refs.get("Q4_1 (AMX build)")
extra_head = " decode vs llama.cpp Q4_1 AMX build |" if amx else ""
print("| engine / variant | prefill tok/s | decode tok/s | prefill vs llama.cpp F16 | decode vs llama.cpp F16 | prefill vs llama.cpp Q4_1 | decode vs llama.cpp Q4_1 |" + extra_head)
print("|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if amx else ""))
ratio = lambda a, b: f"{a / b:.2f}x" if b else "-"
for name, pf, dc in rows:
    extra = f" {ratio(dc, amx[1])} |" if amx else ""
    print(f"| {name} | {pf:.1f} | {dc:.1f} | {ratio(pf, f16[0]) if f16 else '-'} | {ratio(dc, f16[1]) if f16 else '-'} | {ratio(pf, q41[0]) if q41 else '-'} | {ratio(dc, q41[1]) if q41 else '-'} |{extra}")
for k, (pf, dc) in refs.items():
    print(f"| {label.format(k)} | {pf:.1f} | {dc:.1f} | | | | |" + (" |" if amx else ""))
EOF
