"""Vspec from Python: low-bit LLM inference over ctypes on libvspec (no torch; numpy optional).

    import vspec
    with vspec.Model() as model:                      # the default model, fetched like the CLI
        print(model.generate("The capital of France is", 16, temperature=0))

Errors raise :class:`VspecError` subclasses carrying the library's message.
"""

import ctypes
import json
import queue
import threading
from collections import namedtuple

from . import _lib
from ._lib import lib

__all__ = [
    "Model",
    "Session",
    "Sampler",
    "VspecError",
    "ArgumentError",
    "ModelError",
    "HandleError",
    "BufferTooSmallError",
    "ContextFullError",
    "BusyError",
    "UnsupportedError",
    "RuntimeFailure",
    "InternalError",
    "version",
]

__version__ = "0.1.0"


class VspecError(Exception):
    """A failed libvspec call: ``code`` is its status, the message is the library's."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class ArgumentError(VspecError, ValueError):
    """An argument out of range, not UTF-8, or null."""


class ModelError(VspecError):
    """The model could not be opened or is invalid."""


class HandleError(VspecError):
    """A handle that was freed (a closed Model/Session/Sampler) or is of the wrong kind."""


class BufferTooSmallError(VspecError):
    """A buffer (e.g. a session's caller-provided memory) is smaller than the plan needs."""


class ContextFullError(VspecError):
    """The tokens do not fit in what is left of the session's context."""


class BusyError(VspecError):
    """The session is in use by another thread."""


class UnsupportedError(VspecError):
    """A feature this build or this model does not have (a KV type, a chat template)."""


class RuntimeFailure(VspecError):
    """Running the model failed (out of memory, I/O, download)."""


class InternalError(VspecError):
    """A bug caught at the C boundary."""


_ERRORS = {
    _lib.ERR_ARGUMENT: ArgumentError,
    _lib.ERR_MODEL: ModelError,
    _lib.ERR_HANDLE: HandleError,
    _lib.ERR_BUFFER_TOO_SMALL: BufferTooSmallError,
    _lib.ERR_CONTEXT_FULL: ContextFullError,
    _lib.ERR_BUSY: BusyError,
    _lib.ERR_UNSUPPORTED: UnsupportedError,
    _lib.ERR_RUNTIME: RuntimeFailure,
    _lib.ERR_INTERNAL: InternalError,
}


def _check(status):
    if status != _lib.OK:
        message = (lib.vspec_last_error() or b"").decode("utf-8", "replace")
        raise _ERRORS.get(status, VspecError)(status, message)


def _text_out(call):
    """Runs ``call(buf, cap, len_ptr)`` twice: once to learn the size, once to fill."""
    n = ctypes.c_size_t(0)
    status = call(None, 0, ctypes.byref(n))
    if status not in (_lib.OK, _lib.ERR_BUFFER_TOO_SMALL):
        _check(status)
    buf = ctypes.create_string_buffer(n.value + 1)
    _check(call(buf, n.value + 1, ctypes.byref(n)))
    return buf.raw[: n.value].decode("utf-8")


def version():
    """The library's version string."""
    return lib.vspec_version().decode()


def _kv(kv):
    if kv not in _lib.KV_TYPES:
        raise ArgumentError(_lib.ERR_ARGUMENT, f"kv must be one of {sorted(_lib.KV_TYPES)}")
    return _lib.KV_TYPES[kv]


def _sampler_params(temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, seed):
    return _lib.SamplerParams(
        temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, seed
    )


def _tokens_array(tokens):
    tokens = list(tokens)
    return (ctypes.c_uint32 * len(tokens))(*tokens), len(tokens)


class _Handle:
    """Owns one library handle; freed by close(), the context manager, or the collector."""

    _free = None

    def __init__(self, handle):
        self._handle = handle
        self._closed = False

    def close(self):
        if not self._closed:
            self._closed = True
            _check(type(self)._free(self._handle))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            if not getattr(self, "_closed", True):
                self.close()
        except Exception:
            pass


Perplexity = namedtuple("Perplexity", "ppl ppl_err chunks tokens")


class Model(_Handle):
    """A model file (GGUF, .vspec or a Hugging Face directory), memory-mapped.

    ``Model()`` opens the default model (SmolLM2-135M-Instruct), downloading it into the cache
    first if needed, as ``vspec fetch`` does. A model may be shared by threads; each thread makes
    its own :class:`Session`.
    """

    _free = staticmethod(lib.vspec_model_free)

    def __init__(self, path=None, *, fetch=True):
        if path is None:
            path = _text_out(
                lambda b, c, n: lib.vspec_default_model_path(bool(fetch), b, c, n)
            )
        handle = ctypes.c_void_p()
        _check(lib.vspec_model_open(str(path).encode(), ctypes.byref(handle)))
        super().__init__(handle.value)
        self.path = str(path)
        self._keep = None

    @classmethod
    def from_bytes(cls, data, name="<memory>"):
        """A model from the bytes of a GGUF or .vspec file: a writable buffer (bytearray,
        memoryview, mmap) is lent to the library and kept referenced by the model; ``bytes`` are
        copied once."""
        if isinstance(data, bytes):
            buf = (ctypes.c_char * len(data)).from_buffer_copy(data)  # bytes cannot be lent
        else:
            buf = (ctypes.c_char * len(data)).from_buffer(data)  # lent: bytearray, memoryview
        handle = ctypes.c_void_p()
        _check(
            lib.vspec_model_open_memory(
                ctypes.addressof(buf), len(data), name.encode(), ctypes.byref(handle)
            )
        )
        model = cls.__new__(cls)
        _Handle.__init__(model, handle.value)
        model.path = name
        model._keep = buf
        return model

    @property
    def info(self):
        """Metadata: architecture, n_ctx_train, n_vocab, n_layer, ..., formats (a list)."""
        i = _lib.ModelInfo()
        _check(lib.vspec_model_info(self._handle, ctypes.byref(i)))
        out = {name: getattr(i, name) for name, _ in _lib.ModelInfo._fields_}
        out["architecture"] = i.architecture.decode()
        out["formats"] = i.formats.decode().split(",")
        return out

    @property
    def n_vocab(self):
        return self.info["n_vocab"]

    def plan(self, ctx=0, batch=0, kv="f32"):
        """The memory plan of a session (bytes by category), from the headers alone."""
        p = _lib.Plan()
        _check(lib.vspec_model_plan(self._handle, ctx, batch, _kv(kv), ctypes.byref(p)))
        out = {name: getattr(p, name) for name, _ in _lib.Plan._fields_}
        out["kv_type"] = kv
        return out

    def ir(self, ctx=0, batch=0, plan=False):
        """The graph IR as Python data (the JSON ``vspec ir`` prints; with ``plan=True``,
        ``{"graph": ..., "plan": ...}`` as ``vspec ir --plan``)."""
        text = _text_out(
            lambda b, c, n: lib.vspec_model_ir_json(self._handle, ctx, batch, plan, b, c, n)
        )
        return json.loads(text)

    def tokenize(self, text, add_bos=False):
        """Token ids of ``text`` (special tokens written in it become their ids)."""
        data = text.encode("utf-8")
        n = ctypes.c_size_t(0)
        status = lib.vspec_tokenize(self._handle, data, len(data), add_bos, None, 0, ctypes.byref(n))
        if status not in (_lib.OK, _lib.ERR_BUFFER_TOO_SMALL):
            _check(status)
        out = (ctypes.c_uint32 * max(n.value, 1))()
        _check(lib.vspec_tokenize(self._handle, data, len(data), add_bos, out, n.value, ctypes.byref(n)))
        return list(out[: n.value])

    def detokenize(self, tokens):
        """The text of ``tokens``."""
        arr, n = _tokens_array(tokens)
        return _text_out(lambda b, c, ln: lib.vspec_detokenize(self._handle, arr, n, b, c, ln))

    def is_end(self, token):
        """Whether ``token`` ends a generation (EOS or end of turn)."""
        out = ctypes.c_bool()
        _check(lib.vspec_model_token_is_end(self._handle, token, ctypes.byref(out)))
        return out.value

    def apply_chat_template(self, messages, add_generation_prompt=True):
        """Renders ``[{"role": ..., "content": ...}, ...]`` with the model's chat template."""
        encoded = [(m["role"].encode(), m["content"].encode()) for m in messages]
        arr = (_lib.ChatMessage * max(len(encoded), 1))(
            *[_lib.ChatMessage(r, c) for r, c in encoded]
        )
        return _text_out(
            lambda b, c, n: lib.vspec_chat_apply(
                self._handle, arr, len(encoded), add_generation_prompt, b, c, n
            )
        )

    def session(self, ctx=0, batch=0, threads=0, kv="f32", buffer=None):
        """A :class:`Session`; ``buffer`` (a writable bytes-like object of at least
        ``plan(ctx, batch)["session_bytes"]``) holds its arena and KV cache."""
        return Session(self, ctx=ctx, batch=batch, threads=threads, kv=kv, buffer=buffer)

    def generate(self, prompt, max_tokens=128, *, ctx=0, threads=0, **sampling):
        """The continuation of ``prompt`` (a fresh session), as ``vspec generate`` makes it.
        Sampling options: temperature=0.8, top_k=40, top_p=0.95, min_p=0.05,
        repeat_penalty=1.0, repeat_last_n=64, seed=0 (the CLI's defaults; temperature=0 is
        greedy)."""
        with self.session(ctx=ctx, threads=threads) as s:
            return s.generate(prompt, max_tokens, **sampling)

    def stream(self, prompt, max_tokens=128, *, ctx=0, threads=0, **sampling):
        """Like :meth:`generate`, yielding the text piece by piece as it is produced."""
        with self.session(ctx=ctx, threads=threads) as s:
            yield from s.stream(prompt, max_tokens, **sampling)

    def chat(self, messages, max_tokens=256, *, ctx=0, threads=0, **sampling):
        """The assistant's reply to ``messages`` (rendered with the model's chat template)."""
        return self.generate(
            self.apply_chat_template(messages, True), max_tokens, ctx=ctx, threads=threads, **sampling
        )

    def perplexity(self, text, ctx=512, chunks=0, threads=0):
        """Perplexity of ``text`` with ``vspec perplexity``'s protocol: (ppl, ppl_err, chunks,
        tokens)."""
        data = text.encode("utf-8")
        r = _lib.Perplexity()
        _check(lib.vspec_perplexity(self._handle, data, len(data), ctx, chunks, threads, ctypes.byref(r)))
        return Perplexity(r.ppl, r.ppl_err, r.n_chunks, r.n_tokens)


_SAMPLING_DEFAULTS = dict(
    temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0, repeat_last_n=64, seed=0
)


def _sampling(options):
    unknown = set(options) - set(_SAMPLING_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown sampling options: {sorted(unknown)}")
    return _sampler_params(**{**_SAMPLING_DEFAULTS, **options})


class Session(_Handle):
    """A model planned for a context: evaluate tokens and read logits, or generate. One thread
    at a time."""

    _free = staticmethod(lib.vspec_session_free)

    def __init__(self, model, ctx=0, batch=0, threads=0, kv="f32", buffer=None):
        params = lib.vspec_session_default_params()
        params.n_ctx, params.n_batch, params.n_threads, params.kv_type = ctx, batch, threads, _kv(kv)
        keep = None
        if buffer is not None:
            keep = (ctypes.c_char * len(buffer)).from_buffer(buffer)
            params.mem, params.mem_len = ctypes.addressof(keep), len(buffer)
        handle = ctypes.c_void_p()
        _check(lib.vspec_session_new(model._handle, ctypes.byref(params), ctypes.byref(handle)))
        super().__init__(handle.value)
        self.model = model
        self._buffer = keep
        self._logits = None

    def eval(self, tokens):
        """Evaluates ``tokens`` at the next positions; returns the last token's logits as a
        memoryview of floats (a copy, also kept as :attr:`logits`)."""
        arr, n = _tokens_array(tokens)
        ptr = ctypes.POINTER(ctypes.c_float)()
        n_vocab = ctypes.c_size_t(0)
        _check(lib.vspec_session_eval(self._handle, arr, n, ctypes.byref(ptr), ctypes.byref(n_vocab)))
        self._logits = memoryview(ctypes.string_at(ptr, n_vocab.value * 4)).cast("f")
        return self._logits

    @property
    def logits(self):
        """The logits of the last evaluated token (memoryview of float), or None."""
        return self._logits

    def logits_numpy(self):
        """:attr:`logits` as a numpy float32 array (needs numpy)."""
        import numpy

        return numpy.frombuffer(self._logits, dtype=numpy.float32)

    @property
    def pos(self):
        """Positions held in the KV cache."""
        p = ctypes.c_uint32()
        _check(lib.vspec_session_pos(self._handle, ctypes.byref(p)))
        return p.value

    def reset(self):
        """Forgets every cached position."""
        _check(lib.vspec_session_reset(self._handle))

    def truncate(self, pos):
        """Forgets the cached positions from ``pos`` on."""
        _check(lib.vspec_session_truncate(self._handle, pos))

    def _generate(self, prompt, max_tokens, params, on_piece):
        data = prompt.encode("utf-8")
        failure = []

        def callback(_user, token, piece, length):
            try:
                stop = on_piece(token, ctypes.string_at(piece, length).decode("utf-8"))
                return 1 if stop else 0
            except BaseException as e:  # noqa: BLE001 - re-raised after the C call returns
                failure.append(e)
                return 1

        cb = _lib.TokenCallback(callback)
        result = _lib.GenerateResult()
        status = lib.vspec_generate(
            self._handle, data, len(data), max_tokens, ctypes.byref(params), cb, None, ctypes.byref(result)
        )
        if failure:
            raise failure[0]
        _check(status)
        return result

    def generate(self, prompt, max_tokens=128, **sampling):
        """The continuation of ``prompt`` after what the session holds (see Model.generate)."""
        pieces = []
        self._generate(prompt, max_tokens, _sampling(sampling), lambda t, p: pieces.append(p))
        return "".join(pieces)

    def stream(self, prompt, max_tokens=128, **sampling):
        """Yields the continuation piece by piece; closing the generator early stops the
        generation."""
        params = _sampling(sampling)
        pieces = queue.Queue()
        stop = threading.Event()
        done = object()

        def on_piece(_token, piece):
            if piece:
                pieces.put(piece)
            return stop.is_set()

        def worker():
            try:
                self._generate(prompt, max_tokens, params, on_piece)
                pieces.put(done)
            except BaseException as e:  # noqa: BLE001 - handed to the consumer
                pieces.put(e)

        thread = threading.Thread(target=worker, daemon=True)
        thread.start()
        try:
            while True:
                item = pieces.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            thread.join()


class Sampler(_Handle):
    """A seeded sampler with the CLI's options (``temperature=0`` is greedy)."""

    _free = staticmethod(lib.vspec_sampler_free)

    def __init__(self, n_vocab, **sampling):
        handle = ctypes.c_void_p()
        _check(lib.vspec_sampler_new(ctypes.byref(_sampling(sampling)), n_vocab, ctypes.byref(handle)))
        super().__init__(handle.value)

    def sample(self, logits, history=()):
        """The next token for ``logits`` (a memoryview/sequence of floats) after ``history``."""
        if isinstance(logits, memoryview):
            raw = logits.tobytes()
            arr = (ctypes.c_float * len(logits)).from_buffer_copy(raw)
        else:
            arr = (ctypes.c_float * len(logits))(*logits)
        hist, n_hist = _tokens_array(history)
        token = ctypes.c_uint32()
        _check(lib.vspec_sampler_sample(self._handle, arr, len(arr), hist, n_hist, ctypes.byref(token)))
        return token.value
