//! `PgStore`: the [`Store`] over PostgreSQL with diesel-async and a deadpool connection pool.
//!
//! Reads use the diesel DSL against [`super::schema`]; the writes whose semantics are SQL
//! (upserts with conditional updates, exactly-once counting) are written out as SQL so they can
//! be read next to the reference.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{Array, BigInt, Double, Integer, Json, Nullable, Text};
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::schema::{
    ai_connections, app_config, authors, binders, books, entity_profiles, profile_generation_jobs,
    publishers,
};
use super::{
    CancelOutcome, OutcomeRecord, PoolStatus, ProfileUnit, Recorded, Store, StoreError,
    UsageTotals, canonical_ai_connections, failure_line,
};
use crate::config::DatabaseConfig;
use crate::model::{
    AiConnectionRow, AuthorRow, Book, BookLink, CollectionEntity, Entity, EntityRef, EntityType,
    GraphRows, Job, JobStatus, OrgRow, QUALIFYING_STATUSES, StoredProfile,
};

/// Longest wait for a pooled connection before the operation fails as unavailable.
const POOL_WAIT: Duration = Duration::from_secs(10);

/// The production store: a pool of `AsyncPgConnection`s, each with the configured
/// `statement_timeout`.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool<AsyncPgConnection>,
}

/// `error_log` append as SQL: `btrim(old || '\n' || line)` with Python's whitespace set.
const APPEND_LOG_SQL: &str =
    "btrim(COALESCE(error_log, '') || E'\\n' || $2, E' \\t\\n\\r\\f' || chr(11))";

impl PgStore {
    /// Builds the pool; connections are opened lazily, so this succeeds while the database is
    /// down (readiness reports it). Each new connection runs `SET statement_timeout`.
    pub fn connect(config: &DatabaseConfig) -> Result<Self, StoreError> {
        let timeout_ms = config.statement_timeout_ms;
        let mut manager_config = ManagerConfig::<AsyncPgConnection>::default();
        manager_config.custom_setup = Box::new(move |url| {
            let url = url.to_owned();
            Box::pin(async move {
                let mut conn = super::tls::establish(&url).await?;
                diesel::sql_query(format!("SET statement_timeout = {timeout_ms}"))
                    .execute(&mut conn)
                    .await
                    .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                Ok(conn)
            })
        });
        let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
            config.url.expose(),
            manager_config,
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size as usize)
            .build()
            .map_err(|e| StoreError::Unavailable(format!("cannot build the pool: {e}")))?;
        Ok(Self { pool })
    }

    /// A pooled connection (also for read modules outside the port, e.g. the console).
    pub(crate) async fn conn(&self) -> Result<Object<AsyncPgConnection>, StoreError> {
        match tokio::time::timeout(POOL_WAIT, self.pool.get()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(StoreError::Unavailable(e.to_string())),
            Err(_) => Err(StoreError::Unavailable(format!(
                "no pooled connection within {}s",
                POOL_WAIT.as_secs()
            ))),
        }
    }

    /// Start-up schema check (see [`super::migrate::check_schema`]).
    pub async fn check_schema(&self) -> Result<(), super::migrate::SchemaError> {
        let mut conn = self.conn().await?;
        super::migrate::check_schema(&mut conn).await
    }
}

/// Sorts a diesel error into transient (retry later) and rejected (permanent).
///
/// diesel only names a few SQLSTATEs; the other transient ones (deadlock, statement timeout,
/// server shutting down, too many connections) are recognised by PostgreSQL's message text.
pub(crate) fn classify(err: DieselError) -> StoreError {
    let transient = match &err {
        DieselError::DatabaseError(kind, info) => match kind {
            DatabaseErrorKind::SerializationFailure
            | DatabaseErrorKind::UnableToSendCommand
            | DatabaseErrorKind::ClosedConnection
            | DatabaseErrorKind::ReadOnlyTransaction => true,
            DatabaseErrorKind::Unknown => {
                let msg = info.message();
                [
                    "deadlock detected",
                    "canceling statement due to statement timeout",
                    "canceling statement due to lock timeout",
                    "terminating connection",
                    "the database system is",
                    "too many connections",
                    "remaining connection slots",
                    "could not serialize access",
                ]
                .iter()
                .any(|needle| msg.contains(needle))
            }
            _ => false,
        },
        DieselError::BrokenTransactionManager => true,
        _ => false,
    };
    if transient {
        StoreError::Transient(err)
    } else {
        StoreError::Rejected(err)
    }
}

#[derive(Queryable, QueryableByName, Selectable)]
#[diesel(table_name = profile_generation_jobs)]
struct JobRow {
    id: String,
    status: String,
    owner_id: i32,
    total_entities: i32,
    succeeded: i32,
    failed: i32,
    error_log: Option<String>,
    completed_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<JobRow> for Job {
    type Error = StoreError;
    fn try_from(r: JobRow) -> Result<Self, StoreError> {
        Ok(Job {
            status: r.status.parse().map_err(StoreError::InvalidData)?,
            id: r.id,
            owner_id: r.owner_id,
            total_entities: r.total_entities,
            succeeded: r.succeeded,
            failed: r.failed,
            error_log: r.error_log,
            completed_at: r.completed_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

#[derive(QueryableByName)]
struct IdRow {
    #[diesel(sql_type = Text)]
    id: String,
}

#[derive(QueryableByName)]
struct OwnerRow {
    #[diesel(sql_type = Nullable<Integer>)]
    id: Option<i32>,
}

#[derive(QueryableByName)]
struct UsageRow {
    #[diesel(sql_type = BigInt)]
    profiles: i64,
    #[diesel(sql_type = BigInt)]
    calls: i64,
    #[diesel(sql_type = BigInt)]
    input_tokens: i64,
    #[diesel(sql_type = BigInt)]
    output_tokens: i64,
    #[diesel(sql_type = Double)]
    cost_usd: f64,
}

type ProfileTuple = (
    Option<String>,
    Option<serde_json::Value>,
    Option<serde_json::Value>,
    Option<serde_json::Value>,
    Option<serde_json::Value>,
    Option<DateTime<Utc>>,
    Option<String>,
);

type LinkTuple = (i32, Option<i32>, Option<i32>, Option<i32>);
type AuthorTuple = (
    i32,
    String,
    Option<i32>,
    Option<i32>,
    Option<String>,
    Option<String>,
);
type PublisherTuple = (i32, String, Option<String>, Option<String>, Option<i32>);
type BinderTuple = (
    i32,
    String,
    Option<String>,
    Option<String>,
    Option<i32>,
    Option<i32>,
);

type AiTuple = (
    String,
    i32,
    String,
    i32,
    String,
    Option<String>,
    f64,
    Option<String>,
);

/// The qualifying books of one entity, as a boxed query so the FK column can vary by type.
fn entity_books(entity: EntityRef) -> books::BoxedQuery<'static, diesel::pg::Pg> {
    let query = books::table
        .filter(books::status.eq_any(QUALIFYING_STATUSES))
        .into_boxed();
    match entity.entity_type {
        EntityType::Author => query.filter(books::author_id.eq(entity.id)),
        EntityType::Publisher => query.filter(books::publisher_id.eq(entity.id)),
        EntityType::Binder => query.filter(books::binder_id.eq(entity.id)),
    }
}

async fn read_job(conn: &mut AsyncPgConnection, id: &str) -> QueryResult<Option<JobRow>> {
    profile_generation_jobs::table
        .find(id)
        .select(JobRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// The completion UPDATE (design D2): only from active states, only once the counters reach
/// the total. Returns whether this call completed the job.
async fn complete_if_done(conn: &mut AsyncPgConnection, job_id: &str) -> QueryResult<bool> {
    let done: Vec<IdRow> = diesel::sql_query(
        "UPDATE profile_generation_jobs \
         SET status = 'completed', completed_at = now(), updated_at = now() \
         WHERE id = $1 AND status IN ('pending', 'in_progress') \
           AND succeeded + failed >= total_entities \
         RETURNING id::text AS id",
    )
    .bind::<Text, _>(job_id)
    .load(conn)
    .await?;
    Ok(!done.is_empty())
}

/// Exactly-once recording of a terminal outcome, inside the caller's transaction.
async fn record_terminal(
    conn: &mut AsyncPgConnection,
    job_id: &str,
    entity: EntityRef,
    attempt: i32,
    outcome: &super::Outcome,
) -> QueryResult<Recorded> {
    let (outcome_str, message) = match outcome {
        super::Outcome::Succeeded => ("succeeded", None),
        super::Outcome::Failed { message } => ("failed", Some(message.as_str())),
    };
    // Insert the item, or turn a 'retry' item terminal; an existing terminal item (or an
    // unknown job) returns no row, and then nothing is counted.
    let new: Vec<IdRow> = diesel::sql_query(
        "INSERT INTO profile_generation_job_items \
             (job_id, entity_type, entity_id, outcome, attempts, last_error, created_at, updated_at) \
         SELECT id, $2, $3, $4, $5, $6, now(), now() FROM profile_generation_jobs WHERE id = $1 \
         ON CONFLICT (job_id, entity_type, entity_id) DO UPDATE \
         SET outcome = EXCLUDED.outcome, attempts = EXCLUDED.attempts, \
             last_error = EXCLUDED.last_error, updated_at = now() \
         WHERE profile_generation_job_items.outcome = 'retry' \
         RETURNING job_id::text AS id",
    )
    .bind::<Text, _>(job_id)
    .bind::<Text, _>(entity.entity_type.as_str())
    .bind::<Integer, _>(entity.id)
    .bind::<Text, _>(outcome_str)
    .bind::<Integer, _>(attempt)
    .bind::<Nullable<Text>, _>(message)
    .load(conn)
    .await?;
    if new.is_empty() {
        return Ok(Recorded::default());
    }
    match message {
        None => {
            diesel::sql_query(
                "UPDATE profile_generation_jobs \
                 SET succeeded = succeeded + 1, updated_at = now() WHERE id = $1",
            )
            .bind::<Text, _>(job_id)
            .execute(conn)
            .await?;
        }
        Some(message) => {
            diesel::sql_query(format!(
                "UPDATE profile_generation_jobs \
                 SET failed = failed + 1, updated_at = now(), error_log = {APPEND_LOG_SQL} \
                 WHERE id = $1"
            ))
            .bind::<Text, _>(job_id)
            .bind::<Text, _>(failure_line(entity, message))
            .execute(conn)
            .await?;
        }
    }
    let completed = complete_if_done(conn, job_id).await?;
    Ok(Recorded {
        counted: true,
        completed,
    })
}

/// Step 1 of the profile unit: the multi-row AI-connection upsert (reference §7.3 "Storage").
async fn upsert_ai_connections(
    conn: &mut AsyncPgConnection,
    rows: &[AiConnectionRow],
) -> QueryResult<()> {
    let rows = canonical_ai_connections(rows);
    if rows.is_empty() {
        return Ok(());
    }
    diesel::sql_query(
        "INSERT INTO ai_connections (source_type, source_id, target_type, target_id, relationship, \
                                     sub_type, confidence, evidence, created_at, updated_at) \
         SELECT u.st, u.si, u.tt, u.ti, u.rel, u.sub, u.conf, u.ev, now(), now() \
         FROM unnest($1::text[], $2::int4[], $3::text[], $4::int4[], $5::text[], $6::text[], \
                     $7::float8[], $8::text[]) WITH ORDINALITY AS u(st, si, tt, ti, rel, sub, conf, ev, n) \
         ORDER BY u.n \
         ON CONFLICT (source_type, source_id, target_type, target_id, relationship) DO UPDATE SET \
             confidence = GREATEST(EXCLUDED.confidence, COALESCE(ai_connections.confidence, 0)), \
             sub_type = CASE WHEN EXCLUDED.confidence > COALESCE(ai_connections.confidence, 0) \
                             THEN EXCLUDED.sub_type ELSE ai_connections.sub_type END, \
             evidence = CASE WHEN EXCLUDED.confidence > COALESCE(ai_connections.confidence, 0) \
                             THEN EXCLUDED.evidence ELSE ai_connections.evidence END",
    )
    .bind::<Array<Text>, _>(rows.iter().map(|r| r.source_type.clone()).collect::<Vec<_>>())
    .bind::<Array<Integer>, _>(rows.iter().map(|r| r.source_id).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(rows.iter().map(|r| r.target_type.clone()).collect::<Vec<_>>())
    .bind::<Array<Integer>, _>(rows.iter().map(|r| r.target_id).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(rows.iter().map(|r| r.relationship.clone()).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(rows.iter().map(|r| r.sub_type.clone()).collect::<Vec<_>>())
    .bind::<Array<Double>, _>(rows.iter().map(|r| r.confidence).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(rows.iter().map(|r| r.evidence.clone()).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// Steps 1-4 of [`Store::commit_profile`], inside the caller's transaction.
async fn write_profile_unit(
    conn: &mut AsyncPgConnection,
    unit: &ProfileUnit,
) -> QueryResult<Recorded> {
    upsert_ai_connections(conn, &unit.ai_connections).await?;

    let p = &unit.profile;
    let ai_json = if p.ai_connections.is_empty() {
        None
    } else {
        Some(serde_json::Value::Array(p.ai_connections.clone()))
    };
    diesel::sql_query(
        "INSERT INTO entity_profiles (entity_type, entity_id, bio_summary, personal_stories, \
             connection_narratives, relationship_stories, ai_connections, generated_at, \
             model_version, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, now(), $8, now(), now()) \
         ON CONFLICT (entity_type, entity_id) DO UPDATE SET \
             bio_summary = EXCLUDED.bio_summary, \
             personal_stories = EXCLUDED.personal_stories, \
             connection_narratives = EXCLUDED.connection_narratives, \
             relationship_stories = CASE \
                 WHEN json_typeof(entity_profiles.relationship_stories) = 'object' \
                 THEN (entity_profiles.relationship_stories::jsonb \
                       || EXCLUDED.relationship_stories::jsonb)::json \
                 ELSE EXCLUDED.relationship_stories END, \
             ai_connections = EXCLUDED.ai_connections, \
             generated_at = EXCLUDED.generated_at, \
             model_version = EXCLUDED.model_version, \
             updated_at = now()",
    )
    .bind::<Text, _>(unit.entity.entity_type.as_str())
    .bind::<Integer, _>(unit.entity.id)
    .bind::<Nullable<Text>, _>(p.bio_summary.as_deref())
    .bind::<Json, _>(&p.personal_stories)
    .bind::<Json, _>(&p.connection_narratives)
    .bind::<Json, _>(serde_json::Value::Object(p.relationship_stories.clone()))
    .bind::<Nullable<Json>, _>(ai_json)
    .bind::<Text, _>(&p.model_version)
    .execute(conn)
    .await?;

    let u = &unit.usage;
    diesel::sql_query(
        "INSERT INTO profile_generations (entity_type, entity_id, job_id, model_id, calls, \
             input_tokens, output_tokens, latency_ms, cost_usd, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now())",
    )
    .bind::<Text, _>(unit.entity.entity_type.as_str())
    .bind::<Integer, _>(unit.entity.id)
    .bind::<Nullable<Text>, _>(unit.job_id.as_deref())
    .bind::<Text, _>(&u.model_id)
    .bind::<Integer, _>(u.calls)
    .bind::<BigInt, _>(u.input_tokens)
    .bind::<BigInt, _>(u.output_tokens)
    .bind::<BigInt, _>(u.latency_ms)
    .bind::<Double, _>(u.cost_usd)
    .execute(conn)
    .await?;

    match &unit.job_id {
        Some(job_id) => {
            record_terminal(
                conn,
                job_id,
                unit.entity,
                unit.attempt,
                &super::Outcome::Succeeded,
            )
            .await
        }
        None => Ok(Recorded::default()),
    }
}

async fn load_graph_rows(
    conn: &mut AsyncPgConnection,
    include_binders: bool,
    max_books: i64,
) -> QueryResult<GraphRows> {
    let links: Vec<LinkTuple> = books::table
        .filter(books::status.eq_any(QUALIFYING_STATUSES))
        .order(books::id.asc())
        .limit(max_books.max(0))
        .select((
            books::id,
            books::author_id,
            books::publisher_id,
            books::binder_id,
        ))
        .load(conn)
        .await?;
    let ids = |pick: fn(&LinkTuple) -> Option<i32>| {
        let mut v: Vec<i32> = links.iter().filter_map(pick).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let author_ids = ids(|b| b.1);
    let publisher_ids = ids(|b| b.2);
    let binder_ids = if include_binders {
        ids(|b| b.3)
    } else {
        Vec::new()
    };

    let authors: Vec<AuthorTuple> = authors::table
        .filter(authors::id.eq_any(&author_ids))
        .order(authors::id.asc())
        .select((
            authors::id,
            authors::name,
            authors::birth_year,
            authors::death_year,
            authors::tier,
            authors::image_url,
        ))
        .load(conn)
        .await?;
    let publishers: Vec<PublisherTuple> = publishers::table
        .filter(publishers::id.eq_any(&publisher_ids))
        .order(publishers::id.asc())
        .select((
            publishers::id,
            publishers::name,
            publishers::tier,
            publishers::image_url,
            publishers::founded_year,
        ))
        .load(conn)
        .await?;
    let binders: Vec<BinderTuple> = if binder_ids.is_empty() {
        Vec::new()
    } else {
        binders::table
            .filter(binders::id.eq_any(&binder_ids))
            .order(binders::id.asc())
            .select((
                binders::id,
                binders::name,
                binders::tier,
                binders::image_url,
                binders::founded_year,
                binders::closed_year,
            ))
            .load(conn)
            .await?
    };
    let ai: Vec<AiTuple> = ai_connections::table
        .order(ai_connections::id.asc())
        .select((
            ai_connections::source_type,
            ai_connections::source_id,
            ai_connections::target_type,
            ai_connections::target_id,
            ai_connections::relationship,
            ai_connections::sub_type,
            ai_connections::confidence,
            ai_connections::evidence,
        ))
        .load(conn)
        .await?;

    Ok(GraphRows {
        books: links
            .into_iter()
            .map(|(id, author_id, publisher_id, binder_id)| BookLink {
                id,
                author_id,
                publisher_id,
                binder_id,
            })
            .collect(),
        authors: authors
            .into_iter()
            .map(
                |(id, name, birth_year, death_year, tier, image_url)| AuthorRow {
                    id,
                    name,
                    birth_year,
                    death_year,
                    tier,
                    image_url,
                },
            )
            .collect(),
        publishers: publishers
            .into_iter()
            .map(|(id, name, tier, image_url, founded_year)| OrgRow {
                id,
                name,
                tier,
                image_url,
                founded_year,
                closed_year: None,
            })
            .collect(),
        binders: binders
            .into_iter()
            .map(
                |(id, name, tier, image_url, founded_year, closed_year)| OrgRow {
                    id,
                    name,
                    tier,
                    image_url,
                    founded_year,
                    closed_year,
                },
            )
            .collect(),
        ai_connections: ai.into_iter().map(ai_row).collect(),
    })
}

fn ai_row(t: AiTuple) -> AiConnectionRow {
    let (
        source_type,
        source_id,
        target_type,
        target_id,
        relationship,
        sub_type,
        confidence,
        evidence,
    ) = t;
    AiConnectionRow {
        source_type,
        source_id,
        target_type,
        target_id,
        relationship,
        sub_type,
        confidence,
        evidence,
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        diesel::sql_query("SELECT 1")
            .execute(&mut conn)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn entity(&self, entity: EntityRef) -> Result<Option<Entity>, StoreError> {
        let mut conn = self.conn().await?;
        let empty = |name: String| Entity {
            entity,
            name,
            birth_year: None,
            death_year: None,
            founded_year: None,
            closed_year: None,
        };
        let found = match entity.entity_type {
            EntityType::Author => authors::table
                .find(entity.id)
                .select((authors::name, authors::birth_year, authors::death_year))
                .first::<(String, Option<i32>, Option<i32>)>(&mut conn)
                .await
                .optional()
                .map(|r| {
                    r.map(|(name, birth, death)| Entity {
                        birth_year: birth,
                        death_year: death,
                        ..empty(name)
                    })
                }),
            EntityType::Publisher => publishers::table
                .find(entity.id)
                .select((publishers::name, publishers::founded_year))
                .first::<(String, Option<i32>)>(&mut conn)
                .await
                .optional()
                .map(|r| {
                    r.map(|(name, founded)| Entity {
                        founded_year: founded,
                        ..empty(name)
                    })
                }),
            EntityType::Binder => binders::table
                .find(entity.id)
                .select((binders::name, binders::founded_year, binders::closed_year))
                .first::<(String, Option<i32>, Option<i32>)>(&mut conn)
                .await
                .optional()
                .map(|r| {
                    r.map(|(name, founded, closed)| Entity {
                        founded_year: founded,
                        closed_year: closed,
                        ..empty(name)
                    })
                }),
        };
        found.map_err(classify)
    }

    async fn qualifying_books(&self, entity: EntityRef) -> Result<Vec<Book>, StoreError> {
        let mut conn = self.conn().await?;
        let rows: Vec<(i32, String, Option<i32>)> = entity_books(entity)
            .order((books::year_start.asc().nulls_last(), books::id.asc()))
            .select((books::id, books::title, books::year_start))
            .load(&mut conn)
            .await
            .map_err(classify)?;
        Ok(rows
            .into_iter()
            .map(|(id, title, year_start)| Book {
                id,
                title,
                year_start,
            })
            .collect())
    }

    async fn latest_book_update(
        &self,
        entity: EntityRef,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let mut conn = self.conn().await?;
        entity_books(entity)
            .select(diesel::dsl::max(books::updated_at))
            .first::<Option<DateTime<Utc>>>(&mut conn)
            .await
            .map_err(classify)
    }

    async fn profile(&self, entity: EntityRef) -> Result<Option<StoredProfile>, StoreError> {
        let mut conn = self.conn().await?;
        let row: Option<ProfileTuple> = entity_profiles::table
            .filter(entity_profiles::entity_type.eq(entity.entity_type.as_str()))
            .filter(entity_profiles::entity_id.eq(entity.id))
            .select((
                entity_profiles::bio_summary,
                entity_profiles::personal_stories,
                entity_profiles::connection_narratives,
                entity_profiles::relationship_stories,
                entity_profiles::ai_connections,
                entity_profiles::generated_at,
                entity_profiles::model_version,
            ))
            .first(&mut conn)
            .await
            .optional()
            .map_err(classify)?;
        Ok(row.map(
            |(
                bio_summary,
                personal_stories,
                connection_narratives,
                relationship_stories,
                ai_connections,
                generated_at,
                model_version,
            )| StoredProfile {
                entity,
                bio_summary,
                personal_stories,
                connection_narratives,
                relationship_stories,
                ai_connections,
                generated_at,
                model_version,
            },
        ))
    }

    async fn graph_rows(
        &self,
        include_binders: bool,
        max_books: i64,
    ) -> Result<GraphRows, StoreError> {
        let mut conn = self.conn().await?;
        conn.build_transaction()
            .repeatable_read()
            .read_only()
            .run(async move |conn| load_graph_rows(conn, include_binders, max_books).await)
            .await
            .map_err(classify)
    }

    async fn collection_entities(&self) -> Result<Vec<CollectionEntity>, StoreError> {
        let mut conn = self.conn().await?;
        let qualifying = || books::table.filter(books::status.eq_any(QUALIFYING_STATUSES));
        let authors: Vec<(i32, String)> = authors::table
            .filter(diesel::dsl::exists(
                qualifying().filter(books::author_id.eq(authors::id.nullable())),
            ))
            .order(authors::id.asc())
            .select((authors::id, authors::name))
            .load(&mut conn)
            .await
            .map_err(classify)?;
        let publishers: Vec<(i32, String)> = publishers::table
            .filter(diesel::dsl::exists(
                qualifying().filter(books::publisher_id.eq(publishers::id.nullable())),
            ))
            .order(publishers::id.asc())
            .select((publishers::id, publishers::name))
            .load(&mut conn)
            .await
            .map_err(classify)?;
        let binders: Vec<(i32, String)> = binders::table
            .filter(diesel::dsl::exists(
                qualifying().filter(books::binder_id.eq(binders::id.nullable())),
            ))
            .order(binders::id.asc())
            .select((binders::id, binders::name))
            .load(&mut conn)
            .await
            .map_err(classify)?;
        let tag = |t: EntityType, rows: Vec<(i32, String)>| {
            rows.into_iter().map(move |(id, name)| CollectionEntity {
                entity: EntityRef::new(t, id),
                name,
            })
        };
        Ok(tag(EntityType::Author, authors)
            .chain(tag(EntityType::Publisher, publishers))
            .chain(tag(EntityType::Binder, binders))
            .collect())
    }

    async fn model_setting(&self) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn().await?;
        app_config::table
            .find("model.entity_profiles")
            .select(app_config::value)
            .first(&mut conn)
            .await
            .optional()
            .map_err(classify)
    }

    async fn job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let mut conn = self.conn().await?;
        read_job(&mut conn, id)
            .await
            .map_err(classify)?
            .map(Job::try_from)
            .transpose()
    }

    async fn active_job(&self) -> Result<Option<Job>, StoreError> {
        let mut conn = self.conn().await?;
        profile_generation_jobs::table
            .filter(profile_generation_jobs::status.eq_any(["pending", "in_progress"]))
            .order((
                profile_generation_jobs::created_at.desc(),
                profile_generation_jobs::id.desc(),
            ))
            .select(JobRow::as_select())
            .first(&mut conn)
            .await
            .optional()
            .map_err(classify)?
            .map(Job::try_from)
            .transpose()
    }

    async fn create_job(
        &self,
        owner_id: i32,
        total_entities: i32,
        status: JobStatus,
    ) -> Result<Job, StoreError> {
        let mut conn = self.conn().await?;
        let row: JobRow = diesel::sql_query(
            "INSERT INTO profile_generation_jobs (id, status, owner_id, total_entities, succeeded, \
                 failed, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 0, 0, now(), now()) RETURNING *",
        )
        .bind::<Text, _>(uuid::Uuid::new_v4().to_string())
        .bind::<Text, _>(status.as_str())
        .bind::<Integer, _>(owner_id)
        .bind::<Integer, _>(total_entities)
        .get_result(&mut conn)
        .await
        .map_err(classify)?;
        row.try_into()
    }

    async fn cancel_job(&self, id: &str) -> Result<CancelOutcome, StoreError> {
        let mut conn = self.conn().await?;
        let cancelled: Option<JobRow> = diesel::sql_query(
            "UPDATE profile_generation_jobs \
             SET status = 'cancelled', completed_at = now(), updated_at = now() \
             WHERE id = $1 AND status IN ('pending', 'in_progress') RETURNING *",
        )
        .bind::<Text, _>(id)
        .get_result(&mut conn)
        .await
        .optional()
        .map_err(classify)?;
        if let Some(row) = cancelled {
            return Ok(CancelOutcome::Cancelled(row.try_into()?));
        }
        match read_job(&mut conn, id).await.map_err(classify)? {
            None => Ok(CancelOutcome::NotFound),
            Some(row) => Ok(CancelOutcome::AlreadyTerminal(
                row.status.parse().map_err(StoreError::InvalidData)?,
            )),
        }
    }

    async fn default_owner(&self) -> Result<Option<i32>, StoreError> {
        let mut conn = self.conn().await?;
        let row: OwnerRow =
            diesel::sql_query("SELECT min(id) AS id FROM users WHERE role = 'admin'")
                .get_result(&mut conn)
                .await
                .map_err(classify)?;
        Ok(row.id)
    }

    async fn recent_jobs(&self, limit: i64) -> Result<Vec<Job>, StoreError> {
        let mut conn = self.conn().await?;
        profile_generation_jobs::table
            .order((
                profile_generation_jobs::created_at.desc(),
                profile_generation_jobs::id.desc(),
            ))
            .limit(limit)
            .select(JobRow::as_select())
            .load(&mut conn)
            .await
            .map_err(classify)?
            .into_iter()
            .map(Job::try_from)
            .collect()
    }

    async fn reduce_job_total(
        &self,
        id: &str,
        by: i32,
        note: &str,
    ) -> Result<Option<Job>, StoreError> {
        let mut conn = self.conn().await?;
        let (id, note) = (id.to_owned(), note.to_owned());
        let row = conn
            .transaction(async move |conn| {
                let changed = diesel::sql_query(format!(
                    "UPDATE profile_generation_jobs \
                     SET total_entities = GREATEST(total_entities - $3, 0), updated_at = now(), \
                         error_log = {APPEND_LOG_SQL} \
                     WHERE id = $1"
                ))
                .bind::<Text, _>(&id)
                .bind::<Text, _>(&note)
                .bind::<Integer, _>(by)
                .execute(conn)
                .await?;
                if changed == 0 {
                    return Ok(None);
                }
                complete_if_done(conn, &id).await?;
                read_job(conn, &id).await
            })
            .await
            .map_err(classify)?;
        row.map(Job::try_from).transpose()
    }

    async fn fail_stuck_jobs(&self, stale_after: Duration) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn().await?;
        let secs = stale_after.as_secs_f64();
        let line = format!(
            "stuck: no progress for {}s and no retry pending; marked failed by profile-worker",
            stale_after.as_secs()
        );
        let failed: Vec<IdRow> = diesel::sql_query(format!(
            "UPDATE profile_generation_jobs j \
             SET status = 'failed', updated_at = now(), error_log = {APPEND_LOG_SQL} \
             WHERE j.status = 'in_progress' \
               AND j.updated_at < now() - make_interval(secs => $1) \
               AND NOT EXISTS ( \
                   SELECT 1 FROM profile_generation_job_items i \
                   WHERE i.job_id = j.id AND i.outcome = 'retry' \
                     AND i.updated_at >= now() - make_interval(secs => $1)) \
             RETURNING j.id::text AS id"
        ))
        .bind::<Double, _>(secs)
        .bind::<Text, _>(line)
        .load(&mut conn)
        .await
        .map_err(classify)?;
        Ok(failed.into_iter().map(|r| r.id).collect())
    }

    async fn record_retry(
        &self,
        job_id: &str,
        entity: EntityRef,
        attempt: i32,
        error: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        diesel::sql_query(
            "INSERT INTO profile_generation_job_items \
                 (job_id, entity_type, entity_id, outcome, attempts, last_error, created_at, updated_at) \
             SELECT id, $2, $3, 'retry', $4, $5, now(), now() \
             FROM profile_generation_jobs WHERE id = $1 \
             ON CONFLICT (job_id, entity_type, entity_id) DO UPDATE \
             SET attempts = GREATEST(profile_generation_job_items.attempts, EXCLUDED.attempts), \
                 last_error = EXCLUDED.last_error, updated_at = now() \
             WHERE profile_generation_job_items.outcome = 'retry'",
        )
        .bind::<Text, _>(job_id)
        .bind::<Text, _>(entity.entity_type.as_str())
        .bind::<Integer, _>(entity.id)
        .bind::<Integer, _>(attempt)
        .bind::<Text, _>(error)
        .execute(&mut conn)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn record_outcome(&self, record: OutcomeRecord) -> Result<Recorded, StoreError> {
        let mut conn = self.conn().await?;
        conn.transaction(async move |conn| {
            record_terminal(
                conn,
                &record.job_id,
                record.entity,
                record.attempt,
                &record.outcome,
            )
            .await
        })
        .await
        .map_err(classify)
    }

    async fn commit_profile(&self, unit: ProfileUnit) -> Result<Recorded, StoreError> {
        let mut conn = self.conn().await?;
        conn.transaction(async move |conn| write_profile_unit(conn, &unit).await)
            .await
            .map_err(classify)
    }

    async fn job_usage(&self, job_id: &str) -> Result<UsageTotals, StoreError> {
        let mut conn = self.conn().await?;
        let row: UsageRow = diesel::sql_query(
            "SELECT count(*)::int8 AS profiles, COALESCE(sum(calls), 0)::int8 AS calls, \
                    COALESCE(sum(input_tokens), 0)::int8 AS input_tokens, \
                    COALESCE(sum(output_tokens), 0)::int8 AS output_tokens, \
                    COALESCE(sum(cost_usd), 0)::float8 AS cost_usd \
             FROM profile_generations WHERE job_id = $1",
        )
        .bind::<Text, _>(job_id)
        .get_result(&mut conn)
        .await
        .map_err(classify)?;
        Ok(UsageTotals {
            profiles: row.profiles,
            calls: row.calls,
            input_tokens: row.input_tokens,
            output_tokens: row.output_tokens,
            cost_usd: row.cost_usd,
        })
    }

    fn pool_status(&self) -> Option<PoolStatus> {
        let s = self.pool.status();
        Some(PoolStatus {
            idle: s.available,
            in_use: s.size.saturating_sub(s.available),
            max: s.max_size,
        })
    }
}
