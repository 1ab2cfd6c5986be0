"""ctypes declarations of libvspec (capi/include/vspec.h), and where the library is found."""

import ctypes
import os
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_bool,
    c_char_p,
    c_double,
    c_float,
    c_int32,
    c_size_t,
    c_uint32,
    c_uint64,
    c_void_p,
)

ABI_VERSION = 1

OK = 0
ERR_ARGUMENT = 1
ERR_MODEL = 2
ERR_HANDLE = 3
ERR_BUFFER_TOO_SMALL = 4
ERR_CONTEXT_FULL = 5
ERR_BUSY = 6
ERR_UNSUPPORTED = 7
ERR_RUNTIME = 8
ERR_INTERNAL = 99

KV_TYPES = {"f32": 0, "f16": 1, "q8_0": 2}
TOKEN_NONE = 0xFFFFFFFF
STOP_REASONS = {0: "end", 1: "max_tokens", 2: "callback", 3: "context_full"}


class ModelInfo(Structure):
    _fields_ = [
        ("architecture", c_char_p),
        ("formats", c_char_p),
        ("n_ctx_train", c_uint32),
        ("n_vocab", c_uint32),
        ("n_layer", c_uint32),
        ("n_embd", c_uint32),
        ("n_head", c_uint32),
        ("n_head_kv", c_uint32),
        ("head_dim", c_uint32),
        ("bos", c_int32),
        ("eos", c_int32),
        ("add_bos", c_bool),
        ("has_chat_template", c_bool),
        ("n_params", c_uint64),
        ("weight_bytes", c_uint64),
    ]


class Plan(Structure):
    _fields_ = [
        ("n_ctx", c_uint32),
        ("n_batch", c_uint32),
        ("kv_type", c_uint32),
        ("weight_bytes", c_uint64),
        ("arena_bytes", c_uint64),
        ("kv_bytes", c_uint64),
        ("session_bytes", c_uint64),
        ("total_bytes", c_uint64),
    ]


class ChatMessage(Structure):
    _fields_ = [("role", c_char_p), ("content", c_char_p)]


class Perplexity(Structure):
    _fields_ = [
        ("ppl", c_double),
        ("ppl_err", c_double),
        ("n_chunks", c_uint32),
        ("n_tokens", c_uint64),
    ]


class SamplerParams(Structure):
    _fields_ = [
        ("temperature", c_float),
        ("top_k", c_uint32),
        ("top_p", c_float),
        ("min_p", c_float),
        ("repeat_penalty", c_float),
        ("repeat_last_n", c_uint32),
        ("seed", c_uint64),
    ]


class SessionParams(Structure):
    _fields_ = [
        ("n_ctx", c_uint32),
        ("n_batch", c_uint32),
        ("n_threads", c_uint32),
        ("kv_type", c_uint32),
        ("mem", c_void_p),
        ("mem_len", c_size_t),
    ]


class GenerateResult(Structure):
    _fields_ = [
        ("n_prompt", c_uint32),
        ("n_generated", c_uint32),
        ("stop_reason", c_uint32),
    ]


TokenCallback = CFUNCTYPE(c_int32, c_void_p, c_uint32, POINTER(ctypes.c_char), c_size_t)

# Handles are opaque numbers: c_void_p keeps them as Python ints.
_H = c_void_p
_P = POINTER
_SIGNATURES = {
    "vspec_version": (c_char_p, []),
    "vspec_abi_version": (c_uint32, []),
    "vspec_last_error": (c_char_p, []),
    "vspec_model_open": (c_int32, [c_char_p, _P(_H)]),
    "vspec_model_open_memory": (c_int32, [c_void_p, c_size_t, c_char_p, _P(_H)]),
    "vspec_model_free": (c_int32, [_H]),
    "vspec_model_info": (c_int32, [_H, _P(ModelInfo)]),
    "vspec_model_token_is_end": (c_int32, [_H, c_uint32, _P(c_bool)]),
    "vspec_model_plan": (c_int32, [_H, c_uint32, c_uint32, c_uint32, _P(Plan)]),
    "vspec_model_ir_json": (
        c_int32,
        [_H, c_uint32, c_uint32, c_bool, c_void_p, c_size_t, _P(c_size_t)],
    ),
    "vspec_tokenize": (
        c_int32,
        [_H, c_char_p, c_size_t, c_bool, _P(c_uint32), c_size_t, _P(c_size_t)],
    ),
    "vspec_detokenize": (
        c_int32,
        [_H, _P(c_uint32), c_size_t, c_void_p, c_size_t, _P(c_size_t)],
    ),
    "vspec_chat_apply": (
        c_int32,
        [_H, _P(ChatMessage), c_size_t, c_bool, c_void_p, c_size_t, _P(c_size_t)],
    ),
    "vspec_perplexity": (
        c_int32,
        [_H, c_char_p, c_size_t, c_uint32, c_uint32, c_uint32, _P(Perplexity)],
    ),
    "vspec_default_model_path": (c_int32, [c_bool, c_void_p, c_size_t, _P(c_size_t)]),
    "vspec_sampler_default_params": (SamplerParams, []),
    "vspec_sampler_greedy_params": (SamplerParams, []),
    "vspec_sampler_new": (c_int32, [_P(SamplerParams), c_uint32, _P(_H)]),
    "vspec_sampler_sample": (
        c_int32,
        [_H, _P(c_float), c_size_t, _P(c_uint32), c_size_t, _P(c_uint32)],
    ),
    "vspec_sampler_free": (c_int32, [_H]),
    "vspec_session_default_params": (SessionParams, []),
    "vspec_session_new": (c_int32, [_H, _P(SessionParams), _P(_H)]),
    "vspec_session_free": (c_int32, [_H]),
    "vspec_session_eval": (
        c_int32,
        [_H, _P(c_uint32), c_size_t, _P(_P(c_float)), _P(c_size_t)],
    ),
    "vspec_session_pos": (c_int32, [_H, _P(c_uint32)]),
    "vspec_session_reset": (c_int32, [_H]),
    "vspec_session_truncate": (c_int32, [_H, c_uint32]),
    "vspec_generate": (
        c_int32,
        [
            _H,
            c_char_p,
            c_size_t,
            c_uint32,
            _P(SamplerParams),
            TokenCallback,
            c_void_p,
            _P(GenerateResult),
        ],
    ),
}


def _candidates():
    env = os.environ.get("VSPEC_LIB")
    if env:
        yield env
    here = os.path.dirname(os.path.abspath(__file__))
    yield os.path.join(here, "libvspec.so")
    # Running from a checkout without installing: the workspace's newest build (`cargo build`
    # puts it in target/release, `cargo test` only in target/release/deps).
    release = os.path.join(here, "..", "..", "target", "release")
    builds = [os.path.join(release, "libvspec.so"), os.path.join(release, "deps", "libvspec.so")]
    yield from sorted(
        (p for p in builds if os.path.isfile(p)), key=os.path.getmtime, reverse=True
    ) or builds


def load():
    """Loads libvspec: $VSPEC_LIB, else the copy installed with the package, else the
    checkout's target/release; checks the ABI number against the one this module speaks."""
    tried = []
    for path in _candidates():
        if not os.path.isfile(path):
            tried.append(path)
            continue
        lib = ctypes.CDLL(os.path.abspath(path))
        for name, (restype, argtypes) in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.restype = restype
            fn.argtypes = argtypes
        abi = lib.vspec_abi_version()
        if abi != ABI_VERSION:
            raise ImportError(
                f"{path} has C ABI {abi}, this vspec package speaks ABI {ABI_VERSION}"
            )
        return lib
    raise ImportError(
        "libvspec.so not found (tried: " + ", ".join(tried) + "); "
        "install with `pip install ./python` or set VSPEC_LIB"
    )


lib = load()
