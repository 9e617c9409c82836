//! Profile text generation: the [`Generator`] port, its requests and replies; [`models`] picks
//! the model and prices its usage.
//!
//! Adapters: [`bedrock::BedrockGenerator`] (Amazon Bedrock Converse, production) and
//! [`offline::OfflineGenerator`] (no LLM; demo and cost-free dry runs). [`prompts`] holds the
//! prompt texts, [`hygiene`] turns raw model output into validated values, [`classify`] picks
//! which connections get a narrative.
//!
//! Who retries: an adapter retries transient failures of a single call itself (Bedrock: its own
//! backoff, up to `generator.max_attempts`); a [`GeneratorError::Transient`] it returns means
//! "those attempts are spent, let the message come back later", and a
//! [`GeneratorError::Unavailable`] "the model service itself is failing or refusing the configured
//! model: hold the message and pause" (docs/reliability.md).

pub mod bedrock;
pub mod classify;
pub use profile_worker_contract::hygiene;
pub mod models;
pub mod offline;
pub mod prompts;

use std::iter::Sum;
use std::ops::{Add, AddAssign};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::model::{Book, CollectionEntity, Entity};

pub use classify::NarrativeTrigger;
pub use hygiene::{
    AiConnection, Biography, Discovery, MAX_AI_CONNECTIONS, MAX_DISCOVERY_ENTITIES, NarrativeStyle,
    Relationship, RelationshipStory, Significance, Story, Tone,
};
pub use models::{
    DEFAULT_MODEL_ID, DEFAULT_MODEL_NAME, ResolvedModel, estimate_cost_usd, resolve_model,
};

/// Graph neighbours listed in a prompt's cross-link block (docs/compatibility.md, "Call order").
pub const MAX_PROMPT_CONNECTIONS: usize = 15;
/// Narratives generated per profile by the worker (docs/compatibility.md, "Call order").
pub const MAX_NARRATIVES: usize = 3;

/// The four generator calls; the label of `generator_*` metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallKind {
    Discovery,
    Biography,
    Narrative,
    RelationshipStory,
}

impl CallKind {
    pub const ALL: [CallKind; 4] = [
        CallKind::Discovery,
        CallKind::Biography,
        CallKind::Narrative,
        CallKind::RelationshipStory,
    ];

    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Discovery => "discovery",
            CallKind::Biography => "biography",
            CallKind::Narrative => "narrative",
            CallKind::RelationshipStory => "relationship_story",
        }
    }

    /// Output budget of the call, as the original (docs/compatibility.md, "Generation").
    pub fn max_tokens(self) -> i32 {
        match self {
            CallKind::Discovery => 2048,
            CallKind::Biography => 1024,
            CallKind::Narrative => 200,
            CallKind::RelationshipStory => 1024,
        }
    }

    /// The system prompt of the call.
    pub fn system_prompt(self) -> &'static str {
        match self {
            CallKind::Discovery => prompts::DISCOVERY_SYSTEM,
            CallKind::Biography => prompts::BIOGRAPHY_SYSTEM,
            CallKind::Narrative => prompts::NARRATIVE_SYSTEM,
            CallKind::RelationshipStory => prompts::RELATIONSHIP_SYSTEM,
        }
    }

    /// The call a system prompt belongs to (lets fakes and logs tell calls apart).
    pub fn from_system_prompt(system: &str) -> Option<CallKind> {
        CallKind::ALL
            .into_iter()
            .find(|k| k.system_prompt() == system)
    }
}

/// What calls cost: summed over attempts, calls and a whole profile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Model invocations made (each retry attempt counts).
    pub calls: u32,
    /// Input tokens billed at the full rate (cached prefix tokens excluded).
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Prompt-prefix tokens read from the model's prompt cache (billed at the cache-read rate).
    pub cache_read_tokens: u64,
    /// Prompt-prefix tokens written to the prompt cache (billed at the cache-write rate).
    pub cache_write_tokens: u64,
    /// Wall time spent in calls (backoff sleeps excluded).
    pub latency: Duration,
    /// Attempts the service answered with throttling (the budget's adaptive rate learns from it).
    pub throttled: u32,
}

impl Add for Usage {
    type Output = Usage;
    fn add(self, rhs: Usage) -> Usage {
        Usage {
            calls: self.calls + rhs.calls,
            input_tokens: self.input_tokens + rhs.input_tokens,
            output_tokens: self.output_tokens + rhs.output_tokens,
            cache_read_tokens: self.cache_read_tokens + rhs.cache_read_tokens,
            cache_write_tokens: self.cache_write_tokens + rhs.cache_write_tokens,
            latency: self.latency + rhs.latency,
            throttled: self.throttled + rhs.throttled,
        }
    }
}

impl AddAssign for Usage {
    fn add_assign(&mut self, rhs: Usage) {
        *self = *self + rhs;
    }
}

impl Sum for Usage {
    fn sum<I: Iterator<Item = Usage>>(iter: I) -> Usage {
        iter.fold(Usage::default(), Add::add)
    }
}

/// The model requests one message may still make (docs/decisions.md, "Per-message call cap and
/// cancellation"): every request counts — retried attempts, failed and unusable narratives
/// included — and none is made once the message is cancelled. Adapters take one before every
/// request; the concurrent calls of one message share it.
#[derive(Debug, Clone)]
pub struct Allowance {
    inner: Arc<AllowanceInner>,
}

#[derive(Debug)]
struct AllowanceInner {
    max: u32,
    used: AtomicU32,
    cancel: CancellationToken,
}

/// Why an [`Allowance`] refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The message's work was cancelled (its job cancelled, or the daemon stopping).
    Cancelled,
    /// `generator.max_calls_per_message` requests were made.
    CallCap(u32),
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Cancelled => f.write_str("cancelled"),
            Stop::CallCap(max) => write!(f, "call cap of {max} per message reached"),
        }
    }
}

impl Allowance {
    /// At most `max_calls` requests, none after `cancel` fires.
    pub fn new(max_calls: u32, cancel: CancellationToken) -> Self {
        Self {
            inner: Arc::new(AllowanceInner {
                max: max_calls,
                used: AtomicU32::new(0),
                cancel,
            }),
        }
    }

    /// No cap and no cancellation (single calls outside the pipeline, tests).
    pub fn unlimited() -> Self {
        Self::new(u32::MAX, CancellationToken::new())
    }

    /// Takes one request: refused when cancelled or when the cap is spent.
    pub fn take(&self) -> Result<(), Stop> {
        if self.inner.cancel.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        let max = self.inner.max;
        self.inner
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                (used < max).then_some(used + 1)
            })
            .map(|_| ())
            .map_err(|_| Stop::CallCap(max))
    }

    /// Requests taken so far.
    pub fn used(&self) -> u32 {
        self.inner.used.load(Ordering::SeqCst)
    }

    /// Requests left before the cap.
    pub fn remaining(&self) -> u32 {
        self.inner.max.saturating_sub(self.used())
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }
}

/// Requests are compared by content; the allowance is the same when it is the same message's.
impl PartialEq for Allowance {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

/// A successful call: the validated value, what it cost and which model produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply<T> {
    pub value: T,
    pub usage: Usage,
    /// The model id that answered (`"offline"` for [`offline::OfflineGenerator`]); the pipeline
    /// stores the biography reply's model as `model_version`.
    pub model: String,
}

impl<T> Reply<T> {
    /// A reply answered without a model call (e.g. discovery over an empty collection): nothing
    /// spent.
    pub fn without_call(value: T, model: impl Into<String>) -> Self {
        Self {
            value,
            usage: Usage::default(),
            model: model.into(),
        }
    }
}

/// A failed call, saying what the caller must do, with the usage already spent.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GeneratorError {
    /// Throttling, unavailability, timeouts, I/O, a reply without text: retry the message later.
    #[error("generator temporarily failed: {reason}")]
    Transient { reason: String, usage: Usage },
    /// The request itself is refused (validation): retrying will not help.
    #[error("generator failed: {reason}")]
    Permanent { reason: String, usage: Usage },
    /// Not this message's fault: throttling or server errors on every attempt, or a refusal of
    /// the configured model as a whole (access denied, unknown or disabled model).
    #[error("generator unavailable: {reason}")]
    Unavailable { reason: String, usage: Usage },
    /// The request's [`Allowance`] refused a request: nothing more is sent for this message.
    #[error("generator call not made: {stop}")]
    Stopped { stop: Stop, usage: Usage },
}

impl GeneratorError {
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            GeneratorError::Transient { .. }
                | GeneratorError::Unavailable { .. }
                | GeneratorError::Stopped { .. }
        )
    }

    /// Why the allowance stopped the call, if it did.
    pub fn stop(&self) -> Option<Stop> {
        match self {
            GeneratorError::Stopped { stop, .. } => Some(*stop),
            _ => None,
        }
    }

    /// The model service, not the message, is at fault.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, GeneratorError::Unavailable { .. })
    }

    /// Adds what earlier attempts of the same call spent.
    pub fn add_usage(&mut self, earlier: Usage) {
        match self {
            GeneratorError::Transient { usage, .. }
            | GeneratorError::Permanent { usage, .. }
            | GeneratorError::Unavailable { usage, .. }
            | GeneratorError::Stopped { usage, .. } => *usage += earlier,
        }
    }

    /// Calls and tokens spent before failing (to be accounted all the same).
    pub fn usage(&self) -> Usage {
        match self {
            GeneratorError::Transient { usage, .. }
            | GeneratorError::Permanent { usage, .. }
            | GeneratorError::Unavailable { usage, .. }
            | GeneratorError::Stopped { usage, .. } => *usage,
        }
    }
}

/// Step A: personal connections between the entity and other collection entities.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveryRequest {
    /// Resolved model id ([`resolve_model`]).
    pub model: String,
    /// The message's requests left; taken before every request.
    pub allowance: Allowance,
    /// The profiled entity.
    pub entity: CollectionEntity,
    /// Collection entities with qualifying books, authors then publishers then binders (may include
    /// the entity itself). Only the first [`MAX_DISCOVERY_ENTITIES`] are offered and accepted;
    /// empty means no call.
    pub universe: Vec<CollectionEntity>,
}

/// Step B: biography and personal stories.
#[derive(Debug, Clone, PartialEq)]
pub struct BiographyRequest {
    pub model: String,
    pub allowance: Allowance,
    pub entity: Entity,
    /// The entity's qualifying books in prompt order (`year_start` NULLS LAST); all titles go in.
    pub books: Vec<Book>,
    /// Graph neighbours strongest first (an entity linked twice appears twice). The first
    /// [`MAX_PROMPT_CONNECTIONS`] are offered for cross-links; all of them are valid marker targets.
    pub connections: Vec<CollectionEntity>,
}

/// Steps C/D: one graph connection of the profiled entity.
#[derive(Debug, Clone, PartialEq)]
pub struct PairRequest {
    pub model: String,
    pub allowance: Allowance,
    /// The profiled entity with the years its graph node carries.
    pub source: Entity,
    /// The other endpoint with the years its graph node carries (publishers/binders: none).
    pub target: Entity,
    /// Graph edge type, e.g. `publisher`, `shared_publisher`, `binder`, `friendship`.
    pub connection_type: String,
    /// Titles of the entity's books shared on this edge, in the entity's book order.
    pub shared_titles: Vec<String>,
    /// As [`BiographyRequest::connections`].
    pub connections: Vec<CollectionEntity>,
}

/// Step D for high-impact triggers: a full relationship story.
#[derive(Debug, Clone, PartialEq)]
pub struct RelationshipStoryRequest {
    pub pair: PairRequest,
    pub trigger: NarrativeTrigger,
}

/// The port the pipeline generates through. Object safe: held as `Arc<dyn Generator>`.
///
/// `Ok` always carries validated, normalised values (markers sanitised, stories with allowed enum
/// values only). Adapters retry single calls themselves; see the module docs.
#[async_trait]
pub trait Generator: Send + Sync {
    /// Step A. An empty universe answers at once with no connections and no usage. Unusable output
    /// is an empty [`Discovery`], not an error. A call error is returned with its usage; the
    /// original never fails a job on discovery, so the pipeline logs it and goes on without.
    async fn discover_connections(
        &self,
        request: &DiscoveryRequest,
    ) -> Result<Reply<Discovery>, GeneratorError>;

    /// Step B. A [`Biography`] whose `biography` is `None` means the model gave nothing usable;
    /// the pipeline treats that as a transient failure (docs/decisions.md, "A failed biography is never a fresh profile").
    async fn biography(
        &self,
        request: &BiographyRequest,
    ) -> Result<Reply<Biography>, GeneratorError>;

    /// Step D for `hub_figure`: one trimmed sentence about the connection.
    async fn connection_narrative(
        &self,
        request: &PairRequest,
    ) -> Result<Reply<String>, GeneratorError>;

    /// Step D for `cross_era_bridge` / `social_circle`. `None`: the reply had no usable summary
    /// (the connection then does not use up the narrative cap).
    async fn relationship_story(
        &self,
        request: &RelationshipStoryRequest,
    ) -> Result<Reply<Option<RelationshipStory>>, GeneratorError>;

    /// Estimated USD of calls admitted and not yet answered, which the daily cost cap counts
    /// beside the settled spend (docs/decisions.md, "Daily cost cap"). Only the budget decorator
    /// reserves anything; an adapter alone has nothing in flight to report.
    async fn in_flight_cost_usd(&self) -> f64 {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_sums() {
        let a = Usage {
            calls: 1,
            input_tokens: 10,
            output_tokens: 5,
            cache_read_tokens: 3,
            cache_write_tokens: 2,
            latency: Duration::from_millis(100),
            throttled: 1,
        };
        let total: Usage = [a, a, Usage::default()].into_iter().sum();
        assert_eq!(
            total,
            Usage {
                calls: 2,
                input_tokens: 20,
                output_tokens: 10,
                cache_read_tokens: 6,
                cache_write_tokens: 4,
                latency: Duration::from_millis(200),
                throttled: 2,
            }
        );
        let mut b = a;
        b += a;
        assert_eq!(b, a + a);
    }

    #[test]
    fn call_kinds_have_the_original_budgets_and_distinct_prompts() {
        let budgets: Vec<i32> = CallKind::ALL.iter().map(|k| k.max_tokens()).collect();
        assert_eq!(budgets, [2048, 1024, 200, 1024]);
        for k in CallKind::ALL {
            assert_eq!(CallKind::from_system_prompt(k.system_prompt()), Some(k));
        }
        assert_eq!(CallKind::from_system_prompt("other"), None);
    }
}
