#!/usr/bin/env bash
# The one GPU check of the CUDA backend (issue 14): build, run the GPU tests as required (not
# skippable), then time decode and prefill on SmolLM2. Meant for one H100/H200 in at most 5
# minutes; run from anywhere: `bash cuda-shell/check.sh`.
#
# Needs: the NVIDIA driver (libcuda.so.1); NVRTC 12.x (from the CUDA toolkit on the loader's path,
# or VSPEC_NVRTC_LIB=/path/to/libnvrtc.so.12, or the wheel `.ci/run` installs into
# target/venv-nvrtc); the SmolLM2 GGUF (`vspec fetch`, or VSPEC_SMOLLM2_GGUF=/path).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
start=$SECONDS

echo "== device"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

echo "== build"
cargo build --release -p vspec-cuda -p vspec-tests --tests --examples

echo "== GPU tests (VSPEC_REQUIRE_CUDA=1: a missing device fails)"
export VSPEC_REQUIRE_CUDA=1 VSPEC_REQUIRE_MODEL=1 VSPEC_NVRTC_REQUIRED=1
cargo test --release -p vspec-cuda -- --nocapture
cargo test --release -p vspec-tests --test cuda_gpu -- --nocapture --test-threads=1

echo "== speed (SmolLM2, f16 KV, 512-token prefill, 128 decode steps)"
cargo run --release -p vspec-tests --example cuda_bench -- ${VSPEC_SMOLLM2_GGUF:-}

echo "== done in $((SECONDS - start)) s"
