//! The running daemon's side server and shutdown, against the real binary.

mod support;

use std::time::{Duration, Instant};

use support::daemon::{Daemon, http};

#[tokio::test]
async fn endpoints_behave() {
    let mut d = Daemon::start(&[("DATABASE_URL", "postgres://app:pl4nted-pw@127.0.0.1:1/none")]);

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
        "profile_worker_process_resident_memory_bytes",
        "profile_worker_process_cpu_seconds_total",
        "profile_worker_process_open_fds",
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

    let (status, _, body) = http("GET", &d.url("/ready")).await;
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status == 200, ready["ready"].as_bool().unwrap(), "{body}");
    assert!(ready["checks"].is_object());

    let (status, _, body) = http("GET", &d.url("/version")).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["commit"].as_str().is_some_and(|c| !c.is_empty()));
    assert!(v["build_date"].as_str().is_some());

    assert_eq!(http("GET", &d.url("/nope")).await.0, 404);
    assert_eq!(http("POST", &d.url("/metrics")).await.0, 405);
    assert_eq!(http("DELETE", &d.url("/health")).await.0, 405);

    d.signal("TERM");
    assert!(d.wait(Duration::from_secs(30)).success());
    assert!(!d.logs().contains("pl4nted"), "password leaked into logs");
}

#[test]
fn sigterm_exits_zero_promptly() {
    let mut d = Daemon::start(&[]);
    let started = Instant::now();
    d.signal("TERM");
    let status = d.wait(Duration::from_secs(30));
    assert!(status.success(), "exit status {status:?}");
    // A hang guard, not a timing assertion: an idle daemon has nothing to drain.
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(d.logs().contains("shutdown requested"));
}
