//! The binary as a user meets it: help, version, configuration errors, `config`, `healthcheck`.

mod support;

use std::io::Write;

use support::daemon::{self, command, run_to_end};

fn run(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    run_to_end(command().args(args).envs(envs.iter().copied()))
}

#[test]
fn help_lists_the_subcommands() {
    let (code, out, _) = run(&["--help"], &[]);
    assert_eq!(code, 0);
    for sub in ["run", "config", "healthcheck", "version"] {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(sub)),
            "{sub} missing from:\n{out}"
        );
    }
}

#[test]
fn version_prints_version_and_commit() {
    let (code, out, _) = run(&["version"], &[]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with(&format!(
            "profile-worker {} (commit ",
            env!("CARGO_PKG_VERSION")
        )),
        "{out}"
    );
    let commit = out
        .split("(commit ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap();
    assert!(!commit.is_empty());
}

#[test]
fn out_of_range_env_value_exits_64_naming_key_and_variable() {
    rejects(
        &["config"],
        &[("PROFILE_WORKER_CONSUMER__CONCURRENCY", "0")],
        "consumer.concurrency = 0 (from PROFILE_WORKER_CONSUMER__CONCURRENCY): must be 1..=100",
    );
}

#[test]
fn out_of_range_file_value_exits_64_naming_key_and_file() {
    let (_file, path) = config_file("[consumer]\nwait_seconds = 25\n");
    rejects(
        &["--config", &path, "config"],
        &[],
        &format!("consumer.wait_seconds = 25 (from {path}): must be 1..=20"),
    );
}

#[test]
fn unknown_keys_are_rejected_in_files_and_environment() {
    let (_file, path) = config_file("[consumer]\nconcurency = 3\n");
    let err = rejects(&["--config", &path, "config"], &[], "consumer.concurency");
    assert!(err.contains(&path) && err.contains("unknown key"), "{err}");

    let err = rejects(
        &["config"],
        &[("PROFILE_WORKER_QUEUE__NAMEE", "x")],
        "queue.namee",
    );
    assert!(err.contains("PROFILE_WORKER_QUEUE__NAMEE"), "{err}");
}

/// Runs the binary with `args` and `envs`, asserting exit 64 and that stderr says `want`;
/// returns stderr.
fn rejects(args: &[&str], envs: &[(&str, &str)], want: &str) -> String {
    let (code, out, err) = run(args, envs);
    assert_eq!(code, 64, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains(want), "{err}");
    err
}

/// A config file holding `body`, and its path.
fn config_file(body: &str) -> (tempfile::NamedTempFile, String) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    write!(file, "{body}").unwrap();
    let path = file.path().to_str().unwrap().to_string();
    (file, path)
}

#[test]
fn unknown_env_keys_are_named_as_the_variable_was_written() {
    let err = rejects(
        &["config"],
        &[("PROFILE_WORKER_CONSUMER__BOGUS", "1")],
        "consumer.bogus = 1 (from PROFILE_WORKER_CONSUMER__BOGUS): unknown key; \
             expected one of: concurrency, wait_seconds,",
    );
    assert!(!err.contains("bogus.bogus"), "{err}");

    let err = rejects(
        &["config"],
        &[("PROFILE_WORKER_QUOTA__REQUESTS_PER_MINUTE", "60")],
        "quota.requests_per_minute = 60 (from PROFILE_WORKER_QUOTA__REQUESTS_PER_MINUTE): \
             unknown key; \"quota\" is not one of: log, server,",
    );
    assert!(!err.contains("quota.quota"), "{err}");

    // Spelled in lower case, the variable is still named exactly as set.
    rejects(
        &["config"],
        &[("PROFILE_WORKER_consumer__Bogus", "1")],
        "consumer.bogus = 1 (from PROFILE_WORKER_consumer__Bogus): unknown key",
    );
}

#[test]
fn unknown_file_keys_are_named_with_the_file() {
    let (_file, path) = config_file("[consumer]\nbogus = 1\n");
    rejects(
        &["--config", &path, "config"],
        &[],
        &format!("consumer.bogus = 1 (from {path}): unknown key; expected one of: concurrency,"),
    );

    let (_file, path) = config_file("[quota]\nrequests_per_minute = 60\n");
    rejects(
        &["--config", &path, "config"],
        &[],
        &format!(
            "quota.requests_per_minute = 60 (from {path}): unknown key; \"quota\" is not one of:"
        ),
    );
}

#[test]
fn invalid_values_are_named_with_value_and_source() {
    rejects(
        &["config"],
        &[("PROFILE_WORKER_CONSUMER__CONCURRENCY", "five")],
        "consumer.concurrency = \"five\" (from PROFILE_WORKER_CONSUMER__CONCURRENCY): invalid type",
    );
    let (_file, path) = config_file("[consumer]\nconcurrency = \"five\"\n");
    rejects(
        &["--config", &path, "config"],
        &[],
        &format!("consumer.concurrency = \"five\" (from {path}): invalid type"),
    );
    // The environment wins over the file, and the message names the layer that won.
    rejects(
        &["--config", &path, "config"],
        &[("PROFILE_WORKER_CONSUMER__CONCURRENCY", "0")],
        "consumer.concurrency = 0 (from PROFILE_WORKER_CONSUMER__CONCURRENCY): must be 1..=100",
    );
}

/// The effective configuration `config` prints for `envs`.
fn printed(envs: &[(&str, &str)]) -> toml::Value {
    let (code, out, err) = run(&["config"], envs);
    assert_eq!(code, 0, "{err}");
    toml::from_str(&out).expect("config prints TOML")
}

#[test]
fn the_originals_variables_keep_their_precedence() {
    let c = printed(&[
        ("PROFILE_WORKER_QUEUE__NAME", "ours"),
        ("PROFILE_GENERATION_QUEUE_NAME", "plain"),
        ("BMX_PROFILE_GENERATION_QUEUE_NAME", "bmx"),
        ("PROFILE_WORKER_DATABASE__URL", "postgres://ours/db"),
        ("DATABASE_URL", "postgres://plain/db"),
        ("BMX_DATABASE_URL", "postgres://bmx/db"),
        ("REDIS_URL", "redis://plain:6379"),
        ("BMX_REDIS_URL", "redis://bmx:6379"),
        ("ENTITY_PROFILE_MODEL", "sonnet"),
        ("AWS_REGION", "eu-west-3"),
    ]);
    assert_eq!(c["queue"]["name"].as_str(), Some("bmx"));
    assert_eq!(c["database"]["url"].as_str(), Some("postgres://bmx/db"));
    assert_eq!(c["cache"]["redis_url"].as_str(), Some("redis://bmx:6379"));
    assert_eq!(c["generator"]["model"].as_str(), Some("sonnet"));
    assert_eq!(c["aws"]["region"].as_str(), Some("eu-west-3"));

    // Without the BMX_ spellings the plain ones win over PROFILE_WORKER_*; empty ones are ignored.
    let c = printed(&[
        ("PROFILE_WORKER_QUEUE__NAME", "ours"),
        ("PROFILE_GENERATION_QUEUE_NAME", "plain"),
        ("BMX_PROFILE_GENERATION_QUEUE_NAME", ""),
        ("PROFILE_WORKER_DATABASE__URL", "postgres://ours/db"),
        ("DATABASE_URL", "postgres://plain/db"),
        ("BMX_DATABASE_URL", ""),
    ]);
    assert_eq!(c["queue"]["name"].as_str(), Some("plain"));
    assert_eq!(c["database"]["url"].as_str(), Some("postgres://plain/db"));

    // A bad value is reported under the variable that supplied it.
    let err = rejects(
        &["config"],
        &[
            ("DATABASE_URL", "postgres://plain/db"),
            ("BMX_DATABASE_URL", "mysql://u:hunter2@bmx/db"),
        ],
        "database.url = \"mysql://u:***@bmx/db\" (from BMX_DATABASE_URL): scheme",
    );
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn environment_values_are_taken_as_text_where_text_is_expected() {
    let url = "https://sqs.example.com/123/q?tags=[a,b]&x={1}";
    let c = printed(&[
        ("PROFILE_WORKER_QUEUE__URL", url),
        ("PROFILE_GENERATION_QUEUE_NAME", "12345"),
        ("DATABASE_URL", "postgres://u:p,w[1]@db:5432/app"),
    ]);
    assert_eq!(c["queue"]["url"].as_str(), Some(url));
    assert_eq!(c["queue"]["name"].as_str(), Some("12345"));
    assert_eq!(
        c["database"]["url"].as_str(),
        Some("postgres://u:***@db:5432/app")
    );
}

#[test]
fn configuration_traps_are_rejected_naming_the_key() {
    rejects(
        &["config"],
        &[("PROFILE_WORKER_CONSUMER__WAIT_SECONDS", "0")],
        "consumer.wait_seconds = 0 (from PROFILE_WORKER_CONSUMER__WAIT_SECONDS): must be 1..=20",
    );

    rejects(
        &["config"],
        &[
            ("PROFILE_WORKER_CONSUMER__CONCURRENCY", "8"),
            ("PROFILE_WORKER_DATABASE__POOL_SIZE", "9"),
        ],
        "database.pool_size = 9 (from PROFILE_WORKER_DATABASE__POOL_SIZE): must be at least 10",
    );

    let (_file, path) = config_file("[consumer]\nvisibility_timeout = 30\n");
    rejects(
        &["--config", &path, "config"],
        &[],
        &format!("consumer.visibility_timeout = 30 (from {path}): too short for the heartbeat"),
    );
}

#[test]
fn unparsable_url_and_bad_type_are_rejected() {
    let (code, _, err) = run(&["config"], &[("DATABASE_URL", "not a url")]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("database.url") && err.contains("(from DATABASE_URL)"),
        "{err}"
    );

    let (code, _, err) = run(
        &["config"],
        &[("PROFILE_WORKER_SERVER__LISTEN", "localhost-8080")],
    );
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("server.listen") && err.contains("PROFILE_WORKER_SERVER__LISTEN"),
        "{err}"
    );
}

#[test]
fn config_file_from_environment_variable_is_used() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "[consumer]\nconcurrency = 3").unwrap();
    let (code, out, err) = run(
        &["config"],
        &[("PROFILE_WORKER_CONFIG", file.path().to_str().unwrap())],
    );
    assert_eq!(code, 0, "{err}");
    let printed: toml::Value = toml::from_str(&out).expect("config prints TOML");
    assert_eq!(printed["consumer"]["concurrency"].as_integer(), Some(3));
}

#[test]
fn config_output_never_contains_planted_passwords() {
    let (code, out, err) = run(
        &["config"],
        &[
            (
                "DATABASE_URL",
                "postgres://app:pl4nted-db-pw@db.internal:5432/bluemoxon",
            ),
            ("BMX_REDIS_URL", "redis://:pl4nted-redis-pw@cache:6379/0"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("pl4nted"), "{out}");
    assert!(
        out.contains("postgres://app:***@db.internal:5432/bluemoxon"),
        "{out}"
    );
    assert!(out.contains("redis://:***@cache:6379/0"), "{out}");
}

#[test]
fn healthcheck_fails_when_nothing_listens() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let url = format!("http://127.0.0.1:{port}/health");
    let (code, _, err) = run(&["healthcheck", "--url", &url], &[]);
    assert_eq!(code, 1, "{err}");
}

#[tokio::test]
async fn healthcheck_passes_against_a_running_daemon() {
    let stack = daemon::Stack::new().await;
    let mut d = stack.start(&[]);
    let (code, _, err) = run(&["healthcheck", "--url", &d.url("/health")], &[]);
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = run(&["healthcheck", "--url", &d.url("/nope")], &[]);
    assert_eq!(code, 1);
    d.terminate(std::time::Duration::from_secs(30));
}

#[test]
fn usage_errors_exit_64_and_help_exits_0() {
    for args in [
        &["no-such-command"][..],
        &["--no-such-flag"][..],
        &["enqueue"][..],
        &["enqueue", "--all", "--entity", "author:1"][..],
        &["enqueue", "--entity", "dragon:1"][..],
        &["jobs", "--limit", "0"][..],
        &["status"][..],
    ] {
        let (code, out, err) = run(args, &[]);
        assert_eq!(code, 64, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert!(err.starts_with("error:"), "{args:?}: {err}");
    }
    for args in [
        &["--help"][..],
        &["enqueue", "--help"][..],
        &["--version"][..],
    ] {
        let (code, out, _) = run(args, &[]);
        assert_eq!(code, 0, "{args:?}");
        assert!(!out.is_empty(), "{args:?}");
    }
}

#[test]
fn the_production_binary_has_no_hidden_diagnostic_flag() {
    let (code, _, err) = run(&["--diagnostic-hold-ms", "1", "run"], &[]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--diagnostic-hold-ms"), "{err}");
}
