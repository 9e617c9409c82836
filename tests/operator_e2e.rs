//! Issue 7 end to end: `enqueue --all`, `status`, `cancel` (real binary) against a running
//! daemon with the fake Bedrock server, PostgreSQL and moto.

mod support;

use std::time::{Duration, Instant};

use profile_worker::demo::sample::Sample;
use support::bedrock::FakeBedrock;
use support::daemon::{Daemon, Stack, command};

/// Runs a CLI command against the stack; returns exit code and stdout.
fn cli(stack: &Stack, args: &[&str]) -> (i32, String) {
    let mut cmd = command();
    cmd.args(args);
    for (k, v) in stack.env() {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.code().is_some(), "{stderr}");
    (
        out.status.code().unwrap(),
        format!(
            "{stdout}{}",
            if stdout.is_empty() {
                stderr.to_string()
            } else {
                String::new()
            }
        ),
    )
}

fn json(stack: &Stack, args: &[&str]) -> serde_json::Value {
    let (code, out) = cli(stack, args);
    assert_eq!(code, 0, "{args:?}: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {out}"))
}

async fn stack_with_sample() -> Stack {
    let stack = Stack::new().await;
    stack.db.exec(&Sample::bundled().sql()).await;
    stack
}

fn start(stack: &Stack, bedrock: &FakeBedrock, extra: &[(&str, &str)]) -> Daemon {
    let url = bedrock.url();
    let mut env = vec![
        ("PROFILE_WORKER_GENERATOR__BACKEND", "bedrock"),
        ("PROFILE_WORKER_GENERATOR__ENDPOINT_URL", url.as_str()),
    ];
    env.extend_from_slice(extra);
    stack.start(&env)
}

fn job_status(stack: &Stack, id: &str) -> serde_json::Value {
    json(stack, &["status", id, "--json"])
}

async fn until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn enqueue_all_then_run_completes_with_exact_counters() {
    let stack = stack_with_sample().await;
    let bedrock = FakeBedrock::start().await;
    bedrock.set_latency(Duration::from_millis(20));

    let started = json(&stack, &["enqueue", "--all", "--json"]);
    let job_id = started["job_id"].as_str().expect("job id").to_string();
    let total = started["total_entities"].as_i64().unwrap();
    assert_eq!(total, 70, "{started}");

    let mut daemon = start(&stack, &bedrock, &[]);
    // While it runs, a second generate-all returns the same job and sends nothing.
    let again = json(&stack, &["enqueue", "--all", "--json"]);
    assert_eq!(again["job_id"], job_id.as_str(), "{again}");

    until("job completed", Duration::from_secs(120), || {
        job_status(&stack, &job_id)["status"] == "completed"
    })
    .await;
    let status = job_status(&stack, &job_id);
    let (succeeded, failed) = (
        status["succeeded"].as_i64().unwrap(),
        status["failed"].as_i64().unwrap(),
    );
    assert_eq!((succeeded + failed, failed), (total, 0), "{status}");
    assert!(!bedrock.requests().is_empty());
    // Every message was acknowledged: nothing visible or in flight is left.
    assert_eq!(stack.queue.counts().await, (0, 0));
    daemon.signal("TERM");
    assert!(daemon.wait(Duration::from_secs(60)).success());
}

#[tokio::test]
async fn cancel_during_a_run_skips_the_rest_without_bedrock_calls() {
    let stack = stack_with_sample().await;
    let bedrock = FakeBedrock::start().await;
    bedrock.set_latency(Duration::from_millis(150));
    let started = json(&stack, &["enqueue", "--all", "--json"]);
    let job_id = started["job_id"].as_str().unwrap().to_string();
    let total = started["total_entities"].as_i64().unwrap();

    let mut daemon = start(
        &stack,
        &bedrock,
        &[("PROFILE_WORKER_CONSUMER__CONCURRENCY", "1")],
    );
    until("some progress", Duration::from_secs(60), || {
        job_status(&stack, &job_id)["succeeded"].as_i64().unwrap() >= 2
    })
    .await;
    let (code, out) = cli(&stack, &["cancel", &job_id]);
    assert_eq!(code, 0, "{out}");
    let calls_at_cancel = bedrock.requests().len();

    until("every message handled", Duration::from_secs(120), || {
        let s = job_status(&stack, &job_id);
        s["succeeded"].as_i64().unwrap() + s["failed"].as_i64().unwrap() >= total
    })
    .await;
    let status = job_status(&stack, &job_id);
    assert_eq!(status["status"], "cancelled", "{status}");
    // At most the one message in flight at cancel time finishes its calls (discovery, biography
    // and up to three narratives); everything after it is skipped without calling Bedrock.
    let calls_after = bedrock.requests().len();
    assert!(
        calls_after - calls_at_cancel <= 5,
        "{calls_at_cancel} → {calls_after} Bedrock calls after cancel"
    );

    let (code, out) = cli(&stack, &["cancel", &job_id]);
    assert_eq!(code, 4, "already terminal: {out}");
    let (code, out) = cli(&stack, &["cancel", "00000000-0000-0000-0000-000000000000"]);
    assert_eq!(code, 3, "not found: {out}");
    daemon.signal("TERM");
    assert!(daemon.wait(Duration::from_secs(60)).success());
}
