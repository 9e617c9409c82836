//! The operator console on the side server: a page (`/`), a JSON API (`/api/…`) and token-guarded
//! actions, showing the whole cluster from PostgreSQL, SQS and Redis (README, "Operator console").
//!
//! [`api`] gathers the [`Overview`](api::Overview); [`page`] renders it; [`actions`] guards and
//! runs the actions; [`queries`] holds the read queries, [`dlq`] the queue panel and the
//! dead-letter tools, [`inflight`] what each replica is working on, [`history`] the chart's data;
//! [`cli`] is the `dlq` subcommand. The side server owns the socket and hands requests here.

pub mod actions;
pub mod api;
pub mod cli;
pub mod dlq;
pub mod history;
pub mod inflight;
pub mod page;
pub mod queries;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use chrono::Utc;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::actions::{Action, Token};
use self::api::{DEAD_LETTERS_SHOWN, DEFAULT_JOBS, MAX_JOBS, Overview};
use self::dlq::DeadLetters;
use self::history::{History, Sample};
use self::inflight::{Board, InFlight};
use crate::config::{BudgetConfig, Config};
use crate::jobs::JobReport;
use crate::metrics::Metrics;
use crate::outcome::Dependency;
use crate::queue::SqsQueue;
use crate::store::PgStore;

/// Why the console could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("console.token_file: {0}")]
    Token(String),
    #[error("cannot set up the console's Redis connection: {0}")]
    Redis(String),
}

/// Where the console is installed once the database and queue are open; until then its paths
/// answer 503 (the side server starts first, so probes answer during start-up).
#[derive(Clone, Default)]
pub struct Slot {
    console: Arc<OnceLock<Arc<Console>>>,
    prefix: Arc<str>,
}

impl Slot {
    /// An empty slot for a console served under `path_prefix` (`console.path_prefix`).
    pub fn new(path_prefix: &str) -> Self {
        Self {
            console: Arc::default(),
            prefix: path_prefix.into(),
        }
    }

    pub fn install(&self, console: Console) {
        let _ = self.console.set(Arc::new(console));
    }

    pub fn get(&self) -> Option<&Arc<Console>> {
        self.console.get()
    }

    /// True for the paths the console answers: `/` and `/api/…`, under the prefix if any.
    pub fn owns(&self, path: &str) -> bool {
        let path = path.strip_prefix(&*self.prefix).unwrap_or(path);
        path.is_empty() || path == "/" || path == "/api" || path.starts_with("/api/")
    }
}

/// The console's sources and settings.
pub struct Console {
    store: PgStore,
    queue: Arc<SqsQueue>,
    dead_letters: DeadLetters,
    inflight: InFlight,
    board: Option<Board>,
    history: History,
    metrics: Arc<Metrics>,
    token: Option<Token>,
    path_prefix: String,
    budget: BudgetConfig,
}

impl Console {
    pub fn new(
        config: &Config,
        store: PgStore,
        queue: Arc<SqsQueue>,
        metrics: Arc<Metrics>,
        inflight: InFlight,
    ) -> Result<Self, ConsoleError> {
        let token = config
            .console
            .resolve_token()
            .map_err(ConsoleError::Token)?
            .map(|t| Token::new(&t));
        let board = if config.cache.redis_url.is_empty() {
            None
        } else {
            Some(Board::connect(config.cache.redis_url.expose()).map_err(ConsoleError::Redis)?)
        };
        Ok(Self {
            store,
            dead_letters: DeadLetters::new(queue.clone()),
            queue,
            inflight,
            board,
            history: History::default(),
            metrics,
            token,
            path_prefix: config.console.path_prefix.clone(),
            budget: config.budget.clone(),
        })
    }

    /// Starts sampling the chart's counters and publishing this replica's in-flight set.
    pub fn spawn_background(&self, tracker: &TaskTracker, stop: &CancellationToken) {
        tracker.spawn(history::sample_loop(
            self.history.clone(),
            self.metrics.clone(),
            stop.clone(),
        ));
        if let Some(board) = &self.board {
            tracker.spawn(inflight::publish_loop(
                self.inflight.clone(),
                board.clone(),
                stop.clone(),
            ));
        }
    }

    /// Gathers the overview: every source is read concurrently, and one that fails leaves its
    /// part empty with a line in `problems`.
    pub async fn overview(&self, job_limit: i64) -> Overview {
        let mut problems = Vec::new();
        let (jobs, spend, cap, queue, dead_letter, letters, redrive, boards) = tokio::join!(
            queries::jobs(&self.store, job_limit),
            crate::store::JobStore::spend_today(&self.store),
            crate::store::ProfileStore::daily_cap_setting(&self.store),
            self.dead_letters.queue_depth(),
            self.dead_letters.dead_letter_depth(),
            self.dead_letters.peek(DEAD_LETTERS_SHOWN),
            self.dead_letters.status(),
            async {
                match &self.board {
                    Some(board) => board.read_all().await.map(Some),
                    None => Ok(None),
                }
            },
        );
        let now = Utc::now();
        let mut note = |what: &str, err: &dyn std::fmt::Display| {
            problems.push(format!("{what}: {err}"));
        };
        let jobs = jobs.unwrap_or_else(|e| {
            note("jobs", &e);
            Vec::new()
        });
        let spend_today = spend.map_err(|e| note("spend", &e)).ok();
        let daily_cap_usd = cap
            .map(|setting| self.budget.daily_cap(setting.as_deref()))
            .map_err(|e| note("daily cost cap", &e))
            .ok();
        let paused = Dependency::ALL
            .into_iter()
            .filter(|d| self.metrics.paused.with_label_values(&[d.as_str()]).get() > 0)
            .map(Dependency::as_str)
            .collect();
        let queue = queue.map_err(|e| note("queue", &e)).ok();
        let dead_letter = dead_letter
            .map_err(|e| note("dead-letter queue", &e))
            .ok()
            .flatten();
        let dead_letters = match letters {
            Ok(l) => l,
            Err(dlq::DlqError::NoDeadLetterQueue) => Vec::new(),
            Err(e) => {
                note("dead letters", &e);
                Vec::new()
            }
        };
        let redrive = match redrive {
            Ok(r) => r,
            Err(dlq::DlqError::NoDeadLetterQueue) => None,
            Err(e) => {
                note("redrive status", &e);
                None
            }
        };
        // This replica's set is read live; Redis has the others' (and a copy of ours, up to one
        // publication old).
        let own = self.inflight.snapshot();
        let mut in_flight = match boards {
            Ok(Some(sets)) => sets
                .into_iter()
                .filter(|s| s.replica != own.replica)
                .collect(),
            Ok(None) => Vec::new(),
            Err(e) => {
                note("in-flight sets (Redis)", &e);
                Vec::new()
            }
        };
        in_flight.push(own);
        in_flight.sort_by(|a, b| a.replica.cmp(&b.replica));
        Overview {
            generated_at: now,
            replica: self.inflight.replica().to_string(),
            actions_enabled: self.token.is_some(),
            jobs: jobs
                .into_iter()
                .map(|(job, usage)| JobReport::new(job, usage, now))
                .collect(),
            in_flight,
            queue,
            dead_letter,
            dead_letters,
            redrive,
            spend_today,
            daily_cap_usd,
            paused,
            chart: self.history.points(Sample::read(&self.metrics, now)),
            problems,
        }
    }

    /// The path the page is served under, ending in `/`: `X-Forwarded-Prefix` when an ingress
    /// sends one, else `console.path_prefix`.
    fn base(&self, headers: &HeaderMap) -> String {
        let forwarded = headers
            .get("x-forwarded-prefix")
            .and_then(|v| v.to_str().ok())
            .map(|p| p.trim_end_matches('/'))
            .filter(|p| {
                p.starts_with('/')
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "/-_.~".contains(c))
            });
        format!("{}/", forwarded.unwrap_or(&self.path_prefix))
    }

    /// `path` with `console.path_prefix` removed (for an ingress that does not strip it).
    fn local_path<'a>(&self, path: &'a str) -> &'a str {
        if self.path_prefix.is_empty() {
            return path;
        }
        match path.strip_prefix(self.path_prefix.as_str()) {
            Some("") => "/",
            Some(rest) if rest.starts_with('/') => rest,
            _ => path,
        }
    }
}

/// A request the console may answer, stripped to what it reads.
pub struct Request<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub peer: SocketAddr,
}

/// Answers a request for one of the paths the console owns ([`Slot::owns`]).
pub async fn handle(slot: &Slot, req: Request<'_>) -> Response<Full<Bytes>> {
    let Some(console) = slot.get() else {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"message": "the console starts once the database and queue are open"}),
        );
    };
    let path = console.local_path(req.path);
    let is_get = req.method == Method::GET || req.method == Method::HEAD;
    if let Some(action) = Action::parse(path) {
        if req.method != Method::POST {
            return not_allowed("POST");
        }
        let auth = req
            .headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let (status, body) = actions::run(console, action, auth, req.peer).await;
        let mut resp = json(status, &body);
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("Bearer"));
        }
        return resp;
    }
    match path {
        "/" | "" => {
            if !is_get {
                return not_allowed("GET, HEAD");
            }
            let overview = console.overview(DEFAULT_JOBS).await;
            html(page::render(&overview, &console.base(req.headers)))
        }
        "/api/overview" => {
            if !is_get {
                return not_allowed("GET, HEAD");
            }
            let limit = query_number(req.query, "jobs")
                .unwrap_or(DEFAULT_JOBS)
                .clamp(1, MAX_JOBS);
            json(StatusCode::OK, &console.overview(limit).await.to_json())
        }
        "/api/dlq" => {
            if !is_get {
                return not_allowed("GET, HEAD");
            }
            let limit = query_number(req.query, "limit").unwrap_or(10).clamp(1, 100) as usize;
            match console.dead_letters.peek(limit).await {
                Ok(letters) => json(StatusCode::OK, &serde_json::json!({"recent": letters})),
                Err(e) => json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({"message": e.to_string()}),
                ),
            }
        }
        "/api/dlq/redrive" => not_allowed("POST"),
        _ => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"message": "not found"}),
        ),
    }
}

fn query_number(query: Option<&str>, key: &str) -> Option<i64> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.parse().ok())
}

fn html(body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    // The page loads nothing from elsewhere and may not be framed (clickjacking the actions).
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'self'",
        ),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    resp
}

fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut resp = json(
        StatusCode::METHOD_NOT_ALLOWED,
        &serde_json::json!({"message": format!("method not allowed; use {allow}")}),
    );
    resp.headers_mut()
        .insert("allow", HeaderValue::from_static(allow));
    resp
}
