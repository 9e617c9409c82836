//! The schema check: every table and column the daemon reads or writes exists with a compatible
//! type, so a wrong database fails at start-up (and `migrate` refuses) instead of failing on the
//! first message.
//!
//! The API's tables are looked up through the session's search path, exactly as the daemon's
//! queries find them; the daemon's own tables must be in its own schema. What is missing is
//! reported in full, with the remedy: the API's tables are the API's to create (`alembic upgrade
//! head`), the daemon's are `profile-worker migrate`'s.

use std::collections::{HashMap, HashSet};
use std::fmt;

use diesel::sql_types::{Array, Bool, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::StoreError;
use super::connection::classify;
use super::schema::{DAEMON_TABLES, REQUIRED_COLUMNS};

/// One difference between the database and what the daemon needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    MissingTable {
        table: String,
    },
    MissingColumn {
        table: String,
        column: String,
    },
    WrongType {
        table: String,
        column: String,
        found: String,
        expected: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::MissingTable { table } => write!(f, "table {table} is missing"),
            Problem::MissingColumn { table, column } => {
                write!(f, "column {table}.{column} is missing")
            }
            Problem::WrongType {
                table,
                column,
                found,
                expected,
            } => write!(
                f,
                "column {table}.{column} has type {found}, expected {expected}"
            ),
        }
    }
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// The database does not have the shape the daemon needs.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The API's Alembic manages the database, and its schema lacks something.
    #[error(
        "the API's schema is not what profile-worker needs: {}; upgrade the API's schema first \
         (`alembic upgrade head`), then run profile-worker again",
        Problems(.problems)
    )]
    ApiBehind { problems: Vec<Problem> },
    /// No `alembic_version` and the API's tables are incomplete: not a database the API built.
    #[error(
        "the database has no API schema (no alembic_version table): {}; create it with the API's \
         migrations (`alembic upgrade head`), or, for a development or demo database without the \
         API, with `profile-worker migrate --standalone`",
        Problems(.problems)
    )]
    NoApi { problems: Vec<Problem> },
    /// The daemon's own tables are missing or differ.
    #[error(
        "the daemon's schema {schema} is not current: {}; run `profile-worker migrate`",
        Problems(.problems)
    )]
    Daemon {
        schema: String,
        problems: Vec<Problem>,
    },
    #[error("cannot read the schema: {0}")]
    Store(#[from] StoreError),
}

impl SchemaError {
    /// What is missing or wrong (empty for [`SchemaError::Store`]).
    pub fn problems(&self) -> &[Problem] {
        match self {
            SchemaError::ApiBehind { problems }
            | SchemaError::NoApi { problems }
            | SchemaError::Daemon { problems, .. } => problems,
            SchemaError::Store(_) => &[],
        }
    }
}

#[derive(diesel::QueryableByName)]
struct ColumnInfo {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
    #[diesel(sql_type = Text)]
    data_type: String,
}

#[derive(diesel::QueryableByName)]
struct Exists {
    #[diesel(sql_type = Bool)]
    exists: bool,
}

/// Whether the API's Alembic manages this database (`alembic_version` on the search path).
pub async fn has_alembic(conn: &mut AsyncPgConnection) -> Result<bool, StoreError> {
    let row: Exists =
        diesel::sql_query("SELECT to_regclass('alembic_version') IS NOT NULL AS exists")
            .get_result(conn)
            .await
            .map_err(classify)?;
    Ok(row.exists)
}

/// Checks the API's tables (found through the search path).
pub async fn check_api(conn: &mut AsyncPgConnection) -> Result<(), SchemaError> {
    let tables = required_tables(false);
    let rows: Vec<ColumnInfo> = diesel::sql_query(
        "SELECT c.table_name::text AS table_name, c.column_name::text AS column_name, \
                c.data_type::text AS data_type \
         FROM unnest($1::text[]) AS t(name) \
         JOIN pg_class k ON k.oid = to_regclass(quote_ident(t.name)) \
         JOIN pg_namespace n ON n.oid = k.relnamespace \
         JOIN information_schema.columns c ON c.table_schema = n.nspname AND c.table_name = t.name",
    )
    .bind::<Array<Text>, _>(&tables)
    .load(conn)
    .await
    .map_err(classify)?;
    let problems = compare(&rows, false);
    if problems.is_empty() {
        Ok(())
    } else if has_alembic(conn).await? {
        Err(SchemaError::ApiBehind { problems })
    } else {
        Err(SchemaError::NoApi { problems })
    }
}

/// Checks the daemon's own tables in `schema`.
pub async fn check_daemon(conn: &mut AsyncPgConnection, schema: &str) -> Result<(), SchemaError> {
    let rows: Vec<ColumnInfo> = diesel::sql_query(
        "SELECT table_name::text AS table_name, column_name::text AS column_name, \
                data_type::text AS data_type \
         FROM information_schema.columns WHERE table_schema = $1 AND table_name = ANY($2)",
    )
    .bind::<Text, _>(schema)
    .bind::<Array<Text>, _>(required_tables(true))
    .load(conn)
    .await
    .map_err(classify)?;
    let problems = compare(&rows, true);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SchemaError::Daemon {
            schema: schema.to_owned(),
            problems,
        })
    }
}

/// The start-up check of `run`: the API's tables, then the daemon's in `schema`.
pub async fn check_schema(conn: &mut AsyncPgConnection, schema: &str) -> Result<(), SchemaError> {
    check_api(conn).await?;
    check_daemon(conn, schema).await
}

fn required_tables(daemon: bool) -> Vec<&'static str> {
    let mut tables: Vec<&str> = REQUIRED_COLUMNS
        .iter()
        .map(|(table, _, _)| *table)
        .filter(|table| DAEMON_TABLES.contains(table) == daemon)
        .collect();
    tables.dedup();
    tables
}

/// Every problem of the daemon's (`daemon`) or the API's required columns against `rows`.
fn compare(rows: &[ColumnInfo], daemon: bool) -> Vec<Problem> {
    let found: HashMap<(&str, &str), &str> = rows
        .iter()
        .map(|r| {
            (
                (r.table_name.as_str(), r.column_name.as_str()),
                r.data_type.as_str(),
            )
        })
        .collect();
    let tables: HashSet<&str> = rows.iter().map(|r| r.table_name.as_str()).collect();
    let mut problems = Vec::new();
    let mut reported: HashSet<&str> = HashSet::new();
    for (table, column, accepted) in REQUIRED_COLUMNS {
        if DAEMON_TABLES.contains(table) != daemon {
            continue;
        }
        if !tables.contains(table) {
            if reported.insert(table) {
                problems.push(Problem::MissingTable {
                    table: (*table).into(),
                });
            }
            continue;
        }
        match found.get(&(*table, *column)) {
            None => problems.push(Problem::MissingColumn {
                table: (*table).into(),
                column: (*column).into(),
            }),
            Some(data_type) if !accepted.contains(data_type) => problems.push(Problem::WrongType {
                table: (*table).into(),
                column: (*column).into(),
                found: (*data_type).into(),
                expected: accepted.join(" or "),
            }),
            Some(_) => {}
        }
    }
    problems
}
