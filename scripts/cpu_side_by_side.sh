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
# Environment: MODEL (the GGUF), THREADS (2), ROUNDS (3), OURS_PRECISIONS (fp16,int8,int4),
# AGENTCOMPRESS (our binary; default: built here with cargo --release).
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
    fi
done

python3 - "$WORK/ours.txt" "$WORK/llama.jsonl" "${SRC:+measured}" <<'EOF'
import json, os, statistics, sys
ours_txt, llama_jsonl, measured = sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else ""
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
    for line in open(llama_jsonl):
        r = json.loads(line)
        kind = "F16" if "F16" in os.path.basename(r["model_filename"]) else r.get("model_type", "Q4_1").split()[-1]
        stage = "pp" if r["n_prompt"] > 0 else "tg"
        llama.setdefault(kind, {}).setdefault(stage, []).append(r["avg_ts"])
    refs = {k: (statistics.median(v["pp"]), statistics.median(v["tg"])) for k, v in llama.items()}
    label = "llama.cpp {} (measured here)"
else:
    refs = {"F16": (546.0, 60.5), "Q4_1": (323.0, 128.0)}
    label = "llama.cpp {} (issue #21's figures, not measured here)"
f16 = refs.get("F16")
q41 = refs.get("Q4_1") or next((v for k, v in refs.items() if k != "F16"), None)
print("| engine / variant | prefill tok/s | decode tok/s | prefill vs llama.cpp F16 | decode vs llama.cpp F16 | prefill vs llama.cpp Q4_1 | decode vs llama.cpp Q4_1 |")
print("|---|---:|---:|---:|---:|---:|---:|")
ratio = lambda a, b: f"{a / b:.2f}x" if b else "-"
for name, pf, dc in rows:
    print(f"| {name} | {pf:.1f} | {dc:.1f} | {ratio(pf, f16[0]) if f16 else '-'} | {ratio(dc, f16[1]) if f16 else '-'} | {ratio(pf, q41[0]) if q41 else '-'} | {ratio(dc, q41[1]) if q41 else '-'} |")
for k, (pf, dc) in refs.items():
    print(f"| {label.format(k)} | {pf:.1f} | {dc:.1f} | | | | |")
EOF
