//! Models: open from a path or a caller's buffer, metadata, the memory plan, the graph IR,
//! tokenization, chat templates and perplexity.

use crate::cbuf::{self, copy_out, put};
use crate::error::{
    guarded, Failure, Outcome, VSPEC_ERR_ARGUMENT, VSPEC_ERR_CONTEXT_FULL, VSPEC_ERR_MODEL,
    VSPEC_ERR_RUNTIME, VSPEC_ERR_UNSUPPORTED,
};
use crate::handle::{self, Kind, Object};
use std::ffi::{c_char, c_void, CString};
use std::path::Path;
use std::sync::Arc;
use vspec_core::graph::{Limits, Role};
use vspec_core::kv::KvType;
use vspec_core::plan::Plan;
use vspec_host::chat::{ChatMessage, ChatTemplate};
use vspec_host::expand::Expansion;
use vspec_host::model::{caller_memory_bytes, ModelBytes};
use vspec_host::tokenizer::Tokenizer;
use vspec_host::{Engine, ModelFile};

/// Opaque model handle. A model is immutable and may be used from any number of threads at once.
pub struct VspecModel {
    _opaque: [u8; 0],
}

/// KV cache element type: f32, the exact reference.
pub const VSPEC_KV_F32: u32 = 0;
/// KV cache element type: f16 (half the bytes of f32; the CLI's default).
pub const VSPEC_KV_F16: u32 = 1;
/// KV cache element type: q8_0, blocks of 32 along the head dimension (8.5 bits per value;
/// needs a head dimension that is a multiple of 32).
pub const VSPEC_KV_Q8_0: u32 = 2;

/// Context used when a call passes `n_ctx = 0`: the model's training context, at most this.
const DEFAULT_CTX_CAP: usize = 4096;
/// Tokens per forward step when a call passes `n_batch = 0` (the CLI's `-b` default).
const DEFAULT_BATCH: usize = 512;

/// An open model: the file (mapped or borrowed), its tokenizer, and what `vspec_model_info`
/// points into.
pub(crate) struct ModelInner {
    pub(crate) file: ModelFile,
    pub(crate) tokenizer: Tokenizer,
    architecture: CString,
    formats: CString,
    n_params: u64,
    weight_bytes: u64,
}

/// The limits and KV type a call asks for: 0 means the default, a context larger than the
/// model's training context is allowed (as on the CLI), the batch never exceeds the context.
pub(crate) fn limits(
    model: &ModelInner,
    n_ctx: u32,
    n_batch: u32,
    kv_type: u32,
    all_logits: bool,
) -> Outcome<(Limits, KvType)> {
    let kv = match kv_type {
        VSPEC_KV_F32 => KvType::F32,
        VSPEC_KV_F16 => KvType::F16,
        VSPEC_KV_Q8_0 => KvType::Q8_0,
        other => {
            return Err(Failure::argument(format!(
                "kv_type {other} is not a VSPEC_KV_* value"
            )))
        }
    };
    let ctx = match n_ctx {
        0 => model.file.config.train_ctx.clamp(1, DEFAULT_CTX_CAP),
        n => n as usize,
    };
    let batch = match n_batch {
        0 => DEFAULT_BATCH,
        n => n as usize,
    };
    let limits = Limits {
        max_ctx: ctx,
        max_tokens: batch.min(ctx),
        all_logits,
    };
    Ok((limits, kv))
}

impl ModelInner {
    fn new(file: ModelFile) -> Outcome<ModelInner> {
        let tokenizer = file
            .tokenizer()
            .map_err(|e| Failure::host(VSPEC_ERR_MODEL, &e))?;
        // Formats and sizes come from binding a minimal graph (headers only, no weight read).
        let (graph, weights) = file
            .bind(Limits {
                max_ctx: 1,
                max_tokens: 1,
                all_logits: false,
            })
            .map_err(|e| Failure::host(VSPEC_ERR_MODEL, &e))?;
        let mut formats: Vec<&str> = Vec::new();
        let (mut n_params, mut weight_bytes) = (0u64, 0u64);
        for (t, w) in graph.tensors.iter().zip(&weights) {
            if let (Role::Weight, Some(w)) = (t.role, w) {
                n_params += (w.rows * w.cols) as u64;
                weight_bytes += w.data.len() as u64;
                if !formats.contains(&w.format.name()) {
                    formats.push(w.format.name());
                }
            }
        }
        let architecture = CString::new(file.config.arch.gguf_name()).unwrap_or_default();
        let formats = CString::new(formats.join(",")).unwrap_or_default();
        Ok(ModelInner {
            file,
            tokenizer,
            architecture,
            formats,
            n_params,
            weight_bytes,
        })
    }

    /// The graph and memory plan for `limits`, from headers alone.
    pub(crate) fn plan(
        &self,
        limits: Limits,
        kv: KvType,
    ) -> Outcome<(vspec_core::graph::Graph, Plan)> {
        // As the engine will hold the weights on this CPU (`vspec_host::expand`).
        let policy = Expansion::from_env().map_err(|e| Failure::host(VSPEC_ERR_MODEL, &e))?;
        let graph = self
            .file
            .plan_graph_cpu(limits, kv, &vspec_host::detect::kernel_table(), policy)
            .map_err(|e| Failure::host(VSPEC_ERR_MODEL, &e))?;
        let plan = Plan::new(&graph)
            .map_err(|e| Failure::new(VSPEC_ERR_MODEL, format!("planning: {e}")))?;
        Ok((graph, plan))
    }

    /// Checks that every id is a token of this model.
    pub(crate) fn check_tokens(&self, tokens: &[u32]) -> Outcome {
        let vocab = self.file.config.vocab;
        match tokens.iter().position(|&t| t as usize >= vocab) {
            Some(i) => Err(Failure::argument(format!(
                "token {} at index {i} is outside the vocabulary of {vocab}",
                tokens[i]
            ))),
            None => Ok(()),
        }
    }
}

fn hand_out_model(inner: ModelInner, out: *mut *mut VspecModel) -> Outcome {
    let value = handle::register(Object::Model(Arc::new(inner)))?;
    // SAFETY: `out` was checked non-null by the caller of this helper; the contract of the entry
    // points says it is valid for a write.
    let written = unsafe { put(out, std::ptr::without_provenance_mut(value), "out") };
    if written.is_err() {
        let _ = handle::unregister(value, Kind::Model);
    }
    written
}

/// Opens a model: a GGUF file, a `.vspec` file, or a Hugging Face directory. The weights are
/// memory-mapped, not copied. Free it with `vspec_model_free`.
///
/// # Safety
/// `path` must be a NUL-terminated string; `out` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn vspec_model_open(path: *const c_char, out: *mut *mut VspecModel) -> i32 {
    guarded(|| {
        if out.is_null() {
            return Err(Failure::argument("out is null"));
        }
        // SAFETY: forwarded from this function's contract.
        let path = unsafe { cbuf::c_str(path, "path") }?;
        let file =
            ModelFile::open(Path::new(path)).map_err(|e| Failure::host(VSPEC_ERR_MODEL, &e))?;
        hand_out_model(ModelInner::new(file)?, out)
    })
}

/// Opens a model from the bytes of a GGUF or `.vspec` file that the caller holds in memory (read
/// from flash, linked into the program, ...). Nothing is copied: the buffer must stay valid and
/// unchanged until the model and every session made from it are freed. `name` (may be null)
/// stands for the file in error messages.
///
/// # Safety
/// `data` must point to `len` readable bytes that outlive the model and its sessions; `name` is
/// null or NUL-terminated; `out` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn vspec_model_open_memory(
    data: *const c_void,
    len: usize,
    name: *const c_char,
    out: *mut *mut VspecModel,
) -> i32 {
    guarded(|| {
        if out.is_null() {
            return Err(Failure::argument("out is null"));
        }
        if data.is_null() || len == 0 {
            return Err(Failure::argument("data is null or empty"));
        }
        let name = if name.is_null() {
            "<memory>"
        } else {
            // SAFETY: non-null and NUL-terminated by the contract.
            unsafe { cbuf::c_str(name, "name") }?
        };
        // SAFETY: non-null (checked); the caller promises `len` bytes that stay valid and
        // unchanged for as long as the model or any of its sessions exists. The model is the
        // only user of the slice and every session holds the model, so 'static is never observed
        // past that promise.
        let bytes: &'static [u8] = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) };
        let file = ModelFile::from_bytes(Path::new(name), ModelBytes::Static(bytes))
            .map_err(|e| Failure::host(VSPEC_ERR_MODEL, &e))?;
        hand_out_model(ModelInner::new(file)?, out)
    })
}

/// Frees a model handle. Sessions made from it keep the model alive until they are freed. A
/// handle freed twice gives `VSPEC_ERR_HANDLE`.
#[no_mangle]
pub extern "C" fn vspec_model_free(model: *mut VspecModel) -> i32 {
    guarded(|| handle::unregister(model.addr(), Kind::Model).map(drop))
}

/// What a model is (`vspec_model_info`). The strings belong to the model and stay valid until
/// it is freed.
#[repr(C)]
pub struct VspecModelInfo {
    /// GGUF architecture name: "llama", "qwen2" or "qwen3".
    pub architecture: *const c_char,
    /// The weight formats the graph runs, comma-separated in first-use order ("Q4_1,F32").
    pub formats: *const c_char,
    /// Training context (positions).
    pub n_ctx_train: u32,
    /// Vocabulary size (embedding rows).
    pub n_vocab: u32,
    /// Transformer blocks.
    pub n_layer: u32,
    /// Width of the residual stream.
    pub n_embd: u32,
    /// Query heads.
    pub n_head: u32,
    /// Key/value heads.
    pub n_head_kv: u32,
    /// Dimensions per head.
    pub head_dim: u32,
    /// BOS token id, or -1.
    pub bos: i32,
    /// EOS token id, or -1.
    pub eos: i32,
    /// Whether prompts start with BOS.
    pub add_bos: bool,
    /// Whether the model ships a chat template.
    pub has_chat_template: bool,
    /// Weights the graph uses.
    pub n_params: u64,
    /// Their bytes as stored.
    pub weight_bytes: u64,
}

/// Fills `out` with the model's metadata.
///
/// # Safety
/// `out` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn vspec_model_info(
    model: *const VspecModel,
    out: *mut VspecModelInfo,
) -> i32 {
    guarded(|| {
        let m = handle::model(model.addr())?;
        let c = &m.file.config;
        let tok = &m.tokenizer;
        let id = |v: Option<u32>| v.and_then(|v| i32::try_from(v).ok()).unwrap_or(-1);
        let u32_of = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        let info = VspecModelInfo {
            architecture: m.architecture.as_ptr(),
            formats: m.formats.as_ptr(),
            n_ctx_train: u32_of(c.train_ctx),
            n_vocab: u32_of(c.vocab),
            n_layer: u32_of(c.n_layers),
            n_embd: u32_of(c.d_model),
            n_head: u32_of(c.n_heads),
            n_head_kv: u32_of(c.n_kv_heads),
            head_dim: u32_of(c.head_dim),
            bos: id(tok.bos_id()),
            eos: id(tok.eos_ids().first().copied()),
            add_bos: tok.add_bos(),
            has_chat_template: tok.chat_template().is_some(),
            n_params: m.n_params,
            weight_bytes: m.weight_bytes,
        };
        // SAFETY: forwarded from the contract.
        unsafe { put(out, info, "out") }
    })
}

/// Whether `token` ends a generation (EOS or an end-of-turn token).
///
/// # Safety
/// `out` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn vspec_model_token_is_end(
    model: *const VspecModel,
    token: u32,
    out: *mut bool,
) -> i32 {
    guarded(|| {
        let m = handle::model(model.addr())?;
        // SAFETY: forwarded from the contract.
        unsafe { put(out, m.tokenizer.eos_ids().contains(&token), "out") }
    })
}

/// A memory plan (`vspec_model_plan`): every byte a session will use, known before it exists.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct VspecPlan {
    /// Context the plan is for (positions).
    pub n_ctx: u32,
    /// Tokens per forward step.
    pub n_batch: u32,
    /// KV cache element type (`VSPEC_KV_*`).
    pub kv_type: u32,
    /// Model weights as stored (mapped or in the caller's buffer, never copied).
    pub weight_bytes: u64,
    /// Activation arena.
    pub arena_bytes: u64,
    /// KV cache.
    pub kv_bytes: u64,
    /// Bytes a caller-provided session buffer (`vspec_session_params.mem`) must hold: the arena
    /// and the KV cache at 64-byte boundaries, plus 63 bytes so any start address works.
    pub session_bytes: u64,
    /// Weights + arena + KV cache.
    pub total_bytes: u64,
}

/// Plans a session of `n_ctx` positions (0: the training context, at most 4096), `n_batch`
/// tokens per step (0: 512) and KV type `kv_type`, from the headers alone.
///
/// # Safety
/// `out` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn vspec_model_plan(
    model: *const VspecModel,
    n_ctx: u32,
    n_batch: u32,
    kv_type: u32,
    out: *mut VspecPlan,
) -> i32 {
    guarded(|| {
        let m = handle::model(model.addr())?;
        let (lim, kv) = limits(&m, n_ctx, n_batch, kv_type, false)?;
        let (_, plan) = m.plan(lim, kv)?;
        let p = VspecPlan {
            n_ctx: lim.max_ctx as u32,
            n_batch: lim.max_tokens as u32,
            kv_type,
            weight_bytes: plan.weight_bytes as u64,
            arena_bytes: plan.arena_bytes as u64,
            kv_bytes: plan.kv_bytes as u64,
            session_bytes: caller_memory_bytes(&plan) as u64,
            total_bytes: plan.total_bytes() as u64,
        };
        // SAFETY: forwarded from the contract.
        unsafe { put(out, p, "out") }
    })
}

/// The graph IR as JSON (what `vspec ir` prints; with `with_plan`, `{"graph":..,"plan":..}` as
/// `vspec ir --plan`), for `n_ctx`/`n_batch` as in `vspec_model_plan`. Writes the text and a NUL
/// to `buf` and its length (NUL excluded) to `len`; `VSPEC_ERR_BUFFER_TOO_SMALL` when
/// `cap < len + 1`.
///
/// # Safety
/// `buf` is null or valid for `cap` bytes; `len` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn vspec_model_ir_json(
    model: *const VspecModel,
    n_ctx: u32,
    n_batch: u32,
    with_plan: bool,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> i32 {
    guarded(|| {
        let m = handle::model(model.addr())?;
        let (lim, kv) = limits(&m, n_ctx, n_batch, VSPEC_KV_F32, false)?;
        let (graph, plan) = m.plan(lim, kv)?;
        let json = if with_plan {
            serde_json::to_string(&serde_json::json!({ "graph": graph, "plan": plan }))
        } else {
            serde_json::to_string(&graph)
        }
        .map_err(|e| Failure::new(VSPEC_ERR_RUNTIME, format!("serializing the graph: {e}")))?;
        // SAFETY: forwarded from the contract.
        unsafe { copy_out(json.as_bytes(), true, buf.cast::<u8>(), cap, len, "the IR") }
    })
}

/// Encodes `len` bytes of UTF-8 `text` into token ids. With `add_bos`, BOS comes first when the
/// model wants one. Special tokens written in the text (`<|im_start|>`) become their ids. Writes
/// the count to `n_tokens` always, the ids when `cap` holds them (else
/// `VSPEC_ERR_BUFFER_TOO_SMALL`).
///
/// # Safety
/// `text` points to `len` readable bytes; `tokens` is null or valid for `cap` ids; `n_tokens` is
/// valid for a write.
#[no_mangle]
pub unsafe extern "C" fn vspec_tokenize(
    model: *const VspecModel,
    text: *const c_char,
    len: usize,
    add_bos: bool,
    tokens: *mut u32,
    cap: usize,
    n_tokens: *mut usize,
) -> i32 {
    guarded(|| {
        let m = handle::model(model.addr())?;
        // SAFETY: forwarded from the contract.
        let text = unsafe { cbuf::text(text, len, "text") }?;
        let ids = m
            .tokenizer
            .encode(text, add_bos)
            .map_err(|e| Failure::host(VSPEC_ERR_RUNTIME, &e))?;
        // SAFETY: forwarded from the contract.
        unsafe { copy_out(&ids, false, tokens, cap, n_tokens, "the token ids") }
    })
}

/// Decodes token ids to UTF-8 text (special tokens verbatim; a character cut in the middle
/// becomes U+FFFD). Writes the text and a NUL to `buf`, its length (NUL excluded) to `len`.
///
/// # Safety
/// `tokens` points to `n_tokens` ids; `buf` is null or valid for `cap` bytes; `len` is valid for
/// a write.
#[no_mangle]
pub unsafe extern "C" fn vspec_detokenize(
    model: *const VspecModel,
    tokens: *const u32,
    n_tokens: usize,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> i32 {
    guarded(|| {
        let m = handle::model(model.addr())?;
        // SAFETY: forwarded from the contract.
        let ids = unsafe { cbuf::slice(tokens, n_tokens, "tokens") }?;
        m.check_tokens(ids)?;
        let text = m.tokenizer.decode(ids);
        // SAFETY: forwarded from the contract.
        unsafe {
            copy_out(
                text.as_bytes(),
                true,
                buf.cast::<u8>(),
                cap,
                len,
                "the text",
            )
        }
    })
}

/// One message of a conversation (`vspec_chat_apply`).
#[repr(C)]
pub struct VspecChatMessage {
    /// "system", "user", "assistant", ... (NUL-terminated UTF-8).
    pub role: *const c_char,
    /// The message text (NUL-terminated UTF-8).
    pub content: *const c_char,
}

/// Renders `messages` with the model's own chat template (as `vspec chat` does); with
/// `add_generation_prompt` the text ends with the opening of the assistant's turn. Writes the
/// text and a NUL to `buf`, its length to `len`. `VSPEC_ERR_UNSUPPORTED` if the model has no
/// template.
///
/// # Safety
/// `messages` points to `n_messages` messages whose strings are NUL-terminated; `buf` is null or
/// valid for `cap` bytes; `len` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn vspec_chat_apply(
    model: *const VspecModel,
    messages: *const VspecChatMessage,
    n_messages: usize,
    add_generation_prompt: bool,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> i32 {
    guarded(|| {
        let m = handle::model(model.addr())?;
        // SAFETY: forwarded from the contract.
        let raw = unsafe { cbuf::slice(messages, n_messages, "messages") }?;
        let mut list = Vec::with_capacity(raw.len());
        for (i, msg) in raw.iter().enumerate() {
            // SAFETY: the contract makes both strings NUL-terminated (null is rejected).
            let role = unsafe { cbuf::c_str(msg.role, &format!("messages[{i}].role")) }?;
            // SAFETY: as above.
            let content = unsafe { cbuf::c_str(msg.content, &format!("messages[{i}].content")) }?;
            list.push(ChatMessage::new(role, content));
        }
        if m.tokenizer.chat_template().is_none() {
            return Err(Failure::new(
                VSPEC_ERR_UNSUPPORTED,
                format!("{}: the model has no chat template", m.file.path.display()),
            ));
        }
        let template = ChatTemplate::from_tokenizer(&m.tokenizer)
            .map_err(|e| Failure::host(VSPEC_ERR_MODEL, &e))?;
        let text = template
            .render(&list, add_generation_prompt)
            .map_err(|e| Failure::host(VSPEC_ERR_ARGUMENT, &e))?;
        // SAFETY: forwarded from the contract.
        unsafe {
            copy_out(
                text.as_bytes(),
                true,
                buf.cast::<u8>(),
                cap,
                len,
                "the text",
            )
        }
    })
}

/// Result of `vspec_perplexity`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct VspecPerplexity {
    /// Perplexity over the scored positions.
    pub ppl: f64,
    /// Its standard error.
    pub ppl_err: f64,
    /// Chunks scored.
    pub n_chunks: u32,
    /// Tokens of the whole text.
    pub n_tokens: u64,
}

/// Perplexity of `text` with `vspec perplexity`'s protocol (llama.cpp's): chunks of `n_ctx`
/// tokens (0: 512), the second half of each scored; at most `max_chunks` chunks (0: all);
/// `n_threads` threads (0: all cores).
///
/// # Safety
/// `text` points to `len` readable bytes; `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn vspec_perplexity(
    model: *const VspecModel,
    text: *const c_char,
    len: usize,
    n_ctx: u32,
    max_chunks: u32,
    n_threads: u32,
    out: *mut VspecPerplexity,
) -> i32 {
    guarded(|| {
        let m = handle::model(model.addr())?;
        // SAFETY: forwarded from the contract.
        let text = unsafe { cbuf::text(text, len, "text") }?;
        if out.is_null() {
            return Err(Failure::argument("out is null"));
        }
        let ctx = if n_ctx == 0 { 512 } else { n_ctx };
        if ctx < 4 {
            return Err(Failure::argument(format!(
                "n_ctx {ctx} is too small (at least 4)"
            )));
        }
        let (lim, _) = limits(&m, ctx, 0, VSPEC_KV_F32, true)?;
        let n_tokens = m
            .tokenizer
            .encode(text, true)
            .map_err(|e| Failure::host(VSPEC_ERR_RUNTIME, &e))?
            .len();
        if n_tokens < ctx as usize {
            return Err(Failure::new(
                VSPEC_ERR_CONTEXT_FULL,
                format!("the text has {n_tokens} tokens, fewer than one chunk of {ctx}"),
            ));
        }
        let mut engine = Engine::new(&m.file, lim, n_threads as usize)
            .map_err(|e| Failure::host(VSPEC_ERR_RUNTIME, &e))?;
        let mut sess = engine
            .session()
            .map_err(|e| Failure::host(VSPEC_ERR_RUNTIME, &e))?;
        let chunks = (max_chunks > 0).then_some(max_chunks as usize);
        let r = vspec_host::perplexity::perplexity(
            &mut sess,
            &m.tokenizer,
            text,
            ctx as usize,
            chunks,
            |_, _| {},
        )
        .map_err(|e| Failure::host(VSPEC_ERR_RUNTIME, &e))?;
        let result = VspecPerplexity {
            ppl: r.ppl,
            ppl_err: r.ppl_err,
            n_chunks: r.chunks as u32,
            n_tokens: r.n_tokens as u64,
        };
        // SAFETY: forwarded from the contract.
        unsafe { put(out, result, "out") }
    })
}

/// The default model's path (SmolLM2-135M-Instruct in the cache: `$VSPEC_CACHE`, else
/// `$XDG_CACHE_HOME/vspec`, else `~/.cache/vspec`). With `fetch`, downloads and verifies it
/// first when it is missing, as `vspec fetch` does (about 100 MB). Writes the path and a NUL to
/// `buf`, its length to `len`.
///
/// # Safety
/// `buf` is null or valid for `cap` bytes; `len` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn vspec_default_model_path(
    fetch: bool,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> i32 {
    guarded(|| {
        let path = if fetch {
            let cache = vspec_host::fetch::cache_dir();
            vspec_host::fetch::default_model_in(&cache, false)
                .map_err(|e| Failure::host(VSPEC_ERR_RUNTIME, &e))?
        } else {
            vspec_host::fetch::default_model_path()
        };
        let text = path
            .to_str()
            .ok_or_else(|| Failure::new(VSPEC_ERR_RUNTIME, "the cache path is not UTF-8"))?;
        // SAFETY: forwarded from the contract.
        unsafe {
            copy_out(
                text.as_bytes(),
                true,
                buf.cast::<u8>(),
                cap,
                len,
                "the path",
            )
        }
    })
}

/// Bytes a session needs, by category (the first C API; `vspec_model_plan` says more).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct VspecMemory {
    /// Model weights as stored (mapped, not copied).
    pub weight_bytes: u64,
    /// Activation arena.
    pub arena_bytes: u64,
    /// KV cache.
    pub kv_bytes: u64,
}

/// Plans the memory of the model at `path` for `max_ctx` positions and `max_tokens` per step,
/// from headers alone, without opening a model handle (the tokenizer is not built).
///
/// # Safety
/// `path` is a NUL-terminated string; `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn vspec_plan_memory(
    path: *const c_char,
    max_ctx: u32,
    max_tokens: u32,
    out: *mut VspecMemory,
) -> i32 {
    guarded(|| {
        // SAFETY: forwarded from the contract.
        let path = unsafe { cbuf::c_str(path, "path") }?;
        if out.is_null() {
            return Err(Failure::argument("out is null"));
        }
        if max_ctx == 0 || max_tokens == 0 || max_tokens > max_ctx {
            return Err(Failure::new(
                VSPEC_ERR_ARGUMENT,
                "need 0 < max_tokens <= max_ctx",
            ));
        }
        let file =
            ModelFile::open(Path::new(path)).map_err(|e| Failure::host(VSPEC_ERR_MODEL, &e))?;
        let lim = Limits {
            max_ctx: max_ctx as usize,
            max_tokens: max_tokens as usize,
            all_logits: false,
        };
        let (graph, _) = file
            .bind(lim)
            .map_err(|e| Failure::host(VSPEC_ERR_MODEL, &e))?;
        let plan = Plan::new(&graph)
            .map_err(|e| Failure::new(VSPEC_ERR_MODEL, format!("planning: {e}")))?;
        let mem = VspecMemory {
            weight_bytes: plan.weight_bytes as u64,
            arena_bytes: plan.arena_bytes as u64,
            kv_bytes: plan.kv_bytes as u64,
        };
        // SAFETY: forwarded from the contract.
        unsafe { put(out, mem, "out") }
    })
}
