//! The bundled sample collection (`data/sample-collection.json`): real Victorian authors,
//! publishers and binders, loadable into the memory store or an empty PostgreSQL database.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::model::{AiConnectionRow, AuthorRow, EntityRef, EntityType, OrgRow, StoredProfile};
use crate::store::{BookRecord, MemoryStore};

/// The data file, embedded so the demo needs nothing next to the binary.
pub const SAMPLE_JSON: &str = include_str!("../../data/sample-collection.json");

#[derive(Debug, Deserialize)]
pub struct Sample {
    pub users: Vec<SampleUser>,
    pub authors: Vec<AuthorRow>,
    pub publishers: Vec<OrgRow>,
    pub binders: Vec<SampleBinder>,
    pub books: Vec<BookRecord>,
    pub ai_connections: Vec<AiConnectionRow>,
    pub profiles: Vec<SampleProfile>,
}

#[derive(Debug, Deserialize)]
pub struct SampleUser {
    pub id: i32,
    pub cognito_sub: String,
    pub email: Option<String>,
    pub role: String,
}

/// A binder: the columns the daemon reads, and the full name only the SQL export writes.
#[derive(Debug, Deserialize)]
pub struct SampleBinder {
    #[serde(flatten)]
    pub row: OrgRow,
    pub full_name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct SampleProfile {
    pub entity_type: EntityType,
    pub entity_id: i32,
    pub generated_at: DateTime<Utc>,
    pub model_version: String,
    pub bio_summary: String,
}

impl Sample {
    /// The bundled collection.
    pub fn bundled() -> Sample {
        serde_json::from_str(SAMPLE_JSON).expect("bundled sample collection is valid")
    }

    /// Fills a memory store with the whole collection.
    pub fn load_memory(&self, store: &MemoryStore) {
        for u in &self.users {
            store.add_user(u.id);
        }
        for a in &self.authors {
            store.add_author(a.clone());
        }
        for p in &self.publishers {
            store.add_publisher(p.clone());
        }
        for b in &self.binders {
            store.add_binder(b.row.clone());
        }
        for b in &self.books {
            store.add_book(b.clone());
        }
        for c in &self.ai_connections {
            store.add_ai_connection(c.clone());
        }
        for p in &self.profiles {
            store.add_profile(StoredProfile {
                entity: EntityRef::new(p.entity_type, p.entity_id),
                bio_summary: Some(p.bio_summary.clone()),
                personal_stories: Some(serde_json::json!([])),
                connection_narratives: Some(serde_json::json!({})),
                relationship_stories: Some(serde_json::json!({})),
                ai_connections: None,
                generated_at: Some(p.generated_at),
                model_version: Some(p.model_version.clone()),
            });
        }
    }

    /// SQL that inserts the collection into an empty, migrated database and moves the id
    /// sequences past the inserted ids (so the Python API can keep inserting).
    pub fn sql(&self) -> String {
        let mut sql = String::from("BEGIN;\n");
        for u in &self.users {
            sql += &format!(
                "INSERT INTO users (id, cognito_sub, email, role) VALUES ({}, {}, {}, {});\n",
                u.id,
                lit(&u.cognito_sub),
                opt(u.email.as_deref()),
                lit(&u.role)
            );
        }
        for a in &self.authors {
            sql += &format!(
                "INSERT INTO authors (id, name, birth_year, death_year, tier, image_url) VALUES ({}, {}, {}, {}, {}, {});\n",
                a.id,
                lit(&a.name),
                num(a.birth_year),
                num(a.death_year),
                opt(a.tier.as_deref()),
                opt(a.image_url.as_deref())
            );
        }
        for p in &self.publishers {
            sql += &format!(
                "INSERT INTO publishers (id, name, founded_year, tier, image_url) VALUES ({}, {}, {}, {}, {});\n",
                p.id,
                lit(&p.name),
                num(p.founded_year),
                opt(p.tier.as_deref()),
                opt(p.image_url.as_deref())
            );
        }
        for SampleBinder { row: b, full_name } in &self.binders {
            sql += &format!(
                "INSERT INTO binders (id, name, full_name, founded_year, closed_year, tier, image_url) VALUES ({}, {}, {}, {}, {}, {}, {});\n",
                b.id,
                lit(&b.name),
                opt(full_name.as_deref()),
                num(b.founded_year),
                num(b.closed_year),
                opt(b.tier.as_deref()),
                opt(b.image_url.as_deref())
            );
        }
        for b in &self.books {
            sql += &format!(
                "INSERT INTO books (id, title, author_id, publisher_id, binder_id, status, year_start, created_at, updated_at) VALUES ({}, {}, {}, {}, {}, {}, {}, {u}, {u});\n",
                b.id,
                lit(&b.title),
                num(b.author_id),
                num(b.publisher_id),
                num(b.binder_id),
                lit(&b.status),
                num(b.year_start),
                u = lit(&b.updated_at.to_rfc3339()),
            );
        }
        for c in &self.ai_connections {
            sql += &format!(
                "INSERT INTO ai_connections (source_type, source_id, target_type, target_id, relationship, sub_type, confidence, evidence) VALUES ({}, {}, {}, {}, {}, {}, {}, {});\n",
                lit(&c.source_type),
                c.source_id,
                lit(&c.target_type),
                c.target_id,
                lit(&c.relationship),
                opt(c.sub_type.as_deref()),
                c.confidence,
                opt(c.evidence.as_deref())
            );
        }
        for p in &self.profiles {
            sql += &format!(
                "INSERT INTO entity_profiles (entity_type, entity_id, bio_summary, personal_stories, connection_narratives, relationship_stories, generated_at, model_version) VALUES ({}, {}, {}, '[]', '{{}}', '{{}}', {}, {});\n",
                lit(p.entity_type.as_str()),
                p.entity_id,
                lit(&p.bio_summary),
                lit(&p.generated_at.to_rfc3339()),
                lit(&p.model_version)
            );
        }
        for table in ["users", "authors", "publishers", "binders", "books"] {
            sql += &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}));\n"
            );
        }
        sql + "COMMIT;\n"
    }
}

/// A SQL string literal (standard_conforming_strings: only quotes need doubling).
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn opt(s: Option<&str>) -> String {
    s.map_or_else(|| "NULL".to_string(), lit)
}

fn num(n: Option<i32>) -> String {
    n.map_or_else(|| "NULL".to_string(), |n| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::QUALIFYING_STATUSES;

    #[test]
    fn bundled_sample_has_what_the_demo_needs() {
        let s = Sample::bundled();
        assert!(s.authors.len() + s.publishers.len() + s.binders.len() >= 40);
        assert!(s.books.len() >= 150);
        for status in ["ON_HAND", "IN_TRANSIT", "EVALUATING", "REMOVED"] {
            assert!(s.books.iter().any(|b| b.status == status), "{status}");
        }
        assert!(s.books.iter().any(|b| b.author_id.is_none()));
        assert!(!s.ai_connections.is_empty());
        assert!(
            s.books
                .iter()
                .filter(|b| QUALIFYING_STATUSES.contains(&b.status.as_str()))
                .count()
                > 100
        );
    }

    #[test]
    fn sql_quotes_apostrophes() {
        assert_eq!(
            lit("Tess of the d'Urbervilles"),
            "'Tess of the d''Urbervilles'"
        );
        assert!(Sample::bundled().sql().contains("d''Urbervilles"));
    }
}
