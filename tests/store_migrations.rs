//! Migrations, the `migrate` subcommand and the start-up schema check, against real PostgreSQL.

mod support;

use diesel::QueryableByName;
use diesel::sql_types::{Nullable, Text};
use diesel_async::RunQueryDsl;
use profile_worker::model::EntityType;
use profile_worker::store::migrate::{MIGRATIONS, MigrateError, Mode, run_migrations};
use profile_worker::store::schema_check::{Problem, SchemaError};
use profile_worker::store::{JobStore, PgStore, ProfileStore};
use support::db::{SCHEMA, TestDb, load_fixture};

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

async fn table_exists(db: &TestDb, schema: &str, table: &str) -> bool {
    !text(
        db,
        &format!("SELECT to_regclass('{schema}.{table}')::text AS s"),
    )
    .await
    .is_empty()
}

/// Foreign keys from the daemon's schema into any other schema.
async fn foreign_keys_out(db: &TestDb) -> String {
    text(
        db,
        &format!(
            "SELECT string_agg(c.conname, ',') AS s FROM pg_constraint c \
             JOIN pg_class own ON own.oid = c.conrelid JOIN pg_class other ON other.oid = c.confrelid \
             WHERE c.contype = 'f' AND own.relnamespace = '{SCHEMA}'::regnamespace \
               AND other.relnamespace <> own.relnamespace"
        ),
    )
    .await
}

/// `pg_dump --schema=public --schema-only` of the test database.
fn dump_public(db: &TestDb) -> String {
    let out = std::process::Command::new("pg_dump")
        .args(["--schema=public", "--schema-only", "--no-owner", &db.url])
        .output()
        .expect("pg_dump runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // pg_dump brackets its output with `\restrict KEY` / `\unrestrict KEY`, a random key per run.
    String::from_utf8(out.stdout)
        .expect("dump is UTF-8")
        .lines()
        .filter(|line| !line.starts_with("\\restrict") && !line.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The API's schema at Alembic head (tests/data), as the API's migrations leave it.
const ALEMBIC_HEAD: &str = include_str!("data/api-schema-alembic-head.sql");

/// Rows in the API's tables.
const API_ROWS: &str = r#"
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
async fn standalone_builds_an_empty_database_and_reruns_as_a_no_op() {
    let db = TestDb::empty().await;
    let applied = run_migrations(&db.url, SCHEMA, Mode::Standalone)
        .await
        .expect("first run");
    assert_eq!(applied.len(), MIGRATIONS_COUNT, "{applied:?}");
    let shape = domain_shape(&db).await;
    for expected in [
        "uq_entity_profile UNIQUE (entity_type, entity_id)",
        "uq_ai_connection UNIQUE (source_type, source_id, target_type, target_id, relationship)",
        "CREATE INDEX ix_ai_connections_source ON public.ai_connections USING btree (source_type, source_id)",
        "CREATE INDEX ix_profile_generation_jobs_status ON public.profile_generation_jobs USING btree (status)",
        "col entity_profiles.personal_stories json YES",
        "col profile_generation_jobs.id character varying NO",
    ] {
        assert!(shape.contains(expected), "missing {expected:?} in\n{shape}");
    }
    for table in [
        "profile_generation_job_items",
        "profile_generations",
        "__diesel_schema_migrations",
    ] {
        assert!(
            table_exists(&db, SCHEMA, table).await,
            "{table} in {SCHEMA}"
        );
        assert!(
            !table_exists(&db, "public", table).await,
            "{table} not in public"
        );
    }
    assert_eq!(
        foreign_keys_out(&db).await,
        "",
        "no foreign key into the API's tables"
    );
    db.store().check_schema().await.expect("schema complete");

    let again = run_migrations(&db.url, SCHEMA, Mode::Standalone)
        .await
        .expect("second run");
    assert!(again.is_empty(), "nothing pending: {again:?}");
    assert_eq!(domain_shape(&db).await, shape);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_leaves_the_api_schema_byte_for_byte_unchanged() {
    let db = TestDb::empty().await;
    db.exec(ALEMBIC_HEAD).await;
    db.exec(API_ROWS).await;
    let before = dump_public(&db);
    let rows = domain_rows(&db).await;

    let applied = run_migrations(&db.url, SCHEMA, Mode::Shared)
        .await
        .expect("migrations apply");
    assert_eq!(applied.len(), MIGRATIONS_COUNT);
    assert_eq!(dump_public(&db), before, "public changed");
    assert_eq!(domain_rows(&db).await, rows, "domain rows changed");
    assert!(table_exists(&db, SCHEMA, "profile_generations").await);
    assert!(table_exists(&db, SCHEMA, "__diesel_schema_migrations").await);
    assert_eq!(foreign_keys_out(&db).await, "");

    // The daemon works on it, writing its own tables only in its schema.
    let store = db.store();
    store.check_schema().await.expect("schema complete");
    assert_eq!(
        store.model_setting().await.unwrap().as_deref(),
        Some("sonnet")
    );
    assert_eq!(store.job("job-1").await.unwrap().unwrap().total_entities, 3);
    assert!(
        run_migrations(&db.url, SCHEMA, Mode::Shared)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(dump_public(&db), before, "public changed on the second run");

    let refused = run_migrations(&db.url, SCHEMA, Mode::Standalone)
        .await
        .expect_err("standalone beside the API");
    assert!(
        matches!(refused, MigrateError::StandaloneBesideApi),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_api_table_or_column_stops_migrate_with_the_alembic_advice() {
    let db = TestDb::empty().await;
    db.exec(ALEMBIC_HEAD).await;
    db.exec("DROP TABLE ai_connections; ALTER TABLE books DROP COLUMN year_start")
        .await;
    let before = dump_public(&db);
    let err = run_migrations(&db.url, SCHEMA, Mode::Shared)
        .await
        .expect_err("API schema behind");
    let MigrateError::Schema(SchemaError::ApiBehind { problems }) = &err else {
        panic!("{err:?}");
    };
    assert!(problems.contains(&Problem::MissingTable {
        table: "ai_connections".into()
    }));
    assert!(problems.contains(&Problem::MissingColumn {
        table: "books".into(),
        column: "year_start".into()
    }));
    let message = err.to_string();
    assert!(message.contains("alembic upgrade head"), "{message}");
    assert!(
        message.contains("table ai_connections is missing"),
        "{message}"
    );
    assert!(message.contains("books.year_start"), "{message}");
    assert_eq!(dump_public(&db), before, "public changed");
    assert_eq!(
        text(
            &db,
            &format!("SELECT to_regnamespace('{SCHEMA}')::text AS s")
        )
        .await,
        "",
        "nothing created"
    );

    // `run` refuses the same way at start-up.
    let mut config = db.config();
    config.migrate_on_start = false;
    let err = PgStore::connect(&config)
        .unwrap()
        .check_schema()
        .await
        .expect_err("run refuses");
    assert!(err.to_string().contains("alembic upgrade head"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_database_needs_the_api_or_standalone() {
    let db = TestDb::empty().await;
    let err = run_migrations(&db.url, SCHEMA, Mode::Shared)
        .await
        .expect_err("no API schema");
    assert!(
        matches!(&err, MigrateError::Schema(SchemaError::NoApi { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("migrate --standalone"), "{err}");
    assert!(!table_exists(&db, "public", "authors").await);
}

/// Before the daemon had its own schema, `migrate` put everything in public.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_install_moves_its_tables_out_of_public_with_their_rows() {
    let db = TestDb::empty().await;
    db.exec(include_str!("../src/store/standalone.sql")).await;
    db.exec(include_str!(
        "../migrations/2026-01-01-000002_daemon_tables/up.sql"
    ))
    .await;
    db.exec(
        "CREATE TABLE __diesel_schema_migrations (version VARCHAR(50) PRIMARY KEY NOT NULL, \
                                                  run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP); \
         INSERT INTO __diesel_schema_migrations (version) VALUES ('20260101000001'), ('20260101000002'); \
         INSERT INTO users (id, cognito_sub, role) VALUES (1, 's', 'admin'); \
         INSERT INTO profile_generation_jobs (id, status, owner_id, total_entities) VALUES ('j', 'in_progress', 1, 2); \
         INSERT INTO profile_generation_job_items (job_id, entity_type, entity_id, outcome) VALUES ('j', 'author', 1, 'succeeded'); \
         INSERT INTO profile_generations (entity_type, entity_id, job_id, model_id, calls, input_tokens, \
                                          output_tokens, latency_ms, cost_usd) \
         VALUES ('author', 1, 'j', 'm', 3, 10, 20, 30, 0.5)",
    )
    .await;

    let applied = run_migrations(&db.url, SCHEMA, Mode::Shared)
        .await
        .expect("migrate an older install");
    assert_eq!(
        applied.len(),
        MIGRATIONS_COUNT - 1,
        "the move and every later migration are new: {applied:?}"
    );
    for table in [
        "profile_generation_job_items",
        "profile_generations",
        "__diesel_schema_migrations",
    ] {
        assert!(table_exists(&db, SCHEMA, table).await, "{table} moved");
        assert!(
            !table_exists(&db, "public", table).await,
            "{table} left public"
        );
    }
    assert_eq!(foreign_keys_out(&db).await, "", "foreign key dropped");
    assert_eq!(
        text(
            &db,
            &format!(
                "SELECT (SELECT count(*) FROM {SCHEMA}.profile_generation_job_items) || '/' || \
                      (SELECT sum(calls) FROM {SCHEMA}.profile_generations) AS s"
            )
        )
        .await,
        "1/3",
        "rows kept"
    );
    let store = db.store();
    store.check_schema().await.expect("schema complete");
    assert_eq!(store.job_usage("j").await.unwrap().calls, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_migrate_runs_both_succeed() {
    let db = TestDb::empty().await;
    let (a, b) = tokio::join!(
        run_migrations(&db.url, SCHEMA, Mode::Standalone),
        run_migrations(&db.url, SCHEMA, Mode::Standalone)
    );
    let (a, b) = (a.expect("first run"), b.expect("second run"));
    assert_eq!(
        a.len() + b.len(),
        MIGRATIONS_COUNT,
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
        err.problems().contains(&Problem::MissingColumn {
            table: "books".into(),
            column: "year_start".into()
        }),
        "{err:?}"
    );
    assert!(err.to_string().contains("books.year_start"), "{err}");

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
        matches!(&err, SchemaError::Daemon { problems, .. }
            if problems == &[Problem::MissingTable { table: "profile_generations".into() }]),
        "{err:?}"
    );
    assert!(err.to_string().contains("profile-worker migrate"), "{err}");
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
        cmd.args(["migrate", "--standalone"])
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

const MIGRATIONS_COUNT: usize = 5;

#[test]
fn embedded_migrations_are_every_directory() {
    use diesel::migration::MigrationSource;
    let migrations: Vec<_> = MigrationSource::<diesel::pg::Pg>::migrations(&MIGRATIONS).unwrap();
    let directories = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_dir())
        .count();
    assert_eq!(migrations.len(), directories);
    assert_eq!(migrations.len(), MIGRATIONS_COUNT);
}
