#!/usr/bin/env bash
# Plan against reality: peak RSS (VmHWM, from GNU time's %M) of `vspec generate` for 512 tokens
# at ctx 2048, against `vspec plan`'s planned bytes (weights + arena + KV), for each KV type.
# A benchmark, not a test: the difference is the runtime's fixed overhead (code, tokenizer,
# headers, thread stacks), which `vspec plan` states as a constant.
# Usage: bash bench/plan_vs_rss.sh [MODEL]   (needs /usr/bin/time; builds nothing)
set -euo pipefail
V=${VSPEC:-target/release/vspec}
M=${1:-$("$V" fetch 2>/dev/null)}
CTX=${CTX:-2048}
N=${N:-512}
printf '| KV | planned MiB | peak RSS MiB | RSS - planned MiB | RSS / planned | tokens |\n|---|---:|---:|---:|---:|---:|\n'
for kv in f32 f16 q8_0; do
  planned=$("$V" plan -m "$M" -c "$CTX" --kv "$kv" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["planned_bytes"])')
  log=$(mktemp)
  /usr/bin/time -f 'maxrss_kib %M' "$V" generate -m "$M" -c "$CTX" --kv "$kv" -n "$N" --temp 0.8 -s 1 \
    -p "Once upon a time" >/dev/null 2>"$log"
  rss_kib=$(awk '/^maxrss_kib/ {print $2}' "$log")
  tokens=$(sed -n 's/.*generation: \([0-9]*\) tokens.*/\1/p' "$log")
  rm -f "$log"
  python3 - "$kv" "$planned" "$rss_kib" "$tokens" <<'PY'
import sys
kv, planned, rss, tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) * 1024, sys.argv[4]
mib = lambda b: b / 2**20
print(f"| {kv} | {mib(planned):.2f} | {mib(rss):.2f} | {mib(rss - planned):.2f} | {rss / planned:.3f} | {tokens} |")
PY
done
