//! Sessions: a model planned for a context, its arena and KV cache (owned, or in the caller's
//! buffer), evaluation, generation with a per-token callback, and KV cache control.

use crate::cbuf::{self, put, put_opt};
use crate::error::{
    guarded, Failure, Outcome, VSPEC_ERR_ARGUMENT, VSPEC_ERR_BUFFER_TOO_SMALL, VSPEC_ERR_BUSY,
    VSPEC_ERR_CONTEXT_FULL, VSPEC_ERR_HANDLE, VSPEC_ERR_RUNTIME,
};
use crate::handle::{self, Kind, Object};
use crate::model::{limits, ModelInner, VspecModel, VSPEC_KV_F32};
use crate::sampler::VspecSamplerParams;
use std::ffi::{c_char, c_void};
use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};
use vspec_core::exec::Session;
use vspec_host::model::caller_memory_bytes;
use vspec_host::tokenizer::StreamDecoder;
use vspec_host::Engine;

/// Opaque session handle. A session is used by one thread at a time (a second thread gets
/// `VSPEC_ERR_BUSY`); different sessions run in parallel.
pub struct VspecSession {
    _opaque: [u8; 0],
}

/// How to make a session (`vspec_session_default_params` gives the defaults).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct VspecSessionParams {
    /// Context in positions; 0: the model's training context, at most 4096.
    pub n_ctx: u32,
    /// Tokens per forward step; 0: 512 (at most `n_ctx`).
    pub n_batch: u32,
    /// Threads; 0: all cores.
    pub n_threads: u32,
    /// KV cache element type (`VSPEC_KV_*`; this build runs `VSPEC_KV_F32` only).
    pub kv_type: u32,
    /// Caller-provided memory for the arena and KV cache, or null to let the session allocate
    /// them. It must hold `vspec_plan.session_bytes` for the same `n_ctx`, `n_batch` and
    /// `kv_type`, and stay valid and untouched until the session is freed.
    pub mem: *mut c_void,
    /// Bytes at `mem`.
    pub mem_len: usize,
}

/// Defaults: the model's context (at most 4096), 512 tokens per step, all cores, f32 KV cache,
/// memory allocated by the session.
#[no_mangle]
pub extern "C" fn vspec_session_default_params() -> VspecSessionParams {
    VspecSessionParams {
        n_ctx: 0,
        n_batch: 0,
        n_threads: 0,
        kv_type: VSPEC_KV_F32,
        mem: std::ptr::null_mut(),
        mem_len: 0,
    }
}

/// A core session together with everything it borrows: the engine (graph, plan, weights,
/// buffers, kernels, threads) on the heap, and the model the engine's weights point into.
///
/// The session borrows the engine and the engine borrows the model file, so both borrows are
/// given a `'static` lifetime that this struct makes true: the engine lives in a leaked box that
/// only `Drop` frees, after the session; the model is kept alive by the `Arc` until after both.
pub(crate) struct SessionCell {
    session: ManuallyDrop<Session<'static>>,
    engine: NonNull<Engine<'static>>,
    model: Arc<ModelInner>,
}

// SAFETY: every part is safe to move to another thread: the core session holds shared references
// to `Sync` data (graph, plan, weights, kernel table, the `Sync` thread pool) and exclusive slices
// of the arena and KV cache; the engine behind the pointer is owned by this cell alone and
// reached only through the session or `Drop`; the model is in an `Arc` of `Send + Sync` data.
// Access is serialized by the mutex the registry keeps the cell in.
unsafe impl Send for SessionCell {}

impl SessionCell {
    fn new(
        model: Arc<ModelInner>,
        params: &VspecSessionParams,
        memory: Option<&'static mut [u8]>,
    ) -> Outcome<SessionCell> {
        let (lim, kv) = limits(&model, params.n_ctx, params.n_batch, params.kv_type, false)?;
        // SAFETY: the model file lives inside the Arc's allocation, which does not move and which
        // `self.model` keeps alive until after the engine and session borrowing it are dropped
        // (`Drop` below, then the fields in order).
        let file: &'static vspec_host::ModelFile = unsafe { &*std::ptr::from_ref(&model.file) };
        let threads = params.n_threads as usize;
        let engine = match memory {
            None => Engine::with_kv(file, lim, kv, threads),
            Some(mem) => {
                let plan = model.plan(lim, kv)?.1;
                let need = caller_memory_bytes(&plan);
                if mem.len() < need {
                    return Err(Failure::new(
                        VSPEC_ERR_BUFFER_TOO_SMALL,
                        format!(
                            "the session buffer holds {} bytes but the plan for n_ctx {} and \
                             n_batch {} needs {need} (vspec_plan.session_bytes; {} short)",
                            mem.len(),
                            lim.max_ctx,
                            lim.max_tokens,
                            need - mem.len()
                        ),
                    ));
                }
                Engine::with_memory(file, lim, kv, threads, mem)
            }
        }
        .map_err(|e| Failure::host(VSPEC_ERR_RUNTIME, &e))?;
        let engine = NonNull::from(Box::leak(Box::new(engine)));
        // SAFETY: `engine` is a live, exclusively owned heap allocation; the session made from it
        // is the only borrower until `Drop`, which drops the session before freeing the box.
        let made = unsafe { &mut *engine.as_ptr() }.session();
        match made {
            Ok(session) => Ok(SessionCell {
                session: ManuallyDrop::new(session),
                engine,
                model,
            }),
            Err(e) => {
                // SAFETY: the failed call left no borrower; the box came from `Box::leak` above.
                drop(unsafe { Box::from_raw(engine.as_ptr()) });
                Err(Failure::host(VSPEC_ERR_RUNTIME, &e))
            }
        }
    }
}

impl Drop for SessionCell {
    fn drop(&mut self) {
        // SAFETY: dropped once, here, and never used again.
        unsafe { ManuallyDrop::drop(&mut self.session) };
        // SAFETY: the box came from `Box::leak` in `new`; its only borrower, the session, is gone.
        drop(unsafe { Box::from_raw(self.engine.as_ptr()) });
    }
}

fn session_of(value: usize) -> Outcome<Arc<Mutex<SessionCell>>> {
    match handle::lookup(value, Kind::Session)? {
        Object::Session(s) => Ok(s),
        _ => Err(Failure::new(VSPEC_ERR_HANDLE, "not a session handle")),
    }
}

/// Makes a session of `model` (params null: the defaults). With `params->mem`, the arena and KV
/// cache are placed in the caller's buffer, checked against the plan (`VSPEC_ERR_BUFFER_TOO_SMALL`
/// names the bytes missing); nothing is allocated for them. Free it with `vspec_session_free`.
///
/// # Safety
/// `params` is null or valid for a read; its `mem` is null or valid for `mem_len` bytes that
/// nothing else touches until the session is freed; `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn vspec_session_new(
    model: *const VspecModel,
    params: *const VspecSessionParams,
    out: *mut *mut VspecSession,
) -> i32 {
    guarded(|| {
        let m = handle::model(model.addr())?;
        if out.is_null() {
            return Err(Failure::argument("out is null"));
        }
        let params = if params.is_null() {
            vspec_session_default_params()
        } else {
            if !params.is_aligned() {
                return Err(Failure::argument("params is misaligned"));
            }
            // SAFETY: non-null, aligned (checked), readable by the contract; plain data.
            unsafe { params.read() }
        };
        let memory = match (params.mem.is_null(), params.mem_len) {
            (true, 0) => None,
            (true, n) => {
                return Err(Failure::argument(format!(
                    "params.mem is null but params.mem_len is {n}"
                )))
            }
            (false, 0) => return Err(Failure::argument("params.mem is set but mem_len is 0")),
            (false, n) => {
                // SAFETY: non-null (checked); the caller gives us `n` bytes for the session's
                // whole life and touches them no more; the cell (and so every borrow of the
                // slice) is gone when `vspec_session_free` returns.
                Some(unsafe { std::slice::from_raw_parts_mut(params.mem.cast::<u8>(), n) })
            }
        };
        let cell = SessionCell::new(m, &params, memory)?;
        let value = handle::register(Object::Session(Arc::new(Mutex::new(cell))))?;
        // SAFETY: forwarded from the contract.
        let written = unsafe { put(out, std::ptr::without_provenance_mut(value), "out") };
        if written.is_err() {
            let _ = handle::unregister(value, Kind::Session);
        }
        written
    })
}

/// Frees a session (and, if it was the last user of a freed model, the model). A caller-provided
/// buffer is the caller's again when this returns. A session in use (by another thread, or by the
/// generate callback running on this one) is not freed: `VSPEC_ERR_BUSY`. Freeing twice gives
/// `VSPEC_ERR_HANDLE`.
#[no_mangle]
pub extern "C" fn vspec_session_free(session: *mut VspecSession) -> i32 {
    guarded(|| {
        let s = session_of(session.addr())?;
        // Holding the lock while unregistering: no call is running, and none can start on this
        // handle afterwards, so the cell (and any caller buffer) is released when `s` goes.
        let guard = match s.try_lock() {
            Err(std::sync::TryLockError::WouldBlock) => {
                return Err(Failure::new(
                    VSPEC_ERR_BUSY,
                    "the session is in use (by another thread, or by the generate callback); \
                     free it after that call returns",
                ))
            }
            other => other,
        };
        handle::unregister(session.addr(), Kind::Session)?;
        drop(guard);
        Ok(())
    })
}

/// Evaluates `n_tokens` tokens at the session's next positions (in steps of `n_batch`) and points
/// `logits` at the last token's `n_vocab` logits, valid until the next call on this session.
///
/// # Safety
/// `tokens` points to `n_tokens` ids; `logits` and `n_vocab` are valid for writes (`n_vocab` may
/// be null).
#[no_mangle]
pub unsafe extern "C" fn vspec_session_eval(
    session: *mut VspecSession,
    tokens: *const u32,
    n_tokens: usize,
    logits: *mut *const f32,
    n_vocab: *mut usize,
) -> i32 {
    guarded(|| {
        let s = session_of(session.addr())?;
        let mut cell = handle::try_use(&s, "session")?;
        // SAFETY: forwarded from the contract.
        let ids = unsafe { cbuf::slice(tokens, n_tokens, "tokens") }?;
        if logits.is_null() {
            return Err(Failure::argument("logits is null"));
        }
        if ids.is_empty() {
            return Err(Failure::argument("nothing to evaluate: n_tokens is 0"));
        }
        cell.model.check_tokens(ids)?;
        check_room(&cell.session, ids.len())?;
        let out = vspec_host::generate::prefill(&mut *cell.session, ids)
            .map_err(|e| Failure::host(VSPEC_ERR_RUNTIME, &e))?;
        let (ptr, n) = (out.as_ptr(), out.len());
        // SAFETY: forwarded from the contract.
        unsafe { put(logits, ptr, "logits") }?;
        // SAFETY: forwarded from the contract.
        unsafe { put_opt(n_vocab, n, "n_vocab") }
    })
}

fn check_room(sess: &Session<'_>, n: usize) -> Outcome {
    let ctx = sess.limits().max_ctx;
    if sess.pos() + n > ctx {
        return Err(Failure::new(
            VSPEC_ERR_CONTEXT_FULL,
            format!(
                "{n} tokens do not fit: the session holds {} of {ctx} positions (make the \
                 session with a larger n_ctx, or truncate/reset it)",
                sess.pos()
            ),
        ));
    }
    Ok(())
}

/// Writes the number of positions held in the KV cache to `pos`.
///
/// # Safety
/// `pos` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn vspec_session_pos(session: *mut VspecSession, pos: *mut u32) -> i32 {
    guarded(|| {
        let s = session_of(session.addr())?;
        let cell = handle::try_use(&s, "session")?;
        // SAFETY: forwarded from the contract.
        unsafe { put(pos, cell.session.pos() as u32, "pos") }
    })
}

/// Forgets every cached position (the next eval starts at position 0).
#[no_mangle]
pub extern "C" fn vspec_session_reset(session: *mut VspecSession) -> i32 {
    guarded(|| {
        let s = session_of(session.addr())?;
        handle::try_use(&s, "session")?.session.reset();
        Ok(())
    })
}

/// Forgets the cached positions from `pos` on (keeps a shared prefix, e.g. across chat turns); a
/// `pos` past the current position changes nothing.
#[no_mangle]
pub extern "C" fn vspec_session_truncate(session: *mut VspecSession, pos: u32) -> i32 {
    guarded(|| {
        let s = session_of(session.addr())?;
        handle::try_use(&s, "session")?
            .session
            .truncate(pos as usize);
        Ok(())
    })
}

/// Called for each generated token with the text it completed (`piece`, `piece_len` bytes of
/// UTF-8, NUL-terminated, possibly empty when the token ends mid-character; valid during the call
/// only). Return 0 to continue, anything else to stop. After the last token, text still pending is
/// delivered once with `token == VSPEC_TOKEN_NONE` (the return value is then ignored).
pub type VspecTokenCallback = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        token: u32,
        piece: *const c_char,
        piece_len: usize,
    ) -> i32,
>;

/// The `token` of the callback's final call, which only flushes text.
pub const VSPEC_TOKEN_NONE: u32 = u32::MAX;

/// Generation ended at an end-of-sequence or end-of-turn token.
pub const VSPEC_STOP_END: u32 = 0;
/// Generation produced `max_tokens` tokens.
pub const VSPEC_STOP_MAX_TOKENS: u32 = 1;
/// The callback asked to stop.
pub const VSPEC_STOP_CALLBACK: u32 = 2;
/// The context is full.
pub const VSPEC_STOP_CONTEXT_FULL: u32 = 3;

/// What `vspec_generate` did.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct VspecGenerateResult {
    /// Prompt tokens evaluated.
    pub n_prompt: u32,
    /// Tokens generated (each passed to the callback).
    pub n_generated: u32,
    /// Why it stopped (`VSPEC_STOP_*`).
    pub stop_reason: u32,
}

/// Raised inside the host's generation loop when the callback asks to stop.
#[derive(Debug)]
struct StopRequested;

impl std::fmt::Display for StopRequested {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stopped by the callback")
    }
}

impl std::error::Error for StopRequested {}

/// Generates up to `max_tokens` tokens after `prompt` (`prompt_len` bytes of UTF-8), exactly as
/// `vspec generate` does: the prompt is tokenized (BOS when the model wants one and the session is
/// empty), evaluated after what the session already holds, and tokens are sampled with `sampler`
/// (null: greedy) until an end token, `max_tokens`, a full context, or the callback's stop. The
/// repetition penalty sees this call's prompt and output. `result` may be null.
///
/// # Safety
/// `prompt` points to `prompt_len` bytes; `sampler` is null or valid for a read; `callback` is
/// null or a function that may be called with `user_data`; `result` is null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn vspec_generate(
    session: *mut VspecSession,
    prompt: *const c_char,
    prompt_len: usize,
    max_tokens: u32,
    sampler: *const VspecSamplerParams,
    callback: VspecTokenCallback,
    user_data: *mut c_void,
    result: *mut VspecGenerateResult,
) -> i32 {
    guarded(|| {
        let s = session_of(session.addr())?;
        let mut guard = handle::try_use(&s, "session")?;
        let cell = &mut *guard;
        // SAFETY: forwarded from the contract.
        let text = unsafe { cbuf::text(prompt, prompt_len, "prompt") }?;
        // SAFETY: forwarded from the contract.
        let config = unsafe { crate::sampler::config_or_greedy(sampler) }?;
        let tok = &cell.model.tokenizer;
        let ids = if cell.session.pos() == 0 {
            vspec_host::generate::encode_prompt(tok, text)
        } else {
            tok.encode(text, false)
        }
        .map_err(|e| Failure::host(VSPEC_ERR_RUNTIME, &e))?;
        if ids.is_empty() {
            return Err(Failure::new(VSPEC_ERR_ARGUMENT, "the prompt is empty"));
        }
        check_room(&cell.session, ids.len())?;
        let mut decoder = StreamDecoder::new(tok);
        let mut generated = 0u32;
        let mut stopped = false;
        let emit = |token: u32, piece: &str| -> i32 {
            let Some(cb) = callback else { return 0 };
            let mut bytes = Vec::with_capacity(piece.len() + 1);
            bytes.extend_from_slice(piece.as_bytes());
            bytes.push(0);
            // SAFETY: the contract makes `callback` callable with `user_data`; the piece is a
            // NUL-terminated buffer that outlives the call.
            unsafe { cb(user_data, token, bytes.as_ptr().cast(), piece.len()) }
        };
        let mut history = Vec::new();
        let run = vspec_host::generate::generate(
            &mut *cell.session,
            tok,
            &ids,
            max_tokens as usize,
            &config,
            &mut history,
            |id| {
                generated += 1;
                let piece = decoder.push(id).unwrap_or_default();
                if emit(id, &piece) != 0 {
                    stopped = true;
                    return Err(StopRequested.into());
                }
                Ok(())
            },
        );
        if let Err(e) = run {
            if !e.is::<StopRequested>() {
                return Err(Failure::host(VSPEC_ERR_RUNTIME, &e));
            }
        }
        if let Some(rest) = decoder.flush() {
            emit(VSPEC_TOKEN_NONE, &rest);
        }
        let stop_reason = if stopped {
            VSPEC_STOP_CALLBACK
        } else if generated == max_tokens {
            VSPEC_STOP_MAX_TOKENS
        } else if cell.session.pos() >= cell.session.limits().max_ctx {
            VSPEC_STOP_CONTEXT_FULL
        } else {
            VSPEC_STOP_END
        };
        let r = VspecGenerateResult {
            n_prompt: ids.len() as u32,
            n_generated: generated,
            stop_reason,
        };
        // SAFETY: forwarded from the contract.
        unsafe { put_opt(result, r, "result") }
    })
}
