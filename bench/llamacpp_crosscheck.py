#!/usr/bin/env python3
"""Random model configurations, vspec against llama.cpp on the same GGUF files.

    bench/.venv-llamacpp/bin/python bench/llamacpp_crosscheck.py [--seed S] [--configs N]
                                                                  [--types F32,Q8_0,...]

The fixtures under tests/fixtures pin three configurations; this draws new ones: for each, a
random Llama, Qwen2 (q/k/v biases) or Qwen3 (q/k norms, head_dim not always hidden/heads)
model with random head sizes (32–128, 80 and 96 included), grouped-query ratios 1–4, 1–3
layers, FFN widths that are and are not multiples of 256, RoPE bases, epsilons, tied or separate
output, written as an F32 GGUF by gguf-py with SmolLM2's tokenizer metadata (so both engines
load it), then quantized by llama.cpp's own `llama_model_quantize` to each requested type
(where a row is not a multiple of 256, llama.cpp falls back to other types, as real files do).
Both engines evaluate the same 14 random token ids: the first 7 as one prompt step, then one
at a time, f16 KV cache on both sides. Printed per file, relative to the largest |logit| of
llama.cpp's F32 run: the two engines' difference, and each engine's distance from that F32
reference (what its quantized arithmetic costs); and whether the argmax agrees.

Needs the venv of bench/llamacpp_side_by_side.sh (llama-cpp-python and gguf, pinned there),
target/release/libvspec.so (`cargo build --release -p vspec-capi`, or VSPEC_LIB) and the
default model (`vspec fetch`) for its tokenizer. Files are written to a temporary directory
and removed.
"""
import argparse
import json
import os
import random
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "python"))
sys.path.insert(0, os.path.join(REPO, "bench"))
os.environ.setdefault("VSPEC_LIB", os.path.join(REPO, "target", "release", "libvspec.so"))

import gguf  # noqa: E402
import llama_cpp  # noqa: E402
import vspec  # noqa: E402
from llamacpp_bench import cmd_quantize, quiet_llama_logs  # noqa: E402

DEFAULT_MODEL = os.path.expanduser("~/.cache/vspec/SmolLM2-135M-Instruct.Q4_1.gguf")
TYPES = "F32,Q8_0,Q4_0,Q4_1,Q5_0,Q5_1,Q2_K,Q3_K_M,Q4_K_M,Q5_K_M,Q6_K,IQ4_NL,IQ4_XS"
TOKENS = 14
CTX = 256


def tokenizer_fields(path):
    """The tokenizer.* key/values of a GGUF file, as (name, kind, value) for GGUFWriter."""
    reader = gguf.GGUFReader(path)
    out = []
    for name, f in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        kind = f.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            if f.types[1] == gguf.GGUFValueType.STRING:
                value = [bytes(f.parts[i]).decode("utf-8", "surrogateescape") for i in f.data]
            else:
                value = [f.parts[i].tolist()[0] for i in f.data]
        elif kind == gguf.GGUFValueType.STRING:
            value = bytes(f.parts[f.data[0]]).decode()
        else:
            value = f.parts[f.data[0]].tolist()[0]
        out.append((name, kind, value))
    return out


def add_field(writer, name, kind, value):
    if kind == gguf.GGUFValueType.ARRAY:
        writer.add_array(name, value)
    elif kind == gguf.GGUFValueType.STRING:
        writer.add_string(name, value)
    elif kind == gguf.GGUFValueType.BOOL:
        writer.add_bool(name, bool(value))
    elif kind == gguf.GGUFValueType.UINT32:
        writer.add_uint32(name, int(value))
    elif kind == gguf.GGUFValueType.INT32:
        writer.add_int32(name, int(value))
    else:
        sys.exit("tokenizer field %s has an unexpected type %s" % (name, kind))


def random_config(rng):
    arch = rng.choice(["llama", "qwen2", "qwen3"])
    head_dim = rng.choice([32, 64, 64, 80, 96, 128])
    n_kv = rng.choice([1, 2, 3, 4])
    n_heads = n_kv * rng.choice([1, 2, 3, 4])
    hidden = head_dim * n_heads
    if arch == "qwen3" and rng.random() < 0.5:
        hidden = rng.choice([256, 384, 512])  # head_dim * heads != hidden
    ffn = 32 * rng.randint(4, 40) if rng.random() < 0.5 else 256 * rng.randint(1, 6)
    return dict(arch=arch, head_dim=head_dim, n_heads=n_heads, n_kv=n_kv, hidden=hidden,
                ffn=ffn, layers=rng.randint(1, 3), eps=rng.choice([1e-5, 1e-6]),
                rope_base=rng.choice([10000.0, 100000.0, 1000000.0]),
                tied=rng.random() < 0.5)


def write_f32_gguf(path, cfg, tok_fields, vocab, rng):
    arch, hd, d, ffn = cfg["arch"], cfg["head_dim"], cfg["hidden"], cfg["ffn"]
    nh, nkv = cfg["n_heads"], cfg["n_kv"]
    w = gguf.GGUFWriter(path, arch)
    w.add_context_length(CTX)
    w.add_embedding_length(d)
    w.add_block_count(cfg["layers"])
    w.add_feed_forward_length(ffn)
    w.add_head_count(nh)
    w.add_head_count_kv(nkv)
    w.add_layer_norm_rms_eps(cfg["eps"])
    w.add_rope_freq_base(cfg["rope_base"])
    if hd * nh != d:
        w.add_key_length(hd)
        w.add_value_length(hd)
    w.add_file_type(0)
    for field in tok_fields:
        add_field(w, *field)

    def tensor(name, shape, scale, around_one=False):
        values = scale * rng.standard_normal(shape)
        w.add_tensor(name, (values + 1.0 if around_one else values).astype(np.float32))

    tensor("token_embd.weight", (vocab, d), 0.5)
    for i in range(cfg["layers"]):
        p = "blk.%d." % i
        tensor(p + "attn_norm.weight", (d,), 0.2, around_one=True)
        tensor(p + "attn_q.weight", (nh * hd, d), d ** -0.5)
        tensor(p + "attn_k.weight", (nkv * hd, d), d ** -0.5)
        tensor(p + "attn_v.weight", (nkv * hd, d), d ** -0.5)
        if arch == "qwen2":
            for name, rows in (("q", nh * hd), ("k", nkv * hd), ("v", nkv * hd)):
                tensor(p + "attn_%s.bias" % name, (rows,), 0.1)
        if arch == "qwen3":
            tensor(p + "attn_q_norm.weight", (hd,), 0.2, around_one=True)
            tensor(p + "attn_k_norm.weight", (hd,), 0.2, around_one=True)
        tensor(p + "attn_output.weight", (d, nh * hd), (nh * hd) ** -0.5)
        tensor(p + "ffn_norm.weight", (d,), 0.2, around_one=True)
        tensor(p + "ffn_gate.weight", (ffn, d), d ** -0.5)
        tensor(p + "ffn_up.weight", (ffn, d), d ** -0.5)
        tensor(p + "ffn_down.weight", (d, ffn), ffn ** -0.5)
    tensor("output_norm.weight", (d,), 0.2, around_one=True)
    if not cfg["tied"]:
        tensor("output.weight", (vocab, d), d ** -0.5)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llama_logits(path, tokens):
    """llama.cpp's logits for every token (one batch: its causal mask gives each its prefix)."""
    model = llama_cpp.Llama(model_path=path, n_ctx=CTX, n_batch=64, logits_all=True,
                            verbose=False, n_threads=2)
    model.eval(tokens)
    scores = np.array(model.scores[: len(tokens)], dtype=np.float32)
    del model
    return scores


def vspec_logits(path, tokens):
    """vspec's logits of the last prompt token, then of each token decoded one at a time."""
    half = len(tokens) // 2
    with vspec.Model(path) as model, model.session(ctx=CTX, threads=2, kv="f16") as s:
        rows = [np.array(s.eval(tokens[:half]), dtype=np.float32)]
        rows += [np.array(s.eval([t]), dtype=np.float32) for t in tokens[half:]]
    return np.stack(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--configs", type=int, default=4)
    ap.add_argument("--types", default=TYPES)
    ap.add_argument("--tokenizer-from", default=DEFAULT_MODEL,
                    help="a GGUF whose tokenizer the random models take (default: vspec fetch's)")
    a = ap.parse_args()
    keep = quiet_llama_logs(llama_cpp)
    tok_fields = tokenizer_fields(a.tokenizer_from)
    vocab = len(next(v for n, _, v in tok_fields if n == "tokenizer.ggml.tokens"))
    pick = random.Random(a.seed)
    worst = {}
    with tempfile.TemporaryDirectory(prefix="vspec-crosscheck-") as tmp:
        for c in range(a.configs):
            cfg = random_config(pick)
            rng = np.random.default_rng(a.seed * 1000 + c)
            f32 = os.path.join(tmp, "model.F32.gguf")
            write_f32_gguf(f32, cfg, tok_fields, vocab, rng)
            tokens = [int(t) for t in rng.integers(0, vocab, TOKENS)]
            half = TOKENS // 2
            ref = llama_logits(f32, tokens)[half - 1:]
            scale = float(np.max(np.abs(ref)))
            for kind in a.types.split(","):
                path = f32
                if kind != "F32":
                    path = os.path.join(tmp, "model.%s.gguf" % kind)
                    cmd_quantize(argparse.Namespace(src=f32, dst=path, type=kind))
                    # cmd_quantize installed its own log callback and let it go: install ours
                    # again before llama.cpp logs through a freed one.
                    keep = quiet_llama_logs(llama_cpp)
                ours = vspec_logits(path, tokens)
                theirs = ref if kind == "F32" else llama_logits(path, tokens)[half - 1:]
                row = dict(config=cfg, type=kind,
                           engines=float(np.max(np.abs(ours - theirs))) / scale,
                           llama_cpp_vs_f32=float(np.max(np.abs(theirs - ref))) / scale,
                           vspec_vs_f32=float(np.max(np.abs(ours - ref))) / scale,
                           argmax_agree="%d/%d" % ((ours.argmax(1) == theirs.argmax(1)).sum(),
                                                   len(ours)))
                print(json.dumps(row), flush=True)
                worst[kind] = max(worst.get(kind, 0.0), row["engines"])
                if path != f32:
                    os.remove(path)
    print("worst difference between the engines, per type:",
          json.dumps({k: round(v, 5) for k, v in worst.items()}))
    del keep


if __name__ == "__main__":
    main()
