//! Migrations, the `migrate` subcommand and the start-up schema check, against real PostgreSQL.

mod support;

use diesel::QueryableByName;
use diesel::sql_types::{Nullable, Text};
use diesel_async::RunQueryDsl;
use profile_worker::model::EntityType;
use profile_worker::store::migrate::{MIGRATIONS, run_migrations};
use profile_worker::store::schema_check::SchemaError;
use profile_worker::store::{JobStore, PgStore, ProfileStore};
use support::db::{TestDb, load_fixture};

const DOMAIN_TABLES: &str = "'users','authors','publishers','binders','books','entity_profiles',\
                             'ai_connections','profile_generation_jobs','app_config'";

#[derive(QueryableByName)]
struct One {
    #[diesel(sql_type = Nullable<Text>)]
    s: Option<String>,
}

async fn text(db: &TestDb, sql: &str) -> String {
    let row: One = diesel::sql_query(sql)
        .get_result(&mut db.conn().await)
        .await
        .unwrap_or_else(|e| panic!("{e}: {sql}"));
    row.s.unwrap_or_default()
}

/// Columns, indexes and constraints of the domain tables, as one sorted text.
async fn domain_shape(db: &TestDb) -> String {
    text(
        db,
        &format!(
            "SELECT string_agg(x, E'\\n' ORDER BY x) AS s FROM ( \
               SELECT 'col ' || table_name || '.' || column_name || ' ' || data_type || ' ' \
                      || is_nullable || ' ' || coalesce(column_default, '') AS x \
               FROM information_schema.columns \
               WHERE table_schema = 'public' AND table_name IN ({DOMAIN_TABLES}) \
               UNION ALL SELECT 'idx ' || indexdef FROM pg_indexes \
               WHERE schemaname = 'public' AND tablename IN ({DOMAIN_TABLES}) \
               UNION ALL SELECT 'con ' || conrelid::regclass::text || ' ' || conname || ' ' \
                      || pg_get_constraintdef(oid) FROM pg_constraint \
               WHERE connamespace = 'public'::regnamespace \
                 AND conrelid::regclass::text IN ({DOMAIN_TABLES})) shape"
        ),
    )
    .await
}

/// Every row of every domain table, as one text.
async fn domain_rows(db: &TestDb) -> String {
    let mut out = String::new();
    for table in DOMAIN_TABLES.split(',') {
        let table = table.trim_matches('\'');
        let rows = text(
            db,
            &format!("SELECT string_agg(t::text, E'\\n' ORDER BY t::text) AS s FROM {table} t"),
        )
        .await;
        out.push_str(&format!("{table}:\n{rows}\n"));
    }
    out
}

async fn table_exists(db: &TestDb, table: &str) -> bool {
    text(
        db,
        &format!("SELECT to_regclass('public.{table}')::text AS s"),
    )
    .await
        == table
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_build_an_empty_database_and_rerun_as_a_no_op() {
    let db = TestDb::empty().await;
    let applied = run_migrations(&db.url).await.expect("first run");
    assert_eq!(applied.len(), 2, "both migrations applied: {applied:?}");
    let shape = domain_shape(&db).await;
    for expected in [
        "uq_entity_profile UNIQUE (entity_type, entity_id)",
        "uq_ai_connection UNIQUE (source_type, source_id, target_type, target_id, relationship)",
        "CREATE INDEX ix_ai_connections_source ON public.ai_connections USING btree (source_type, source_id)",
        "CREATE INDEX ix_ai_connections_target ON public.ai_connections USING btree (target_type, target_id)",
        "CREATE INDEX ix_profile_generation_jobs_status ON public.profile_generation_jobs USING btree (status)",
        "col entity_profiles.personal_stories json YES",
        "col entity_profiles.relationship_stories json YES",
        "col profile_generation_jobs.id character varying NO",
    ] {
        assert!(shape.contains(expected), "missing {expected:?} in\n{shape}");
    }
    assert!(table_exists(&db, "profile_generation_job_items").await);
    assert!(table_exists(&db, "profile_generations").await);
    db.store().check_schema().await.expect("schema complete");

    let again = run_migrations(&db.url).await.expect("second run");
    assert!(again.is_empty(), "nothing pending: {again:?}");
    assert_eq!(domain_shape(&db).await, shape);
}

/// The original's tables as its Alembic history leaves them: extra API-only columns, default
/// constraint names, an `alembic_version` table, and rows.
const ALEMBIC_SCHEMA: &str = r#"
CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num));
INSERT INTO alembic_version VALUES ('e9a5101c8557');
CREATE TABLE users (id SERIAL NOT NULL, cognito_sub VARCHAR(100) NOT NULL, email VARCHAR(255), role VARCHAR(20) NOT NULL,
  mfa_exempt BOOLEAN DEFAULT false NOT NULL, created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
  updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, PRIMARY KEY (id), UNIQUE (cognito_sub));
CREATE TABLE authors (id SERIAL NOT NULL, name VARCHAR(200) NOT NULL, birth_year INTEGER, death_year INTEGER,
  era VARCHAR(50), first_acquired_date DATE, priority_score INTEGER DEFAULT 0 NOT NULL, tier VARCHAR(10),
  preferred BOOLEAN DEFAULT false NOT NULL, image_url VARCHAR(500), created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
  PRIMARY KEY (id), CONSTRAINT uq_authors_name UNIQUE (name));
CREATE TABLE publishers (id SERIAL NOT NULL, name VARCHAR(100) NOT NULL, tier VARCHAR(10), founded_year INTEGER,
  description TEXT, preferred BOOLEAN DEFAULT false NOT NULL, image_url VARCHAR(500), PRIMARY KEY (id), UNIQUE (name));
CREATE TABLE binders (id SERIAL NOT NULL, name VARCHAR(100) NOT NULL, tier VARCHAR(20), full_name VARCHAR(200),
  authentication_markers TEXT, preferred BOOLEAN DEFAULT false NOT NULL, image_url VARCHAR(500), founded_year INTEGER,
  closed_year INTEGER, PRIMARY KEY (id), UNIQUE (name));
CREATE TABLE books (id SERIAL NOT NULL, title VARCHAR(500) NOT NULL, author_id INTEGER, publisher_id INTEGER,
  binder_id INTEGER, status VARCHAR(20) NOT NULL, year_start INTEGER, year_end INTEGER, edition VARCHAR(100),
  condition_grade VARCHAR(20), value_mid NUMERIC(10, 2), purchase_date DATE, is_first_edition BOOLEAN,
  inventory_type VARCHAR(20) DEFAULT 'PRIMARY' NOT NULL, tracking_last_checked TIMESTAMP WITH TIME ZONE,
  created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
  PRIMARY KEY (id), FOREIGN KEY(author_id) REFERENCES authors (id), FOREIGN KEY(publisher_id) REFERENCES publishers (id),
  FOREIGN KEY(binder_id) REFERENCES binders (id));
CREATE INDEX books_status_idx ON books (status);
CREATE INDEX books_author_id_idx ON books (author_id);
CREATE INDEX books_publisher_id_idx ON books (publisher_id);
CREATE INDEX books_binder_id_idx ON books (binder_id);
CREATE INDEX ix_books_is_first_edition ON books (is_first_edition);
CREATE TABLE entity_profiles (id SERIAL NOT NULL, entity_type VARCHAR(20) NOT NULL, entity_id INTEGER NOT NULL,
  bio_summary TEXT, personal_stories JSON, connection_narratives JSON, relationship_stories JSON, ai_connections JSON,
  generated_at TIMESTAMP WITH TIME ZONE NOT NULL, model_version VARCHAR(100),
  created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
  PRIMARY KEY (id), CONSTRAINT uq_entity_profile UNIQUE (entity_type, entity_id));
CREATE TABLE ai_connections (id SERIAL NOT NULL, source_type VARCHAR(20) NOT NULL, source_id INTEGER NOT NULL,
  target_type VARCHAR(20) NOT NULL, target_id INTEGER NOT NULL, relationship VARCHAR(20) NOT NULL, sub_type VARCHAR(50),
  confidence FLOAT DEFAULT 0.5 NOT NULL, evidence TEXT, created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
  updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, PRIMARY KEY (id),
  CONSTRAINT uq_ai_connection UNIQUE (source_type, source_id, target_type, target_id, relationship));
CREATE INDEX ix_ai_connections_source ON ai_connections (source_type, source_id);
CREATE INDEX ix_ai_connections_target ON ai_connections (target_type, target_id);
CREATE TABLE profile_generation_jobs (id VARCHAR(36) NOT NULL, status VARCHAR(20) DEFAULT 'pending' NOT NULL,
  owner_id INTEGER NOT NULL, total_entities INTEGER DEFAULT 0 NOT NULL, succeeded INTEGER DEFAULT 0 NOT NULL,
  failed INTEGER DEFAULT 0 NOT NULL, error_log TEXT, completed_at TIMESTAMP WITH TIME ZONE,
  created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
  PRIMARY KEY (id), FOREIGN KEY(owner_id) REFERENCES users (id));
CREATE INDEX ix_profile_generation_jobs_status ON profile_generation_jobs (status);
CREATE TABLE app_config (key VARCHAR(100) NOT NULL, value VARCHAR(500) NOT NULL, description VARCHAR(500),
  updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, updated_by VARCHAR(100), PRIMARY KEY (key));

INSERT INTO users (id, cognito_sub, email, role) VALUES (1, 'sub-1', 'admin@example.com', 'admin');
INSERT INTO authors (id, name, birth_year, death_year) VALUES (1, 'Charles Dickens', 1812, 1870);
INSERT INTO publishers (id, name, founded_year) VALUES (1, 'Chapman & Hall', 1830);
INSERT INTO binders (id, name) VALUES (1, 'Riviere');
INSERT INTO books (id, title, author_id, publisher_id, binder_id, status, year_start)
  VALUES (1, 'Bleak House', 1, 1, 1, 'ON_HAND', 1853);
INSERT INTO entity_profiles (entity_type, entity_id, bio_summary, relationship_stories, generated_at, model_version)
  VALUES ('author', 1, 'Novelist.', '{"author:1:publisher:1": {"summary": "x"}}', '2026-01-01T00:00:00Z', 'm');
INSERT INTO ai_connections (source_type, source_id, target_type, target_id, relationship, confidence)
  VALUES ('author', 1, 'publisher', 1, 'collaboration', 0.9);
INSERT INTO profile_generation_jobs (id, status, owner_id, total_entities) VALUES ('job-1', 'in_progress', 1, 3);
INSERT INTO app_config (key, value) VALUES ('model.entity_profiles', 'sonnet');
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_leave_an_alembic_database_and_its_rows_untouched() {
    let db = TestDb::empty().await;
    db.exec(ALEMBIC_SCHEMA).await;
    let shape = domain_shape(&db).await;
    let rows = domain_rows(&db).await;
    assert!(!table_exists(&db, "profile_generation_job_items").await);

    let applied = run_migrations(&db.url).await.expect("migrations apply");
    assert_eq!(applied.len(), 2);
    assert_eq!(domain_shape(&db).await, shape, "domain tables changed");
    assert_eq!(domain_rows(&db).await, rows, "domain rows changed");
    assert_eq!(
        text(&db, "SELECT version_num::text AS s FROM alembic_version").await,
        "e9a5101c8557"
    );
    assert!(table_exists(&db, "profile_generation_job_items").await);
    assert!(table_exists(&db, "profile_generations").await);
    let store = db.store();
    store.check_schema().await.expect("schema complete");
    assert_eq!(
        store.model_setting().await.unwrap().as_deref(),
        Some("sonnet")
    );
    assert_eq!(store.job("job-1").await.unwrap().unwrap().total_entities, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_migrate_runs_both_succeed() {
    let db = TestDb::empty().await;
    let (a, b) = tokio::join!(run_migrations(&db.url), run_migrations(&db.url));
    let (a, b) = (a.expect("first run"), b.expect("second run"));
    assert_eq!(
        a.len() + b.len(),
        2,
        "each migration applied once: {a:?} {b:?}"
    );
    db.store().check_schema().await.expect("schema complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_check_names_what_is_missing_or_wrong() {
    let db = TestDb::migrated().await;
    let store = db.store();
    store.check_schema().await.expect("complete schema passes");

    db.exec("ALTER TABLE books DROP COLUMN year_start").await;
    let err = store.check_schema().await.expect_err("column dropped");
    assert!(
        matches!(&err, SchemaError::MissingColumn { table, column } if table == "books" && column == "year_start"),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("books.year_start"), "{message}");
    assert!(message.contains("profile-worker migrate"), "{message}");

    db.exec("ALTER TABLE books ADD COLUMN year_start INTEGER")
        .await;
    db.exec("ALTER TABLE entity_profiles ALTER COLUMN personal_stories TYPE jsonb")
        .await;
    let err = store.check_schema().await.expect_err("jsonb is not json");
    assert!(
        err.to_string()
            .contains("entity_profiles.personal_stories has type jsonb"),
        "{err}"
    );

    db.exec("ALTER TABLE entity_profiles ALTER COLUMN personal_stories TYPE json")
        .await;
    db.exec("DROP TABLE profile_generations").await;
    let err = store.check_schema().await.expect_err("table dropped");
    assert!(
        matches!(&err, SchemaError::MissingTable { table } if table == "profile_generations"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_collection_loads_into_a_migrated_database() {
    let db = TestDb::migrated().await;
    load_fixture(&db).await;
    let store: PgStore = db.store();
    let entities = store.collection_entities().await.unwrap();
    assert_eq!(entities.len(), 264);
    assert_eq!(entities[0].entity.entity_type, EntityType::Author);
    let rows = store.graph_rows(true, 5000).await.unwrap();
    assert_eq!(rows.books.len(), 1000);
    assert_eq!(rows.ai_connections.len(), 119);
    assert!(rows.books.windows(2).all(|w| w[0].id < w[1].id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_subcommand_applies_migrations_and_needs_a_database_url() {
    let db = TestDb::empty().await;
    let bin = env!("CARGO_BIN_EXE_profile-worker");
    let run = move |url: Option<&str>| {
        let mut cmd = std::process::Command::new(bin);
        // A clean environment: cargo exports the build script's PROFILE_WORKER_BUILD_DATE and
        // PROFILE_WORKER_COMMIT to test processes, which the config loader would read as keys.
        cmd.arg("migrate")
            .env_clear()
            .env("PROFILE_WORKER_LOG__FORMAT", "pretty");
        if let Some(url) = url {
            cmd.env("PROFILE_WORKER_DATABASE__URL", url);
        }
        cmd.output().expect("binary runs")
    };
    let out = tokio::task::spawn_blocking({
        let url = db.url.clone();
        move || (run(Some(&url)), run(Some(&url)), run(None))
    })
    .await
    .unwrap();
    let (first, second, missing) = out;
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        String::from_utf8_lossy(&first.stdout)
            .contains(&format!("applied {} migration(s)", MIGRATIONS_COUNT))
    );
    assert!(String::from_utf8_lossy(&second.stdout).contains("applied 0 migration(s)"));
    assert_eq!(missing.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("database.url"));
    db.store().check_schema().await.expect("schema complete");
}

const MIGRATIONS_COUNT: usize = 2;

#[test]
fn embedded_migrations_are_the_two_directories() {
    use diesel::migration::MigrationSource;
    let migrations: Vec<_> = MigrationSource::<diesel::pg::Pg>::migrations(&MIGRATIONS).unwrap();
    assert_eq!(migrations.len(), MIGRATIONS_COUNT);
}
