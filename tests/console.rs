//! Issue 18: the operator console, end to end. The real binary runs against PostgreSQL, moto,
//! Redis and the fake Bedrock; a headless Chromium (driven through chromedriver with fantoccini)
//! watches a job advance to completion, cancels one with the token, and redrives a poison message
//! from the dead-letter panel. `scripts/test` installs Debian's `chromium` and `chromium-driver`
//! when they are missing.
//!
//! The browser test saves a screenshot to `$CARGO_TARGET_TMPDIR/console.png`, and to
//! `docs/console.png` when `PW_UPDATE_SCREENSHOT=1`.

mod support;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use support::bedrock::FakeBedrock;
use support::daemon::{Daemon, Stack, http};

const TOKEN: &str = "console-test-token-0123456789";

/// The daemon with the fake Bedrock and the shared Redis (the console's budget and cache).
fn start(stack: &Stack, bedrock: &FakeBedrock, extra: &[(&str, &str)]) -> Daemon {
    let redis = support::redis::shared_url();
    let mut env = vec![("REDIS_URL", redis.as_str())];
    env.extend_from_slice(extra);
    stack.start_bedrock(bedrock, &env)
}

/// A raw HTTP/1.1 request with optional headers; returns status and body.
async fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let req = format!(
        "{method} /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n{extra}Connection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// Waits until the console is installed (it answers 503 while the daemon opens its sources).
async fn wait_console(daemon: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while request("GET", &daemon.url("/api/overview"), &[]).await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "console never came up: {}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Headless Chromium under chromedriver; both stop on drop.
struct Browser {
    driver: Child,
    client: Client,
}

impl Browser {
    async fn start() -> Browser {
        let chromedriver = which("chromedriver").expect(
            "chromedriver not found: install Debian's chromium and chromium-driver (scripts/test does)",
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let mut args = vec![
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1400,1100",
        ];
        args.push("--hide-scrollbars");
        let mut options = serde_json::json!({ "args": args });
        if let Some(chromium) = which("chromium") {
            options["binary"] = serde_json::json!(chromium);
        }
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), options);
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("cannot start a chromedriver session: {e}"),
            }
        };
        Browser { driver, client }
    }

    async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Polls `css`'s text until `cond` holds; returns it.
    async fn wait_text(
        &self,
        what: &str,
        css: &str,
        limit: Duration,
        cond: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let t = self.text(css).await;
            if cond(&t) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; {css} = {t:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Clicks `css`, finding it again when the page's refresh replaced it in between.
    async fn click(&self, css: &str) {
        for _ in 0..20 {
            let found = self.client.find(Locator::Css(css)).await;
            if let Ok(element) = found
                && element.click().await.is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("cannot click {css}");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn which(name: &str) -> Option<String> {
    std::env::var("PATH").ok()?.split(':').find_map(|dir| {
        let p = std::path::Path::new(dir).join(name);
        p.is_file().then(|| p.display().to_string())
    })
}

async fn save_screenshot(browser: &Browser) {
    let png = browser.client.screenshot().await.expect("screenshot");
    std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console.png"),
        &png,
    )
    .unwrap();
    if std::env::var("PW_UPDATE_SCREENSHOT").is_ok_and(|v| v == "1") {
        std::fs::write(
            concat!(env!("CARGO_MANIFEST_DIR"), "/docs/console.png"),
            &png,
        )
        .unwrap();
    }
}

fn received_total(metrics: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("profile_worker_messages_received_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_follows_a_job_cancels_one_and_redrives_a_poison_message() {
    let stack = Stack::with_sample().await;
    let bedrock = FakeBedrock::start().await;
    // Slow enough that the job spans several of the page's 3 s refreshes even on a fast runner
    // (at 40 ms a CI run finished it before the in-flight panel was read mid-run).
    bedrock.set_latency(Duration::from_millis(150));
    let started = stack.json(&["enqueue", "--all", "--json"]);
    let job = started["job_id"].as_str().unwrap().to_string();
    let total = started["total_entities"].as_i64().unwrap();

    let mut daemon = start(
        &stack,
        &bedrock,
        &[
            ("PROFILE_WORKER_CONSUMER__CONCURRENCY", "2"),
            ("PROFILE_WORKER_CONSOLE__TOKEN", TOKEN),
            ("PROFILE_WORKER_CONSOLE__REPLICA", "replica-a"),
        ],
    );
    wait_console(&daemon).await;
    let browser = Browser::start().await;
    browser.client.goto(&daemon.url("/")).await.unwrap();

    // Progress advances (the script refreshes from api/overview) until the job completes.
    let pct = format!("tr[data-job='{job}'] .pct");
    let status = format!("tr[data-job='{job}'] .status");
    let mut seen = std::collections::BTreeSet::new();
    let mut shot = false;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        // Status first: the page may refresh between the two reads, and progress only grows.
        let s = browser.text(&status).await;
        let p = browser.text(&pct).await;
        if !p.is_empty() {
            seen.insert(p.clone());
        }
        if !shot && !p.is_empty() && s == "in_progress" {
            // Mid-run: the in-flight panel shows this replica's work.
            let inflight = browser.text("#inflight tbody").await;
            if inflight.contains("replica-a") {
                save_screenshot(&browser).await;
                shot = true;
            }
        }
        if s == "completed" {
            // Read again: a refresh may have landed between the two reads above.
            let p = browser.text(&pct).await;
            assert_eq!(p, format!("{total}/{total} (100%)"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "job did not complete on the page; seen {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        seen.len() >= 3,
        "the page showed too few progress steps: {seen:?}"
    );
    assert!(shot, "never saw the job in flight on this replica");

    // Cancel: a second job, refused without the token, done with it.
    bedrock.set_latency(Duration::from_millis(300));
    let second = stack.json(&["enqueue", "--all", "--force", "--json"]);
    let second = second["job_id"].as_str().unwrap().to_string();
    let cancel_url = daemon.url(&format!("/api/jobs/{second}/cancel"));
    assert_eq!(request("POST", &cancel_url, &[]).await.0, 401);
    assert_eq!(
        request(
            "POST",
            &cancel_url,
            &[("Authorization", "Bearer wrong-token-0123456789")]
        )
        .await
        .0,
        401
    );
    assert_eq!(request("GET", &cancel_url, &[]).await.0, 405);
    let button = format!("tr[data-job='{second}'] button.cancel");
    browser
        .wait_text(
            "the second job's cancel button",
            &button,
            Duration::from_secs(20),
            |t| t == "Cancel",
        )
        .await;
    browser.click(&button).await;
    browser
        .wait_text("refusal", "#action-result", Duration::from_secs(10), |t| {
            t.starts_with("401")
        })
        .await;
    browser
        .client
        .find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(TOKEN)
        .await
        .unwrap();
    browser.click(&button).await;
    browser
        .wait_text(
            "cancel result",
            "#action-result",
            Duration::from_secs(10),
            |t| t.starts_with("200"),
        )
        .await;
    browser
        .wait_text(
            "cancelled status",
            &format!("tr[data-job='{second}'] .status"),
            Duration::from_secs(10),
            |t| t == "cancelled",
        )
        .await;
    assert_eq!(
        stack.json(&["status", &second, "--json"])["status"],
        "cancelled"
    );
    assert!(daemon.logs().contains("console action refused"));

    // A poison message lands in the dead-letter panel, escaped, and is redriven from there.
    let poison = "not json <b>bold</b> & 'quoted'";
    stack.queue.send(poison).await;
    browser
        .wait_text(
            "the poison message in the DLQ panel",
            "#dlq tbody",
            Duration::from_secs(60),
            |t| t.contains(poison) && t.contains("outcome=poison"),
        )
        .await;
    assert_eq!(browser.text("#dlq-depth").await, "1");
    let (_, _, metrics) = http("GET", &daemon.url("/metrics")).await;
    let received_before = received_total(&metrics);
    browser.click("#redrive").await;
    browser
        .wait_text(
            "redrive accepted",
            "#action-result",
            Duration::from_secs(30),
            |t| t.starts_with("202"),
        )
        .await;
    browser
        .wait_text(
            "redrive completed",
            "#redrive-status",
            Duration::from_secs(60),
            |t| t.contains("COMPLETED") && t.contains("1 moved"),
        )
        .await;
    // The redriven message is consumed again (and, still poison, dead-lettered again).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, _, metrics) = http("GET", &daemon.url("/metrics")).await;
        if received_total(&metrics) > received_before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the redriven message was never received"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        daemon.logs().contains("\"action\":\"redrive\""),
        "{}",
        daemon.logs()
    );

    let _ = browser.client.clone().close().await;
    daemon.terminate(Duration::from_secs(60));
}

#[tokio::test]
async fn api_is_read_only_without_a_token_and_honours_the_path_prefix() {
    let stack = Stack::with_sample().await;
    let bedrock = FakeBedrock::start().await;
    let mut daemon = start(
        &stack,
        &bedrock,
        &[("PROFILE_WORKER_CONSOLE__PATH_PREFIX", "/ops")],
    );
    wait_console(&daemon).await;

    let (status, body) = request("GET", &daemon.url("/api/overview"), &[]).await;
    assert_eq!(status, 200, "{body}");
    let o: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(o["actions_enabled"], false);
    assert!(
        o["jobs"].is_array() && o["queue"]["visible"].is_u64(),
        "{o}"
    );
    assert!(o["problems"].as_array().unwrap().is_empty(), "{o}");

    // Behind an ingress that keeps the prefix, and with X-Forwarded-Prefix.
    let (status, page) = request("GET", &daemon.url("/ops/"), &[]).await;
    assert_eq!(status, 200);
    assert!(page.contains("<base href=\"/ops/\">"), "{page}");
    assert!(
        !page.contains("id=\"token\""),
        "actions are off without a token"
    );
    let (_, page) = request(
        "GET",
        &daemon.url("/"),
        &[("X-Forwarded-Prefix", "/tools/pw")],
    )
    .await;
    assert!(page.contains("<base href=\"/tools/pw/\">"));

    // Actions are disabled, whatever the caller sends.
    let (status, _) = request(
        "POST",
        &daemon.url("/api/dlq/redrive"),
        &[("Authorization", "Bearer anything-at-all-0123")],
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(request("POST", &daemon.url("/"), &[]).await.0, 405);

    daemon.terminate(Duration::from_secs(60));
}

#[tokio::test]
async fn dlq_cli_lists_without_consuming_and_redrives() {
    let stack = Stack::new().await;
    stack
        .queue
        .client
        .send_message()
        .queue_url(&stack.queue.dlq_url)
        .message_body("{\"entity_type\": \"author\"}")
        .message_attributes(
            "reason",
            aws_sdk_sqs::types::MessageAttributeValue::builder()
                .data_type("String")
                .string_value("entity_id is missing")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    for _ in 0..2 {
        let listed = stack.json(&["dlq", "list", "--json"]);
        let recent = listed["recent"].as_array().unwrap();
        assert_eq!(recent.len(), 1, "{listed}");
        assert_eq!(recent[0]["attributes"]["reason"], "entity_id is missing");
        assert_eq!(recent[0]["body_preview"], "{\"entity_type\": \"author\"}");
    }
    let (code, out, err) = stack.cli(&["dlq", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("reason=entity_id is missing"), "{out}");

    let moved = stack.json(&["dlq", "redrive", "--json"]);
    assert_eq!(
        (moved["status"].as_str(), moved["moved"].as_u64()),
        (Some("COMPLETED"), Some(1)),
        "{moved}"
    );
    let back = stack.queue.drain().await;
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].body(), Some("{\"entity_type\": \"author\"}"));
    assert_eq!(
        stack.json(&["dlq", "list", "--json"])["recent"],
        serde_json::json!([])
    );
}
