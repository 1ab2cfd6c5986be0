//! Execution: the session that runs a planned graph, and the [`Executor`] seam that backends
//! implement.

pub mod session;

pub use session::Session;

use crate::error::Result;
use crate::graph::Limits;
use crate::plan::Plan;

/// A backend that runs one planned graph: the seam between the shells (CLI, C API, generation
/// loop, perplexity) and where the arithmetic happens.
///
/// An executor is built from the same [`crate::graph::Graph`], [`Plan`] and weight views on every
/// backend: activations live at the plan's arena offsets (in host or device memory), weights stay
/// in their stored format and are read through views, the KV cache holds `plan.kv_bytes`, and
/// only the logits come back to the host. The CPU [`Session`] implements it; a device backend
/// reports its own failures as [`crate::error::Error::Backend`].
pub trait Executor {
    /// Runs `tokens` at the next positions and returns their logits in host memory:
    /// `tokens.len() × vocab` when the graph keeps all logits, else the last token's `vocab`.
    fn forward(&mut self, tokens: &[u32]) -> Result<&[f32]>;
    /// Positions held in the KV cache.
    fn pos(&self) -> usize;
    /// Forgets the cached positions past `pos`.
    fn truncate(&mut self, pos: usize);
    /// Forgets everything.
    fn reset(&mut self);
    /// The limits the graph was planned for.
    fn limits(&self) -> Limits;
    /// The memory plan the executor runs.
    fn plan(&self) -> &Plan;
}

impl Executor for Session<'_> {
    fn forward(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        Session::forward(self, tokens)
    }
    fn pos(&self) -> usize {
        Session::pos(self)
    }
    fn truncate(&mut self, pos: usize) {
        Session::truncate(self, pos)
    }
    fn reset(&mut self) {
        Session::reset(self)
    }
    fn limits(&self) -> Limits {
        Session::limits(self)
    }
    fn plan(&self) -> &Plan {
        Session::plan(self)
    }
}
