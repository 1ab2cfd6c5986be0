//! Model families: configuration, graph builders, tensor naming and weight binding.

pub mod bind;
pub mod config;
pub mod llama;
pub mod names;

pub use bind::{bind_weights, weight_bytes, Layout, RawTensor, WeightView};
pub use config::{Arch, ModelConfig, RopeScaling};
pub use llama::{build_graph, build_graph_kv};
