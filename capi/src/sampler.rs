//! Samplers: the CLI's sampling options, seeded, over any logits.

use crate::cbuf::{self, put};
use crate::error::{guarded, Failure, Outcome, VSPEC_ERR_HANDLE};
use crate::handle::{self, Kind, Object};
use std::sync::{Arc, Mutex};
use vspec_core::sample::{Sampler, SamplerConfig};

/// Opaque sampler handle (one thread at a time, like a session).
pub struct VspecSampler {
    _opaque: [u8; 0],
}

/// Sampling options, as the CLI's (`--temp --top-k --top-p --min-p --repeat-penalty
/// --repeat-last-n --seed`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct VspecSamplerParams {
    /// Softmax temperature; 0 is greedy (argmax).
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0: off.
    pub top_k: u32,
    /// Nucleus: the smallest set reaching `top_p`, in (0, 1]; 1: off.
    pub top_p: f32,
    /// Drop tokens below `min_p` × the most likely one's probability, in [0, 1]; 0: off.
    pub min_p: f32,
    /// Repetition penalty, > 0; 1: off.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalty sees; 0: off.
    pub repeat_last_n: u32,
    /// Seed of the random generator: the same seed, logits and history give the same token.
    pub seed: u64,
}

impl From<&SamplerConfig> for VspecSamplerParams {
    fn from(c: &SamplerConfig) -> Self {
        VspecSamplerParams {
            temperature: c.temperature,
            top_k: u32::try_from(c.top_k).unwrap_or(u32::MAX),
            top_p: c.top_p,
            min_p: c.min_p,
            repeat_penalty: c.repeat_penalty,
            repeat_last_n: u32::try_from(c.repeat_last_n).unwrap_or(u32::MAX),
            seed: c.seed,
        }
    }
}

impl VspecSamplerParams {
    fn config(&self) -> Outcome<SamplerConfig> {
        let c = SamplerConfig {
            temperature: self.temperature,
            top_k: self.top_k as usize,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n as usize,
            seed: self.seed,
        };
        c.validate()
            .map_err(|e| Failure::argument(format!("{e}")))?;
        Ok(c)
    }
}

/// The CLI's defaults: temperature 0.8, top-k 40, top-p 0.95, min-p 0.05, no repetition penalty
/// (window 64), seed 0.
#[no_mangle]
pub extern "C" fn vspec_sampler_default_params() -> VspecSamplerParams {
    (&SamplerConfig::default()).into()
}

/// Greedy decoding (`--temp 0`): temperature 0, every filter off.
#[no_mangle]
pub extern "C" fn vspec_sampler_greedy_params() -> VspecSamplerParams {
    (&SamplerConfig::greedy()).into()
}

/// The configuration at `params`, or greedy when it is null; invalid values are errors naming
/// the field.
///
/// # Safety
/// A non-null `params` must be valid for a read.
pub(crate) unsafe fn config_or_greedy(params: *const VspecSamplerParams) -> Outcome<SamplerConfig> {
    if params.is_null() {
        return Ok(SamplerConfig::greedy());
    }
    if !params.is_aligned() {
        return Err(Failure::argument("sampler params are misaligned"));
    }
    // SAFETY: non-null and aligned (checked), readable by the contract; plain data.
    unsafe { params.read() }.config()
}

/// Makes a sampler for a vocabulary of `n_vocab` tokens (params null: greedy).
///
/// # Safety
/// `params` is null or valid for a read; `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn vspec_sampler_new(
    params: *const VspecSamplerParams,
    n_vocab: u32,
    out: *mut *mut VspecSampler,
) -> i32 {
    guarded(|| {
        if out.is_null() {
            return Err(Failure::argument("out is null"));
        }
        // SAFETY: forwarded from the contract.
        let config = unsafe { config_or_greedy(params) }?;
        let sampler = Sampler::new(config, n_vocab as usize)
            .map_err(|e| Failure::argument(format!("{e}")))?;
        let value = handle::register(Object::Sampler(Arc::new(Mutex::new(sampler))))?;
        // SAFETY: forwarded from the contract.
        let written = unsafe { put(out, std::ptr::without_provenance_mut(value), "out") };
        if written.is_err() {
            let _ = handle::unregister(value, Kind::Sampler);
        }
        written
    })
}

/// Picks the next token from `n_logits` logits, given the `n_history` previous tokens (what the
/// repetition penalty looks at).
///
/// # Safety
/// `logits` points to `n_logits` floats, `history` to `n_history` ids (or is null when 0);
/// `token` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn vspec_sampler_sample(
    sampler: *mut VspecSampler,
    logits: *const f32,
    n_logits: usize,
    history: *const u32,
    n_history: usize,
    token: *mut u32,
) -> i32 {
    guarded(|| {
        let s = match handle::lookup(sampler.addr(), Kind::Sampler)? {
            Object::Sampler(s) => s,
            _ => return Err(Failure::new(VSPEC_ERR_HANDLE, "not a sampler handle")),
        };
        let mut s = handle::try_use(&s, "sampler")?;
        // SAFETY: forwarded from the contract.
        let logits = unsafe { cbuf::slice(logits, n_logits, "logits") }?;
        // SAFETY: forwarded from the contract.
        let history = unsafe { cbuf::slice(history, n_history, "history") }?;
        if logits.is_empty() {
            return Err(Failure::argument("no logits to sample from"));
        }
        let t = s.sample(logits, history);
        // SAFETY: forwarded from the contract.
        unsafe { put(token, t, "token") }
    })
}

/// Frees a sampler; freeing twice gives `VSPEC_ERR_HANDLE`.
#[no_mangle]
pub extern "C" fn vspec_sampler_free(sampler: *mut VspecSampler) -> i32 {
    guarded(|| handle::unregister(sampler.addr(), Kind::Sampler).map(drop))
}
