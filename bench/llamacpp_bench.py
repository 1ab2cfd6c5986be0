#!/usr/bin/env python3
"""llama.cpp side of bench/llamacpp_side_by_side.sh (run with the venv's python).

Subcommands:
    quantize SRC DST TYPE
        llama_model_quantize(SRC -> DST, ftype=LLAMA_FTYPE_{ALL_F32 | MOSTLY_<TYPE>},
        allow_requantize=True), no importance matrix (as tests/fixtures/quality did).
    bench --model F --threads T [-p 512] [-n 128] [-r 1] [-b 512] [-d 0,2048]
        One llama.cpp measurement with `vspec bench`'s protocol, printed as a JSON array shaped
        like `vspec bench --json` (test, n_threads, n_depth, samples_ns, samples_ts, avg_ts):
          ppN: N synthetic tokens decoded in steps of the batch size (llama_batch_get_one: logits
               of the last token only) from an empty KV cache each repetition, after one untimed
               step.
          tgN: N tokens decoded one at a time from an empty KV cache each repetition, after 4
               untimed steps; the fed ids are a fixed pseudo-random sequence, not sampled.
          ppN @ dD, tgN @ dD (-d, llama-bench's depth): each repetition first fills the emptied
               cache with D tokens in steps of the batch size, untimed, then times the test.
        Token ids: the same xorshift64* sequences as host-std/src/cli/bench/mod.rs.
    run --vspec BIN --results OUT.jsonl --threads 1,2 --reps R [-p] [-n] [-b] [-d] \
            --both FILE... --vspec-only FILE...
        The alternation: for each round, for each thread count, for each file, llama.cpp once then
        vspec once (one repetition each, each in a fresh process), so both engines see the same
        machine load. Every measurement is appended to OUT.jsonl.
    table OUT.jsonl
        Medians of the rounds: file, size, engine, threads, pp and tg tok/s, and their ratio to
        llama.cpp on the Q4_0 file at the same thread count.
    summary OUT.jsonl PEER.json
        The same medians as JSON, for `vspec bench --report DIR --peer PEER.json`:
        {"rounds", "cpu", "cores", "llama_cpp_python",
         "results": [{"engine", "file", "bytes", "threads", "test", "tok_s", "rounds"}]}.
"""
import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time

TOKEN_SEED = 0x5EED1234ABCD0001
GEN_SEED = TOKEN_SEED ^ 0x9E3779B9
DEPTH_SEED = TOKEN_SEED ^ 0x00DE9700000000D0
GEN_WARMUP_TOKENS = 4
MASK64 = (1 << 64) - 1


def synthetic_tokens(n, vocab, seed):
    """xorshift64*, as synthetic_tokens() in host-std/src/cli/bench.rs."""
    state = seed | 1
    vocab = max(1, vocab)
    out = []
    for _ in range(n):
        state ^= state >> 12
        state ^= (state << 25) & MASK64
        state ^= state >> 27
        out.append(((state * 0x2545F4914F6CDD1D) & MASK64) % vocab)
    return out


def quiet_llama_logs(llama_cpp):
    @llama_cpp.llama_log_callback
    def _quiet(level, text, user_data):
        pass

    llama_cpp.llama_log_set(_quiet, ctypes.c_void_p(0))
    return _quiet  # keep the callback alive


def cmd_quantize(a):
    import llama_cpp

    keep = quiet_llama_logs(llama_cpp)
    params = llama_cpp.llama_model_quantize_default_params()
    name = "LLAMA_FTYPE_ALL_F32" if a.type == "F32" else "LLAMA_FTYPE_MOSTLY_" + a.type
    if not hasattr(llama_cpp, name):
        sys.exit("quantize: llama_cpp has no %s (type %r)" % (name, a.type))
    params.ftype = getattr(llama_cpp, name)
    params.allow_requantize = True
    params.nthread = os.cpu_count() or 1
    tmp = a.dst + ".part"
    rc = llama_cpp.llama_model_quantize(a.src.encode(), tmp.encode(), ctypes.byref(params))
    if rc != 0 or not os.path.exists(tmp):
        sys.exit("quantize: %s -> %s (%s) failed with status %d" % (a.src, a.dst, a.type, rc))
    os.replace(tmp, a.dst)
    del keep


def clear_kv(llama_cpp, ctx):
    if hasattr(llama_cpp, "llama_get_memory"):
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
    else:  # older llama.cpp
        llama_cpp.llama_kv_self_clear(ctx)


def decode(llama_cpp, ctx, ids, what):
    arr = (llama_cpp.llama_token * len(ids))(*ids)
    rc = llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(arr, len(ids)))
    if rc != 0:
        sys.exit("llama_decode failed with status %d (%s)" % (rc, what))


def parse_depths(text):
    try:
        depths = [int(d) for d in text.split(",") if d != ""]
    except ValueError:
        sys.exit("-d must be a comma list of token counts, not %r" % text)
    if not depths or any(d < 0 for d in depths):
        sys.exit("-d must be a comma list of token counts, not %r" % text)
    return depths


def test_name(kind, n, depth):
    return "%s%d" % (kind, n) if depth == 0 else "%s%d @ d%d" % (kind, n, depth)


def fill_to_depth(llama_cpp, ctx, filler, step):
    for i in range(0, len(filler), step):
        decode(llama_cpp, ctx, filler[i:i + step], "depth fill")


def cmd_bench(a):
    import llama_cpp

    if a.reps < 1:
        sys.exit("bench: -r must be at least 1")
    depths = parse_depths(a.depths)
    keep = quiet_llama_logs(llama_cpp)
    llama_cpp.llama_backend_init()
    mparams = llama_cpp.llama_model_default_params()
    model = llama_cpp.llama_model_load_from_file(a.model.encode(), mparams)
    if not model:
        sys.exit("bench: cannot load %s" % a.model)
    vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))
    out = []
    tests = []
    for depth in depths:
        if a.n_prompt > 0:
            tests.append(("pp", a.n_prompt, depth))
        if a.n_gen > 0:
            tests.append(("tg", a.n_gen, depth))
    for kind, n, depth in tests:
        filler = synthetic_tokens(depth, vocab, DEPTH_SEED)
        # The depth is filled in steps of the batch size, as vspec's is.
        fill_step = max(1, min(a.batch, depth))
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = depth + n
        cparams.n_batch = max(min(a.batch, n) if kind == "pp" else 1, fill_step)
        cparams.n_ubatch = cparams.n_batch
        cparams.n_threads = a.threads
        cparams.n_threads_batch = a.threads
        if a.flash_attn != "auto":
            cparams.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if a.flash_attn == "on"
                                       else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        ctx = llama_cpp.llama_init_from_model(model, cparams)
        if not ctx:
            sys.exit("bench: cannot create a llama.cpp context for %s" % a.model)
        samples = []
        if kind == "pp":
            ids = synthetic_tokens(n, vocab, TOKEN_SEED)
            step = cparams.n_batch
            chunks = [ids[i:i + step] for i in range(0, n, step)]
            decode(llama_cpp, ctx, chunks[0], "warm-up")
            llama_cpp.llama_synchronize(ctx)
            for _ in range(a.reps):
                clear_kv(llama_cpp, ctx)
                fill_to_depth(llama_cpp, ctx, filler, fill_step)
                llama_cpp.llama_synchronize(ctx)
                arrays = [((llama_cpp.llama_token * len(c))(*c), len(c)) for c in chunks]
                t0 = time.perf_counter_ns()
                for arr, m in arrays:
                    rc = llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(arr, m))
                    if rc != 0:
                        sys.exit("llama_decode failed with status %d" % rc)
                llama_cpp.llama_synchronize(ctx)
                samples.append(time.perf_counter_ns() - t0)
        else:
            ids = synthetic_tokens(n, vocab, GEN_SEED)
            for t in ids[:GEN_WARMUP_TOKENS]:
                decode(llama_cpp, ctx, [t], "warm-up")
            llama_cpp.llama_synchronize(ctx)
            arrays = [(llama_cpp.llama_token * 1)(t) for t in ids]
            for _ in range(a.reps):
                clear_kv(llama_cpp, ctx)
                fill_to_depth(llama_cpp, ctx, filler, fill_step)
                llama_cpp.llama_synchronize(ctx)
                t0 = time.perf_counter_ns()
                for arr in arrays:
                    rc = llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(arr, 1))
                    if rc != 0:
                        sys.exit("llama_decode failed with status %d" % rc)
                    # llama-bench synchronizes every token: the next one waits for it anyway.
                    llama_cpp.llama_synchronize(ctx)
                samples.append(time.perf_counter_ns() - t0)
        llama_cpp.llama_free(ctx)
        ts = [n / (ns * 1e-9) for ns in samples]
        out.append({
            "test": test_name(kind, n, depth), "n_threads": a.threads, "n_depth": depth,
            "samples_ns": samples,
            "samples_ts": ts, "avg_ts": sum(ts) / len(ts),
            "flash_attn": a.flash_attn,
        })
    llama_cpp.llama_model_free(model)
    del keep
    print(json.dumps(out))


def run_json(cmd):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.exit("failed (%d): %s\n%s" % (p.returncode, " ".join(cmd), p.stderr[-4000:]))
    return json.loads(p.stdout)


def cmd_run(a):
    threads = [int(t) for t in a.threads.split(",") if t]
    if not threads:
        sys.exit("run: --threads needs at least one count")
    files = [(f, True) for f in a.both] + [(f, False) for f in a.vspec_only]
    for f, _ in files:
        if not os.path.exists(f):
            sys.exit("run: %s does not exist" % f)
    parse_depths(a.depths)
    common = ["-p", str(a.n_prompt), "-n", str(a.n_gen), "-b", str(a.batch), "-d", a.depths]
    with open(a.results, "a") as out:
        for rnd in range(a.reps):
            for t in threads:
                for f, both in files:
                    runs = []
                    if both:
                        runs.append(("llama.cpp", [sys.executable, os.path.abspath(__file__), "bench",
                                                   "--model", f, "--threads", str(t), "-r", "1",
                                                   "--flash-attn", a.flash_attn] + common))
                    runs.append(("vspec", [a.vspec, "bench", "-m", f, "-t", str(t), "-r", "1",
                                           "--bw-mib", "0", "--json"] + common))
                    for engine, cmd in runs:
                        for e in run_json(cmd):
                            row = {"round": rnd, "engine": engine, "file": f,
                                   "bytes": os.path.getsize(f), "threads": t,
                                   "test": e["test"], "tok_s": e["samples_ts"][0]}
                            out.write(json.dumps(row) + "\n")
                            out.flush()
                            print("round %d/%d  %-9s %-40s t=%d %-13s %8.2f tok/s" % (
                                rnd + 1, a.reps, engine, os.path.basename(f), t, e["test"],
                                row["tok_s"]), flush=True)


def cmd_table(a):
    rows = [json.loads(line) for line in open(a.results) if line.strip()]
    if not rows:
        sys.exit("table: %s holds no measurements" % a.results)
    med = {}
    for r in rows:
        med.setdefault((r["file"], r["engine"], r["threads"], r["test"][:2], test_depth(r["test"])),
                       []).append(r["tok_s"])
    med = {k: statistics.median(v) for k, v in med.items()}
    depths = sorted({k[4] for k in med})
    # The depth column only when some test ran at a depth (the classic table otherwise).
    show_depth = depths != [0]
    sizes = {r["file"]: r["bytes"] for r in rows}
    rounds = len({r["round"] for r in rows})
    base_file = next((f for f in sizes if os.path.basename(f).endswith("Q4_0.gguf")), None)
    print("Medians of %d rounds; ratio = tok/s / llama.cpp on %s at the same thread count.\n"
          % (rounds, os.path.basename(base_file) if base_file else "(no Q4_0 file)"))
    depth_head, depth_rule = ("depth | ", "---: | ") if show_depth else ("", "")
    print("| file | MiB | engine | threads | %spp t/s | tg t/s | pp ratio | tg ratio |" % depth_head)
    print("| --- | ---: | --- | ---: | %s---: | ---: | ---: | ---: |" % depth_rule)
    keys = sorted({(k[0], k[1], k[2], k[4]) for k in med},
                  key=lambda k: (k[3], k[2], sizes[k[0]], k[0], k[1]))
    for f, engine, t, d in keys:
        pp = med.get((f, engine, t, "pp", d))
        tg = med.get((f, engine, t, "tg", d))
        bpp = med.get((base_file, "llama.cpp", t, "pp", d)) if base_file else None
        btg = med.get((base_file, "llama.cpp", t, "tg", d)) if base_file else None

        def num(x):
            return "%.2f" % x if x is not None else "-"

        def ratio(x, b):
            return "%.2f" % (x / b) if x is not None and b else "-"

        print("| %s | %.2f | %s | %d | %s%s | %s | %s | %s |" % (
            os.path.basename(f), sizes[f] / 2**20, engine, t, "%d | " % d if show_depth else "",
            num(pp), num(tg), ratio(pp, bpp), ratio(tg, btg)))


def test_depth(test):
    """D of a test named 'ppN @ dD' or 'tgN @ dD', 0 for 'ppN' and 'tgN'."""
    return int(test.split(" @ d", 1)[1]) if " @ d" in test else 0


def medians(rows):
    """{(file, engine, threads, test): median tok/s} over the rounds."""
    med = {}
    for r in rows:
        med.setdefault((r["file"], r["engine"], r["threads"], r["test"]), []).append(r["tok_s"])
    return {k: (statistics.median(v), len(v)) for k, v in med.items()}


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and ":" in line:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cmd_summary(a):
    rows = [json.loads(line) for line in open(a.results) if line.strip()]
    if not rows:
        sys.exit("summary: %s holds no measurements" % a.results)
    sizes = {r["file"]: r["bytes"] for r in rows}
    try:
        import importlib.metadata as md
        version = md.version("llama_cpp_python")
    except Exception:
        version = None
    results = [
        {"engine": engine, "file": os.path.basename(f), "bytes": sizes[f], "threads": t,
         "test": test, "tok_s": tok_s, "rounds": n}
        for (f, engine, t, test), (tok_s, n) in sorted(
            medians(rows).items(), key=lambda kv: (kv[0][2], sizes[kv[0][0]], kv[0][1], kv[0][3]))
    ]
    out = {"rounds": len({r["round"] for r in rows}), "cpu": cpu_model(),
           "cores": os.cpu_count(), "llama_cpp_python": version, "results": results}
    tmp = a.out + ".part"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    os.replace(tmp, a.out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quantize")
    q.add_argument("src")
    q.add_argument("dst")
    q.add_argument("type", help="F32, Q4_0, Q8_0, ...")
    b = sub.add_parser("bench")
    b.add_argument("--model", required=True)
    b.add_argument("--threads", type=int, required=True)
    r = sub.add_parser("run")
    r.add_argument("--vspec", required=True)
    r.add_argument("--results", required=True)
    r.add_argument("--threads", default="1,2")
    r.add_argument("--reps", type=int, default=5)
    r.add_argument("--both", nargs="*", default=[])
    r.add_argument("--vspec-only", nargs="*", default=[])
    for s in (b, r):
        s.add_argument("-p", dest="n_prompt", type=int, default=512)
        s.add_argument("-n", dest="n_gen", type=int, default=128)
        s.add_argument("-b", dest="batch", type=int, default=512)
        s.add_argument("--flash-attn", choices=["auto", "on", "off"], default="auto")
        s.add_argument("-d", dest="depths", default="0",
                       help="tokens in the cache before each test, comma separated")
    b.add_argument("-r", dest="reps", type=int, default=1)
    t = sub.add_parser("table")
    t.add_argument("results")
    m = sub.add_parser("summary")
    m.add_argument("results")
    m.add_argument("out")
    a = p.parse_args()
    {"quantize": cmd_quantize, "bench": cmd_bench, "run": cmd_run, "table": cmd_table,
     "summary": cmd_summary}[a.cmd](a)


if __name__ == "__main__":
    main()
