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
    ContentBlock, ConversationRole, ConverseOutput as ReplyContent, InferenceConfiguration,
    Message, SystemContentBlock,
};

use crate::config::{GeneratorConfig, Price};
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
    metrics: Arc<Metrics>,
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
            metrics,
        }
    }

    /// One logical call with our retry policy; returns the reply text and all usage spent.
    /// Every attempt first takes a request from `allowance`.
    async fn call(
        &self,
        allowance: &Allowance,
        kind: CallKind,
        model: &str,
        user: String,
    ) -> Result<(String, Usage), GeneratorError> {
        let call = kind.as_str();
        let mut usage = Usage::default();
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
                .system(SystemContentBlock::Text(kind.system_prompt().to_string()))
                .messages(
                    Message::builder()
                        .role(ConversationRole::User)
                        .content(ContentBlock::Text(user.clone()))
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
                    let spent = self.account(model, &output);
                    usage.input_tokens += spent.0;
                    usage.output_tokens += spent.1;
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

    fn count(&self, call: &str, result: &str) {
        self.metrics
            .generator_requests
            .with_label_values(&[call, result])
            .inc();
    }

    /// Counts the tokens (and estimated cost) of one reply; returns (input, output).
    fn account(&self, model: &str, output: &ConverseOutput) -> (u64, u64) {
        let Some(tokens) = output.usage() else {
            return (0, 0);
        };
        let input = u64::try_from(tokens.input_tokens()).unwrap_or(0);
        let out = u64::try_from(tokens.output_tokens()).unwrap_or(0);
        let m = &self.metrics;
        m.generator_tokens
            .with_label_values(&[model, "input"])
            .inc_by(input);
        m.generator_tokens
            .with_label_values(&[model, "output"])
            .inc_by(out);
        let usage = Usage {
            input_tokens: input,
            output_tokens: out,
            ..Usage::default()
        };
        if let Some(cost) = super::estimate_cost_usd(&self.prices, model, &usage) {
            m.generator_cost_usd
                .with_label_values(&[model])
                .inc_by(cost);
        }
        (input, out)
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
            return Ok(Reply {
                value: Discovery::default(),
                usage: Usage::default(),
                model: request.model.clone(),
            });
        }
        let (text, usage) = self
            .call(
                &request.allowance,
                CallKind::Discovery,
                &request.model,
                prompts::discovery_user(request),
            )
            .await?;
        Ok(Reply {
            value: hygiene::parse_discovery(&text, request.entity.entity, &request.universe),
            usage,
            model: request.model.clone(),
        })
    }

    async fn biography(
        &self,
        request: &BiographyRequest,
    ) -> Result<Reply<super::Biography>, GeneratorError> {
        let (text, usage) = self
            .call(
                &request.allowance,
                CallKind::Biography,
                &request.model,
                prompts::biography_user(request),
            )
            .await?;
        let valid = hygiene::valid_marker_ids(&request.connections);
        Ok(Reply {
            value: hygiene::parse_biography(&text, &valid),
            usage,
            model: request.model.clone(),
        })
    }

    async fn connection_narrative(
        &self,
        request: &PairRequest,
    ) -> Result<Reply<String>, GeneratorError> {
        let (text, usage) = self
            .call(
                &request.allowance,
                CallKind::Narrative,
                &request.model,
                prompts::narrative_user(request),
            )
            .await?;
        let valid = hygiene::valid_marker_ids(&request.connections);
        Ok(Reply {
            value: hygiene::clean_narrative(&text, &valid),
            usage,
            model: request.model.clone(),
        })
    }

    async fn relationship_story(
        &self,
        request: &RelationshipStoryRequest,
    ) -> Result<Reply<Option<RelationshipStory>>, GeneratorError> {
        let (text, usage) = self
            .call(
                &request.pair.allowance,
                CallKind::RelationshipStory,
                &request.pair.model,
                prompts::relationship_user(request),
            )
            .await?;
        let valid = hygiene::valid_marker_ids(&request.pair.connections);
        Ok(Reply {
            value: hygiene::parse_relationship_story(&text, &valid),
            usage,
            model: request.pair.model.clone(),
        })
    }
}
