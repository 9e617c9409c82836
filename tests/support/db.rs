//! A fresh PostgreSQL database per test: `pw_<random>` created from `PW_TEST_DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`), dropped `WITH (FORCE)` on drop.

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use profile_worker::config::{DatabaseConfig, SecretUrl};
use profile_worker::store::PgStore;
use profile_worker::store::connection::use_schema;
use profile_worker::store::migrate::{Mode, run_migrations};

/// The daemon's schema in test databases (the configuration's default).
pub const SCHEMA: &str = "profile_worker";

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The collection the original's graph fixture was built from (INSERTs only).
pub const FIXTURE_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/fixtures/collection-small.sql"
);

/// Adds user `id` with `role` (`sub-<id>` as its Cognito subject).
pub async fn add_user(db: &TestDb, id: i32, role: &str) {
    db.exec(&format!(
        "INSERT INTO users (id, cognito_sub, role) VALUES ({id}, 'sub-{id}', '{role}');"
    ))
    .await;
}

/// The first `count` authors of the collection (they have qualifying books); fails the test when
/// the loaded data has fewer.
pub async fn collection_authors(
    store: &impl profile_worker::store::ProfileStore,
    count: usize,
) -> Vec<profile_worker::model::EntityRef> {
    let authors: Vec<_> = store
        .collection_entities()
        .await
        .expect("collection entities")
        .into_iter()
        .map(|e| e.entity)
        .filter(|e| e.entity_type == profile_worker::model::EntityType::Author)
        .take(count)
        .collect();
    assert_eq!(authors.len(), count, "the data has {count} authors");
    authors
}

/// One throw-away database.
pub struct TestDb {
    /// URL of the test database itself.
    pub url: String,
    pub name: String,
    admin_url: String,
}

fn admin_url() -> String {
    std::env::var("PW_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_string())
}

impl TestDb {
    /// A new, empty database (no migrations applied).
    pub async fn empty() -> Self {
        let admin_url = admin_url();
        let name = format!("pw_{}", uuid::Uuid::new_v4().simple());
        let mut admin = AsyncPgConnection::establish(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {admin_url} (run scripts/test?): {e}"));
        diesel::sql_query(format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let mut url = url::Url::parse(&admin_url).expect("PW_TEST_DATABASE_URL is a URL");
        url.set_path(&name);
        Self {
            url: url.to_string(),
            name,
            admin_url,
        }
    }

    /// A new database with every migration applied and the domain tables created, as
    /// `migrate --standalone` does (no API beside it).
    pub async fn migrated() -> Self {
        let db = Self::empty().await;
        run_migrations(&db.url, SCHEMA, Mode::Standalone)
            .await
            .expect("migrations apply");
        db
    }

    /// A migrated database holding the fixture collection.
    pub async fn with_fixture() -> Self {
        let db = Self::migrated().await;
        load_fixture(&db).await;
        db
    }

    /// A direct connection (not pooled), with the daemon's schema first on the search path as
    /// the daemon's own connections have it.
    pub async fn conn(&self) -> AsyncPgConnection {
        let mut conn = AsyncPgConnection::establish(&self.url)
            .await
            .expect("connect to test database");
        use_schema(&mut conn, SCHEMA)
            .await
            .expect("set the search path");
        conn
    }

    /// Runs one or more SQL statements.
    pub async fn exec(&self, sql: &str) {
        self.conn()
            .await
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("SQL failed: {e}\n{sql}"));
    }

    /// Database settings pointing at this database.
    pub fn config(&self) -> DatabaseConfig {
        config_for(&self.url)
    }

    /// A `PgStore` on this database.
    pub fn store(&self) -> PgStore {
        PgStore::connect(&self.config()).expect("pool builds")
    }
}

/// The daemon's database settings for `url` (a pool a little larger than the default).
pub fn config_for(url: &str) -> DatabaseConfig {
    DatabaseConfig {
        url: SecretUrl::new(url.to_owned()),
        secret_id: String::new(),
        pool_size: 12,
        statement_timeout_ms: 30_000,
        schema: SCHEMA.into(),
        migrate_on_start: false,
    }
}

/// Loads `reference/fixtures/collection-small.sql` into a migrated database.
pub async fn load_fixture(db: &TestDb) {
    let sql = std::fs::read_to_string(FIXTURE_PATH)
        .unwrap_or_else(|e| panic!("cannot read {FIXTURE_PATH}: {e}"));
    db.exec(&sql).await;
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop may run inside a runtime, which cannot be blocked on; use a thread of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let mut admin = AsyncPgConnection::establish(&admin_url).await?;
                diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(_))) {
            eprintln!("warning: test database {} was not dropped", self.name);
        }
    }
}
