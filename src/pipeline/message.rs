//! The queue message contract (design §4): what producers send and what counts as poison.
//!
//! Producers in any language can validate against `schemas/message.schema.json`, which accepts
//! exactly what [`parse`] accepts (checked by `tests/message_schema.rs`).

use serde_json::Value;

use crate::model::{EntityRef, EntityType};

/// A valid profile-generation request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Batch job to account progress against; `None` for ad-hoc regeneration (or `null`/absent).
    pub job_id: Option<String>,
    /// The entity to profile.
    pub entity: EntityRef,
    /// Regenerate even when the stored profile is fresh.
    pub force: bool,
}

impl Message {
    /// Whether the stored profile's freshness may cancel this request.
    ///
    /// A message without a job is a person's request (the API's "regenerate" button): the API sends
    /// it and then deletes the profile row to show a loading state, so a fast worker that applied
    /// the staleness rule would read the still-fresh row, skip, and leave no profile at all. Such a
    /// message regenerates as if `force` were set; batch messages keep the staleness rule
    /// (docs/decisions.md, "A person's regenerate request always regenerates").
    pub fn demand(&self) -> Demand {
        if self.force {
            Demand::Forced
        } else if self.job_id.is_none() {
            Demand::Requested
        } else {
            Demand::IfStale
        }
    }

    /// The body, in the original producer's JSON style (`json.dumps` separators) so logs and
    /// tooling on both sides read the same: `{"job_id": "…", "entity_type": "author",
    /// "entity_id": 5}`, plus `"force": true` only when forced. [`parse`] reads it back.
    pub fn body(&self) -> String {
        let job = match &self.job_id {
            Some(id) => Value::from(id.as_str()).to_string(),
            None => "null".to_string(),
        };
        let force = if self.force { ", \"force\": true" } else { "" };
        format!(
            "{{\"job_id\": {job}, \"entity_type\": \"{}\", \"entity_id\": {}{force}}}",
            self.entity.entity_type, self.entity.id
        )
    }
}

/// What a message asks of an entity whose profile may already be fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Demand {
    /// A batch job's message: generate only when the profile is stale.
    IfStale,
    /// `"force": true`: generate regardless.
    Forced,
    /// No job: a person asked for this profile; generate regardless.
    Requested,
}

/// A body that can never succeed: dead-lettered (or logged) and deleted, never retried (D1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("poison message: {reason}")]
pub struct Poison {
    pub reason: String,
}

fn poison(reason: impl Into<String>) -> Poison {
    Poison {
        reason: reason.into(),
    }
}

/// JSON type name for error messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a non-integer number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses one message body; anything outside the contract is [`Poison`] with a readable reason.
///
/// Unknown keys are ignored (older producers send `owner_id`). `entity_id` must be a JSON integer
/// literal in `1..=2147483647` (the column is a PostgreSQL `integer`); `1.0` is rejected.
pub fn parse(body: &str, max_bytes: usize) -> Result<Message, Poison> {
    if body.len() > max_bytes {
        return Err(poison(format!(
            "body is {} bytes, over the limit of {max_bytes}",
            body.len()
        )));
    }
    let value: Value =
        serde_json::from_str(body).map_err(|e| poison(format!("body is not JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(poison(format!(
            "body must be a JSON object, got {}",
            kind(&value)
        )));
    };

    let job_id = match fields.get("job_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(poison(format!(
                "job_id must be a string or null, got {}",
                kind(other)
            )));
        }
    };

    let entity_type = match fields.get("entity_type") {
        None => return Err(poison("entity_type is missing")),
        Some(Value::String(s)) => s.parse::<EntityType>().map_err(|_| {
            poison(format!(
                "entity_type {s:?} is not author, publisher or binder"
            ))
        })?,
        Some(other) => {
            return Err(poison(format!(
                "entity_type must be a string, got {}",
                kind(other)
            )));
        }
    };

    let id = match fields.get("entity_id") {
        None => return Err(poison("entity_id is missing")),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => {
            let id = n.as_i64().unwrap_or(i64::MAX);
            if id < 1 {
                return Err(poison(format!("entity_id must be positive, got {n}")));
            }
            i32::try_from(id).map_err(|_| {
                poison(format!(
                    "entity_id {n} is larger than the largest id ({})",
                    i32::MAX
                ))
            })?
        }
        Some(other) => {
            return Err(poison(format!(
                "entity_id must be a positive integer, got {}",
                kind(other)
            )));
        }
    };

    let force = match fields.get("force") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(poison(format!(
                "force must be a boolean, got {}",
                kind(other)
            )));
        }
    };

    Ok(Message {
        job_id,
        entity: EntityRef::new(entity_type, id),
        force,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(body: &str) -> String {
        parse(body, 1024).unwrap_err().reason
    }

    #[test]
    fn bodies_use_the_original_json_style_and_parse_back() {
        let batch = Message {
            job_id: Some("j-1".into()),
            entity: EntityRef::new(EntityType::Author, 5),
            force: false,
        };
        assert_eq!(
            batch.body(),
            r#"{"job_id": "j-1", "entity_type": "author", "entity_id": 5}"#
        );
        let ad_hoc = Message {
            job_id: None,
            entity: EntityRef::new(EntityType::Binder, 12),
            force: true,
        };
        assert_eq!(
            ad_hoc.body(),
            r#"{"job_id": null, "entity_type": "binder", "entity_id": 12, "force": true}"#
        );
        let quoted = Message {
            job_id: Some("j\"2".into()),
            ..ad_hoc
        };
        assert_eq!(parse(&quoted.body(), 65536).unwrap(), quoted);
        assert_eq!(parse(&batch.body(), 65536).unwrap(), batch);
    }

    #[test]
    fn python_producer_body_parses() {
        let m = parse(
            r#"{"job_id": "0b6f", "entity_type": "author", "entity_id": 5}"#,
            1024,
        )
        .unwrap();
        assert_eq!(
            m,
            Message {
                job_id: Some("0b6f".into()),
                entity: EntityRef::new(EntityType::Author, 5),
                force: false
            }
        );
    }

    #[test]
    fn owner_id_and_null_job_are_accepted() {
        let m = parse(
            r#"{"job_id": null, "entity_type": "binder", "entity_id": 7, "owner_id": 1, "force": true}"#,
            1024,
        )
        .unwrap();
        assert_eq!(m.job_id, None);
        assert!(m.force);
        assert_eq!(m.entity.to_string(), "binder:7");
    }

    #[test]
    fn a_message_without_a_job_is_a_persons_request() {
        let demand = |body: &str| parse(body, 1024).unwrap().demand();
        assert_eq!(
            demand(r#"{"job_id": null, "entity_type": "author", "entity_id": 1}"#),
            Demand::Requested
        );
        assert_eq!(
            demand(r#"{"entity_type": "author", "entity_id": 1}"#),
            Demand::Requested,
            "absent job_id is the same as null"
        );
        assert_eq!(
            demand(r#"{"job_id": "j", "entity_type": "author", "entity_id": 1}"#),
            Demand::IfStale
        );
        assert_eq!(
            demand(r#"{"job_id": "j", "entity_type": "author", "entity_id": 1, "force": true}"#),
            Demand::Forced
        );
    }

    #[test]
    fn reasons_name_the_problem() {
        assert!(reason("nope").starts_with("body is not JSON"));
        assert_eq!(reason("[1]"), "body must be a JSON object, got an array");
        assert_eq!(reason(r#"{"entity_id": 1}"#), "entity_type is missing");
        assert_eq!(
            reason(r#"{"entity_type": "editor", "entity_id": 1}"#),
            "entity_type \"editor\" is not author, publisher or binder"
        );
        assert_eq!(
            reason(r#"{"entity_type": "author", "entity_id": 1.0}"#),
            "entity_id must be a positive integer, got a non-integer number"
        );
        assert_eq!(
            reason(r#"{"entity_type": "author", "entity_id": 0}"#),
            "entity_id must be positive, got 0"
        );
        assert_eq!(
            reason(r#"{"entity_type": "author", "entity_id": 2147483648}"#),
            "entity_id 2147483648 is larger than the largest id (2147483647)"
        );
        assert_eq!(
            reason(r#"{"entity_type": "author", "entity_id": 3, "job_id": 4}"#),
            "job_id must be a string or null, got an integer"
        );
        assert_eq!(
            reason(r#"{"entity_type": "author", "entity_id": 3, "force": "yes"}"#),
            "force must be a boolean, got a string"
        );
    }

    #[test]
    fn oversized_body_is_poison_before_parsing() {
        let body = format!(
            r#"{{"entity_type": "author", "entity_id": 1, "pad": "{}"}}"#,
            "x".repeat(100)
        );
        let err = parse(&body, 64).unwrap_err();
        assert!(
            err.reason.contains("over the limit of 64"),
            "{}",
            err.reason
        );
        assert!(parse(&body, 1024).is_ok());
    }
}
