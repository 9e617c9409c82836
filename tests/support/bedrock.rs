//! A fake Amazon Bedrock Runtime speaking the Converse wire format, scriptable per test.
//!
//! `POST /model/{percent-encoded model id}/converse` answers with the next scripted reply for the
//! call kind (told apart by the system prompt, else by `maxTokens`), or the kind's default: valid
//! JSON the daemon accepts, so end-to-end tests need no script. Errors are signalled as Bedrock
//! does (status + `x-amzn-ErrorType`). Every request is recorded for assertions.
//!
//! From another process (the real binary) point the SDK at it with
//! `AWS_ENDPOINT_URL_BEDROCK_RUNTIME=<FakeBedrock::url()>` plus any dummy credentials.
//!
//! An optional account quota ([`FakeBedrock::set_quota`]) answers 429 `ThrottlingException`, as
//! Bedrock does, to a call that would exceed the requests or tokens accepted in a sliding window.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_bedrockruntime::config::{Credentials, SharedCredentialsProvider};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use profile_worker::config::GeneratorConfig;
use profile_worker::generate::CallKind;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the fake answers to one request.
#[derive(Debug, Clone, PartialEq)]
pub enum FakeReply {
    /// A normal reply with this text and token usage.
    Text {
        text: String,
        input_tokens: i64,
        output_tokens: i64,
    },
    /// An error the way Bedrock signals it.
    Error {
        status: u16,
        error_type: String,
        message: String,
    },
    /// Never answers (until the fake is dropped).
    Hang,
    /// A 200 reply whose message has no content blocks (usage still reported).
    NoText,
}

impl FakeReply {
    /// A text reply with 100 input and 20 output tokens.
    pub fn text(text: impl Into<String>) -> Self {
        FakeReply::Text {
            text: text.into(),
            input_tokens: 100,
            output_tokens: 20,
        }
    }

    /// A text reply with the given usage.
    pub fn text_with_usage(text: impl Into<String>, input_tokens: i64, output_tokens: i64) -> Self {
        FakeReply::Text {
            text: text.into(),
            input_tokens,
            output_tokens,
        }
    }

    pub fn error(status: u16, error_type: &str) -> Self {
        FakeReply::Error {
            status,
            error_type: error_type.to_string(),
            message: format!("fake {error_type}"),
        }
    }

    pub fn throttling() -> Self {
        Self::error(429, "ThrottlingException")
    }

    pub fn validation() -> Self {
        Self::error(400, "ValidationException")
    }

    pub fn internal() -> Self {
        Self::error(500, "InternalServerException")
    }

    pub fn unavailable() -> Self {
        Self::error(503, "ServiceUnavailableException")
    }

    pub fn model_not_ready() -> Self {
        Self::error(429, "ModelNotReadyException")
    }

    pub fn access_denied() -> Self {
        Self::error(403, "AccessDeniedException")
    }

    /// Input plus output tokens the reply reports (what a quota counts).
    fn tokens(&self) -> u64 {
        match self {
            FakeReply::Text {
                input_tokens,
                output_tokens,
                ..
            } => (input_tokens + output_tokens).max(0) as u64,
            FakeReply::NoText => NO_TEXT_INPUT_TOKENS as u64,
            _ => 0,
        }
    }
}

/// Input tokens a [`FakeReply::NoText`] reports.
const NO_TEXT_INPUT_TOKENS: i64 = 50;

/// The default reply of each call kind: valid, parseable output.
pub fn default_reply(kind: Option<CallKind>) -> FakeReply {
    let body = match kind {
        Some(CallKind::Discovery) => json!({"connections": []}).to_string(),
        Some(CallKind::Biography) => json!({
            "biography": "A figure of Victorian literature and publishing.",
            "personal_stories": [{"text": "Worked through the night before a deadline.",
                "year": 1850, "significance": "notable", "tone": "dramatic"}]
        })
        .to_string(),
        Some(CallKind::Narrative) | None => "Linked through the collection's books.".to_string(),
        Some(CallKind::RelationshipStory) => json!({
            "summary": "A long working relationship.",
            "details": [{"text": "They met in London.", "year": null,
                "significance": "context", "tone": "intellectual"}],
            "narrative_style": "prose-paragraph"
        })
        .to_string(),
    };
    FakeReply::text(body)
}

/// One request as the fake received it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// Decoded from the path.
    pub model_id: String,
    pub kind: Option<CallKind>,
    pub max_tokens: Option<i64>,
    pub temperature: Option<f64>,
    /// Text of the first system block.
    pub system: String,
    /// Number of entries in `messages`.
    pub message_count: usize,
    /// Role of the first message.
    pub role: String,
    /// Text of the first content block of the first message.
    pub user: String,
}

#[derive(Default)]
struct State {
    queued: HashMap<Option<CallKind>, VecDeque<FakeReply>>,
    defaults: HashMap<Option<CallKind>, FakeReply>,
    latency: Duration,
    requests: Vec<RecordedRequest>,
    /// Every call gets this reply while set, whatever its kind (an outage).
    outage: Option<FakeReply>,
    /// Models answered with AccessDeniedException (not enabled for the account).
    denied: Vec<String>,
    /// Replies for calls of a kind whose user prompt contains a text, before any queue.
    by_prompt: Vec<(CallKind, String, FakeReply)>,
    /// Input tokens counted from the prompt, with Bedrock's prompt caching, when set.
    billing: Option<Billing>,
    quota: Option<QuotaState>,
}

/// An account quota: requests and tokens (input + output) accepted in any sliding `window`;
/// 0 leaves that dimension unlimited. Throttled calls do not count against it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    pub requests: u64,
    pub tokens: u64,
    /// Bedrock's quotas are per minute; tests shorten the window.
    pub window: Duration,
}

impl Quota {
    /// `requests` per minute, tokens unlimited.
    pub fn requests_per_minute(requests: u64) -> Self {
        Self {
            requests,
            tokens: 0,
            window: Duration::from_secs(60),
        }
    }
}

/// What the quota did with each call, for assertions and benchmarks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuotaLog {
    pub accepted: u64,
    pub throttled: u64,
    /// Arrival of every call since the quota was set, and whether it was accepted.
    pub calls: Vec<(Duration, bool)>,
}

#[derive(Debug)]
struct QuotaState {
    quota: Quota,
    since: Instant,
    /// Accepted calls in the window: arrival and tokens.
    window: VecDeque<(Instant, u64)>,
    log: QuotaLog,
}

impl QuotaState {
    /// Admits a call costing `tokens` arriving `now`, or refuses it.
    fn admit(&mut self, now: Instant, tokens: u64) -> bool {
        let horizon = now.checked_sub(self.quota.window);
        while let Some(&(at, _)) = self.window.front() {
            if horizon.is_some_and(|h| at <= h) {
                self.window.pop_front();
            } else {
                break;
            }
        }
        let requests = self.window.len() as u64;
        let used: u64 = self.window.iter().map(|&(_, t)| t).sum();
        let ok = (self.quota.requests == 0 || requests < self.quota.requests)
            && (self.quota.tokens == 0 || used + tokens <= self.quota.tokens);
        if ok {
            self.window.push_back((now, tokens));
            self.log.accepted += 1;
        } else {
            self.log.throttled += 1;
        }
        self.log.calls.push((now - self.since, ok));
        ok
    }
}

/// Tokens counted from the prompt (4 bytes a token, rounded up) and prompt caching by Bedrock's
/// rules: the prefix up to the last cache point, byte for byte, at least the model's minimum
/// tokens, seen within the last five minutes is read from the cache, else written to it; the
/// fake's own bill at the given prices.
#[derive(Debug, Default)]
struct Billing {
    /// Smallest cacheable prefix by model id; models not listed cache nothing.
    min_tokens: HashMap<String, u64>,
    /// USD per million tokens by model id: input, output, cache read, cache write.
    prices: HashMap<String, [f64; 4]>,
    /// When each (model, prefix) was last written or read.
    cached: HashMap<(String, String), std::time::Instant>,
    billed: Billed,
}

/// What the fake billed since billing was turned on.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Billed {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub cost_usd: f64,
}

/// How long Bedrock keeps a cached prefix after its last use.
const CACHE_TTL: Duration = Duration::from_secs(300);

fn tokens_of(text: &str) -> u64 {
    text.len().div_ceil(4) as u64
}

/// The running fake; stops (and releases hanging requests) when dropped.
pub struct FakeBedrock {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
}

impl FakeBedrock {
    /// Binds 127.0.0.1 on a free port and serves until dropped.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake Bedrock");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, state.clone(), stop.clone()));
        Self { addr, state, stop }
    }

    /// Base URL, e.g. for `AWS_ENDPOINT_URL_BEDROCK_RUNTIME` or `generator.endpoint_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues one-shot replies for a call kind, answered in order before the default.
    pub fn push(&self, kind: CallKind, replies: impl IntoIterator<Item = FakeReply>) {
        self.state
            .lock()
            .unwrap()
            .queued
            .entry(Some(kind))
            .or_default()
            .extend(replies);
    }

    /// Replaces the reply a call kind gets once its queue is empty.
    pub fn set_default(&self, kind: CallKind, reply: FakeReply) {
        self.state
            .lock()
            .unwrap()
            .defaults
            .insert(Some(kind), reply);
    }

    /// Answers every call of `kind` whose user prompt contains `needle` with `reply`, ahead of
    /// queued and default replies (to script one connection among calls running at once).
    pub fn reply_when_prompt_contains(&self, kind: CallKind, needle: &str, reply: FakeReply) {
        self.state
            .lock()
            .unwrap()
            .by_prompt
            .push((kind, needle.to_string(), reply));
    }

    /// Counts input tokens from each prompt with Bedrock's prompt caching (instead of the
    /// replies' fixed usage) and keeps the fake's own bill: `min_tokens` by model id (models not
    /// listed cache nothing) and prices by model id (input, output, cache read, cache write; USD
    /// per million tokens).
    pub fn bill_by_prompt(&self, min_tokens: &[(&str, u64)], prices: &[(&str, [f64; 4])]) {
        self.state.lock().unwrap().billing = Some(Billing {
            min_tokens: min_tokens
                .iter()
                .map(|(m, n)| (m.to_string(), *n))
                .collect(),
            prices: prices.iter().map(|(m, p)| (m.to_string(), *p)).collect(),
            ..Billing::default()
        });
    }

    /// What the fake billed since [`FakeBedrock::bill_by_prompt`].
    pub fn billed(&self) -> Billed {
        self.state
            .lock()
            .unwrap()
            .billing
            .as_ref()
            .map(|b| b.billed)
            .unwrap_or_default()
    }

    /// Delay before every reply.
    pub fn set_latency(&self, latency: Duration) {
        self.state.lock().unwrap().latency = latency;
    }

    /// Answers every call with `reply` until [`FakeBedrock::end_outage`].
    pub fn start_outage(&self, reply: FakeReply) {
        self.state.lock().unwrap().outage = Some(reply);
    }

    pub fn end_outage(&self) {
        self.state.lock().unwrap().outage = None;
    }

    /// Answers every call to `model_id` with AccessDeniedException.
    pub fn deny_model(&self, model_id: &str) {
        self.state.lock().unwrap().denied.push(model_id.to_string());
    }

    /// Enforces `quota` from now on (a fresh window and log); `None` lifts it.
    pub fn set_quota(&self, quota: Option<Quota>) {
        self.state.lock().unwrap().quota = quota.map(|quota| QuotaState {
            quota,
            since: Instant::now(),
            window: VecDeque::new(),
            log: QuotaLog::default(),
        });
    }

    /// Calls the quota accepted and throttled since it was set.
    pub fn quota_log(&self) -> QuotaLog {
        self.state
            .lock()
            .unwrap()
            .quota
            .as_ref()
            .map(|q| q.log.clone())
            .unwrap_or_default()
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Requests of one call kind.
    pub fn requests_of(&self, kind: CallKind) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.kind == Some(kind))
            .collect()
    }

    /// A generator configuration pointed at this fake, with fast retries for tests.
    pub fn generator_config(&self) -> GeneratorConfig {
        let mut config = profile_worker::config::defaults().generator;
        config.endpoint_url = self.url();
        config.retry_base_ms = 1;
        config.call_timeout_seconds = 5;
        config
    }
}

impl Drop for FakeBedrock {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// An AWS configuration with dummy static credentials and a region, no ambient lookups needed.
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "AKIDTEST",
            "secret",
            None,
            None,
            "fake-bedrock",
        )))
        .load()
        .await
}

async fn accept_loop(listener: TcpListener, state: Arc<Mutex<State>>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((socket, _)) = accepted else { continue };
        // Without it each keep-alive call waits ~40 ms for a delayed ACK.
        let _ = socket.set_nodelay(true);
        let state = state.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let handler_stop = stop.clone();
            let service = service_fn(move |req| handle(req, state.clone(), handler_stop.clone()));
            let conn = http1::Builder::new().serve_connection(TokioIo::new(socket), service);
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = conn => {}
            }
        });
    }
}

fn text_of(value: &Value) -> String {
    value
        .get(0)
        .and_then(|b| b.get("text"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// Every text block joined.
fn all_text(blocks: &Value) -> String {
    blocks
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect()
}

/// The request's text as (prefix up to the last cache point, the rest); the prefix is empty
/// without a cache point. System blocks come first, then the messages' content blocks.
fn split_at_cache_point(request: &Value) -> (String, String) {
    let blocks = request["system"].as_array().into_iter().flatten().chain(
        request["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|m| m["content"].as_array().into_iter().flatten()),
    );
    let (mut prefix, mut rest) = (String::new(), String::new());
    for block in blocks {
        if block.get("cachePoint").is_some() {
            prefix.push_str(&rest);
            rest.clear();
        } else if let Some(text) = block.get("text").and_then(Value::as_str) {
            rest.push_str(text);
        }
    }
    (prefix, rest)
}

fn kind_of(system: &str, max_tokens: Option<i64>) -> Option<CallKind> {
    CallKind::from_system_prompt(system).or(match max_tokens {
        Some(2048) => Some(CallKind::Discovery),
        Some(200) => Some(CallKind::Narrative),
        _ => None,
    })
}

/// Token usage of one billed reply.
struct Counted {
    input: u64,
    output: u64,
    cache_read: u64,
    cache_write: u64,
}

impl Billing {
    /// Applies the caching rules to one request and adds it to the bill.
    fn bill(&mut self, model: &str, (prefix, rest): &(String, String), output: u64) -> Counted {
        let now = std::time::Instant::now();
        let prefix_tokens = tokens_of(prefix);
        let cacheable = !prefix.is_empty()
            && self
                .min_tokens
                .get(model)
                .is_some_and(|min| prefix_tokens >= *min);
        let mut counted = Counted {
            input: tokens_of(rest),
            output,
            cache_read: 0,
            cache_write: 0,
        };
        if cacheable {
            let key = (model.to_string(), prefix.clone());
            match self.cached.get(&key) {
                Some(at) if now.duration_since(*at) <= CACHE_TTL => {
                    counted.cache_read = prefix_tokens
                }
                _ => counted.cache_write = prefix_tokens,
            }
            self.cached.insert(key, now);
        } else {
            counted.input += prefix_tokens;
        }
        let [p_in, p_out, p_read, p_write] = self.prices.get(model).copied().unwrap_or_default();
        let b = &mut self.billed;
        b.input_tokens += counted.input;
        b.output_tokens += counted.output;
        b.cache_read_tokens += counted.cache_read;
        b.cache_write_tokens += counted.cache_write;
        b.cost_usd += (counted.input as f64 * p_in
            + counted.output as f64 * p_out
            + counted.cache_read as f64 * p_read
            + counted.cache_write as f64 * p_write)
            / 1_000_000.0;
        counted
    }
}

fn json_response(status: u16, headers: &[(&str, &str)], body: Value) -> Response<Full<Bytes>> {
    let mut builder = Response::builder()
        .status(StatusCode::from_u16(status).expect("valid status"))
        .header("content-type", "application/json");
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("valid response")
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = req.uri().path().to_string();
    let body = req.into_body().collect().await?.to_bytes();
    let Some(encoded) = path
        .strip_prefix("/model/")
        .and_then(|p| p.strip_suffix("/converse"))
    else {
        return Ok(json_response(
            404,
            &[("x-amzn-ErrorType", "UnknownOperationException")],
            json!({"message": format!("no route {path}")}),
        ));
    };
    let model_id = percent_encoding::percent_decode_str(encoded)
        .decode_utf8_lossy()
        .into_owned();
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let max_tokens = parsed["inferenceConfig"]["maxTokens"].as_i64();
    let system = text_of(&parsed["system"]);
    let kind = kind_of(&system, max_tokens);
    let messages = parsed["messages"].as_array().cloned().unwrap_or_default();
    let recorded = RecordedRequest {
        model_id,
        kind,
        max_tokens,
        temperature: parsed["inferenceConfig"]["temperature"].as_f64(),
        system,
        message_count: messages.len(),
        role: messages
            .first()
            .and_then(|m| m["role"].as_str())
            .unwrap_or("")
            .to_string(),
        user: messages
            .first()
            .map(|m| all_text(&m["content"]))
            .unwrap_or_default(),
    };
    let prompt = split_at_cache_point(&parsed);

    let (reply, latency, counted) = {
        let mut s = state.lock().unwrap();
        let denied = s.denied.contains(&recorded.model_id);
        let model_id = recorded.model_id.clone();
        let scripted = s
            .by_prompt
            .iter()
            .find(|(k, needle, _)| Some(*k) == kind && recorded.user.contains(needle.as_str()))
            .map(|(_, _, reply)| reply.clone());
        s.requests.push(recorded);
        let reply = if denied {
            Some(FakeReply::access_denied())
        } else {
            s.outage.clone()
        };
        let reply = reply
            .or(scripted)
            .or_else(|| s.queued.get_mut(&kind).and_then(VecDeque::pop_front))
            .or_else(|| s.defaults.get(&kind).cloned())
            .unwrap_or_else(|| default_reply(kind));
        let quota_counted = matches!(reply, FakeReply::Text { .. } | FakeReply::NoText);
        let admitted = match s.quota.as_mut() {
            Some(quota) if quota_counted => quota.admit(Instant::now(), reply.tokens()),
            _ => true,
        };
        let reply = if admitted {
            reply
        } else {
            FakeReply::Error {
                status: 429,
                error_type: "ThrottlingException".into(),
                message: "Too many requests, please wait before trying again.".into(),
            }
        };
        let counted = match (&reply, s.billing.as_mut()) {
            (FakeReply::Text { output_tokens, .. }, Some(billing)) => {
                Some(billing.bill(&model_id, &prompt, *output_tokens as u64))
            }
            _ => None,
        };
        (reply, s.latency, counted)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let latency_ms = latency.as_millis() as u64;
    Ok(match reply {
        FakeReply::Text { text, .. } if counted.is_some() => {
            let usage = counted.expect("checked");
            json_response(
                200,
                &[],
                json!({
                    "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
                    "stopReason": "end_turn",
                    "usage": {"inputTokens": usage.input, "outputTokens": usage.output,
                              "cacheReadInputTokens": usage.cache_read,
                              "cacheWriteInputTokens": usage.cache_write,
                              "totalTokens": usage.input + usage.output + usage.cache_read
                                  + usage.cache_write},
                    "metrics": {"latencyMs": latency_ms}
                }),
            )
        }
        FakeReply::Text {
            text,
            input_tokens,
            output_tokens,
        } => json_response(
            200,
            &[],
            json!({
                "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
                "stopReason": "end_turn",
                "usage": {"inputTokens": input_tokens, "outputTokens": output_tokens,
                          "totalTokens": input_tokens + output_tokens},
                "metrics": {"latencyMs": latency_ms}
            }),
        ),
        FakeReply::NoText => json_response(
            200,
            &[],
            json!({
                "output": {"message": {"role": "assistant", "content": []}},
                "stopReason": "end_turn",
                "usage": {"inputTokens": NO_TEXT_INPUT_TOKENS, "outputTokens": 0,
                          "totalTokens": NO_TEXT_INPUT_TOKENS},
                "metrics": {"latencyMs": latency_ms}
            }),
        ),
        FakeReply::Error {
            status,
            error_type,
            message,
        } => json_response(
            status,
            &[("x-amzn-ErrorType", error_type.as_str())],
            json!({ "message": message }),
        ),
        FakeReply::Hang => {
            stop.cancelled().await;
            json_response(503, &[], json!({"message": "fake stopped"}))
        }
    })
}
