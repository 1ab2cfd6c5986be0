//! Execution: the memory plan of a graph, and the session that runs it.

pub mod memory;
pub mod session;

pub use memory::Plan;
pub use session::Session;
