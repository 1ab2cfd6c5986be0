//! Vspec's std shell: maps model files, tokenizes, runs the core on threads, and drives the CLI.
pub mod chat;
pub mod detect;
pub mod cli;
pub mod fetch;
pub mod generate;
pub mod model;
pub mod parallel;
pub mod perplexity;
pub mod tokenizer;

pub use model::{Engine, ModelFile};
