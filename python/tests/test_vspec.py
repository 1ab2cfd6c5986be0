"""The Python package against the CLI and the library's errors. Needs the default model
(`vspec fetch`) and the CLI (target/release/vspec, or $VSPEC_CLI)."""

import os
import subprocess
import sys

import pytest

import vspec

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "hf", "llama")
CLI = os.environ.get("VSPEC_CLI", os.path.join(ROOT, "target", "release", "vspec"))
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "<|im_start|>user\nName three fruits.<|im_end|>\n<|im_start|>assistant\n",
]


@pytest.fixture(scope="module")
def model():
    try:
        m = vspec.Model(fetch=False)  # the cached default model
    except vspec.ModelError:
        if os.environ.get("VSPEC_REQUIRE_MODEL") == "1":
            raise
        pytest.skip("the default model is absent: run `vspec fetch`")
    with m:
        yield m


def cli_greedy(prompt, n, *extra):
    out = subprocess.run(
        # The C API and this package default to an f32 KV cache; the CLI to f16.
        [CLI, "generate", "-p", prompt, "-n", str(n), "--temp", "0", "-c", "512", "-t", "1",
         "--kv", "f32", *extra],
        capture_output=True,
        check=True,
    )
    return out.stdout.decode("utf-8")


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_generate_and_stream_equal_the_cli(model, prompt):
    expected = cli_greedy(prompt, 24)
    assert model.generate(prompt, 24, temperature=0, ctx=512, threads=1) + "\n" == expected
    assert "".join(model.stream(prompt, 24, temperature=0, ctx=512)) + "\n" == expected


def test_step_by_step_eval_and_sampler_equal_generate(model):
    prompt = PROMPTS[0]
    ids = model.tokenize(prompt, add_bos=True)
    greedy = vspec.Sampler(model.n_vocab, temperature=0)
    out = []
    with model.session(ctx=128, batch=4) as s:
        logits = s.eval(ids)
        assert len(logits) == model.n_vocab and s.pos == len(ids)
        assert s.logits is logits
        for _ in range(12):
            t = greedy.sample(logits, ids + out)
            assert t == max(range(len(logits)), key=logits.__getitem__)
            out.append(t)
            logits = s.eval([t])
    assert model.detokenize(out) == model.generate(prompt, 12, temperature=0, ctx=128)


def test_seeded_sampling_repeats(model):
    a = model.generate(PROMPTS[1], 16, temperature=0.9, seed=3, ctx=256)
    b = model.generate(PROMPTS[1], 16, temperature=0.9, seed=3, ctx=256)
    assert a == b


def test_tokenize_chat_metadata_plan_ir(model):
    text = "Hello, wörld! <|im_start|>"
    ids = model.tokenize(text)
    assert model.detokenize(ids) == text
    assert model.tokenize("") == []
    info = model.info
    assert info["architecture"] == "llama" and info["n_vocab"] == 49152
    assert "Q4_1" in info["formats"] and info["has_chat_template"]
    chat = model.apply_chat_template([{"role": "user", "content": "Hi"}])
    assert chat.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    question = "What is the capital of France?"
    reply = model.chat([{"role": "user", "content": question}], 16, temperature=0, ctx=512)
    assert reply + "\n" == cli_greedy(question, 16, "--chat-template")
    plan = model.plan(ctx=4096)
    assert plan["kv_bytes"] == 2 * 30 * 4096 * 192 * 4
    assert plan["total_bytes"] == plan["weight_bytes"] + plan["arena_bytes"] + plan["kv_bytes"]
    assert model.plan(ctx=4096, kv="f16")["kv_bytes"] == plan["kv_bytes"] // 2
    ir = model.ir(ctx=64)
    assert {"tensors", "ops"} <= set(ir)
    assert "plan" in model.ir(ctx=64, plan=True)


def test_session_in_a_caller_buffer(model):
    plan = model.plan(ctx=64, batch=16)
    buf = bytearray(plan["session_bytes"])
    with model.session(ctx=64, batch=16, buffer=buf) as s:
        logits = list(s.eval(model.tokenize("Hello")))
    with model.session(ctx=64, batch=16) as s:
        assert list(s.eval(model.tokenize("Hello"))) == logits
    with pytest.raises(vspec.BufferTooSmallError, match="short"):
        model.session(ctx=64, batch=16, buffer=bytearray(plan["session_bytes"] - 1))


def test_perplexity(model):
    with open(os.path.join(ROOT, "tests", "fixtures", "text", "emma.txt"), encoding="utf-8") as f:
        text = f.read()[:20000]
    r = model.perplexity(text, ctx=128, chunks=2, threads=1)
    assert r.chunks == 2 and 1.0 < r.ppl < 200.0 and r.ppl_err > 0
    with pytest.raises(vspec.ContextFullError, match="fewer than one chunk"):
        model.perplexity("too short", ctx=128)


def test_logits_numpy(model):
    np = pytest.importorskip("numpy")
    with model.session(ctx=32) as s:
        s.eval(model.tokenize("Hi"))
        a = s.logits_numpy()
        assert a.dtype == np.float32 and a.shape == (model.n_vocab,)


def test_errors_carry_the_library_message(model):
    with pytest.raises(vspec.ModelError, match="/nonexistent/model.gguf"):
        vspec.Model("/nonexistent/model.gguf")
    with pytest.raises(vspec.ModelError, match="junk.gguf"):
        vspec.Model.from_bytes(b"\0" * 64, "junk.gguf")
    with pytest.raises(vspec.ArgumentError, match="kv must be one of"):
        model.session(kv="f12")
    with pytest.raises(vspec.ArgumentError, match="sampler.temperature"):
        model.generate("Hi", 4, temperature=-1)
    with pytest.raises(TypeError, match="unknown sampling options"):
        model.generate("Hi", 4, temprature=0)
    with model.session(ctx=8) as s:
        with pytest.raises(vspec.ContextFullError, match="do not fit"):
            s.eval(list(range(9)))
        with pytest.raises(vspec.ArgumentError, match="outside the vocabulary"):
            s.eval([10**6])
        with pytest.raises(vspec.ArgumentError, match="empty"):
            s.generate("", 4)
    s.close()  # closing twice is fine in Python...
    with pytest.raises(vspec.HandleError, match="already freed"):
        s.eval([1])  # ...but a closed session is an error from the library


def test_model_from_bytes_and_context_managers():
    small = vspec.Model(FIXTURE)
    with small.session(ctx=32) as s:
        s.eval(small.tokenize("hello"))
    small.close()
    with pytest.raises(vspec.HandleError):
        small.tokenize("x")


def test_model_from_bytes_generates_like_the_file(model):
    # One byte in, so the bytes start at an odd address: nothing needs the buffer aligned.
    with open(model.path, "rb") as f:
        data = bytearray(1) + f.read()
    with vspec.Model.from_bytes(memoryview(data)[1:], "smollm2.gguf") as m:
        assert m.info == model.info
        with m.session(ctx=64, threads=1) as s, model.session(ctx=64, threads=1) as t:
            assert list(s.eval([1, 2, 3])) == list(t.eval([1, 2, 3]))
        assert m.generate(PROMPTS[0], 8, temperature=0, ctx=64) == model.generate(
            PROMPTS[0], 8, temperature=0, ctx=64
        )


def test_stream_can_stop_early(model):
    gen = model.stream(PROMPTS[0], 64, temperature=0, ctx=256)
    first = next(gen)
    gen.close()
    assert first


def test_torch_like_example_runs():
    # The package as imported here (installed, or this checkout's python/ folder).
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(vspec.__file__)))
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "python", "examples", "torch_like.py"),
         "--max-tokens", "6"],
        capture_output=True, check=True, text=True, env=env,
    )
    assert "graph:" in out.stdout and "plan at ctx 512" in out.stdout


def test_every_kv_type_runs(model):
    tokens = model.tokenize("The capital of France is")
    for kv in ["f16", "q8_0"]:
        with model.session(ctx=64, kv=kv) as s:
            logits = s.eval(tokens)
            assert len(logits) == model.n_vocab
