//! Issue 7 end to end: `enqueue --all`, `status`, `cancel` (real binary) against a running
//! daemon with the fake Bedrock server, PostgreSQL and moto.

mod support;

use std::time::Duration;

use support::bedrock::FakeBedrock;
use support::daemon::Stack;
use support::sqs::poll_every;

fn job_status(stack: &Stack, id: &str) -> serde_json::Value {
    stack.json(&["status", id, "--json"])
}

/// Waits for `cond`, which runs the CLI, checking it every 200 ms.
async fn until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    poll_every(Duration::from_millis(200), what, limit, || {
        std::future::ready(cond())
    })
    .await;
}

/// The sample, a fake Bedrock answering after `latency`, and `enqueue --all` done:
/// (stack, fake, job id, total entities).
async fn enqueued(latency: Duration) -> (Stack, FakeBedrock, String, i64) {
    let stack = Stack::with_sample().await;
    let bedrock = FakeBedrock::start().await;
    bedrock.set_latency(latency);
    let started = stack.json(&["enqueue", "--all", "--json"]);
    let job_id = started["job_id"].as_str().expect("job id").to_string();
    let total = started["total_entities"].as_i64().expect("total_entities");
    assert_eq!(total, 70, "the sample's entities: {started}");
    (stack, bedrock, job_id, total)
}

#[tokio::test]
async fn enqueue_all_then_run_completes_with_exact_counters() {
    let (stack, bedrock, job_id, total) = enqueued(Duration::from_millis(20)).await;

    let mut daemon = stack.start_bedrock(&bedrock, &[]);
    // While it runs, a second generate-all returns the same job and sends nothing.
    let again = stack.json(&["enqueue", "--all", "--json"]);
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
    daemon.terminate(Duration::from_secs(60));
}

#[tokio::test]
async fn cancel_during_a_run_skips_the_rest_without_bedrock_calls() {
    let (stack, bedrock, job_id, total) = enqueued(Duration::from_millis(150)).await;

    let mut daemon =
        stack.start_bedrock(&bedrock, &[("PROFILE_WORKER_CONSUMER__CONCURRENCY", "1")]);
    until("some progress", Duration::from_secs(60), || {
        job_status(&stack, &job_id)["succeeded"].as_i64().unwrap() >= 2
    })
    .await;
    let (code, out, err) = stack.cli(&["cancel", &job_id]);
    assert_eq!(code, 0, "{out}{err}");
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

    let (code, out, err) = stack.cli(&["cancel", &job_id]);
    assert_eq!(code, 4, "already terminal: {out}{err}");
    let (code, out, err) = stack.cli(&["cancel", "00000000-0000-0000-0000-000000000000"]);
    assert_eq!(code, 3, "not found: {out}{err}");
    daemon.terminate(Duration::from_secs(60));
}
