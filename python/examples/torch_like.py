"""The flow people know from torch, without torch: load a model, look at its graph and memory
plan, run a prompt step by step reading the logits, and sample.

    python python/examples/torch_like.py [--model PATH] [--max-tokens N]
"""

import argparse
from collections import Counter

import vspec


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="GGUF/.vspec/HF dir (default: SmolLM2-135M)")
    ap.add_argument("--prompt", default="The three primary colors are")
    ap.add_argument("--max-tokens", type=int, default=24)
    args = ap.parse_args()

    with vspec.Model(args.model) as model:  # ~ AutoModelForCausalLM.from_pretrained(...)
        info = model.info
        print(f"{info['architecture']}: {info['n_layer']} layers, d={info['n_embd']}, "
              f"vocab {info['n_vocab']}, {info['n_params'] / 1e6:.1f}M weights in "
              f"{info['weight_bytes'] / 2**20:.1f} MiB ({', '.join(info['formats'])})")

        # The graph, like print(model): every tensor and op, with formats and shapes.
        ir = model.ir(ctx=512)
        ops = Counter(op["kind"] if isinstance(op["kind"], str) else next(iter(op["kind"]))
                      for op in ir["ops"])
        print(f"graph: {len(ir['tensors'])} tensors, {len(ir['ops'])} ops: "
              + ", ".join(f"{n} {k}" for k, n in ops.most_common()))

        # The memory plan: every byte, before anything runs.
        plan = model.plan(ctx=512)
        print(f"plan at ctx 512: weights {plan['weight_bytes'] / 2**20:.1f} MiB + arena "
              f"{plan['arena_bytes'] / 2**20:.2f} MiB + KV {plan['kv_bytes'] / 2**20:.2f} MiB")

        # Step by step, reading the logits (~ with torch.no_grad(): logits = model(ids).logits).
        ids = model.tokenize(args.prompt, add_bos=True)
        sampler = vspec.Sampler(info["n_vocab"], temperature=0.7, top_k=40, seed=42)
        with model.session(ctx=512) as session:
            logits = session.eval(ids)  # memoryview of n_vocab floats for the last position
            out = []
            for _ in range(args.max_tokens):
                top = max(range(len(logits)), key=logits.__getitem__)  # ~ logits.argmax()
                token = sampler.sample(logits, ids + out)  # ~ torch.multinomial(softmax(l / T))
                if model.is_end(token):
                    break
                out.append(token)
                if len(out) <= 3:
                    print(f"  step {len(out)}: argmax {model.detokenize([top])!r} "
                          f"(logit {logits[top]:.2f}), sampled {model.detokenize([token])!r}")
                logits = session.eval([token])
        print(args.prompt + model.detokenize(out))


if __name__ == "__main__":
    main()
