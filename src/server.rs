//! The side server: `/metrics`, `/health`, `/ready`, `/version` and the operator console
//! ([`crate::console`]) over HTTP/1.1 (hyper).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::build_info;
use crate::console;
use crate::health::Health;
use crate::metrics::Metrics;

/// What the side server reads from.
#[derive(Clone)]
pub struct State {
    pub metrics: Arc<Metrics>,
    pub health: Health,
    /// The operator console (`/`, `/api/…`), installed once its sources are open.
    pub console: console::Slot,
}

/// A bound side server, not yet serving (binding first lets callers learn the real port).
pub struct Server {
    listener: TcpListener,
    state: State,
}

impl Server {
    pub async fn bind(addr: SocketAddr, state: State) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self { listener, state })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Serves until `shutdown` is cancelled; connections still open then are dropped.
    pub async fn serve(self, shutdown: CancellationToken) {
        let connections = tokio_util::task::TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    tracing::warn!(error = %err, "side server accept failed");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let state = self.state.clone();
            let stop = shutdown.clone();
            connections.spawn(async move {
                let service = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(route(&state, &req, peer).await) }
                });
                let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = stop.cancelled() => {}
                    result = conn => {
                        if let Err(err) = result {
                            tracing::debug!(error = %err, "side server connection ended");
                        }
                    }
                }
            });
        }
        connections.close();
    }
}

/// A side server serving in the background.
pub struct Running {
    /// The bound address (the real port when `server.listen` asked for port 0).
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops serving and waits for the accept loop to end.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Binds `addr`, logs `side server listening` with the bound address (tests and operators read
/// it), and serves in the background until [`Running::stop`].
pub async fn start(addr: SocketAddr, state: State) -> std::io::Result<Running> {
    let server = Server::bind(addr, state).await?;
    let addr = server.local_addr();
    tracing::info!(addr = %addr, version = crate::build_info::VERSION, "side server listening");
    let stop = CancellationToken::new();
    let task = tokio::spawn(server.serve(stop.clone()));
    Ok(Running { addr, stop, task })
}

async fn route(state: &State, req: &Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if state.console.owns(path) {
        let request = console::Request {
            method: req.method(),
            path,
            query: req.uri().query(),
            headers: req.headers(),
            peer,
        };
        return console::handle(&state.console, request).await;
    }
    let known = matches!(path, "/metrics" | "/health" | "/ready" | "/version");
    if !known {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        resp.headers_mut()
            .insert("allow", HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    match path {
        "/metrics" => {
            let mut resp = Response::new(Full::new(Bytes::from(state.metrics.render())));
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        "/health" => match state.health.liveness() {
            Ok(()) => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
            Err(stalled) => json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"status": "stalled", "stalled": stalled}),
            ),
        },
        "/ready" => {
            let readiness = state.health.readiness();
            let status = if readiness.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json(status, &readiness)
        }
        _ => json(
            StatusCode::OK,
            &serde_json::json!({
                "version": build_info::VERSION,
                "commit": build_info::COMMIT,
                "build_date": build_info::BUILD_DATE,
            }),
        ),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).expect("health bodies serialise");
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// GETs `url` and returns the status code; used by the `healthcheck` subcommand.
pub async fn probe(url: &str, timeout: std::time::Duration) -> Result<u16, String> {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let uri: hyper::Uri = url.parse().map_err(|e| format!("invalid URL {url}: {e}"))?;
    let client: Client<_, http_body_util::Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    match tokio::time::timeout(timeout, client.get(uri)).await {
        Ok(Ok(resp)) => Ok(resp.status().as_u16()),
        Ok(Err(err)) => Err(format!("GET {url}: {err}")),
        Err(_) => Err(format!("GET {url}: no answer within {timeout:?}")),
    }
}
