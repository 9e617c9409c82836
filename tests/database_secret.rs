//! Database credentials from Secrets Manager (moto's), read the way the original worker read them:
//! `migrate` and `run` find the secret through the original's `DATABASE_SECRET_ARN`, and after a
//! password rotation (new password in PostgreSQL and in the secret, old sessions cut) the daemon
//! re-reads the secret and carries on. The database is a private PostgreSQL that checks passwords.

mod support;

use std::time::Duration;

use profile_worker::model::EntityRef;
use profile_worker::pipeline::message::Message;
use profile_worker::store::{PgStore, ProfileStore};
use support::daemon::{Daemon, command};
use support::postgres::OwnPostgres;
use support::sqs::{TestQueue, eventually, moto_url};

const HANG_GUARD: Duration = Duration::from_secs(120);

/// Credentials of role `app` with `password` on the test's database `books`.
fn credentials(pg: &OwnPostgres, password: &str) -> String {
    support::secrets::credentials_of(&format!(
        "postgres://app:{}@127.0.0.1:{}/books",
        percent_encoding::utf8_percent_encode(password, percent_encoding::NON_ALPHANUMERIC),
        pg.port
    ))
}

/// The environment of a process that knows the database only by its secret.
fn env(arn: &str) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_SECRET_ARN", arn.to_owned()),
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto_url()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", "us-east-1".into()),
    ]
}

/// A private PostgreSQL with role `app` (password `first/pass@1`) owning database `books`.
async fn password_checked_database() -> OwnPostgres {
    let pg = OwnPostgres::start().await;
    pg.create_database("books").await;
    pg.exec(
        "postgres",
        "CREATE ROLE app LOGIN PASSWORD 'first/pass@1'; ALTER DATABASE books OWNER TO app;",
    )
    .await;
    pg.exec("books", "ALTER SCHEMA public OWNER TO app;").await;
    pg.require_passwords();
    pg
}

/// A person's regenerate request for `entity`.
fn request(entity: EntityRef) -> String {
    Message {
        job_id: None,
        entity,
        force: false,
    }
    .body()
}

async fn profile_exists(store: &PgStore, entity: EntityRef) -> bool {
    store.profile(entity).await.is_ok_and(|p| p.is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_and_run_follow_the_secret_through_a_rotation() {
    let pg = password_checked_database().await;
    let arn = support::secrets::create(credentials(&pg, "first/pass@1")).await;

    // `migrate` knows the database only through the secret.
    let out = command()
        .args(["migrate", "--standalone"])
        .envs(env(&arn))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "migrate with the secret: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fixture = std::fs::read_to_string(support::db::FIXTURE_PATH).unwrap();
    pg.exec("books", &fixture).await;
    let observer = PgStore::connect(&support::db::config_for(&pg.url("books"))).unwrap();
    let authors = support::db::collection_authors(&observer, 2).await;

    let queue = TestQueue::create(&moto_url(), 3).await;
    let mut daemon_env = env(&arn);
    daemon_env.extend([
        ("PROFILE_WORKER_QUEUE__URL", queue.url.clone()),
        ("PROFILE_WORKER_QUEUE__ENDPOINT_URL", queue.endpoint.clone()),
        ("PROFILE_WORKER_CONSUMER__WAIT_SECONDS", "1".into()),
        ("PROFILE_WORKER_GENERATOR__BACKEND", "offline".into()),
    ]);
    let pairs: Vec<(&str, &str)> = daemon_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let daemon = Daemon::start(&pairs);
    daemon.wait_ready(HANG_GUARD).await;
    queue.send(&request(authors[0])).await;
    eventually("a profile with the first password", HANG_GUARD, || {
        profile_exists(&observer, authors[0])
    })
    .await;

    // Rotation: new password in the database and in the secret; the old sessions are cut, so
    // the pool must log in again.
    pg.exec("postgres", "ALTER ROLE app PASSWORD 'second:pass#2'")
        .await;
    support::secrets::client()
        .await
        .put_secret_value()
        .secret_id(&arn)
        .secret_string(credentials(&pg, "second:pass#2"))
        .send()
        .await
        .expect("PutSecretValue");
    pg.exec(
        "postgres",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app'",
    )
    .await;
    queue.send(&request(authors[1])).await;
    eventually("a profile after the rotation", HANG_GUARD, || {
        profile_exists(&observer, authors[1])
    })
    .await;
    let logs = daemon.logs();
    assert!(
        logs.contains("database credentials rotated"),
        "the daemon re-read the secret: {logs}"
    );
    assert!(!logs.contains("first/pass@1") && !logs.contains("second:pass#2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_stops_migrate_naming_the_key() {
    let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:pw-test/absent-AbCdEf";
    let out = command().arg("migrate").envs(env(arn)).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "migrate without a usable secret fails"
    );
    assert!(
        stderr.contains("database.secret_id") && stderr.contains("ResourceNotFoundException"),
        "{stderr}"
    );
}
