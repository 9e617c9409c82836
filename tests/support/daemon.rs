//! Runs the real `profile-worker` binary and talks to its side server.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_profile-worker")
}

/// A `Command` for the binary with a clean environment (only PATH, HOME and what the test adds).
pub fn command() -> Command {
    let mut cmd = Command::new(binary());
    cmd.env_clear();
    for key in ["PATH", "HOME"] {
        if let Ok(v) = std::env::var(key) {
            cmd.env(key, v);
        }
    }
    cmd
}

/// Runs `cmd` to its end: (exit code, -1 when a signal ended it; stdout; stderr).
pub fn run_to_end(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("run profile-worker");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running daemon; killed on drop if still alive.
pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    /// Copies stderr into `logs` until the process closes it; joined once the process has exited,
    /// so the last lines (the reason it exited) are in `logs` when `wait` returns.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    /// Starts `profile-worker run` with the side server on a free port and waits until it listens.
    pub fn start(envs: &[(&str, &str)]) -> Daemon {
        let mut cmd = command();
        cmd.arg("run")
            .env("PROFILE_WORKER_SERVER__LISTEN", "127.0.0.1:0")
            .env("PROFILE_WORKER_LOG__FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn profile-worker");
        let stderr = child.stderr.take().expect("stderr piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = logs.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = listening_addr(&line) {
                    let _ = tx.send(addr);
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "daemon did not report its side server; logs:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        Daemon {
            child,
            addr,
            logs,
            reader: Some(reader),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the daemon logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Waits for the process to exit (hang guard `limit`).
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "daemon still running after {limit:?}; logs:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and asserts a clean exit within `limit` (blocking this thread meanwhile).
    pub fn terminate(&mut self, limit: Duration) {
        self.signal("TERM");
        let status = self.wait(limit);
        assert!(status.success(), "exit status {status:?}");
    }

    /// [`Daemon::terminate`] waiting on the blocking pool, so that servers on the test's own
    /// runtime (the fake Bedrock, the AWS proxy) keep answering while the daemon drains.
    pub async fn terminate_off_runtime(mut self, limit: Duration) {
        tokio::task::spawn_blocking(move || self.terminate(limit))
            .await
            .expect("the daemon exits cleanly");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Waits until `/ready` answers 200 (hang guard `limit`).
    pub async fn wait_ready(&self, limit: Duration) {
        super::sqs::eventually("the daemon is ready", limit, || async {
            http("GET", &self.url("/ready")).await.0 == 200
        })
        .await;
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn listening_addr(line: &str) -> Option<SocketAddr> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v.get("message")?.as_str()? != "side server listening" {
        return None;
    }
    v.get("addr")?.as_str()?.parse().ok()
}

/// A minimal HTTP/1.1 exchange: returns status, content type and body.
pub async fn http(method: &str, url: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .expect("status")
        .parse()
        .unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, content_type, body.to_string())
}

/// Everything `profile-worker run` needs, fresh for one test: a migrated database and a moto
/// queue with its dead-letter queue. The generator is the offline one unless the test overrides
/// `PROFILE_WORKER_GENERATOR__BACKEND` and points Bedrock at a fake server.
pub struct Stack {
    pub db: super::db::TestDb,
    pub queue: super::sqs::TestQueue,
}

impl Stack {
    pub async fn new() -> Stack {
        let db = super::db::TestDb::migrated().await;
        let queue = super::sqs::TestQueue::create(&super::sqs::moto_url(), 3).await;
        Stack { db, queue }
    }

    /// A stack whose database holds the bundled demo sample (70 entities).
    pub async fn with_sample() -> Stack {
        let stack = Stack::new().await;
        stack
            .db
            .exec(&profile_worker::demo::sample::Sample::bundled().sql())
            .await;
        stack
    }

    /// A stack whose database holds the reference collection ([`super::db::load_fixture`]).
    pub async fn with_fixture() -> Stack {
        let stack = Stack::new().await;
        super::db::load_fixture(&stack.db).await;
        stack
    }

    /// Runs a CLI command against this stack: (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        run_to_end(command().args(args).envs(self.env()))
    }

    /// Runs a CLI command that must succeed and print one JSON document.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let (code, out, err) = self.cli(args);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {out}"))
    }

    /// Starts the daemon with the Bedrock generator pointed at `fake` (through the SDK's
    /// `AWS_ENDPOINT_URL_BEDROCK_RUNTIME`) and `extra` settings.
    pub fn start_bedrock(
        &self,
        fake: &super::bedrock::FakeBedrock,
        extra: &[(&str, &str)],
    ) -> Daemon {
        let url = fake.url();
        let mut env = vec![
            ("PROFILE_WORKER_GENERATOR__BACKEND", "bedrock"),
            ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", url.as_str()),
        ];
        env.extend_from_slice(extra);
        self.start(&env)
    }

    /// The daemon's environment for this stack (fast polling; offline generator).
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("DATABASE_URL", self.db.url.as_str()),
            ("PROFILE_WORKER_QUEUE__URL", self.queue.url.as_str()),
            (
                "PROFILE_WORKER_QUEUE__ENDPOINT_URL",
                self.queue.endpoint.as_str(),
            ),
            ("PROFILE_WORKER_CONSUMER__WAIT_SECONDS", "1"),
            ("PROFILE_WORKER_GENERATOR__BACKEND", "offline"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Starts the daemon on this stack with `extra` settings layered over [`Stack::env`].
    pub fn start(&self, extra: &[(&str, &str)]) -> Daemon {
        let mut env = self.env();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Daemon::start(&pairs)
    }
}
