//! calibrate and convert.

use super::{model_path, CalibrateArgs, ConvertArgs};
use crate::model::ModelFile;
use crate::quantize::calibrate::{calibrate as run_calibration, Calibration};
use crate::quantize::convert::{convert as run_convert, Calibrate};
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
    let recipe = match (recipe_file, a.bits) {
        (Some(r), _) => r,
        (None, Some(b)) => {
            let c = &model.config;
            Recipe::for_bits(b, c.n_layers, c.tied_embeddings)?
        }
        (None, None) => anyhow::bail!("give --bits or --recipe"),
    };
    let threads = if a.model.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        a.model.threads
    };
    let t0 = std::time::Instant::now();
    let r = run_convert(&model, &a.output, &recipe, calibration, threads, true)?;
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
    Ok(())
}
