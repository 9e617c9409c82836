//! The running daemon's side server and shutdown, against the real binary.

mod support;

use std::time::{Duration, Instant};

use support::daemon::{Stack, http};

#[tokio::test]
async fn endpoints_behave() {
    let stack = Stack::new().await;
    // The password is planted in a URL the daemon reads but never uses (Redis is optional).
    let mut d = stack.start(&[("REDIS_URL", "redis://:pl4nted-pw@127.0.0.1:1/0")]);

    let (status, ctype, body) = http("GET", &d.url("/metrics")).await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let build = scrape
        .samples
        .iter()
        .find(|s| s.metric == "profile_worker_build_info")
        .expect("build_info present");
    assert_eq!(build.labels.get("version"), Some(env!("CARGO_PKG_VERSION")));
    assert!(build.labels.get("commit").is_some());
    for name in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "profile_worker_concurrency_limit",
    ] {
        assert!(
            scrape.samples.iter().any(|s| s.metric == name),
            "{name} missing"
        );
    }
    assert!(!body.contains("pl4nted"));

    let (status, ctype, body) = http("GET", &d.url("/health")).await;
    assert_eq!((status, ctype.as_str()), (200, "application/json"));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["status"],
        "ok"
    );

    let ready = eventually_ready(&d.url("/ready")).await;
    for check in ["database", "queue"] {
        assert_eq!(ready["checks"][check]["ok"], true, "{ready}");
        assert_eq!(ready["checks"][check]["required"], true, "{ready}");
    }
    assert_eq!(ready["checks"]["redis"]["required"], false, "{ready}");

    let (status, _, body) = http("GET", &d.url("/version")).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["commit"].as_str().is_some_and(|c| !c.is_empty()));
    assert!(v["build_date"].as_str().is_some());

    assert_eq!(http("GET", &d.url("/nope")).await.0, 404);
    assert_eq!(http("POST", &d.url("/metrics")).await.0, 405);
    assert_eq!(http("DELETE", &d.url("/health")).await.0, 405);

    d.terminate(Duration::from_secs(30));
    assert!(!d.logs().contains("pl4nted"), "password leaked into logs");
}

/// Polls `/ready` until it answers 200 (hang guard 30 s) and returns its body.
async fn eventually_ready(url: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, body) = http("GET", url).await;
        let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status == 200, ready["ready"].as_bool().unwrap(), "{body}");
        if status == 200 {
            return ready;
        }
        assert!(Instant::now() < deadline, "never ready: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn sigterm_exits_zero_promptly() {
    let stack = Stack::new().await;
    let mut d = stack.start(&[]);
    let started = Instant::now();
    d.signal("TERM");
    let status = d.wait(Duration::from_secs(30));
    assert!(status.success(), "exit status {status:?}");
    // A hang guard, not a timing assertion: an idle daemon has nothing to drain.
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(d.logs().contains("shutdown requested"));
}
