//! `/ready` polled from the moment the side server listens: never 200 before every required check
//! (database, queue) has registered and passed, even while start-up waits on a slow SQS endpoint.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::aws_proxy::RecordingProxy;
use support::daemon::{Stack, http};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_never_200_before_the_database_and_queue_checks_pass() {
    let stack = Stack::new().await;
    // Every SQS call is held 1.5 s, so queue resolution leaves a window a probe can hit.
    let slow_sqs = RecordingProxy::with_delay(&stack.queue.endpoint, Duration::from_millis(1500));
    let endpoint = slow_sqs.url();
    let daemon = stack.start(&[("PROFILE_WORKER_QUEUE__ENDPOINT_URL", &endpoint)]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut unready = Vec::new();
    loop {
        let (status, _, body) = http("GET", &daemon.url("/ready")).await;
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        if status == 200 {
            for name in ["database", "queue"] {
                assert_eq!(
                    v["checks"][name]["ok"], true,
                    "200 before {name} passed: {body}"
                );
            }
            break;
        }
        assert_eq!((status, &v["ready"]), (503, &Value::Bool(false)), "{body}");
        unready.push(v);
        assert!(Instant::now() < deadline, "never ready: {body}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let first = unready
        .first()
        .expect("the slow queue endpoint leaves a window to probe");
    // From the first answer on, both required checks are listed (failing), never an empty list.
    for name in ["database", "queue"] {
        assert_eq!(first["checks"][name]["required"], true, "{first}");
        assert_eq!(first["checks"][name]["ok"], false, "{first}");
    }
}
