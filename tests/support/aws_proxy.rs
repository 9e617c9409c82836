//! A recording HTTP proxy in front of a local AWS endpoint (moto, the fake Bedrock). Every request
//! is forwarded unchanged and recorded as the API operation and resource it names, so a test can
//! check what the real binary calls against the shipped IAM policies (see [`super::iam`]).
//!
//! It understands SQS's JSON protocol (`X-Amz-Target: AmazonSQS.<Op>`, `QueueUrl`/`QueueName` in the
//! body), SQS's Query protocol (`Action=<Op>` form body) and Bedrock Runtime's REST paths
//! (`/model/{id}/converse`…). Anything else is recorded as [`Target::Unrecognised`], which the policy
//! check reports, so a new kind of call cannot slip through unchecked.
//!
//! The proxy runs on its own thread and runtime: tests block their own thread on CLI processes
//! (`Command::output`) whose AWS calls go through it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::oneshot;

/// What a call acts on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// An SQS queue by name, with the owning account when the request names one.
    Queue { name: String, owner: Option<String> },
    /// A Bedrock model id or inference profile id.
    Model(String),
    /// A Secrets Manager secret by the id the request gives (name or ARN).
    Secret(String),
    /// A request this proxy cannot attribute (method and path).
    Unrecognised(String),
}

/// One recorded call: the service's IAM prefix, the API operation as sent, and its target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AwsCall {
    /// `sqs`, `bedrock` or `secretsmanager`.
    pub service: String,
    /// The API operation, e.g. `DeleteMessageBatch` or `Converse`.
    pub operation: String,
    pub target: Target,
}

/// The running proxy; stops when dropped.
pub struct RecordingProxy {
    addr: SocketAddr,
    calls: Arc<Mutex<Vec<AwsCall>>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl RecordingProxy {
    /// Listens on 127.0.0.1 (free port) and forwards to `upstream` (e.g. `http://127.0.0.1:5000`).
    pub fn start(upstream: &str) -> Self {
        Self::with_delay(upstream, Duration::ZERO)
    }

    /// Like [`RecordingProxy::start`], holding every request for `delay` before forwarding it (a
    /// slow AWS endpoint, to widen start-up windows).
    pub fn with_delay(upstream: &str, delay: Duration) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind recording proxy");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = oneshot::channel();
        let upstream = upstream.trim_end_matches('/').to_string();
        let sink = calls.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(serve(listener, upstream, sink, stopped, delay));
        });
        Self {
            addr,
            calls,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Base URL to give the binary as its endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every call so far, in arrival order.
    pub fn calls(&self) -> Vec<AwsCall> {
        self.calls.lock().unwrap().clone()
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    upstream: String,
    calls: Arc<Mutex<Vec<AwsCall>>>,
    mut stopped: oneshot::Receiver<()>,
    delay: Duration,
) {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            _ = &mut stopped => return,
        };
        let (client, upstream, calls) = (client.clone(), upstream.clone(), calls.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let (client, upstream, calls) = (client.clone(), upstream.clone(), calls.clone());
                async move {
                    tokio::time::sleep(delay).await;
                    forward(req, client, upstream, calls).await
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(
    req: Request<Incoming>,
    client: Client<HttpConnector, Full<Bytes>>,
    upstream: String,
    calls: Arc<Mutex<Vec<AwsCall>>>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    calls.lock().unwrap().push(classify(&parts, &body));

    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = Request::builder()
        .method(parts.method.clone())
        .uri(format!("{upstream}{path}"));
    // The Host header is kept: moto builds the queue URLs it returns from it, so clients that
    // send to the QueueUrl itself (the JavaScript SDK does) come back through the proxy.
    for (name, value) in &parts.headers {
        out = out.header(name, value);
    }
    let reply = match client.request(out.body(Full::new(body)).unwrap()).await {
        Ok(reply) => reply,
        Err(e) => {
            return Ok(Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .body(Full::new(Bytes::from(format!("upstream: {e}"))))
                .unwrap());
        }
    };
    let (parts, body) = reply.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Response::from_parts(parts, Full::new(body)))
}

/// Names the operation and target of one request.
pub fn classify(parts: &hyper::http::request::Parts, body: &[u8]) -> AwsCall {
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let unrecognised = || AwsCall {
        service: "unknown".into(),
        operation: "unknown".into(),
        target: Target::Unrecognised(format!("{} {}", parts.method, parts.uri)),
    };
    // SQS, JSON protocol.
    if let Some(op) =
        header("x-amz-target").and_then(|t| t.strip_prefix("AmazonSQS.").map(str::to_string))
    {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        return sqs_call(
            op,
            field("QueueUrl"),
            field("QueueName"),
            field("QueueOwnerAWSAccountId"),
        );
    }
    // Secrets Manager, JSON protocol.
    if let Some(op) =
        header("x-amz-target").and_then(|t| t.strip_prefix("secretsmanager.").map(str::to_string))
    {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let id = v
            .get("SecretId")
            .and_then(|x| x.as_str())
            .unwrap_or_default();
        return AwsCall {
            service: "secretsmanager".into(),
            operation: op,
            target: Target::Secret(id.to_string()),
        };
    }
    // SQS, Query protocol.
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    if let Some(op) = field("Action") {
        return sqs_call(
            op,
            field("QueueUrl"),
            field("QueueName"),
            field("QueueOwnerAWSAccountId"),
        );
    }
    // Bedrock Runtime: /model/{percent-encoded id}/{operation}.
    let segments: Vec<&str> = parts
        .uri
        .path()
        .trim_start_matches('/')
        .split('/')
        .collect();
    if let ["model", id, op] = segments.as_slice() {
        let operation = match *op {
            "converse" => "Converse",
            "converse-stream" => "ConverseStream",
            "invoke" => "InvokeModel",
            "invoke-with-response-stream" => "InvokeModelWithResponseStream",
            _ => return unrecognised(),
        };
        let id = percent_encoding::percent_decode_str(id)
            .decode_utf8_lossy()
            .into_owned();
        return AwsCall {
            service: "bedrock".into(),
            operation: operation.into(),
            target: Target::Model(id),
        };
    }
    unrecognised()
}

fn sqs_call(
    operation: String,
    queue_url: Option<String>,
    queue_name: Option<String>,
    owner: Option<String>,
) -> AwsCall {
    let target = match (queue_url, queue_name) {
        (Some(url), _) => {
            // http(s)://host/{account}/{name}
            let mut segments = url.trim_end_matches('/').rsplit('/');
            let name = segments.next().unwrap_or_default().to_string();
            let owner = segments.next().map(str::to_string);
            Target::Queue { name, owner }
        }
        (None, Some(name)) => Target::Queue { name, owner },
        (None, None) => Target::Unrecognised(format!("sqs {operation} without a queue")),
    };
    AwsCall {
        service: "sqs".into(),
        operation,
        target,
    }
}
