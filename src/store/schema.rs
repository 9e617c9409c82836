//! diesel table definitions: the columns the daemon reads or writes, nothing more.
//!
//! The domain tables belong to the Python API; columns the daemon never touches are left out so
//! that an API-side addition cannot break us. [`crate::store::schema_check::check_schema`] verifies at
//! start-up that every column listed here exists with a compatible type.

diesel::table! {
    authors (id) {
        id -> Int4,
        name -> Varchar,
        birth_year -> Nullable<Int4>,
        death_year -> Nullable<Int4>,
        tier -> Nullable<Varchar>,
        image_url -> Nullable<Varchar>,
    }
}

diesel::table! {
    publishers (id) {
        id -> Int4,
        name -> Varchar,
        tier -> Nullable<Varchar>,
        founded_year -> Nullable<Int4>,
        image_url -> Nullable<Varchar>,
    }
}

diesel::table! {
    binders (id) {
        id -> Int4,
        name -> Varchar,
        tier -> Nullable<Varchar>,
        image_url -> Nullable<Varchar>,
        founded_year -> Nullable<Int4>,
        closed_year -> Nullable<Int4>,
    }
}

diesel::table! {
    books (id) {
        id -> Int4,
        title -> Varchar,
        author_id -> Nullable<Int4>,
        publisher_id -> Nullable<Int4>,
        binder_id -> Nullable<Int4>,
        status -> Varchar,
        year_start -> Nullable<Int4>,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    entity_profiles (id) {
        id -> Int4,
        entity_type -> Varchar,
        entity_id -> Int4,
        bio_summary -> Nullable<Text>,
        personal_stories -> Nullable<Json>,
        connection_narratives -> Nullable<Json>,
        relationship_stories -> Nullable<Json>,
        ai_connections -> Nullable<Json>,
        // NOT NULL in the schema; read as nullable because the staleness rule treats NULL as stale.
        generated_at -> Nullable<Timestamptz>,
        model_version -> Nullable<Varchar>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    ai_connections (id) {
        id -> Int4,
        source_type -> Varchar,
        source_id -> Int4,
        target_type -> Varchar,
        target_id -> Int4,
        relationship -> Varchar,
        sub_type -> Nullable<Varchar>,
        confidence -> Float8,
        evidence -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    profile_generation_jobs (id) {
        id -> Varchar,
        status -> Varchar,
        owner_id -> Int4,
        total_entities -> Int4,
        succeeded -> Int4,
        failed -> Int4,
        error_log -> Nullable<Text>,
        completed_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    app_config (key) {
        key -> Varchar,
        value -> Varchar,
    }
}

diesel::table! {
    profile_generation_job_items (job_id, entity_type, entity_id) {
        job_id -> Varchar,
        entity_type -> Varchar,
        entity_id -> Int4,
        outcome -> Varchar,
        attempts -> Int4,
        last_error -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    profile_generations (id) {
        id -> Int8,
        entity_type -> Varchar,
        entity_id -> Int4,
        job_id -> Nullable<Text>,
        model_id -> Varchar,
        calls -> Int4,
        input_tokens -> Int8,
        output_tokens -> Int8,
        latency_ms -> Int8,
        cost_usd -> Float8,
        created_at -> Timestamptz,
        discarded -> Bool,
        cache_read_tokens -> Int8,
        cache_write_tokens -> Int8,
    }
}

diesel::allow_tables_to_appear_in_same_query!(authors, publishers, binders, books);

const VARCHAR: &[&str] = &["character varying", "text"];
const TEXT: &[&str] = &["text", "character varying"];
const INT4: &[&str] = &["integer"];
const INT8: &[&str] = &["bigint"];
const FLOAT8: &[&str] = &["double precision"];
const JSON: &[&str] = &["json"];
const TIMESTAMPTZ: &[&str] = &["timestamp with time zone"];
const DATE: &[&str] = &["date"];
const BOOL: &[&str] = &["boolean"];

/// The daemon's own tables, kept in its own schema (`database.schema`); every other table in
/// [`REQUIRED_COLUMNS`] belongs to the API.
pub const DAEMON_TABLES: &[&str] = &[
    "profile_generation_job_items",
    "profile_generations",
    "job_usage",
    "daily_usage",
];

/// Every `(table, column, accepted information_schema.data_type values)` the daemon uses; the
/// start-up schema check compares the database against it. Keep it in step with the tables above.
pub const REQUIRED_COLUMNS: &[(&str, &str, &[&str])] = &[
    ("authors", "id", INT4),
    ("authors", "name", VARCHAR),
    ("authors", "birth_year", INT4),
    ("authors", "death_year", INT4),
    ("authors", "tier", VARCHAR),
    ("authors", "image_url", VARCHAR),
    ("publishers", "id", INT4),
    ("publishers", "name", VARCHAR),
    ("publishers", "tier", VARCHAR),
    ("publishers", "founded_year", INT4),
    ("publishers", "image_url", VARCHAR),
    ("binders", "id", INT4),
    ("binders", "name", VARCHAR),
    ("binders", "tier", VARCHAR),
    ("binders", "image_url", VARCHAR),
    ("binders", "founded_year", INT4),
    ("binders", "closed_year", INT4),
    ("books", "id", INT4),
    ("books", "title", VARCHAR),
    ("books", "author_id", INT4),
    ("books", "publisher_id", INT4),
    ("books", "binder_id", INT4),
    ("books", "status", VARCHAR),
    ("books", "year_start", INT4),
    ("books", "updated_at", TIMESTAMPTZ),
    ("entity_profiles", "id", INT4),
    ("entity_profiles", "entity_type", VARCHAR),
    ("entity_profiles", "entity_id", INT4),
    ("entity_profiles", "bio_summary", TEXT),
    ("entity_profiles", "personal_stories", JSON),
    ("entity_profiles", "connection_narratives", JSON),
    ("entity_profiles", "relationship_stories", JSON),
    ("entity_profiles", "ai_connections", JSON),
    ("entity_profiles", "generated_at", TIMESTAMPTZ),
    ("entity_profiles", "model_version", VARCHAR),
    ("entity_profiles", "created_at", TIMESTAMPTZ),
    ("entity_profiles", "updated_at", TIMESTAMPTZ),
    ("ai_connections", "id", INT4),
    ("ai_connections", "source_type", VARCHAR),
    ("ai_connections", "source_id", INT4),
    ("ai_connections", "target_type", VARCHAR),
    ("ai_connections", "target_id", INT4),
    ("ai_connections", "relationship", VARCHAR),
    ("ai_connections", "sub_type", VARCHAR),
    ("ai_connections", "confidence", FLOAT8),
    ("ai_connections", "evidence", TEXT),
    ("ai_connections", "created_at", TIMESTAMPTZ),
    ("ai_connections", "updated_at", TIMESTAMPTZ),
    ("profile_generation_jobs", "id", VARCHAR),
    ("profile_generation_jobs", "status", VARCHAR),
    ("profile_generation_jobs", "owner_id", INT4),
    ("profile_generation_jobs", "total_entities", INT4),
    ("profile_generation_jobs", "succeeded", INT4),
    ("profile_generation_jobs", "failed", INT4),
    ("profile_generation_jobs", "error_log", TEXT),
    ("profile_generation_jobs", "completed_at", TIMESTAMPTZ),
    ("profile_generation_jobs", "created_at", TIMESTAMPTZ),
    ("profile_generation_jobs", "updated_at", TIMESTAMPTZ),
    ("users", "id", INT4),
    ("users", "role", VARCHAR),
    ("app_config", "key", VARCHAR),
    ("app_config", "value", VARCHAR),
    ("profile_generation_job_items", "job_id", VARCHAR),
    ("profile_generation_job_items", "entity_type", VARCHAR),
    ("profile_generation_job_items", "entity_id", INT4),
    ("profile_generation_job_items", "outcome", VARCHAR),
    ("profile_generation_job_items", "attempts", INT4),
    ("profile_generation_job_items", "last_error", TEXT),
    ("profile_generation_job_items", "created_at", TIMESTAMPTZ),
    ("profile_generation_job_items", "updated_at", TIMESTAMPTZ),
    ("profile_generations", "id", INT8),
    ("profile_generations", "entity_type", VARCHAR),
    ("profile_generations", "entity_id", INT4),
    ("profile_generations", "job_id", TEXT),
    ("profile_generations", "model_id", VARCHAR),
    ("profile_generations", "calls", INT4),
    ("profile_generations", "input_tokens", INT8),
    ("profile_generations", "output_tokens", INT8),
    ("profile_generations", "latency_ms", INT8),
    ("profile_generations", "cost_usd", FLOAT8),
    ("profile_generations", "created_at", TIMESTAMPTZ),
    ("profile_generations", "discarded", BOOL),
    ("profile_generations", "cache_read_tokens", INT8),
    ("profile_generations", "cache_write_tokens", INT8),
    ("job_usage", "job_id", TEXT),
    ("job_usage", "profiles", INT8),
    ("job_usage", "calls", INT8),
    ("job_usage", "input_tokens", INT8),
    ("job_usage", "output_tokens", INT8),
    ("job_usage", "cache_read_tokens", INT8),
    ("job_usage", "cache_write_tokens", INT8),
    ("job_usage", "cost_usd", FLOAT8),
    ("job_usage", "discarded_calls", INT8),
    ("job_usage", "discarded_cost_usd", FLOAT8),
    ("daily_usage", "day", DATE),
    ("daily_usage", "profiles", INT8),
    ("daily_usage", "calls", INT8),
    ("daily_usage", "input_tokens", INT8),
    ("daily_usage", "output_tokens", INT8),
    ("daily_usage", "cache_read_tokens", INT8),
    ("daily_usage", "cache_write_tokens", INT8),
    ("daily_usage", "cost_usd", FLOAT8),
    ("daily_usage", "discarded_calls", INT8),
    ("daily_usage", "discarded_cost_usd", FLOAT8),
];
