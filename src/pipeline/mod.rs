//! One message, start to finish: parse, guard, staleness, graph, generate, persist, progress.

pub mod staleness;
