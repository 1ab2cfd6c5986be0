//! Vspec's std shell: maps model files, tokenizes, runs the core on threads, and drives the CLI.
pub mod chat;
pub mod cli;
pub mod detect;
pub mod engine;
pub mod expand;
pub mod fetch;
pub mod generate;
pub mod kl;
pub mod memory;
pub mod model;
pub mod parallel;
pub mod perplexity;
pub mod quantize;
mod resident;
pub mod tokenizer;
pub mod vspecfile;

pub use model::{Engine, ModelFile};
