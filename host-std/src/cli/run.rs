//! generate, chat and perplexity.

use super::{model_path, ChatArgs, GenerateArgs, ModelArgs, PerplexityArgs};
use crate::chat::{ChatMessage, ChatTemplate};
use crate::generate::{generate_with as gen_tokens, ContextFull, GenStats, Generator};
use crate::model::{Engine, ModelFile};
use crate::tokenizer::StreamDecoder;
use anyhow::{anyhow, bail, Context, Result};
use std::io::{BufRead, Write};
use vspec_core::graph::Limits;
use vspec_core::plan::Plan;

/// Default context when `-c 0`: the training context, capped to keep the KV cache modest.
const DEFAULT_CTX_CAP: usize = 4096;

fn open(m: &ModelArgs) -> Result<ModelFile> {
    let path = model_path(m)?;
    ModelFile::open(&path)
}

fn limits(m: &ModelArgs, model: &ModelFile, all_logits: bool) -> Result<Limits> {
    let ctx = if m.ctx_size == 0 {
        model.config.train_ctx.clamp(1, DEFAULT_CTX_CAP)
    } else {
        m.ctx_size
    };
    if m.batch_size == 0 {
        bail!("-b/--batch-size must be positive");
    }
    Ok(Limits {
        max_ctx: ctx,
        max_tokens: m.batch_size.min(ctx),
        all_logits,
    })
}

pub(super) fn generate(a: &GenerateArgs) -> Result<()> {
    let sampler = a.sampling.config()?;
    let model = open(&a.model)?;
    let tok = model.tokenizer()?;
    let lim = limits(&a.model, &model, false)?;
    let text = if a.use_chat_template {
        let tmpl = ChatTemplate::from_tokenizer(&tok)?;
        tmpl.render(&[ChatMessage::new("user", a.prompt.clone())], true)?
    } else {
        a.prompt.clone()
    };
    let prompt = tok.encode(&text, !starts_with_bos(&tok, &text))?;
    if prompt.len() > lim.max_ctx {
        bail!(
            "the prompt has {} tokens but the context holds {} (raise -c/--ctx-size)",
            prompt.len(),
            lim.max_ctx
        );
    }
    if let super::DeviceArg::Cuda(n) = a.model.device {
        let device = vspec_cuda::Device::open(n).map_err(|e| anyhow!("{e}"))?;
        let name = device.name().unwrap_or_default();
        let (graph, weights) = model.bind_kv(lim, a.kv.kv)?;
        let plan = Plan::new(&graph).map_err(|e| anyhow!("planning: {e}"))?;
        let mut sess = vspec_cuda::CudaSession::new(device, &graph, &plan, &weights)
            .map_err(|e| anyhow!("{e}"))?;
        eprintln!(
            "[vspec] {} | cuda:{n} {name} | {:.2} MiB on the device",
            model.config.summary(),
            sess.layout().total as f64 / (1u64 << 20) as f64
        );
        return generate_on(&mut sess, a, &tok, &prompt, &sampler);
    }
    let mut engine = cli_engine(&model, lim, a.kv.kv, a.model.threads)?;
    eprintln!(
        "[vspec] {} | {} | {} threads",
        model.config.summary(),
        engine.plan.summary(),
        engine.threads()
    );
    note_rewritten(&engine);
    let mut sess = engine.session()?;
    generate_on(&mut sess, a, &tok, &prompt, &sampler)
}

/// The generation loop of `vspec generate` on any backend: text to stdout, timings to stderr.
fn generate_on<S: Generator>(
    sess: &mut S,
    a: &GenerateArgs,
    tok: &crate::tokenizer::Tokenizer,
    prompt: &[u32],
    sampler: &vspec_core::sample::SamplerConfig,
) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    let mut dec = StreamDecoder::new(tok);
    let mut history = Vec::new();
    let on_full = if a.ctx_shift {
        // BOS stays: the model has only ever seen it first.
        let bos = usize::from(tok.bos_id().is_some_and(|b| prompt.first() == Some(&b)));
        ContextFull::Shift { keep: bos }
    } else {
        ContextFull::Error
    };
    let (_, stats) = gen_tokens(
        sess,
        tok,
        prompt,
        a.n_predict,
        sampler,
        &mut history,
        on_full,
        |id| {
            if let Some(s) = dec.push(id) {
                stdout.write_all(s.as_bytes())?;
                stdout.flush()?;
            }
            Ok(())
        },
    )?;
    if let Some(s) = dec.flush() {
        stdout.write_all(s.as_bytes())?;
    }
    writeln!(stdout)?;
    eprintln!("[vspec] {}", stats.report());
    Ok(())
}

/// Whether a rendered template already starts with the BOS text (then no second BOS is added).
fn starts_with_bos(tok: &crate::tokenizer::Tokenizer, text: &str) -> bool {
    tok.bos_token()
        .is_some_and(|b| !b.is_empty() && text.starts_with(&b))
}

pub(super) fn chat(a: &ChatArgs) -> Result<()> {
    let sampler = a.sampling.config()?;
    let model = open(&a.model)?;
    let tok = model.tokenizer()?;
    let tmpl = ChatTemplate::from_tokenizer(&tok)?;
    let lim = limits(&a.model, &model, false)?;
    let mut engine = cli_engine(&model, lim, a.kv.kv, a.model.threads)?;
    eprintln!(
        "[vspec] {} | {} | type a message, empty line or EOF to quit",
        model.config.summary(),
        engine.plan.summary()
    );
    note_rewritten(&engine);
    let mut sess = engine.session()?;
    let mut messages = Vec::new();
    if let Some(s) = &a.system {
        messages.push(ChatMessage::new("system", s.clone()));
    }
    // Tokens whose keys and values are in the cache, in order.
    let mut cached: Vec<u32> = Vec::new();
    // Positions a context shift keeps: the rendered system prompt, when it is a prefix of every
    // conversation (else only BOS).
    let keep_positions = if a.ctx_shift {
        let head = tmpl.render(&messages, false)?;
        let ids = tok.encode(&head, !starts_with_bos(&tok, &head))?;
        if messages.is_empty() {
            usize::from(tok.bos_id().is_some_and(|b| ids.first() == Some(&b)))
        } else {
            ids.len()
        }
    } else {
        0
    };
    let first_turn = messages.len();
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    let mut total = GenStats::default();
    loop {
        write!(stdout, "> ")?;
        stdout.flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        messages.push(ChatMessage::new(
            "user",
            line.trim_end_matches(['\n', '\r']).to_string(),
        ));
        let mut text = tmpl.render(&messages, true)?;
        let mut ids = tok.encode(&text, !starts_with_bos(&tok, &text))?;
        // With --ctx-shift, the oldest turns after the system prompt go until the conversation
        // leaves room for a reply.
        while a.ctx_shift && ids.len() + 1 > lim.max_ctx && messages.len() > first_turn + 1 {
            messages.remove(first_turn);
            text = tmpl.render(&messages, true)?;
            ids = tok.encode(&text, !starts_with_bos(&tok, &text))?;
        }
        if ids.len() + 1 > lim.max_ctx {
            bail!(
                "the conversation has {} tokens but the context holds {} (raise -c{})",
                ids.len(),
                lim.max_ctx,
                if a.ctx_shift {
                    ""
                } else {
                    ", or pass --ctx-shift"
                }
            );
        }
        // Reuse the cached prefix; at least one token must be evaluated to get logits.
        let mut keep = cached.iter().zip(&ids).take_while(|(a, b)| a == b).count();
        keep = keep.min(ids.len() - 1);
        sess.truncate(keep);
        cached.truncate(keep);
        let mut dec = StreamDecoder::new(&tok);
        let mut history = ids[..keep].to_vec();
        let on_full = if a.ctx_shift {
            ContextFull::Shift {
                keep: keep_positions,
            }
        } else {
            ContextFull::Error
        };
        let (reply, stats) = gen_tokens(
            &mut sess,
            &tok,
            &ids[keep..],
            a.n_predict,
            &sampler,
            &mut history,
            on_full,
            |id| {
                if let Some(s) = dec.push(id) {
                    stdout.write_all(s.as_bytes())?;
                    stdout.flush()?;
                }
                Ok(())
            },
        )?;
        if let Some(s) = dec.flush() {
            stdout.write_all(s.as_bytes())?;
        }
        writeln!(stdout)?;
        cached.extend_from_slice(&ids[keep..]);
        // The last sampled token was not evaluated; the cache holds everything before it.
        if let Some((_, evaluated)) = reply.split_last() {
            cached.extend_from_slice(evaluated);
        }
        cached.truncate(sess.pos());
        if stats.ctx_shifts > 0 {
            // The cache no longer holds the conversation as rendered; keep what is sure.
            cached.truncate(keep_positions);
            sess.truncate(keep_positions);
        }
        messages.push(ChatMessage::new("assistant", tok.decode(&reply)));
        total.prompt_tokens += stats.prompt_tokens;
        total.prompt_secs += stats.prompt_secs;
        total.gen_tokens += stats.gen_tokens;
        total.gen_secs += stats.gen_secs;
    }
    eprintln!("[vspec] {}", total.report());
    Ok(())
}

pub(super) fn perplexity(a: &PerplexityArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("cannot read {}", a.file.display()))?;
    let model = open(&a.model)?;
    let tok = model.tokenizer()?;
    if a.ctx < 4 {
        bail!("--ctx {} is too small", a.ctx);
    }
    if a.chunks == Some(0) {
        bail!("--chunks 0 scores nothing; give at least 1");
    }
    let lim = Limits {
        max_ctx: a.ctx,
        max_tokens: a.model.batch_size.clamp(1, a.ctx),
        all_logits: true,
    };
    let mut engine = cli_engine(&model, lim, a.kv.kv, a.model.threads)?;
    eprintln!(
        "[vspec] {} | {} | {} threads",
        model.config.summary(),
        engine.plan.summary(),
        engine.threads()
    );
    note_rewritten(&engine);
    let mut sess = engine.session()?;
    let t0 = std::time::Instant::now();
    let mut stdout = std::io::stdout().lock();
    let vocab = model.config.vocab;
    let mut base_writer = match &a.kl_base {
        Some(p) => Some(crate::kl::KlBaseWriter::create(p, vocab, a.ctx)?),
        None => None,
    };
    let mut comparer = match &a.kl {
        Some(p) => Some(crate::kl::KlComparer::open(p, a.ctx)?),
        None => None,
    };
    let on_chunk = |c: usize, ppl: f64| {
        let _ = write!(stdout, "[{}]{:.4},", c + 1, ppl);
        let _ = stdout.flush();
    };
    let r = crate::perplexity::perplexity_with(
        &mut sess,
        &tok,
        &text,
        a.ctx,
        a.chunks,
        on_chunk,
        |row, target| {
            if let Some(w) = base_writer.as_mut() {
                w.push(row, target)?;
            }
            if let Some(c) = comparer.as_mut() {
                c.push(row, target)?;
            }
            Ok(())
        },
    )?;
    if let Some(w) = base_writer {
        w.finish()?;
    }
    let secs = t0.elapsed().as_secs_f64();
    writeln!(stdout)?;
    eprintln!(
        "[vspec] {} chunks x {} tokens in {:.1} s ({:.1} tok/s)",
        r.chunks,
        r.ctx,
        secs,
        (r.chunks * r.ctx) as f64 / secs
    );
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&r)?)
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    if let Some(c) = &comparer {
        let k = c.stats();
        writeln!(
            stdout,
            "KL divergence over {} positions: mean KLD = {:.6} +/- {:.6}",
            k.count, k.mean_kld, k.kld_err
        )?;
        writeln!(stdout, "Same top token: {:.3} %", k.same_top_pct)?;
        writeln!(
            stdout,
            "Baseline PPL = {:.4}, this model PPL = {:.4} ({:+.3} %)",
            k.base_ppl,
            k.ppl,
            100.0 * (k.ppl / k.base_ppl - 1.0)
        )?;
    }
    writeln!(
        stdout,
        "Final estimate: PPL = {:.4} +/- {:.5}",
        r.ppl, r.ppl_err
    )?;
    Ok(())
}

/// Says which weights the engine holds rewritten for this CPU (`crate::expand`), if any.
fn note_rewritten(engine: &Engine<'_>) {
    if let Some(note) = engine.rewritten().note() {
        eprintln!("[vspec] {note}");
    }
}

/// [`Engine::with_kv`] for the commands with `-c`/`-b`: a memory that cannot be allocated names
/// those flags.
fn cli_engine<'m>(
    model: &'m ModelFile,
    limits: Limits,
    kv: vspec_core::kv::KvType,
    threads: usize,
) -> Result<Engine<'m>> {
    Engine::with_kv(model, limits, kv, threads).map_err(|e| {
        match e.downcast_ref::<crate::engine::AllocationError>() {
            Some(alloc) => anyhow!("{alloc} (-c/--ctx-size, -b/--batch-size)"),
            None => e,
        }
    })
}
