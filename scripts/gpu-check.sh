#!/usr/bin/env bash
# GPU check for the CUDA backend: run from the repository root on the GPU machine.
#   scripts/gpu-check.sh [path/to/agentcompress]   (default .gpu/agentcompress)
# Prints an nvidia-smi summary, runs every differential check (gpu-check) and every
# microbenchmark (bench kernels), whole-model decode per variant (bench decode), weight
# streaming through pinned staging (bench stream --device cuda), the controller's per-task
# overhead (bench controller), continuous batching and a speculative verify (bench batch),
# then one final table. Exits non-zero if anything failed.
# Full logs go to $OUT (when set) or .gpu/logs.
set -u
BIN="${1:-.gpu/agentcompress}"
LOGDIR="${OUT:-.gpu/logs}"
mkdir -p "$LOGDIR"
export AGENTCOMPRESS_KERNEL_CACHE="${AGENTCOMPRESS_KERNEL_CACHE:-/tmp/agentcompress-kernels}"
# Prefer the toolkit's NVRTC (matches the driver); the binary also searches these itself.
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"

if [ ! -x "$BIN" ]; then
    echo "gpu-check: binary $BIN not found or not executable" >&2
    exit 2
fi
STORIES=()
for p in .gpu/stories260K.bin shared/models/stories260K/stories260K.bin ../shared/models/stories260K/stories260K.bin; do
    if [ -f "$p" ]; then STORIES=(--stories "$p"); break; fi
done

echo "== device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv,noheader 2>&1 | head -4
echo "== binary: $BIN ($(stat -c %s "$BIN") bytes)"

t0=$(date +%s)
timeout 240 "$BIN" gpu-check "${STORIES[@]}" > "$LOGDIR/gpu-check.log" 2>&1
CHECK_RC=$?
t1=$(date +%s)
echo "== gpu-check rc=$CHECK_RC ($((t1 - t0)) s); failures in full:"
grep -E "^(device|kernels ready)|^FAIL |^error|panicked" "$LOGDIR/gpu-check.log" | cut -c1-300 | head -12

timeout 240 "$BIN" bench kernels > "$LOGDIR/bench.log" 2>&1
BENCH_RC=$?
t2=$(date +%s)
echo "== bench kernels rc=$BENCH_RC ($((t2 - t1)) s)"

timeout 200 "$BIN" bench decode --device cuda --preset llama2-7b > "$LOGDIR/decode.log" 2>&1
DECODE_RC=$?
t3=$(date +%s)
echo "== bench decode rc=$DECODE_RC ($((t3 - t2)) s)"

# Weight streaming: disk -> pinned staging -> device memory beside the O_DIRECT floor and the
# pageable / pinned host-to-device rates of the same bytes, on a 2 GiB file of random bytes
# written with O_DIRECT (so the page cache does not hold it) on this machine's disk.
STREAM_FILE=".gpu/stream-bench.bin"
mkdir -p .gpu
head -c 64M /dev/urandom > "$STREAM_FILE.seg"
for _ in $(seq 32); do cat "$STREAM_FILE.seg"; done \
    | dd of="$STREAM_FILE" bs=16M iflag=fullblock oflag=direct status=none 2>/dev/null \
    || for _ in $(seq 32); do cat "$STREAM_FILE.seg"; done > "$STREAM_FILE"
rm -f "$STREAM_FILE.seg"
timeout 60 "$BIN" bench stream --device cuda --file "$STREAM_FILE" --repeat 1 > "$LOGDIR/stream.log" 2>&1
STREAM_RC=$?
rm -f "$STREAM_FILE"
t4=$(date +%s)
echo "== bench stream --device cuda rc=$STREAM_RC ($((t4 - t3)) s)"

# Controller overhead per task (issue #7: median under 1 ms on the GPU backend), with the
# packed CPU path on this machine's cores beside it.
{ timeout 90 "$BIN" bench controller --device cuda --iters 500 \
    && timeout 60 "$BIN" bench controller --device cpu --iters 100; } > "$LOGDIR/controller.log" 2>&1
CTRL_RC=$?
t5=$(date +%s)
echo "== bench controller rc=$CTRL_RC ($((t5 - t4)) s)"

# Continuous batching on the 7B shape: output tokens/s of 4 and 16 sequences per step against
# one, in the same run (issue #19's GPU goal: 16 sequences >= 12x one); and the speculative
# verify of 8 drafted tokens (9 rows, every row's logits) against a one-row greedy step
# (issue #18's GPU goal: <= 1.3x).
timeout 150 "$BIN" bench batch --device cuda --preset llama2-7b --precisions fp16,int4 \
    --rows 1,4,16 --steps 16 --prompt-tokens 16 --repeats 2 --verify 8 > "$LOGDIR/batch.log" 2>&1
BATCH_RC=$?
t6=$(date +%s)
echo "== bench batch --device cuda rc=$BATCH_RC ($((t6 - t5)) s)"

echo
echo "================ FINAL TABLE ================"
# Per-check summary (every case is in $LOGDIR/gpu-check.log), then every failing case.
if grep -q "^check .*cases" "$LOGDIR/gpu-check.log"; then
    sed -n '/^check .*cases/,/^gpu-check:/p' "$LOGDIR/gpu-check.log"
    grep -E "^[a-z0-9_-]+ .* (FAIL|SKIP) " "$LOGDIR/gpu-check.log" | cut -c1-220 | head -25
else
    tail -20 "$LOGDIR/gpu-check.log"
fi
if grep -q "^bench " "$LOGDIR/bench.log"; then
    sed -n '/^bench /,$p' "$LOGDIR/bench.log"
else
    tail -20 "$LOGDIR/bench.log"
fi
echo
sed -n '/^whole-model decode/,$p' "$LOGDIR/decode.log" | grep . || tail -8 "$LOGDIR/decode.log"
echo
sed -n '/^bench stream/,/^ratio pipeline \/ floor/p' "$LOGDIR/stream.log" | grep . || tail -8 "$LOGDIR/stream.log"
echo
grep "^controller " "$LOGDIR/controller.log" || tail -5 "$LOGDIR/controller.log"
echo
grep "^|" "$LOGDIR/batch.log" || tail -5 "$LOGDIR/batch.log"
if [ $CHECK_RC -ne 0 ] || [ $BENCH_RC -ne 0 ] || [ $DECODE_RC -ne 0 ] || [ $STREAM_RC -ne 0 ] || [ $CTRL_RC -ne 0 ] || [ $BATCH_RC -ne 0 ]; then
    echo "RESULT: FAIL (gpu-check rc=$CHECK_RC, bench rc=$BENCH_RC, decode rc=$DECODE_RC, stream rc=$STREAM_RC, controller rc=$CTRL_RC, batch rc=$BATCH_RC)"
    exit 1
fi
echo "RESULT: PASS"
