//! One message end to end: parse, guard, staleness, graph, generate, persist, progress.

pub mod message;
