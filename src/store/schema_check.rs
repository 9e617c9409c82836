//! The start-up schema check: every table and column the daemon reads or writes exists with a
//! compatible type, so a wrong database fails at start-up instead of on the first message.

use std::collections::HashMap;

use diesel::sql_types::Text;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::StoreError;
use super::schema::REQUIRED_COLUMNS;

/// The database does not have the shape the daemon needs.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("table {table} is missing; run `profile-worker migrate`")]
    MissingTable { table: String },
    #[error("column {table}.{column} is missing; run `profile-worker migrate`")]
    MissingColumn { table: String, column: String },
    #[error(
        "column {table}.{column} has type {found}, expected {expected}; run `profile-worker migrate` \
         or fix the column"
    )]
    WrongType {
        table: String,
        column: String,
        found: String,
        expected: String,
    },
    #[error("cannot read the schema: {0}")]
    Store(#[from] StoreError),
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

/// Checks that every table and column the daemon reads or writes exists in the current schema
/// with a compatible type; the first problem is returned, naming the table and column.
pub async fn check_schema(conn: &mut AsyncPgConnection) -> Result<(), SchemaError> {
    let rows: Vec<ColumnInfo> = diesel::sql_query(
        "SELECT table_name::text AS table_name, column_name::text AS column_name, \
                data_type::text AS data_type \
         FROM information_schema.columns WHERE table_schema = current_schema()",
    )
    .load(conn)
    .await
    .map_err(super::connection::classify)?;
    let mut found: HashMap<(&str, &str), &str> = HashMap::new();
    for row in &rows {
        found.insert((&row.table_name, &row.column_name), &row.data_type);
    }
    let tables: std::collections::HashSet<&str> =
        rows.iter().map(|r| r.table_name.as_str()).collect();
    for (table, column, accepted) in REQUIRED_COLUMNS {
        if !tables.contains(table) {
            return Err(SchemaError::MissingTable {
                table: (*table).into(),
            });
        }
        match found.get(&(*table, *column)) {
            None => {
                return Err(SchemaError::MissingColumn {
                    table: (*table).into(),
                    column: (*column).into(),
                });
            }
            Some(data_type) if !accepted.contains(data_type) => {
                return Err(SchemaError::WrongType {
                    table: (*table).into(),
                    column: (*column).into(),
                    found: (*data_type).into(),
                    expected: accepted.join(" or "),
                });
            }
            Some(_) => {}
        }
    }
    Ok(())
}
