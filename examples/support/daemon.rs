//! The daemon as both benchmarks (`load_bench`, `budget_bench`) drive it: a `profile-worker run`
//! process with its own environment and log file, its side server read with plain HTTP `GET`s,
//! and `/metrics` as series → value.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A `profile-worker run` process whose stderr goes to a log file; killed on drop.
pub struct Daemon {
    pub child: Child,
    pub addr: String,
    pub log: PathBuf,
    started: Instant,
    killed: bool,
}

impl Daemon {
    /// Starts `binary run` with only `PATH`, `HOME` and `env`, its side server on a free port.
    pub fn spawn(binary: &Path, env: &[(String, String)], log: PathBuf) -> Result<Daemon> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(binary);
        cmd.env_clear();
        for key in ["PATH", "HOME"] {
            if let Ok(v) = std::env::var(key) {
                cmd.env(key, v);
            }
        }
        cmd.arg("run")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("PROFILE_WORKER_SERVER__LISTEN", &addr)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        let started = Instant::now();
        let child = cmd.spawn().with_context(|| format!("spawn {binary:?}"))?;
        Ok(Daemon {
            child,
            addr,
            log,
            started,
            killed: false,
        })
    }

    /// Time from spawn until `/ready` answers 200 (polled every 2 ms).
    pub async fn wait_ready(&mut self, limit: Duration) -> Result<Duration> {
        loop {
            if let Ok((200, _)) = get(&self.addr, "/ready").await {
                return Ok(self.started.elapsed());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "daemon exited with {status} before it was ready; log {}",
                    self.log.display()
                );
            }
            ensure!(
                self.started.elapsed() < limit,
                "daemon not ready after {limit:?}; log {}",
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    pub async fn metrics(&self) -> Result<Scrape> {
        ensure!(!self.killed, "the daemon was killed");
        let (status, body) = get(&self.addr, "/metrics").await?;
        ensure!(status == 200, "/metrics answered {status}");
        Ok(Scrape::parse(&body))
    }

    /// SIGKILL, as a crashing replica.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.killed = true;
    }

    /// SIGTERM, then waits for exit status 0.
    pub async fn stop(mut self, limit: Duration) -> Result<()> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        ensure!(sent.success(), "kill -TERM failed");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                ensure!(
                    status.success(),
                    "daemon exited with {status}; log {}",
                    self.log.display()
                );
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "daemon still running {limit:?} after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `GET` over a fresh connection: (status, body).
pub async fn get(addr: &str, path: &str) -> Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    Ok((status, body.to_string()))
}

/// A Prometheus text scrape: series (name with labels) to value.
pub struct Scrape(pub HashMap<String, f64>);

impl Scrape {
    pub fn parse(text: &str) -> Self {
        Scrape(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let (series, value) = l.rsplit_once(' ')?;
                    Some((series.to_string(), value.parse().ok()?))
                })
                .collect(),
        )
    }

    /// The series' value, 0 when the daemon has not exported it yet.
    pub fn value(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }

    /// `profile_worker_messages_processed_total` for one outcome.
    pub fn processed(&self, outcome: &str) -> f64 {
        self.value(&format!(
            "profile_worker_messages_processed_total{{outcome=\"{outcome}\"}}"
        ))
    }
}
