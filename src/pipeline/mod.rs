//! One message, start to finish: parse, guard, staleness, graph, generate, persist, progress.

pub mod message;
pub mod staleness;
