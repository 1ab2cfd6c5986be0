//! Weights rewritten at load into a format the CPU runs faster, without changing a value.
//!
//! The trellis formats (TQ2/TQ3/TQ4) decode through a 256-entry table per weight. With AVX-512
//! VBMI that costs a few shuffles per 64 weights; on the AVX2 tier it is about a cycle per
//! weight, several times slower than any other format. Every trellis weight is an i8 codebook
//! entry times its block's f16 scale, which is exactly a Q8_0 quant times its scale, so a
//! trellis block rewrites losslessly as two Q8_0 blocks: same f32 values, bit for bit, at 8.5
//! bits per weight instead of 2.25–4.25. [`KernelTable::expansion`] says where that pays;
//! [`Expansion`] (from `VSPEC_EXPAND`) says whether a session takes it. Plans count the rewritten
//! bytes, so `vspec plan` and the engine agree on the memory.

use anyhow::{anyhow, Result};
use rayon::prelude::*;
use std::collections::HashMap;
use vspec_core::format::Format;
use vspec_core::graph::{Graph, Role};
use vspec_core::kernels::KernelTable;
use vspec_core::model::{Layout, WeightView};
use vspec_core::quant::vspec::trellis;
use vspec_core::quant::vspec::{expand_to_q8_0, q8_0_expansion};

/// Whether CPU sessions store weights in the format their kernel table prefers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expansion {
    /// Where the kernel table names a faster format ([`KernelTable::expansion`]): on the AVX2
    /// tier, the trellis formats as Q8_0.
    Auto,
    /// Never: weights stay as the file stores them (least memory).
    Never,
    /// Every format that has a lossless rewrite, whatever the table (tests, comparisons).
    Always,
}

impl Expansion {
    /// From `VSPEC_EXPAND`: unset or `auto` → [`Expansion::Auto`], `0`/`off` → `Never`,
    /// `1`/`on` → `Always`; anything else is an error naming the variable.
    pub fn from_env() -> Result<Expansion> {
        match std::env::var("VSPEC_EXPAND") {
            Err(_) => Ok(Expansion::Auto),
            Ok(v) => Expansion::parse(&v)
                .ok_or_else(|| anyhow!("VSPEC_EXPAND='{v}': expected auto, 0/off or 1/on")),
        }
    }

    fn parse(v: &str) -> Option<Expansion> {
        match v.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Some(Expansion::Auto),
            "0" | "off" | "no" | "never" => Some(Expansion::Never),
            "1" | "on" | "yes" | "always" => Some(Expansion::Always),
            _ => None,
        }
    }

    /// The format a weight stored in `format` runs in under this policy with `kernels`.
    pub fn target(self, format: Format, kernels: &KernelTable) -> Option<Format> {
        let rewrite = q8_0_expansion(format).map(|_| Format::Q8_0);
        match self {
            Expansion::Never => None,
            Expansion::Always => rewrite,
            Expansion::Auto => kernels.expansion(format).filter(|&f| Some(f) == rewrite),
        }
    }
}

/// The weights of `graph` (bound: formats recorded) that a session stores rewritten under
/// `policy` with `kernels`, and the format each runs in.
pub fn planned(graph: &Graph, kernels: &KernelTable, policy: Expansion) -> Vec<(usize, Format)> {
    graph
        .tensors
        .iter()
        .enumerate()
        .filter(|(_, t)| t.role == Role::Weight)
        .filter_map(|(id, t)| Some((id, policy.target(t.format?, kernels)?)))
        .collect()
}

/// What a session rewrote: for the line `vspec` prints at load.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rewritten {
    /// Matrices rewritten.
    pub tensors: usize,
    /// Their formats in the file.
    pub from: Vec<Format>,
    /// Their bytes in the file.
    pub file_bytes: usize,
    /// Their bytes as the session holds them.
    pub held_bytes: usize,
}

impl Rewritten {
    /// Counts `rewrites` of the bound `graph` (formats as in the file) and `views`.
    pub fn count(
        graph: &Graph,
        views: &[Option<WeightView<'_>>],
        rewrites: &[(usize, Format)],
    ) -> Rewritten {
        let mut r = Rewritten::default();
        for &(id, format) in rewrites {
            let Some(v) = views[id].as_ref() else {
                continue;
            };
            r.tensors += 1;
            if !r.from.contains(&v.format) {
                r.from.push(v.format);
            }
            r.file_bytes += v.data.len();
            r.held_bytes += format
                .tensor_bytes(v.cols, v.rows, &graph.tensors[id].name)
                .unwrap_or(0);
        }
        r
    }

    /// One line for the user, or `None` when nothing was rewritten.
    pub fn note(&self) -> Option<String> {
        if self.tensors == 0 {
            return None;
        }
        let names: Vec<&str> = self.from.iter().map(|f| f.name()).collect();
        let mib = |b: usize| b as f64 / (1u64 << 20) as f64;
        Some(format!(
            "{} {} matrices ({:.2} MiB) run as Q8_0 ({:.2} MiB, the same values): this CPU \
             decodes them slowly (no AVX-512 VBMI); VSPEC_EXPAND=0 keeps them packed",
            self.tensors,
            names.join("/"),
            mib(self.file_bytes),
            mib(self.held_bytes)
        ))
    }
}

/// Records the rewritten formats in `graph`, so that its plan counts their bytes.
pub fn apply_to_graph(graph: &mut Graph, rewrites: &[(usize, Format)]) {
    for &(id, format) in rewrites {
        graph.tensors[id].format = Some(format);
    }
}

/// Every weight of `views` whose format has a lossless rewrite, rewritten (in parallel), by
/// tensor name; `done` gets each source's bytes once its rewrite is made (the model frees their
/// resident pages, so the peak stays near what the plan counts).
pub fn expand_all(
    graph: &Graph,
    views: &[Option<WeightView<'_>>],
    done: &(dyn Fn(&[u8]) + Sync),
) -> HashMap<String, Vec<u8>> {
    let todo: Vec<(&str, &WeightView<'_>)> = graph
        .tensors
        .iter()
        .zip(views)
        .filter_map(|(t, v)| Some((t.name.as_str(), v.as_ref()?)))
        .filter(|(_, v)| q8_0_expansion(v.format).is_some())
        .collect();
    todo.par_iter()
        .filter_map(|(name, v)| {
            let rewritten = expand_to_q8_0(v.format, v.data)?;
            done(v.data);
            Some((name.to_string(), rewritten))
        })
        .collect()
}

/// `views` with each weight of `rewrites` pointing at its rewritten bytes in `store`.
pub fn apply_to_views<'a>(
    graph: &Graph,
    views: &mut [Option<WeightView<'a>>],
    rewrites: &[(usize, Format)],
    store: &'a HashMap<String, Vec<u8>>,
) -> Result<()> {
    for &(id, format) in rewrites {
        let (name, view, data) = stored(graph, views, id, store, format.name())?;
        let row_bytes = format.row_bytes(view.cols, name)?;
        if data.len() != row_bytes * view.rows {
            return Err(anyhow!(
                "tensor '{name}': {} rewritten bytes, {} rows of {row_bytes} expected",
                data.len(),
                view.rows
            ));
        }
        *view = WeightView {
            format,
            row_bytes,
            data,
            ..*view
        };
    }
    Ok(())
}

/// Whether sessions may hold trellis weights interleaved per sixteen rows where the kernel
/// table reads that layout (`VSPEC_INTERLEAVE`: unset or `auto`/`1` yes, `0`/`off` no, for
/// comparisons; anything else is an error naming the variable).
pub fn interleave_enabled() -> Result<bool> {
    match std::env::var("VSPEC_INTERLEAVE") {
        Err(_) => Ok(true),
        Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
            "" | "auto" | "1" | "on" | "yes" => Ok(true),
            "0" | "off" | "no" | "never" => Ok(false),
            _ => Err(anyhow!(
                "VSPEC_INTERLEAVE='{v}': expected auto, 1/on or 0/off"
            )),
        },
    }
}

/// The trellis weights of `views` a session holds interleaved per sixteen rows
/// ([`Layout::Rows16`]) with `kernels`: those whose format the table reads so
/// ([`KernelTable::rows16`]), of whole sixteen-row groups, as the file stores them.
pub fn interleave_planned(
    graph: &Graph,
    views: &[Option<WeightView<'_>>],
    kernels: &KernelTable,
) -> Vec<usize> {
    graph
        .tensors
        .iter()
        .enumerate()
        .filter(|(_, t)| t.role == Role::Weight)
        .filter_map(|(id, _)| {
            let v = views[id].as_ref()?;
            let fits = kernels.rows16(v.format)
                && trellis::stream_bits(v.format).is_some()
                && v.layout == Layout::RowMajor
                && v.rows % trellis::ROWS16 == 0
                && v.cols % trellis::BLOCK_ELEMS == 0;
            fits.then_some(id)
        })
        .collect()
}

/// The weights `picked` of `views`, interleaved (in parallel), by tensor name; `done` gets each
/// source's bytes once its copy is made (the model frees their resident pages: the session
/// holds the same number of bytes as the file).
pub fn interleave_all(
    graph: &Graph,
    views: &[Option<WeightView<'_>>],
    picked: &[usize],
    done: &(dyn Fn(&[u8]) + Sync),
) -> HashMap<String, Vec<u8>> {
    picked
        .par_iter()
        .filter_map(|&id| {
            let v = views[id].as_ref()?;
            let k = trellis::stream_bits(v.format)?;
            let out = trellis::interleave_rows16(k, v.rows, v.cols / trellis::BLOCK_ELEMS, v.data)?;
            done(v.data);
            Some((graph.tensors[id].name.clone(), out))
        })
        .collect()
}

/// Weight `id`'s name, view and copy in `store` (`what` names the copy in the error).
fn stored<'v, 'a>(
    graph: &'v Graph,
    views: &'v mut [Option<WeightView<'a>>],
    id: usize,
    store: &'a HashMap<String, Vec<u8>>,
    what: &str,
) -> Result<(&'v str, &'v mut WeightView<'a>, &'a [u8])> {
    let name = &graph.tensors[id].name;
    let view = views[id]
        .as_mut()
        .ok_or_else(|| anyhow!("tensor '{name}': not bound"))?;
    let data = store
        .get(name)
        .ok_or_else(|| anyhow!("tensor '{name}': no {what} copy"))?;
    Ok((name, view, data))
}

/// `views` with each weight of `picked` pointing at its interleaved bytes in `store`.
pub fn apply_interleaved<'a>(
    graph: &Graph,
    views: &mut [Option<WeightView<'a>>],
    picked: &[usize],
    store: &'a HashMap<String, Vec<u8>>,
) -> Result<()> {
    for &id in picked {
        let (name, view, data) = stored(graph, views, id, store, "interleaved")?;
        if data.len() != view.data.len() {
            return Err(anyhow!(
                "tensor '{name}': {} interleaved bytes, {} expected",
                data.len(),
                view.data.len()
            ));
        }
        *view = WeightView {
            data,
            layout: Layout::Rows16,
            ..*view
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_parses_the_documented_values() {
        assert_eq!(Expansion::parse("auto"), Some(Expansion::Auto));
        assert_eq!(Expansion::parse(""), Some(Expansion::Auto));
        assert_eq!(Expansion::parse("0"), Some(Expansion::Never));
        assert_eq!(Expansion::parse("OFF"), Some(Expansion::Never));
        assert_eq!(Expansion::parse("1"), Some(Expansion::Always));
        assert_eq!(Expansion::parse("on"), Some(Expansion::Always));
        assert_eq!(Expansion::parse("fast"), None);
    }

    #[test]
    fn only_trellis_formats_are_rewritten() {
        let scalar = KernelTable::scalar();
        for f in Format::ALL {
            let trellis = matches!(f, Format::TQ2 | Format::TQ3 | Format::TQ4);
            let want = trellis.then_some(Format::Q8_0);
            assert_eq!(Expansion::Always.target(f, &scalar), want, "{}", f.name());
            assert_eq!(Expansion::Never.target(f, &scalar), None);
            // The scalar table asks for no rewrite.
            assert_eq!(Expansion::Auto.target(f, &scalar), None);
        }
    }
}
