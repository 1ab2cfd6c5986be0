//! Vspec core: everything needed to run a Llama-family model from bytes already in memory.
//!
//! Invariants this crate keeps (each has a test):
//! - no I/O, no threads, no clocks: the std shells bring those through small traits;
//! - no panic on input data: every parser validates offsets, lengths, shapes and dtypes first and
//!   returns [`Error`] naming the field or tensor;
//! - memory is planned before it is used: [`exec::Session`] never allocates in `forward`;
//! - the plan is a pure function of the graph and the limits.
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs, unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

pub mod error;
pub mod exec;
pub mod format;
pub mod gguf;
pub mod graph;
pub mod kernels;
pub mod kv;
pub mod model;
pub mod plan;
pub mod quant;
pub mod safetensors;
pub mod sample;
pub mod vspecfile;

pub use error::{Error, Result};
pub use format::Format;
