//! The real binary against moto: a `kill -9` mid-message is redelivered after restart, and a
//! SIGTERM during an idle long poll exits 0 leaving no message invisible. The binary runs with
//! its hidden diagnostic handler (`--diagnostic-hold-ms`), which holds each message, then
//! reports it done.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::sqs::{TestQueue, eventually, moto_url};

/// A running `profile-worker run` whose stderr log lines are collected.
struct Worker {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Worker {
    fn start(test: &TestQueue, hold_ms: u64, extra: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_profile-worker"));
        // Cargo exports the build script's PROFILE_WORKER_COMMIT/BUILD_DATE to test processes;
        // the daemon would read them as (unknown) config keys.
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("PROFILE_WORKER_")) {
            cmd.env_remove(k);
        }
        cmd.args(["--diagnostic-hold-ms", &hold_ms.to_string(), "run"])
            .env("PROFILE_WORKER_QUEUE__URL", &test.url)
            .env("PROFILE_WORKER_QUEUE__ENDPOINT_URL", &test.endpoint)
            .env("PROFILE_WORKER_SERVER__LISTEN", "127.0.0.1:0")
            .env("PROFILE_WORKER_CONSUMER__WAIT_SECONDS", "1")
            // The shortest visibility a 1 s long poll allows: a renewal (every third of it) may
            // take the SQS call timeout of 1 + 10 s, and both must end before it lapses.
            .env("PROFILE_WORKER_CONSUMER__VISIBILITY_TIMEOUT", "17")
            .env("RUST_LOG", "info,profile_worker=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start profile-worker");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// The first log line containing `needle`; panics after `limit` (hang guard).
    fn wait_for(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => seen.push(line),
                Err(_) => panic!(
                    "no log line containing {needle:?} within {limit:?}; log:\n{}",
                    seen.join("\n")
                ),
            }
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "profile-worker did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_message_is_processed_again_after_restart() {
    let test = TestQueue::create(&moto_url(), 5).await;
    let id = test.send(r#"{"entity_type":"author","entity_id":3}"#).await;

    let mut first = Worker::start(&test, 600_000, &[]);
    let line = first.wait_for(
        "diagnostic handler holding message",
        Duration::from_secs(60),
    );
    assert!(line.contains(&id), "{line}");
    first.signal("KILL");
    first.wait_exit(Duration::from_secs(10));
    assert_eq!(
        test.counts().await,
        (0, 1),
        "the killed worker's message is in flight"
    );

    let second = Worker::start(&test, 0, &[]);
    let line = second.wait_for(
        "diagnostic handler holding message",
        Duration::from_secs(60),
    );
    assert!(
        line.contains(&id) && line.contains("\"attempt\":2"),
        "{line}"
    );
    second.wait_for("diagnostic handler done", Duration::from_secs(30));
    eventually("message deleted", Duration::from_secs(30), || async {
        test.counts().await == (0, 0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_an_idle_long_poll_exits_0_and_leaves_nothing_invisible() {
    let test = TestQueue::create(&moto_url(), 5).await;
    let mut worker = Worker::start(
        &test,
        600_000,
        &[
            ("PROFILE_WORKER_CONSUMER__WAIT_SECONDS", "5"),
            ("PROFILE_WORKER_CONSUMER__VISIBILITY_TIMEOUT", "23"),
            ("PROFILE_WORKER_SHUTDOWN__GRACE_SECONDS", "1"),
        ],
    );
    worker.wait_for("receive request", Duration::from_secs(60));
    worker.signal("TERM");
    // Sent while the worker's long poll is still open: it may take them, and must give them back.
    for body in ["a", "b", "c"] {
        test.send(body).await;
    }
    let status = worker.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(test.counts().await, (3, 0));
}
