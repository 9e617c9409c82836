//! The real binary, as shipped, against moto, PostgreSQL and the fake Bedrock: a `kill -9`
//! while a message is in flight (its Bedrock call held open by the fake) leaves the message to
//! SQS, and the next worker processes it; a SIGTERM during an idle long poll exits 0 leaving no
//! message invisible.

mod support;

use std::time::{Duration, Instant};

use profile_worker::model::EntityRef;
use profile_worker::store::ProfileStore;
use support::bedrock::FakeBedrock;
use support::daemon::{Daemon, Stack};
use support::pipeline::{COLLECTION, message};
use support::sqs::eventually;

const HANG_GUARD: Duration = Duration::from_secs(60);

/// Waits until the daemon has logged a line containing every one of `needles` (hang guard).
fn wait_for_log(daemon: &Daemon, needles: &[&str]) -> String {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let logs = daemon.logs();
        if let Some(line) = logs.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {needles:?}; logs:\n{logs}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start(stack: &Stack, fake: &FakeBedrock, extra: &[(&str, &str)]) -> Daemon {
    let mut env = vec![
        // The shortest visibility a 1 s long poll allows: a renewal (every third of it) may take
        // the SQS call timeout of 1 + 10 s, and both must end before it lapses.
        ("PROFILE_WORKER_CONSUMER__VISIBILITY_TIMEOUT", "17"),
        ("RUST_LOG", "info,profile_worker=debug"),
    ];
    env.extend_from_slice(extra);
    stack.start_bedrock(fake, &env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_message_is_processed_again_after_restart() {
    let stack = Stack::new().await;
    stack.db.exec(COLLECTION).await;
    let store = stack.db.store();
    let entity: EntityRef = "author:1".parse().unwrap();
    let fake = FakeBedrock::start().await;
    // The first worker's Bedrock call never answers in time: the message stays in flight.
    fake.set_latency(Duration::from_secs(600));
    let id = stack.queue.send(&message(None, "author:1", false)).await;

    let first = start(&stack, &fake, &[]);
    eventually("a Bedrock call is in flight", HANG_GUARD, || async {
        !fake.requests().is_empty()
    })
    .await;
    first.signal("KILL");
    drop(first);
    assert_eq!(
        stack.queue.counts().await,
        (0, 1),
        "the killed worker's message is in flight"
    );
    assert!(store.profile(entity).await.unwrap().is_none());

    fake.set_latency(Duration::ZERO);
    let second = start(&stack, &fake, &[]);
    eventually("the profile is written", HANG_GUARD, || async {
        store.profile(entity).await.unwrap().is_some()
    })
    .await;
    eventually("the message is deleted", HANG_GUARD, || async {
        stack.queue.counts().await == (0, 0)
    })
    .await;
    let line = wait_for_log(&second, &["Generated profile", &id]);
    assert!(line.contains("\"receive_count\":2"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_an_idle_long_poll_exits_0_and_leaves_nothing_invisible() {
    let stack = Stack::new().await;
    let fake = FakeBedrock::start().await;
    let mut worker = start(
        &stack,
        &fake,
        &[
            ("PROFILE_WORKER_CONSUMER__WAIT_SECONDS", "5"),
            ("PROFILE_WORKER_CONSUMER__VISIBILITY_TIMEOUT", "23"),
            ("PROFILE_WORKER_SHUTDOWN__GRACE_SECONDS", "1"),
        ],
    );
    wait_for_log(&worker, &["receive request"]);
    worker.signal("TERM");
    // Sent while the worker's long poll is still open: it may take them, and must give them back.
    for body in ["a", "b", "c"] {
        stack.queue.send(body).await;
    }
    let status = tokio::task::spawn_blocking(move || worker.wait(Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(
        stack.queue.counts().await,
        (3, 0),
        "every message visible again, none taken in the drain"
    );
}
