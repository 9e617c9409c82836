//! Domain types shared by the store, the graph, the pipeline and the CLI.
//!
//! They mirror the original system's tables (docs/compatibility.md, "Shared tables"); the store fills them, everything
//! else only reads them.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use profile_worker_contract::entity::{CollectionEntity, EntityRef, EntityType};

/// Book statuses that make a book part of the collection (docs/compatibility.md, "Qualifying books").
pub const QUALIFYING_STATUSES: [&str; 2] = ["IN_TRANSIT", "ON_HAND"];

/// A qualifying book's links, the graph builder's main input.
#[derive(Debug, Clone, PartialEq, Eq, diesel::Queryable)]
pub struct BookLink {
    pub id: i32,
    pub author_id: Option<i32>,
    pub publisher_id: Option<i32>,
    pub binder_id: Option<i32>,
}

/// The `authors` columns the graph and prompts use.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, diesel::Queryable)]
pub struct AuthorRow {
    pub id: i32,
    pub name: String,
    pub birth_year: Option<i32>,
    pub death_year: Option<i32>,
    pub tier: Option<String>,
    pub image_url: Option<String>,
}

/// The `publishers` / `binders` columns the graph and prompts use (publishers have no closed year).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, diesel::Queryable)]
pub struct OrgRow {
    pub id: i32,
    pub name: String,
    pub tier: Option<String>,
    pub image_url: Option<String>,
    pub founded_year: Option<i32>,
    pub closed_year: Option<i32>,
}

/// One `ai_connections` row, in its stored (canonical) order.
#[derive(Debug, Clone, PartialEq, Deserialize, diesel::Queryable)]
pub struct AiConnectionRow {
    pub source_type: String,
    pub source_id: i32,
    pub target_type: String,
    pub target_id: i32,
    pub relationship: String,
    pub sub_type: Option<String>,
    pub confidence: f64,
    pub evidence: Option<String>,
}

/// Everything the graph is built from, read in one consistent snapshot. Its row types are
/// `diesel::Queryable` by position: the store selects their columns in field order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GraphRows {
    /// Qualifying books ordered by id, at most `max_books` of them.
    pub books: Vec<BookLink>,
    /// Authors referenced by `books`, ordered by id.
    pub authors: Vec<AuthorRow>,
    /// Publishers referenced by `books`, ordered by id.
    pub publishers: Vec<OrgRow>,
    /// Binders referenced by `books`, ordered by id (empty when binders are excluded).
    pub binders: Vec<OrgRow>,
    /// All `ai_connections` rows, ordered by id.
    pub ai_connections: Vec<AiConnectionRow>,
}

/// An entity as the prompts need it: name and the years the original's prompts mention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entity {
    pub entity: EntityRef,
    pub name: String,
    pub birth_year: Option<i32>,
    pub death_year: Option<i32>,
    pub founded_year: Option<i32>,
    pub closed_year: Option<i32>,
}

/// A qualifying book of an entity, in prompt order (`year_start` NULLS LAST, then id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Book {
    pub id: i32,
    pub title: String,
    pub year_start: Option<i32>,
}

/// Status of a batch job (docs/compatibility.md, "profile_generation_jobs"); the strings are the stored values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Pending,
    InProgress,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::InProgress => "in_progress",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Completed, failed and cancelled never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(JobStatus::Pending),
            "in_progress" => Ok(JobStatus::InProgress),
            "completed" => Ok(JobStatus::Completed),
            "failed" => Ok(JobStatus::Failed),
            "cancelled" => Ok(JobStatus::Cancelled),
            other => Err(format!("unknown job status {other:?}")),
        }
    }
}

/// A `profile_generation_jobs` row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Job {
    pub id: String,
    pub status: JobStatus,
    pub owner_id: i32,
    pub total_entities: i32,
    pub succeeded: i32,
    pub failed: i32,
    pub error_log: Option<String>,
    pub completed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The parts of an `entity_profiles` row the daemon reads back (staleness, merge).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredProfile {
    pub entity: EntityRef,
    pub bio_summary: Option<String>,
    pub personal_stories: Option<serde_json::Value>,
    pub connection_narratives: Option<serde_json::Value>,
    pub relationship_stories: Option<serde_json::Value>,
    pub ai_connections: Option<serde_json::Value>,
    pub generated_at: Option<DateTime<Utc>>,
    pub model_version: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_status_strings_match_the_database() {
        for s in ["pending", "in_progress", "completed", "failed", "cancelled"] {
            assert_eq!(s.parse::<JobStatus>().unwrap().as_str(), s);
        }
        assert!(JobStatus::Cancelled.is_terminal());
        assert!(!JobStatus::InProgress.is_terminal());
    }
}
