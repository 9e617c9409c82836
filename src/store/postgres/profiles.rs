//! The profile side of [`PgStore`]: reads of the API's domain tables and the profile unit of
//! work. Reads use the diesel DSL against [`crate::store::schema`]; the upserts whose semantics
//! are SQL are written out as SQL so they can be read next to the documented behaviour.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Double, Integer, Json, Nullable, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::PgStore;
use super::graph_rows::load_graph_rows;
use super::jobs::record_terminal;
use crate::model::{
    AiConnectionRow, Book, CollectionEntity, Entity, EntityRef, EntityType, GraphRows,
    QUALIFYING_STATUSES, StoredProfile,
};
use crate::store::connection::classify;
use crate::store::schema::{app_config, authors, binders, books, entity_profiles, publishers};
use crate::store::{
    GenerationUsage, Outcome, ProfileStore, ProfileUnit, Recorded, StoreError,
    canonical_ai_connections,
};

/// The `entity_profiles` columns of a [`StoredProfile`].
#[derive(Queryable, Selectable)]
#[diesel(table_name = entity_profiles)]
struct ProfileColumns {
    bio_summary: Option<String>,
    personal_stories: Option<serde_json::Value>,
    connection_narratives: Option<serde_json::Value>,
    relationship_stories: Option<serde_json::Value>,
    ai_connections: Option<serde_json::Value>,
    generated_at: Option<DateTime<Utc>>,
    model_version: Option<String>,
}

impl ProfileColumns {
    fn of(self, entity: EntityRef) -> StoredProfile {
        StoredProfile {
            entity,
            bio_summary: self.bio_summary,
            personal_stories: self.personal_stories,
            connection_narratives: self.connection_narratives,
            relationship_stories: self.relationship_stories,
            ai_connections: self.ai_connections,
            generated_at: self.generated_at,
            model_version: self.model_version,
        }
    }
}

/// An entity's name and years: birth, death, founded, closed.
type EntityTuple = (String, (Option<i32>, Option<i32>, Option<i32>, Option<i32>));

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

/// Step 1 of the profile unit: the multi-row AI-connection upsert (docs/compatibility.md, "AI connections upsert").
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

/// One `profile_generations` row.
async fn insert_usage(
    conn: &mut AsyncPgConnection,
    entity: EntityRef,
    job_id: Option<&str>,
    u: &GenerationUsage,
    discarded: bool,
) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO profile_generations (entity_type, entity_id, job_id, model_id, calls, \
             input_tokens, output_tokens, latency_ms, cost_usd, discarded, cache_read_tokens, \
             cache_write_tokens, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, now())",
    )
    .bind::<Text, _>(entity.entity_type.as_str())
    .bind::<Integer, _>(entity.id)
    .bind::<Nullable<Text>, _>(job_id)
    .bind::<Text, _>(&u.model_id)
    .bind::<Integer, _>(u.calls)
    .bind::<BigInt, _>(u.input_tokens)
    .bind::<BigInt, _>(u.output_tokens)
    .bind::<BigInt, _>(u.latency_ms)
    .bind::<Double, _>(u.cost_usd)
    .bind::<Bool, _>(discarded)
    .bind::<BigInt, _>(u.cache_read_tokens)
    .bind::<BigInt, _>(u.cache_write_tokens)
    .execute(conn)
    .await?;
    Ok(())
}

/// Steps 1-4 of [`ProfileStore::commit_profile`], inside the caller's transaction.
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

    insert_usage(
        conn,
        unit.entity,
        unit.job_id.as_deref(),
        &unit.usage,
        false,
    )
    .await?;

    match &unit.job_id {
        Some(job_id) => {
            record_terminal(conn, job_id, unit.entity, unit.attempt, &Outcome::Succeeded).await
        }
        None => Ok(Recorded::default()),
    }
}

/// Loads `(id, name)` of the rows of `$table` that a qualifying book references through `$fk`, by
/// id (a macro: the three tables' queries differ in type).
macro_rules! with_qualifying_books {
    ($table:ident, $fk:expr, $conn:expr) => {
        $table::table
            .filter(diesel::dsl::exists(
                books::table
                    .filter(books::status.eq_any(QUALIFYING_STATUSES))
                    .filter($fk.eq($table::id.nullable())),
            ))
            .order($table::id.asc())
            .select(($table::id, $table::name))
            .load::<(i32, String)>($conn)
    };
}

impl PgStore {
    /// One `app_config` value; `None` when the key is not set.
    async fn app_setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn().await?;
        app_config::table
            .find(key)
            .select(app_config::value)
            .first(&mut conn)
            .await
            .optional()
            .map_err(classify)
    }
}

#[async_trait]
impl ProfileStore for PgStore {
    async fn entity(&self, entity: EntityRef) -> Result<Option<Entity>, StoreError> {
        let mut conn = self.conn().await?;
        let conn = &mut conn;
        // Birth, death, founded and closed year; NULL where the table has no such column.
        let null = || None::<i32>.into_sql::<Nullable<Integer>>();
        let row = match entity.entity_type {
            EntityType::Author => {
                let years = (authors::birth_year, authors::death_year, null(), null());
                let query = authors::table
                    .find(entity.id)
                    .select((authors::name, years));
                query.first::<EntityTuple>(conn).await
            }
            EntityType::Publisher => {
                let years = (null(), null(), publishers::founded_year, null());
                let query = publishers::table
                    .find(entity.id)
                    .select((publishers::name, years));
                query.first::<EntityTuple>(conn).await
            }
            EntityType::Binder => {
                let years = (null(), null(), binders::founded_year, binders::closed_year);
                let query = binders::table
                    .find(entity.id)
                    .select((binders::name, years));
                query.first::<EntityTuple>(conn).await
            }
        }
        .optional()
        .map_err(classify)?;
        Ok(row.map(
            |(name, (birth_year, death_year, founded_year, closed_year))| Entity {
                entity,
                name,
                birth_year,
                death_year,
                founded_year,
                closed_year,
            },
        ))
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
        let row = entity_profiles::table
            .filter(entity_profiles::entity_type.eq(entity.entity_type.as_str()))
            .filter(entity_profiles::entity_id.eq(entity.id))
            .select(ProfileColumns::as_select())
            .first(&mut conn)
            .await
            .optional()
            .map_err(classify)?;
        Ok(row.map(|columns| columns.of(entity)))
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
        let mut entities = Vec::new();
        for entity_type in EntityType::ALL {
            let conn = &mut conn;
            let rows = match entity_type {
                EntityType::Author => with_qualifying_books!(authors, books::author_id, conn).await,
                EntityType::Publisher => {
                    with_qualifying_books!(publishers, books::publisher_id, conn).await
                }
                EntityType::Binder => with_qualifying_books!(binders, books::binder_id, conn).await,
            }
            .map_err(classify)?;
            entities.extend(rows.into_iter().map(|(id, name)| CollectionEntity {
                entity: EntityRef::new(entity_type, id),
                name,
            }));
        }
        Ok(entities)
    }

    async fn model_setting(&self) -> Result<Option<String>, StoreError> {
        self.app_setting("model.entity_profiles").await
    }

    async fn daily_cap_setting(&self) -> Result<Option<String>, StoreError> {
        self.app_setting("budget.daily_cost_usd").await
    }

    async fn commit_profile(&self, unit: ProfileUnit) -> Result<Recorded, StoreError> {
        let mut conn = self.conn().await?;
        conn.transaction(async move |conn| write_profile_unit(conn, &unit).await)
            .await
            .map_err(classify)
    }

    async fn record_discarded_usage(
        &self,
        entity: EntityRef,
        job_id: Option<&str>,
        usage: &GenerationUsage,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        insert_usage(&mut conn, entity, job_id, usage, true)
            .await
            .map_err(classify)
    }
}
