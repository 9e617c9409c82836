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
async fn sslmode_require_encrypts_and_plain_urls_do_not() {
    let db = TestDb::migrated().await;
    assert!(!uses_tls(&db.url).await, "no sslmode: plain TCP as before");
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
