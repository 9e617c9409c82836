//! [`BedrockGenerator`]: the production generator on the Bedrock Runtime Converse API.
//!
//! The SDK's own retries are disabled so every attempt is ours: a per-call timeout, then
//! exponential backoff with full jitter for throttling, unavailability, model-not-ready, internal
//! errors, 5xx, timeouts and I/O errors (the SDK's standard mode would stop after 3 attempts from
//! 1 s and does not retry a bare 429). Prompts are never logged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::retry::RetryConfig;
use aws_sdk_bedrockruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::operation::converse::{ConverseError, ConverseOutput};
use aws_sdk_bedrockruntime::types::{
    CachePointBlock, CachePointType, ContentBlock, ConversationRole,
    ConverseOutput as ReplyContent, InferenceConfiguration, Message, SystemContentBlock,
};

use crate::config::{GeneratorConfig, Price, PromptCache};
use crate::metrics::Metrics;
use crate::retry::Backoff;

use super::{
    Allowance, BiographyRequest, CallKind, Discovery, DiscoveryRequest, Generator, GeneratorError,
    PairRequest, RelationshipStory, RelationshipStoryRequest, Reply, Usage, hygiene, prompts,
};

/// Longest single backoff, whatever `generator.retry_base_ms` and the attempt number.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Error codes worth another attempt.
const RETRYABLE_CODES: &[&str] = &[
    "ThrottlingException",
    "TooManyRequestsException",
    "ServiceUnavailableException",
    "ModelNotReadyException",
    "InternalServerException",
];

/// Generates through Amazon Bedrock Converse; cheap to share behind an `Arc`.
pub struct BedrockGenerator {
    client: Client,
    temperature: Option<f32>,
    call_timeout: Duration,
    max_attempts: u32,
    /// Full jitter below `generator.retry_base_ms · 2^(n−1)`, at most [`MAX_BACKOFF`].
    backoff: Backoff,
    prices: BTreeMap<String, Price>,
    prompt_cache: BTreeMap<String, PromptCache>,
    metrics: Arc<Metrics>,
    /// Whether a throttled attempt is retried here (after the backoff) or ends the call.
    retry_throttled: bool,
}

/// A user prompt: the part shared by every entity of the collection (cacheable), then the rest.
struct UserPrompt {
    shared: String,
    rest: String,
}

impl UserPrompt {
    fn unshared(rest: String) -> Self {
        Self {
            shared: String::new(),
            rest,
        }
    }
}

/// Tokens of `text` as the cache-point threshold estimates them: 4 bytes a token, rounded up
/// (docs/decisions.md, "Prompt caching").
pub fn estimate_tokens(text: &str) -> u64 {
    text.len().div_ceil(4) as u64
}

/// Where the cache point goes: after the system prompt, or after the shared user part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CachePoint {
    None,
    AfterSystem,
    AfterShared,
}

/// The last cache point whose prefix reaches the model's minimum; none for models without
/// prompt caching.
fn cache_point(cache: Option<&PromptCache>, system: &str, shared: &str) -> CachePoint {
    let Some(cache) = cache else {
        return CachePoint::None;
    };
    let min = u64::from(cache.min_tokens);
    let system_tokens = estimate_tokens(system);
    if !shared.is_empty() && system_tokens + estimate_tokens(shared) >= min {
        CachePoint::AfterShared
    } else if system_tokens >= min {
        CachePoint::AfterSystem
    } else {
        CachePoint::None
    }
}

fn cache_point_block() -> CachePointBlock {
    CachePointBlock::builder()
        .r#type(CachePointType::Default)
        .build()
        .expect("the cache point type is set")
}

/// How one failed attempt is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Throttled: retry (metric result `throttled`).
    Throttled,
    /// Server error, model not ready, request not delivered: retry; when every attempt fails
    /// the service is down (metric result `retryable`).
    Retryable,
    /// No reply in time: retry; when every attempt times out, the message comes back later
    /// (a long prompt can be slow on its own; metric result `retryable`).
    Slow,
    /// The configured model is refused as a whole — access denied, unknown or disabled model,
    /// bad credentials: no message can succeed until the configuration changes (metric `error`).
    Refused,
    /// This request is refused (validation): retrying will not help (metric result `error`).
    Permanent,
}

/// Error codes that refuse every request to the configured model, whatever the message.
const REFUSED_CODES: &[&str] = &[
    "AccessDeniedException",
    "ResourceNotFoundException",
    "UnrecognizedClientException",
    "ExpiredTokenException",
];

impl BedrockGenerator {
    /// Builds the client from an already loaded AWS configuration (region, credentials, the
    /// `AWS_ENDPOINT_URL_BEDROCK_RUNTIME` override); `generator.endpoint_url` wins when set.
    pub fn new(sdk: &SdkConfig, config: &GeneratorConfig, metrics: Arc<Metrics>) -> Self {
        let mut builder = aws_sdk_bedrockruntime::config::Builder::from(sdk)
            .retry_config(RetryConfig::disabled());
        if !config.endpoint_url.is_empty() {
            builder = builder.endpoint_url(&config.endpoint_url);
        }
        Self {
            client: Client::from_conf(builder.build()),
            temperature: config.temperature,
            call_timeout: Duration::from_secs(config.call_timeout_seconds),
            max_attempts: config.max_attempts.max(1),
            backoff: Backoff::exponential(Duration::from_millis(config.retry_base_ms), MAX_BACKOFF)
                .full_jitter(),
            prices: config.prices.clone(),
            prompt_cache: config.prompt_cache.clone(),
            metrics,
            retry_throttled: true,
        }
    }

    /// A throttled attempt ends the call (`Unavailable`, its usage counting one throttled
    /// attempt) instead of being retried here: the budget decorator sends it again once the
    /// budget admits it, so every attempt is admitted (docs/decisions.md, "Adaptive rate").
    pub fn returning_throttles(mut self) -> Self {
        self.retry_throttled = false;
        self
    }

    /// One logical call with our retry policy; returns the reply text and all usage spent.
    /// Every attempt first takes a request from `allowance`.
    async fn call(
        &self,
        allowance: &Allowance,
        kind: CallKind,
        model: &str,
        user: UserPrompt,
    ) -> Result<(String, Usage), GeneratorError> {
        let call = kind.as_str();
        let mut usage = Usage::default();
        let point = cache_point(
            self.prompt_cache.get(model),
            kind.system_prompt(),
            &user.shared,
        );
        let mut system = vec![SystemContentBlock::Text(kind.system_prompt().to_string())];
        if point == CachePoint::AfterSystem {
            system.push(SystemContentBlock::CachePoint(cache_point_block()));
        }
        let content = if point == CachePoint::AfterShared {
            vec![
                ContentBlock::Text(user.shared),
                ContentBlock::CachePoint(cache_point_block()),
                ContentBlock::Text(user.rest),
            ]
        } else {
            vec![ContentBlock::Text(user.shared + &user.rest)]
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Err(stop) = allowance.take() {
                self.count(call, "stopped");
                return Err(GeneratorError::Stopped { stop, usage });
            }
            let request = self
                .client
                .converse()
                .model_id(model)
                .set_system(Some(system.clone()))
                .messages(
                    Message::builder()
                        .role(ConversationRole::User)
                        .set_content(Some(content.clone()))
                        .build()
                        .map_err(|e| GeneratorError::Permanent {
                            reason: format!("cannot build the {call} request: {e}"),
                            usage,
                        })?,
                )
                .inference_config(
                    InferenceConfiguration::builder()
                        .max_tokens(kind.max_tokens())
                        .set_temperature(self.temperature)
                        .build(),
                );
            let started = Instant::now();
            let outcome = tokio::time::timeout(self.call_timeout, request.send()).await;
            let elapsed = started.elapsed();
            usage.calls += 1;
            usage.latency += elapsed;
            self.metrics
                .generator_request_seconds
                .with_label_values(&[call])
                .observe(elapsed.as_secs_f64());

            let (failure, reason) = match outcome {
                Ok(Ok(output)) => {
                    usage += self.account(model, &output);
                    return match reply_text(&output) {
                        Some(text) => {
                            self.count(call, "ok");
                            Ok((text, usage))
                        }
                        None => {
                            self.count(call, "retryable");
                            Err(GeneratorError::Transient {
                                reason: format!(
                                    "{call} reply from {model} had no text (stop reason {:?})",
                                    output.stop_reason().as_str()
                                ),
                                usage,
                            })
                        }
                    };
                }
                Ok(Err(err)) => classify(&err),
                Err(_) => (
                    Failure::Slow,
                    format!("no reply within {}s", self.call_timeout.as_secs()),
                ),
            };
            if failure == Failure::Throttled {
                usage.throttled += 1;
            }
            self.count(
                call,
                match failure {
                    Failure::Throttled => "throttled",
                    Failure::Retryable | Failure::Slow => "retryable",
                    Failure::Refused | Failure::Permanent => "error",
                },
            );
            let reason = format!("{call} call to {model}, attempt {attempt}: {reason}");
            match failure {
                Failure::Permanent => return Err(GeneratorError::Permanent { reason, usage }),
                Failure::Refused => return Err(GeneratorError::Unavailable { reason, usage }),
                Failure::Throttled if !self.retry_throttled => {
                    return Err(GeneratorError::Unavailable { reason, usage });
                }
                _ => {}
            }
            if attempt >= self.max_attempts {
                let reason = format!("{reason} (gave up after {attempt} attempts)");
                return Err(if failure == Failure::Slow {
                    GeneratorError::Transient { reason, usage }
                } else {
                    GeneratorError::Unavailable { reason, usage }
                });
            }
            let delay = self.backoff.delay(attempt);
            tracing::warn!(call, model, attempt, delay_ms = delay.as_millis() as u64, %reason, "retrying generator call");
            tokio::time::sleep(delay).await;
        }
    }

    /// [`Self::call`], its reply text made safe by `read` (a [`hygiene`] step) into the value.
    async fn ask<T>(
        &self,
        allowance: &Allowance,
        kind: CallKind,
        model: &str,
        user: UserPrompt,
        read: impl FnOnce(&str) -> T,
    ) -> Result<Reply<T>, GeneratorError> {
        let (text, usage) = self.call(allowance, kind, model, user).await?;
        Ok(Reply {
            value: read(&text),
            usage,
            model: model.to_string(),
        })
    }

    fn count(&self, call: &str, result: &str) {
        self.metrics
            .generator_requests
            .with_label_values(&[call, result])
            .inc();
    }

    /// Counts the tokens (and estimated cost) of one reply; returns them (no call counted).
    fn account(&self, model: &str, output: &ConverseOutput) -> Usage {
        let Some(tokens) = output.usage() else {
            return Usage::default();
        };
        let count = |n: Option<i32>| n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
        let usage = Usage {
            input_tokens: count(Some(tokens.input_tokens())),
            output_tokens: count(Some(tokens.output_tokens())),
            cache_read_tokens: count(tokens.cache_read_input_tokens()),
            cache_write_tokens: count(tokens.cache_write_input_tokens()),
            ..Usage::default()
        };
        let m = &self.metrics;
        for (direction, n) in [
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cache_read", usage.cache_read_tokens),
            ("cache_write", usage.cache_write_tokens),
        ] {
            m.generator_tokens
                .with_label_values(&[model, direction])
                .inc_by(n);
        }
        if let Some(cost) = super::estimate_cost_usd(&self.prices, model, &usage) {
            m.generator_cost_usd
                .with_label_values(&[model])
                .inc_by(cost);
        }
        usage
    }
}

/// All text blocks of the reply joined, or `None` when there is no non-blank text (the SDK fills
/// a missing `output` with defaults instead of failing).
fn reply_text(output: &ConverseOutput) -> Option<String> {
    let Some(ReplyContent::Message(message)) = output.output() else {
        return None;
    };
    let text: String = message
        .content()
        .iter()
        .filter_map(|block| match block {
            ContentBlock::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    (!text.trim().is_empty()).then_some(text)
}

/// Sorts an SDK error into retry classes with a one-line reason.
fn classify(err: &SdkError<ConverseError>) -> (Failure, String) {
    match err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = service.err().code().unwrap_or("");
            let message = service.err().message().unwrap_or("");
            let reason = format!("HTTP {status} {code}: {message}");
            let failure = if code == "ThrottlingException"
                || code == "TooManyRequestsException"
                || (code.is_empty() && status == 429)
            {
                Failure::Throttled
            } else if code == "ModelTimeoutException" {
                Failure::Slow
            } else if RETRYABLE_CODES.contains(&code) || status >= 500 {
                Failure::Retryable
            } else if REFUSED_CODES.contains(&code)
                || status == 401
                || status == 403
                || (code == "ValidationException" && message.contains("model identifier"))
            {
                Failure::Refused
            } else {
                Failure::Permanent
            };
            (failure, reason)
        }
        SdkError::TimeoutError(_) => (Failure::Slow, "SDK timeout".to_string()),
        SdkError::DispatchFailure(dispatch) => {
            let failure = if dispatch.is_user() {
                Failure::Permanent
            } else {
                Failure::Retryable
            };
            let detail = dispatch
                .as_connector_error()
                .map(|e| e.to_string())
                .unwrap_or_else(|| "dispatch failure".to_string());
            (failure, format!("request not delivered: {detail}"))
        }
        SdkError::ResponseError(response) => (
            Failure::Retryable,
            format!(
                "unreadable reply (HTTP {})",
                response.raw().status().as_u16()
            ),
        ),
        other => (
            Failure::Permanent,
            format!(
                "{}",
                aws_sdk_bedrockruntime::error::DisplayErrorContext(other)
            ),
        ),
    }
}

#[async_trait]
impl Generator for BedrockGenerator {
    async fn discover_connections(
        &self,
        request: &DiscoveryRequest,
    ) -> Result<Reply<Discovery>, GeneratorError> {
        if request.universe.is_empty() {
            return Ok(Reply::without_call(
                Discovery::default(),
                request.model.clone(),
            ));
        }
        let user = UserPrompt {
            shared: prompts::discovery_shared(request),
            rest: prompts::discovery_entity(request),
        };
        let (allowance, model) = (&request.allowance, &request.model);
        self.ask(allowance, CallKind::Discovery, model, user, |text| {
            hygiene::parse_discovery(text, request.entity.entity, &request.universe)
        })
        .await
    }

    async fn biography(
        &self,
        request: &BiographyRequest,
    ) -> Result<Reply<super::Biography>, GeneratorError> {
        let user = UserPrompt::unshared(prompts::biography_user(request));
        let valid = hygiene::valid_marker_ids(&request.connections);
        let (allowance, model) = (&request.allowance, &request.model);
        self.ask(allowance, CallKind::Biography, model, user, |text| {
            hygiene::parse_biography(text, &valid)
        })
        .await
    }

    async fn connection_narrative(
        &self,
        request: &PairRequest,
    ) -> Result<Reply<String>, GeneratorError> {
        let user = UserPrompt::unshared(prompts::narrative_user(request));
        let valid = hygiene::valid_marker_ids(&request.connections);
        let (allowance, model) = (&request.allowance, &request.model);
        self.ask(allowance, CallKind::Narrative, model, user, |text| {
            hygiene::clean_narrative(text, &valid)
        })
        .await
    }

    async fn relationship_story(
        &self,
        request: &RelationshipStoryRequest,
    ) -> Result<Reply<Option<RelationshipStory>>, GeneratorError> {
        let user = UserPrompt::unshared(prompts::relationship_user(request));
        let valid = hygiene::valid_marker_ids(&request.pair.connections);
        let (allowance, model) = (&request.pair.allowance, &request.pair.model);
        self.ask(
            allowance,
            CallKind::RelationshipStory,
            model,
            user,
            |text| hygiene::parse_relationship_story(text, &valid),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_point_goes_after_the_longest_prefix_that_reaches_the_minimum() {
        let cache = PromptCache { min_tokens: 10 };
        let short = "x".repeat(12);
        let long = "x".repeat(40);
        assert_eq!(cache_point(None, &long, &long), CachePoint::None);
        assert_eq!(cache_point(Some(&cache), &short, ""), CachePoint::None);
        assert_eq!(
            cache_point(Some(&cache), &long, ""),
            CachePoint::AfterSystem
        );
        assert_eq!(cache_point(Some(&cache), &short, &short), CachePoint::None);
        assert_eq!(
            cache_point(Some(&cache), &short, &long),
            CachePoint::AfterShared
        );
        assert_eq!(estimate_tokens("abcde"), 2);
    }
}
