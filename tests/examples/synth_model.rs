//! Writes a model of a published shape with random weights in the formats `vspec convert --bits N`
//! picks (see `vspec_tests::synth`): what `cuda-shell/check.sh` times on a GPU where the real
//! weights cannot be fetched.
//!
//! `cargo run --release -p vspec-tests --example synth_model -- SHAPE BITS OUT [LAYERS]`, SHAPE
//! `smollm2-135m` or `qwen3-8b`, BITS 2, 3, 4 or 8.

use anyhow::{anyhow, Context, Result};
use std::path::PathBuf;
use std::time::Instant;
use vspec_tests::synth::{write, Shape};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || anyhow!("usage: synth_model SHAPE BITS OUT [LAYERS]");
    let shape = Shape::parse(args.first().ok_or_else(usage)?)?;
    let bits: u32 = args.get(1).ok_or_else(usage)?.parse().context("BITS")?;
    let out = PathBuf::from(args.get(2).ok_or_else(usage)?);
    let layers = args
        .get(3)
        .map(|l| l.parse())
        .transpose()
        .context("LAYERS")?;
    let t = Instant::now();
    let w = write(&out, shape, layers, bits, 1)?;
    println!(
        "{}: {shape:?} --bits {bits}, {:.2} G weights, {:.1} MiB of tensors ({:.2} bpw), {:?}, {:.1} s",
        out.display(),
        w.params as f64 / 1e9,
        w.tensor_bytes as f64 / (1u64 << 20) as f64,
        w.tensor_bytes as f64 * 8.0 / w.params as f64,
        w.formats,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
