//! [`BudgetedGenerator`]: the budget as a decorator of the [`Generator`] port, so the pipeline
//! and the adapters know nothing of it and every adapter call passes through it.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{Budget, Spent};
use crate::config::{GeneratorConfig, Price};
use crate::generate::{
    Biography, BiographyRequest, CallKind, Discovery, DiscoveryRequest, Generator, GeneratorError,
    PairRequest, RelationshipStory, RelationshipStoryRequest, Reply, Usage, estimate_cost_usd,
};

/// Input tokens assumed for a call kind before any reply has shown its real size.
const FIRST_INPUT_ESTIMATE: u64 = 1000;
/// Weight of the newest reply in a call kind's running estimates.
const ESTIMATE_WEIGHT: f64 = 0.2;

/// Running means of what one answered call of a kind used.
#[derive(Debug, Clone, Copy)]
struct Estimate {
    /// Input plus output tokens.
    tokens: f64,
    /// Estimated cost at `generator.prices`.
    usd: f64,
}

/// Admits each call through the [`Budget`] before the inner generator runs it, holds its lease
/// (renewed) while it runs, and settles the attempts and tokens the reply reports: the retries
/// the adapter made inside the call, its throttled attempts (the adaptive rate's signal) and the
/// real token count in place of the estimate reserved. While a call runs its estimated cost is
/// reserved for the daily cost cap ([`Generator::in_flight_cost_usd`]). An inner generator that returns a
/// throttled attempt (`BedrockGenerator::returning_throttles`) has it sent again here, admitted
/// like any call, up to `generator.max_attempts` attempts in all.
pub struct BudgetedGenerator {
    inner: Arc<dyn Generator>,
    budget: Arc<Budget>,
    /// `generator.max_attempts`: attempts of one call, those sent back throttled included.
    max_attempts: u32,
    prices: BTreeMap<String, Price>,
    estimates: Mutex<HashMap<CallKind, Estimate>>,
}

impl BudgetedGenerator {
    pub fn new(inner: Arc<dyn Generator>, budget: Arc<Budget>, config: &GeneratorConfig) -> Self {
        Self {
            inner,
            budget,
            max_attempts: config.max_attempts.max(1),
            prices: config.prices.clone(),
            estimates: Mutex::default(),
        }
    }

    /// Tokens and USD to reserve for one call of `kind` to `model`: the running means, at first
    /// the output cap plus a typical prompt.
    fn estimate(&self, kind: CallKind, model: &str) -> (u64, f64) {
        let estimates = self.estimates.lock().expect("estimate lock");
        match estimates.get(&kind) {
            Some(e) => (e.tokens.round() as u64, e.usd),
            None => {
                let first = Usage {
                    input_tokens: FIRST_INPUT_ESTIMATE,
                    output_tokens: kind.max_tokens() as u64,
                    ..Usage::default()
                };
                let usd = estimate_cost_usd(&self.prices, model, &first).unwrap_or(0.0);
                (first.input_tokens + first.output_tokens, usd)
            }
        }
    }

    fn learn(&self, kind: CallKind, model: &str, usage: &Usage) {
        let answered = usage.calls.saturating_sub(usage.throttled);
        if answered == 0 || usage.input_tokens + usage.output_tokens == 0 {
            return;
        }
        let answered = f64::from(answered);
        let seen = Estimate {
            tokens: (usage.input_tokens + usage.output_tokens) as f64 / answered,
            usd: estimate_cost_usd(&self.prices, model, usage).unwrap_or(0.0) / answered,
        };
        let mut estimates = self.estimates.lock().expect("estimate lock");
        estimates
            .entry(kind)
            .and_modify(|e| {
                e.tokens += ESTIMATE_WEIGHT * (seen.tokens - e.tokens);
                e.usd += ESTIMATE_WEIGHT * (seen.usd - e.usd);
            })
            .or_insert(seen);
    }

    /// Runs `call` once per admission until it is not sent back throttled (or the attempts
    /// are spent); the result carries the usage of every attempt.
    async fn budgeted<T, F, Fut>(
        &self,
        kind: CallKind,
        model: &str,
        call: F,
    ) -> Result<Reply<T>, GeneratorError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Reply<T>, GeneratorError>>,
    {
        let mut earlier = Usage::default();
        loop {
            let mut result = self.admitted(kind, model, call()).await;
            let usage = match &result {
                Ok(reply) => reply.usage,
                Err(e) => e.usage(),
            };
            let sent_back = matches!(&result, Err(e) if e.is_unavailable() && usage.throttled > 0);
            match &mut result {
                Ok(reply) => reply.usage += earlier,
                Err(e) => e.add_usage(earlier),
            }
            earlier += usage;
            if !sent_back || earlier.calls >= self.max_attempts {
                return result;
            }
            tracing::debug!(
                call = kind.as_str(),
                attempts = earlier.calls,
                "throttled: sending the call again once the budget admits it"
            );
        }
    }

    /// One admission: acquire, run `call` with the lease renewed, settle what it spent.
    async fn admitted<T>(
        &self,
        kind: CallKind,
        model: &str,
        call: impl Future<Output = Result<Reply<T>, GeneratorError>>,
    ) -> Result<Reply<T>, GeneratorError> {
        let (tokens, usd) = self.estimate(kind, model);
        let grant = self.budget.acquire(tokens, usd).await;
        let result = if grant.needs_renewal() {
            let every = self.budget.renew_every();
            let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            let mut call = std::pin::pin!(call);
            loop {
                tokio::select! {
                    result = &mut call => break result,
                    _ = renew.tick() => self.budget.renew(&grant).await,
                }
            }
        } else {
            call.await
        };
        let usage = match &result {
            Ok(reply) => reply.usage,
            Err(e) => e.usage(),
        };
        self.learn(kind, model, &usage);
        let spent = Spent {
            requests: usage.calls,
            tokens: usage.input_tokens + usage.output_tokens,
            throttled: usage.throttled,
        };
        self.budget.settle(grant, spent).await;
        result
    }
}

#[async_trait]
impl Generator for BudgetedGenerator {
    async fn in_flight_cost_usd(&self) -> f64 {
        self.budget.reserved_usd().await
    }

    async fn discover_connections(
        &self,
        request: &DiscoveryRequest,
    ) -> Result<Reply<Discovery>, GeneratorError> {
        if request.universe.is_empty() {
            // Answered without a model call.
            return self.inner.discover_connections(request).await;
        }
        self.budgeted(CallKind::Discovery, &request.model, || {
            self.inner.discover_connections(request)
        })
        .await
    }

    async fn biography(
        &self,
        request: &BiographyRequest,
    ) -> Result<Reply<Biography>, GeneratorError> {
        self.budgeted(CallKind::Biography, &request.model, || {
            self.inner.biography(request)
        })
        .await
    }

    async fn connection_narrative(
        &self,
        request: &PairRequest,
    ) -> Result<Reply<String>, GeneratorError> {
        self.budgeted(CallKind::Narrative, &request.model, || {
            self.inner.connection_narrative(request)
        })
        .await
    }

    async fn relationship_story(
        &self,
        request: &RelationshipStoryRequest,
    ) -> Result<Reply<Option<RelationshipStory>>, GeneratorError> {
        self.budgeted(CallKind::RelationshipStory, &request.pair.model, || {
            self.inner.relationship_story(request)
        })
        .await
    }
}
