//! TLS to PostgreSQL as libpq's `sslmode` asks (the local server runs with `ssl = on` and a
//! self-signed certificate, as Debian sets it up).

mod support;

use diesel::sql_types::Bool;
use diesel_async::RunQueryDsl;
use profile_worker::store::{Store, migrate, tls};
use support::db::TestDb;

#[derive(diesel::QueryableByName)]
struct Ssl {
    #[diesel(sql_type = Bool)]
    ssl: bool,
}

async fn uses_tls(url: &str) -> bool {
    let mut conn = tls::establish(url).await.expect("connects");
    let row: Ssl = diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .get_result(&mut conn)
        .await
        .unwrap();
    row.ssl
}

#[tokio::test]
async fn sslmode_require_encrypts_and_disable_does_not() {
    let db = TestDb::migrated().await;
    assert!(
        uses_tls(&db.url).await,
        "no sslmode is libpq's prefer: TLS when the server offers it"
    );
    assert!(!uses_tls(&format!("{}?sslmode=disable", db.url)).await);
    let required = format!("{}?sslmode=require", db.url);
    assert!(uses_tls(&required).await, "sslmode=require must encrypt");

    // The pool and the migrations take the same path.
    let mut config = db.config();
    config.url = profile_worker::config::SecretUrl::new(required.clone());
    let store = profile_worker::store::PgStore::connect(&config).unwrap();
    store.ping().await.expect("pooled TLS connection works");
    let applied =
        migrate::run_migrations(&required, support::db::SCHEMA, migrate::Mode::Standalone);
    assert!(applied.await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_falls_back_to_plain_when_the_server_has_no_tls() {
    let pg = support::postgres::OwnPostgres::start().await;
    let url = pg.url("postgres");
    for url in [url.clone(), format!("{url}?sslmode=prefer")] {
        assert!(
            !uses_tls(&url).await,
            "{url}: plain TCP after the server declined TLS"
        );
    }
    let err = tls::establish(&format!("{url}?sslmode=require"))
        .await
        .err()
        .expect("require refuses a server without TLS");
    assert!(err.to_string().to_lowercase().contains("tls"), "{err}");
}

#[tokio::test]
async fn verify_full_rejects_a_self_signed_server_certificate() {
    let db = TestDb::migrated().await;
    let err = tls::establish(&format!("{}?sslmode=verify-full", db.url))
        .await
        .err()
        .expect("an untrusted certificate must be refused");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
}
