//! calibrate and convert.

use super::{model_path, CalibrateArgs, ConvertArgs};
use crate::memory::{parse_bytes, plan_file, PlanRequest};
use crate::model::ModelFile;
use crate::quantize::budget::{self, Budget};
use crate::quantize::calibrate::{calibrate as run_calibration, Calibration};
use crate::quantize::convert::{convert as run_convert, Calibrate, ConvertReport};
use crate::quantize::recipe::Recipe;
use crate::quantize::rotate::rotate;
use anyhow::{Context, Result};

pub(super) fn calibrate(a: &CalibrateArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("cannot read {}", a.file.display()))?;
    let mut model = ModelFile::open(&model_path(&a.model)?)?;
    if a.rotate {
        model = rotate(model)?;
    }
    let cal = run_calibration(
        &model,
        &text,
        &a.file.display().to_string(),
        a.ctx,
        a.chunks,
        a.model.threads,
        a.hessian,
        true,
    )?;
    cal.save(&a.output)?;
    eprintln!(
        "[vspec] {} tokens, {} tensors, {} input matrices -> {}",
        cal.tokens,
        cal.tensors.len(),
        cal.hessians.len(),
        a.output.display()
    );
    Ok(())
}

pub(super) fn convert(a: &ConvertArgs) -> Result<()> {
    // clap's `requires` does not fire next to --bits (its conflicts), so say it here.
    if a.budget.is_none() && (a.budget_ctx.is_some() || a.budget_kv.is_some()) {
        anyhow::bail!(
            "--ctx and --kv belong to --budget (the memory it must hold besides the weights)"
        );
    }
    if a.budget_ctx.is_none() && a.budget_kv.is_some() {
        anyhow::bail!("--kv needs --ctx: without a context the budget holds the weights alone");
    }
    let recipe_file = match &a.recipe {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read recipe {}", p.display()))?;
            Some(Recipe::parse(&text, &p.display().to_string())?)
        }
        None => None,
    };
    let imatrix = a.imatrix.as_deref().map(Calibration::load).transpose()?;
    let calibration = match (&imatrix, a.no_calibration) {
        (Some(c), _) => Calibrate::File(c),
        (None, true) => Calibrate::Off,
        (None, false) => Calibrate::Builtin,
    };
    let mut model = ModelFile::open(&model_path(&a.model)?)?;
    // Stats fit only the model they were measured on, so without a flag they decide; else
    // `--bits 2`, where rotating measured best (README, "Quality"), rotates.
    let rotating = if a.rotate || a.no_rotate {
        a.rotate
    } else if let Some(c) = &imatrix {
        if c.rotation.is_none() && a.bits == Some(2) {
            eprintln!(
                "[vspec] note: {} was measured without rotation, so this 2-bit file is not rotated; \
                 `calibrate --rotate` stats give a better one",
                c.file
            );
        }
        c.rotation.is_some()
    } else {
        // The built-in --bits 2 recipe's trellis codes are trained for the Gaussian-like
        // weights rotation makes, with or without calibration (data-free SmolLM2 --bits 2: KLD
        // 1.58 unrotated, 1.46 rotated).
        a.bits == Some(2) && a.recipe.is_none()
    };
    // A rotated `.vspec` input is already in the rotated basis: requantizing it keeps it there.
    let already = crate::quantize::rotate::rotation_of(&model).is_some();
    if a.rotate && already {
        anyhow::bail!(
            "{}: the model is already rotated; convert it without --rotate",
            model.path.display()
        );
    }
    if rotating && !already {
        model = rotate(model)?;
    }
    let threads = if a.model.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        a.model.threads
    };
    if let Some(b) = &a.budget {
        return convert_to_budget(a, b, &model, imatrix.as_ref(), threads);
    }
    let recipe = match (recipe_file, a.bits) {
        (Some(r), _) => r,
        (None, Some(b)) => {
            let c = &model.config;
            Recipe::for_bits(b, c.n_layers, c.tied_embeddings)?
        }
        (None, None) => anyhow::bail!("give --bits or --recipe"),
    };
    let t0 = std::time::Instant::now();
    let r = run_convert(&model, &a.output, &recipe, calibration, threads, true)?;
    report_written(a, &r, t0);
    Ok(())
}

/// The one line every conversion ends with.
fn report_written(a: &ConvertArgs, r: &ConvertReport, t0: std::time::Instant) {
    let file_bytes = std::fs::metadata(&a.output).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "[vspec] wrote {}: {} bytes ({:.2} MB), tensors {:.3} bpw, {:?}, {} lossless, {:.1} s",
        a.output.display(),
        file_bytes,
        file_bytes as f64 / 1e6,
        r.bpw(),
        r.formats,
        r.lossless,
        t0.elapsed().as_secs_f64()
    );
}

/// `convert --budget`: refuse a budget that cannot be met before any work, calibrate (unless
/// told not to or given stats), measure each matrix's sensitivity, allocate, convert, and print
/// the mix and the written file's plan.
fn convert_to_budget(
    a: &ConvertArgs,
    bytes: &str,
    model: &ModelFile,
    imatrix: Option<&Calibration>,
    threads: usize,
) -> Result<()> {
    let runtime = match a.budget_ctx {
        Some(ctx) => {
            let req = PlanRequest {
                ctx,
                batch: a.model.batch_size,
                kv_type: a.budget_kv.unwrap_or_default(),
                all_logits: false,
                expansion: None,
            };
            // Name the context actually planned (0 = the model's own) in every message.
            let ctx = req.limits(&model.config)?.max_ctx;
            Some(PlanRequest { ctx, ..req })
        }
        None => None,
    };
    let budget = Budget {
        bytes: parse_bytes(bytes)?,
        runtime,
    };
    let layout = budget::layout(model, &budget)?;
    layout.check(&budget)?;
    if let Some(c) = imatrix {
        let rotation = crate::quantize::rotate::rotation_of(model);
        if c.rotation != rotation {
            anyhow::bail!(
                "{}: measured on the {} model, this conversion quantizes it {}: calibrate and convert both with --rotate, or both without",
                c.file,
                if c.rotation.is_some() { "rotated" } else { "unrotated" },
                if rotation.is_some() { "rotated" } else { "unrotated" }
            );
        }
    }
    let t0 = std::time::Instant::now();
    let builtin = match (imatrix, a.no_calibration) {
        (None, false) => Some(crate::quantize::calibrate::builtin(model, threads, true)?),
        _ => None,
    };
    let cal = imatrix.or(builtin.as_ref());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let choice = budget::choose(&layout, budget, cal, &pool, true)?;
    eprint!("[vspec] the budget's mix:\n{}", choice.render(&layout));
    let calibration = cal.map_or(Calibrate::Off, Calibrate::File);
    let r = run_convert(
        model,
        &a.output,
        &choice.recipe(),
        calibration,
        threads,
        true,
    )?;
    report_written(a, &r, t0);
    let req = runtime.unwrap_or_default();
    let plan = plan_file(&a.output, &req)?;
    eprint!(
        "{}",
        super::plan::render(&a.output.display().to_string(), &plan)
    );
    let counted = plan.plan.weight_bytes as u64
        + if runtime.is_some() {
            (plan.total_bytes - plan.plan.weight_bytes) as u64
        } else {
            0
        };
    let mb = |b: u64| format!("{:.2} MB ({b} bytes)", b as f64 / 1e6);
    eprintln!(
        "[vspec] {} counted against the budget of {} ({}): {} to spare",
        mb(counted),
        mb(budget.bytes),
        if runtime.is_some() {
            "weights, arena, KV cache, overhead"
        } else {
            "the weights alone"
        },
        mb(budget.bytes.saturating_sub(counted)),
    );
    if counted > budget.bytes || plan.plan.weight_bytes as u64 != choice.weight_bytes() {
        anyhow::bail!(
            "{}: the written file needs {counted} bytes against a budget of {} (weights {} planned, {} chosen): a bug, please report it",
            a.output.display(),
            budget.bytes,
            plan.plan.weight_bytes,
            choice.weight_bytes()
        );
    }
    Ok(())
}
