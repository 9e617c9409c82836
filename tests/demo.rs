//! `profile-worker demo`: the real consumer and pipeline on the bundled sample, with no service.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::daemon::{command, http, run_to_end};
use support::db::TestDb;

/// What the summary must say, worked out from the data file independently of the daemon:
/// (collection entities, profiles already fresh).
fn expected_counts() -> (usize, usize) {
    let sample: serde_json::Value =
        serde_json::from_str(include_str!("../data/sample-collection.json")).unwrap();
    let mut latest: BTreeMap<(String, i64), String> = BTreeMap::new();
    for book in sample["books"].as_array().unwrap() {
        if !["ON_HAND", "IN_TRANSIT"].contains(&book["status"].as_str().unwrap()) {
            continue;
        }
        for (key, kind) in [
            ("author_id", "author"),
            ("publisher_id", "publisher"),
            ("binder_id", "binder"),
        ] {
            if let Some(id) = book[key].as_i64() {
                let updated = book["updated_at"].as_str().unwrap().to_string();
                let slot = latest.entry((kind.to_string(), id)).or_default();
                if *slot < updated {
                    *slot = updated;
                }
            }
        }
    }
    let fresh = sample["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            let key = (
                p["entity_type"].as_str().unwrap().to_string(),
                p["entity_id"].as_i64().unwrap(),
            );
            latest
                .get(&key)
                .is_some_and(|l| l.as_str() < p["generated_at"].as_str().unwrap())
        })
        .count();
    let entities: BTreeSet<_> = latest.keys().collect();
    (entities.len(), fresh)
}

fn demo(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    run_to_end(
        command()
            .arg("demo")
            .args(args)
            .env("PROFILE_WORKER_SERVER__LISTEN", "127.0.0.1:0")
            .envs(envs.iter().copied()),
    )
}

fn pass_line(out: &str, pass: usize) -> String {
    out.lines()
        .find(|l| l.starts_with(&format!("pass {pass}:")))
        .unwrap_or_else(|| panic!("no pass {pass} in:\n{out}"))
        .to_string()
}

#[test]
fn demo_summary_matches_the_sample_collection_and_second_pass_skips_all() {
    let (entities, fresh) = expected_counts();
    let (code, out, err) = demo(&["--latency-ms", "5", "--twice", "--no-progress"], &[]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let first = pass_line(&out, 1);
    assert!(first.contains("completed"), "{first}");
    assert!(
        first.contains(&format!(
            "{entities} entities: {} generated, {fresh} skipped, 0 failed",
            entities - fresh
        )),
        "{first}"
    );
    let second = pass_line(&out, 2);
    assert!(
        second.contains(&format!(
            "{entities} entities: 0 generated, {entities} skipped, 0 failed"
        )),
        "{second}"
    );
    assert!(out.contains("efficiency"), "{out}");
    assert!(out.contains("sample profile: "), "{out}");
}

#[tokio::test]
async fn demo_metrics_show_the_run_while_it_goes() {
    let mut child = command()
        .args(["demo", "--latency-ms", "100", "--no-progress"])
        .env("PROFILE_WORKER_SERVER__LISTEN", "127.0.0.1:0")
        .env("PROFILE_WORKER_LOG__FORMAT", "json")
        .env("PROFILE_WORKER_LOG__LEVEL", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if v["message"] == "side server listening" {
                let _ = tx.send(v["addr"].as_str().unwrap().to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("demo reports its side server");
    let deadline = Instant::now() + Duration::from_secs(60);
    let in_flight_seen = loop {
        let (status, _, body) = http("GET", &format!("http://{addr}/metrics")).await;
        assert_eq!(status, 200);
        let scrape =
            prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
        let value = |name: &str| {
            scrape
                .samples
                .iter()
                .filter(|s| s.metric == name)
                .map(|s| match s.value {
                    prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
                    _ => 0.0,
                })
                .sum::<f64>()
        };
        if value("profile_worker_messages_received_total") > 0.0
            && value("profile_worker_in_flight") > 0.0
        {
            break true;
        }
        if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        in_flight_seen,
        "the demo's /metrics never showed messages in flight"
    );
    let status = child.wait().unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn demo_runs_against_postgresql() {
    let db = TestDb::migrated().await;
    let (entities, fresh) = expected_counts();
    let (code, out, err) = demo(
        &[
            "--latency-ms",
            "1",
            "--no-progress",
            "--database-url",
            &db.url,
        ],
        &[],
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("store PostgreSQL"), "{out}");
    assert!(
        pass_line(&out, 1).contains(&format!(
            "{} generated, {fresh} skipped, 0 failed",
            entities - fresh
        )),
        "{out}"
    );
    use diesel::sql_types::BigInt;
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let mut conn = db.conn().await;
    let offline: Count = diesel::sql_query(
        "SELECT COUNT(*) AS n FROM entity_profiles WHERE model_version = 'offline'",
    )
    .get_result(&mut conn)
    .await
    .unwrap();
    assert_eq!(offline.n as usize, entities - fresh);
    let completed: Count = diesel::sql_query(
        "SELECT COUNT(*) AS n FROM profile_generation_jobs WHERE status = 'completed'",
    )
    .get_result(&mut conn)
    .await
    .unwrap();
    assert_eq!(completed.n, 1);

    // The database now holds profiles: a second demo needs to be told it may share it.
    let args = [
        "--latency-ms",
        "1",
        "--no-progress",
        "--database-url",
        &db.url,
    ];
    let (code, out, err) = demo(&args, &[]);
    assert_ne!(code, 0, "stdout:\n{out}");
    assert!(err.contains("stored profile(s)"), "{err}");
    assert!(err.contains("--allow-shared-database"), "{err}");
    let mut allowed = args.to_vec();
    allowed.push("--allow-shared-database");
    let (code, out, err) = demo(&allowed, &[]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
}

#[tokio::test]
async fn demo_refuses_a_database_the_api_manages() {
    let db = TestDb::empty().await;
    db.exec(include_str!("data/api-schema-alembic-head.sql"))
        .await;
    let (code, out, err) = demo(&["--no-progress", "--database-url", &db.url], &[]);
    assert_ne!(code, 0, "stdout:\n{out}");
    assert!(err.contains("alembic_version"), "{err}");
    assert!(err.contains("--allow-shared-database"), "{err}");
    let mut conn = db.conn().await;
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        s: Option<String>,
    }
    let schema: Name = diesel::sql_query("SELECT to_regnamespace('profile_worker')::text AS s")
        .get_result(&mut conn)
        .await
        .unwrap();
    assert_eq!(schema.s, None, "nothing migrated");
}
