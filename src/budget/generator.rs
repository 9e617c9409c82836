//! [`BudgetedGenerator`]: the budget as a decorator of the [`Generator`] port, so the pipeline
//! and the adapters know nothing of it and every adapter call passes through it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{Budget, Spent};
use crate::generate::{
    Biography, BiographyRequest, CallKind, Discovery, DiscoveryRequest, Generator, GeneratorError,
    PairRequest, RelationshipStory, RelationshipStoryRequest, Reply, Usage,
};

/// Input tokens assumed for a call kind before any reply has shown its real size.
const FIRST_INPUT_ESTIMATE: u64 = 1000;
/// Weight of the newest reply in a call kind's running token estimate.
const ESTIMATE_WEIGHT: f64 = 0.2;

/// Admits each call through the [`Budget`] before the inner generator runs it, holds its lease
/// (renewed) while it runs, and settles the attempts and tokens the reply reports: the retries
/// the adapter made inside the call, its throttled attempts (the adaptive rate's signal) and the
/// real token count in place of the estimate reserved.
pub struct BudgetedGenerator {
    inner: Arc<dyn Generator>,
    budget: Arc<Budget>,
    /// Running mean of the tokens one call of each kind uses (input + output).
    estimates: Mutex<HashMap<CallKind, f64>>,
}

impl BudgetedGenerator {
    pub fn new(inner: Arc<dyn Generator>, budget: Arc<Budget>) -> Self {
        Self {
            inner,
            budget,
            estimates: Mutex::default(),
        }
    }

    /// Tokens to reserve for one call of `kind`: the running mean, at first the output cap
    /// plus a typical prompt.
    fn estimate(&self, kind: CallKind) -> u64 {
        let estimates = self.estimates.lock().expect("estimate lock");
        estimates
            .get(&kind)
            .map(|e| e.round() as u64)
            .unwrap_or(kind.max_tokens() as u64 + FIRST_INPUT_ESTIMATE)
    }

    fn learn(&self, kind: CallKind, usage: &Usage) {
        let answered = usage.calls.saturating_sub(usage.throttled);
        if answered == 0 || usage.input_tokens + usage.output_tokens == 0 {
            return;
        }
        let per_call = (usage.input_tokens + usage.output_tokens) as f64 / f64::from(answered);
        let mut estimates = self.estimates.lock().expect("estimate lock");
        estimates
            .entry(kind)
            .and_modify(|e| *e += ESTIMATE_WEIGHT * (per_call - *e))
            .or_insert(per_call);
    }

    async fn budgeted<T>(
        &self,
        kind: CallKind,
        call: impl Future<Output = Result<Reply<T>, GeneratorError>>,
    ) -> Result<Reply<T>, GeneratorError> {
        let grant = self.budget.acquire(self.estimate(kind)).await;
        let result = if grant.holds_lease() {
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
        self.learn(kind, &usage);
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
    async fn discover_connections(
        &self,
        request: &DiscoveryRequest,
    ) -> Result<Reply<Discovery>, GeneratorError> {
        if request.universe.is_empty() {
            // Answered without a model call.
            return self.inner.discover_connections(request).await;
        }
        self.budgeted(
            CallKind::Discovery,
            self.inner.discover_connections(request),
        )
        .await
    }

    async fn biography(
        &self,
        request: &BiographyRequest,
    ) -> Result<Reply<Biography>, GeneratorError> {
        self.budgeted(CallKind::Biography, self.inner.biography(request))
            .await
    }

    async fn connection_narrative(
        &self,
        request: &PairRequest,
    ) -> Result<Reply<String>, GeneratorError> {
        self.budgeted(
            CallKind::Narrative,
            self.inner.connection_narrative(request),
        )
        .await
    }

    async fn relationship_story(
        &self,
        request: &RelationshipStoryRequest,
    ) -> Result<Reply<Option<RelationshipStory>>, GeneratorError> {
        self.budgeted(
            CallKind::RelationshipStory,
            self.inner.relationship_story(request),
        )
        .await
    }
}
