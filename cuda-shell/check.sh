#!/usr/bin/env bash
# The one GPU check of the CUDA backend (issue 14): the GPU tests as required (not skippable),
# then decode and prefill speed on SmolLM2-shaped models of every `--bits` tier, the real SmolLM2
# when present, and a Qwen3-8B-shaped `--bits 4` model (random weights, `synth_model`). Meant for
# one H100/H200 in at most 5 minutes: `bash cuda-shell/check.sh`.
#
# Needs: the NVIDIA driver (libcuda.so.1) and NVRTC 12 or 13 (VSPEC_NVRTC_LIB=/path/to/libnvrtc.so.*,
# else the CUDA toolkit's or a pip wheel's, found below). Builds with cargo, or, on a machine
# without a Rust toolchain, runs the programs `cuda-shell/pack.sh` built elsewhere:
# VSPEC_CHECK_BIN=DIR/bin. Optional: VSPEC_SMOLLM2_GGUF (a real SmolLM2 file),
# VSPEC_CHECK_SKIP_8B=1, VSPEC_CHECK_8B_BITS (the Qwen3-8B-shaped tiers timed, default "4 3"),
# VSPEC_CHECK_NCU=1 (per-kernel times of a decode step). Everything goes to stdout; tee it where
# the log should stay.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
start=$SECONDS
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
step() { echo "== $* ($((SECONDS - start)) s)"; }

step device
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv,noheader || true
nproc
grep -m1 'model name' /proc/cpuinfo || true

bin=${VSPEC_CHECK_BIN:-}
if [ -z "$bin" ]; then
    step build
    bash cuda-shell/pack.sh target/cuda-check
    bin=target/cuda-check/bin
fi
bin=$(cd "$bin" && pwd)
export VSPEC_FIXTURES=$PWD/tests/fixtures

if [ -z "${VSPEC_NVRTC_LIB:-}" ]; then
    # cudarc opens NVRTC by name (libnvrtc.so first); point that name at what this machine has.
    found=$( { ls /usr/local/cuda/lib64/libnvrtc.so.1[23]* 2>/dev/null
               python3 -c 'import nvidia, os; print(*nvidia.__path__)' 2>/dev/null |
                   xargs -r -I{} find {} -name 'libnvrtc.so.1[23]*' 2>/dev/null
               find / -xdev -name 'libnvrtc.so.1[23]*' 2>/dev/null; } |
             grep -v builtins | head -1 || true)
    [ -n "$found" ] || { echo "NVRTC not found"; exit 1; }
    export VSPEC_NVRTC_LIB=$found
fi
mkdir -p "$work/nvrtc"
ln -sf "$VSPEC_NVRTC_LIB" "$work/nvrtc/libnvrtc.so"
export LD_LIBRARY_PATH=$work/nvrtc:$(dirname "$VSPEC_NVRTC_LIB")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
echo "NVRTC: $VSPEC_NVRTC_LIB"

step "GPU tests (VSPEC_REQUIRE_CUDA=1: a missing device fails)"
export VSPEC_REQUIRE_CUDA=1 VSPEC_NVRTC_REQUIRED=1
status=0
for t in "$bin"/test-*; do
    echo "-- $(basename "$t")"
    timeout 180 "$t" --nocapture --test-threads=1 || status=1
done

step "every format's one-token matmul alone"
timeout 150 "$bin"/cuda_bench --kernels || status=1

step "speed (f16 KV, 512-token prefill, 128 decode steps)"
for bits in 2 3 4; do
    m=$work/smollm2-shaped-bits$bits.vspec
    "$bin"/synth_model smollm2-135m $bits "$m"
    timeout 60 "$bin"/cuda_bench "$m" || status=1
    rm -f "$m"
done
if [ -n "${VSPEC_SMOLLM2_GGUF:-}" ] && [ -f "$VSPEC_SMOLLM2_GGUF" ]; then
    timeout 60 "$bin"/cuda_bench "$VSPEC_SMOLLM2_GGUF" || status=1
    "$bin"/vspec generate -m "$VSPEC_SMOLLM2_GGUF" --device cuda -p "The capital of France is" \
        -n 24 --temp 0 || status=1
fi
if [ "${VSPEC_CHECK_SKIP_8B:-0}" != 1 ]; then
    for bits in ${VSPEC_CHECK_8B_BITS:-4 3}; do
        m=$work/qwen3-8b-shaped-bits$bits.vspec
        "$bin"/synth_model qwen3-8b "$bits" "$m"
        [ "$bits" = 4 ] && { "$bin"/vspec plan -m "$m" --device cuda --ctx 640 || true; }
        timeout 120 "$bin"/cuda_bench "$m" || status=1
        rm -f "$m"
    done
fi
if [ -n "${VSPEC_CHECK_NCU:-}" ]; then
    # Per-kernel times of a decode step (a 2-layer Qwen3-8B-shaped model: every layer runs the
    # same kernels), from the hardware counters: `cuda_bench --profile` runs one prefill, then
    # two decode steps op by op; every launch after the prefill's GEMMs is printed.
    step "one decode step's kernels (ncu)"
    ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
    m=$work/qwen3-8b-shaped-2layers.vspec
    "$bin"/synth_model qwen3-8b 4 "$m" 2
    timeout 150 "$ncu" --clock-control none --launch-skip 30 --launch-count 150 \
        --metrics gpu__time_duration.sum,dram__bytes_read.sum --csv "$bin"/cuda_bench --profile "$m" |
        grep -E '^"[0-9]' | awk -F'","' '{print $5, $(NF-2), $NF}' | tr -d '"' |
        awk '{k=$1; v=$NF; gsub(",", "", v); if ($2 ~ /dram/) b=v; else printf "%-16s %8.2f us %10d B\n", k, v/1000, b}' || true
    # Why the decode GEMVs stop where they do: throughput, occupancy and stalls of the first
    # decode step's GEMVs (the prefill runs GEMMs, so these are decode launches).
    step "the decode GEMVs in detail (ncu)"
    timeout 150 "$ncu" --clock-control none -k regex:'^gemvq?_' --launch-count 6 \
        --section SpeedOfLight --section Occupancy --section LaunchStats \
        --section WarpStateStats --section MemoryWorkloadAnalysis "$bin"/cuda_bench --profile "$m" |
        grep -E 'gemvq?_|Duration|Throughput|Occupancy|Registers|Block Limit|Stall|Warp Cycles|Busy|Hit Rate|Eligible|Issued' |
        grep -v -E '^\s*$' | head -150 || true
fi
step "done, status $status"
exit $status
