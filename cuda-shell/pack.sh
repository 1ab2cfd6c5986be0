#!/usr/bin/env bash
# Builds every program the GPU check runs and copies them, stripped, to DIR/bin (default
# target/cuda-check): so `check.sh` can run on a GPU machine that has no Rust toolchain, from
# binaries built elsewhere (`VSPEC_CHECK_BIN=DIR/bin bash cuda-shell/check.sh` there).
# Names: vspec, cuda_bench, synth_model, and test-<target> for the test programs.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/cuda-check}
export CARGO_TERM_COLOR=never
cargo build --release -p vspec-host --bin vspec
cargo build --release -p vspec-tests --example cuda_bench --example synth_model
rm -rf "$out/bin"
mkdir -p "$out/bin"
{
    cargo test --release -p vspec-cuda --no-run --message-format=json
    cargo test --release -p vspec-tests --test cuda_gpu --no-run --message-format=json
} | python3 -c '
import json, shutil, sys
out = sys.argv[1]
for line in sys.stdin:
    m = json.loads(line)
    exe = m.get("executable") if m.get("reason") == "compiler-artifact" else None
    if exe and m.get("profile", {}).get("test"):
        shutil.copy(exe, f"{out}/test-" + m["target"]["name"])
' "$out/bin"
cp target/release/vspec target/release/examples/cuda_bench target/release/examples/synth_model \
    "$out/bin/"
strip "$out"/bin/*
ls -la "$out/bin"
