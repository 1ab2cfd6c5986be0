#!/usr/bin/env bash
# Vspec and llama.cpp side by side on the same weights: pp512 and tg128 tok/s at 1 and 2 threads,
# medians of alternating rounds, and the ratio to llama.cpp on Q4_0.
#
#   bench/llamacpp_side_by_side.sh [--reps N] [--threads 1,2] [--depth 0,2048] [--no-convert]
#                                  [FILE.vspec ...]
#
# Steps (each skipped when its output already exists):
#   1. bench/.venv-llamacpp with llama-cpp-python $LLAMACPP_VERSION (a prebuilt wheel if PyPI has
#      one for this Python, else built from the sdist: compiles llama.cpp, many minutes on 2 cores;
#      CMAKE_ARGS defaults to -DGGML_NATIVE=ON so llama.cpp uses this CPU's best SIMD, and
#      -DLLAVA_BUILD=OFF: the multimodal library is a third of the build and only loaded lazily;
#      --no-cache-dir, so that a wheel pip built earlier with other CMAKE_ARGS is not reused).
#   2. target/release/vspec (cargo build --release -p vspec-host), and the default model
#      (SmolLM2-135M-Instruct Q4_1, `vspec fetch`).
#   3. llama.cpp's comparison files in $WORK: the Q4_1 file dequantized to F32 (bit-identical
#      weights, see tests/fixtures/smollm2/README.md), then Q4_0, Q8_0 and Q4_K_M (the k-quant mix
#      most GGUF downloads are) quantized from it by llama_model_quantize (no importance matrix,
#      as tests/fixtures/quality did).
#   4. Our tiers from the same F32 file: `vspec convert --bits 4/3/2 --no-calibration` (fast).
#      Calibrated files take minutes to make: make them yourself and pass them as arguments
#      (any extra .vspec/.gguf argument is benchmarked by vspec; .gguf ones by llama.cpp too).
#   5. The rounds: per round, thread count and file, llama.cpp once then vspec once, each a fresh
#      process (bench/llamacpp_bench.py run), so both see the same machine load; then the table,
#      and its medians as JSON in $WORK/peer.json (for `vspec bench --report DIR --peer`).
#      With --depth D[,D...] every test also runs after D tokens already fill the cache
#      (llama-bench's -d; default 0, an empty cache), and the table gains a depth column.
#
# Environment: LLAMACPP_VERSION, LLAMACPP_CMAKE_ARGS, LLAMACPP_VENV, WORK (default
# target/side-by-side), PYTHON (the interpreter that makes the venv), FLASH_ATTN (auto|on|off,
# llama.cpp's flash attention; default auto, llama.cpp's own default).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LLAMACPP_VERSION=${LLAMACPP_VERSION:-0.3.36}
GGUF_PY_VERSION=${GGUF_PY_VERSION:-0.19.0}
VENV=${LLAMACPP_VENV:-$REPO/bench/.venv-llamacpp}
WORK=${WORK:-$REPO/target/side-by-side}
PYTHON=${PYTHON:-python3}
FLASH_ATTN=${FLASH_ATTN:-auto}
REPS=5
THREADS=1,2
DEPTHS=0
CONVERT=1
EXTRA=()

usage() { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --reps) REPS=${2:?--reps needs a number}; shift 2 ;;
        --threads) THREADS=${2:?--threads needs a comma list}; shift 2 ;;
        --depth) DEPTHS=${2:?--depth needs a comma list}; shift 2 ;;
        --no-convert) CONVERT=0; shift ;;
        -h|--help) usage 0 ;;
        -*) echo "unknown flag $1" >&2; usage 2 ;;
        *) [ -e "$1" ] || { echo "no such file: $1" >&2; exit 2; }
           EXTRA+=("$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"); shift ;;
    esac
done
case "$REPS" in ''|*[!0-9]*|0) echo "--reps must be a positive number, not '$REPS'" >&2; exit 2 ;; esac
case "$THREADS" in ''|*[!0-9,]*) echo "--threads must be a comma list of numbers, not '$THREADS'" >&2; exit 2 ;; esac
case "$DEPTHS" in ''|*[!0-9,]*) echo "--depth must be a comma list of numbers, not '$DEPTHS'" >&2; exit 2 ;; esac

say() { printf '\n== %s\n' "$*" >&2; }
mkdir -p "$WORK"

# 1. llama-cpp-python in its own venv.
PY=$VENV/bin/python
if ! "$PY" -c "import importlib.metadata as m, sys; sys.exit(m.version('llama_cpp_python') != '$LLAMACPP_VERSION')" 2>/dev/null; then
    say "installing llama-cpp-python $LLAMACPP_VERSION into $VENV"
    "$PYTHON" -m venv "$VENV"
    "$PY" -m pip install -q --upgrade pip
    "$PY" -m pip install -q "gguf==$GGUF_PY_VERSION" numpy
    # Build flags given (an AVX2-only build, say) rule out a prebuilt wheel built with others.
    if [ -n "${LLAMACPP_CMAKE_ARGS:-}" ] ||
        ! "$PY" -m pip install -q --only-binary=:all: "llama-cpp-python==$LLAMACPP_VERSION" 2>/dev/null; then
        say "building llama.cpp from the sdist (slow): no prebuilt wheel, or build flags given"
        CMAKE_ARGS=${LLAMACPP_CMAKE_ARGS:--DGGML_NATIVE=ON -DLLAVA_BUILD=OFF} \
        CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
            "$PY" -m pip install --no-cache-dir "llama-cpp-python==$LLAMACPP_VERSION"
    fi
fi
HELPER=("$PY" "$REPO/bench/llamacpp_bench.py")

# 2. vspec and the model.
say "building vspec"
(cd "$REPO" && cargo build --release -p vspec-host)
VSPEC=$REPO/target/release/vspec
Q41=$("$VSPEC" fetch | tail -n 1)
[ -f "$Q41" ] || { echo "vspec fetch did not give a file: '$Q41'" >&2; exit 1; }

# 3. llama.cpp's files, all from the same weights.
F32=$WORK/smollm2-f32.gguf
for t in F32 Q4_0 Q8_0 Q4_K_M; do
    out=$WORK/smollm2-$t.gguf
    src=$F32
    [ "$t" = F32 ] && { out=$F32; src=$Q41; }
    if [ ! -s "$out" ]; then
        say "llama_model_quantize -> $(basename "$out")"
        "${HELPER[@]}" quantize "$src" "$out" "$t"
    fi
done

# 4. Our tiers.
TIERS=()
if [ "$CONVERT" = 1 ]; then
    for bits in 4 3 2; do
        out=$WORK/smollm2-vspec-${bits}bit-nocal.vspec
        if [ ! -s "$out" ]; then
            say "vspec convert --bits $bits --no-calibration"
            "$VSPEC" convert -m "$F32" --bits "$bits" --no-calibration -o "$out.part"
            mv "$out.part" "$out"
        fi
        TIERS+=("$out")
    done
fi
BOTH=("$WORK/smollm2-Q4_0.gguf" "$WORK/smollm2-Q8_0.gguf" "$WORK/smollm2-Q4_K_M.gguf" "$Q41")
for f in ${EXTRA[@]+"${EXTRA[@]}"}; do
    case "$f" in *.gguf) BOTH+=("$f") ;; *) TIERS+=("$f") ;; esac
done

# 5. Alternating rounds, then the table.
RESULTS=$WORK/results-$(date +%Y%m%d-%H%M%S).jsonl
say "$REPS rounds, threads $THREADS, depths $DEPTHS, results in $RESULTS"
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"${HELPER[@]}" run --vspec "$VSPEC" --results "$RESULTS" --threads "$THREADS" --reps "$REPS" \
    -d "$DEPTHS" --flash-attn "$FLASH_ATTN" --both "${BOTH[@]}" --vspec-only ${TIERS[@]+"${TIERS[@]}"}
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo
"${HELPER[@]}" table "$RESULTS"
"${HELPER[@]}" summary "$RESULTS" "${RESULTS%.jsonl}.json"
cp "${RESULTS%.jsonl}.json" "$WORK/peer.json"
echo "medians as JSON: $WORK/peer.json (vspec bench --report DIR --peer $WORK/peer.json)" >&2
