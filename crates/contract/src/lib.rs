//! What profile-worker accepts from the outside and what it hands back, kept apart from the daemon
//! so both can be fuzzed without building it (docs/architecture.md, "Crates"):
//!
//! - [`message`]: the queue message body any producer sends — parsed, and built for `enqueue`;
//! - [`hygiene`]: a model reply turned into values the Python API can always read back;
//! - [`entity`]: the `type:id` names both use.

pub mod entity;
pub mod hygiene;
pub mod message;
