//! The queue message contract (docs/compatibility.md, "Message body"): what producers send and what counts as poison.
//!
//! Producers in any language can validate against `schemas/message.schema.json`, which accepts
//! exactly what [`parse`] accepts (checked by `tests/message_schema.rs`).

use std::collections::HashSet;

use serde::Deserialize;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use crate::entity::{EntityRef, EntityType};

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

/// A body that can never succeed: dead-lettered (or logged) and deleted, never retried (docs/decisions.md, "Outcomes: done, skipped, retry, failed, poison").
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

/// `field must be {expected}, got {kind}`: a value of the wrong JSON type.
fn wrong_type(field: &str, expected: &str, value: &Value) -> Poison {
    poison(format!("{field} must be {expected}, got {}", kind(value)))
}

/// At most the first 64 characters of a string quoted into a reason, so a hostile body cannot
/// flood the logs.
fn prefix(s: &str) -> String {
    s.chars().take(64).collect()
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
/// literal in `1..=2147483647` (the column is a PostgreSQL `integer`); `1.0` is rejected. A key
/// given twice is ambiguous (parsers disagree on which value wins), so it is poison too, and a
/// `job_id` must be a job's id as the API writes it: a lowercase hyphenated UUID.
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
    serde_json::from_str::<UniqueKeys>(body)
        .map_err(|e| poison(format!("body is ambiguous: {e}")))?;

    let job_id = match fields.get("job_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if is_job_id(s) => Some(s.clone()),
        Some(Value::String(s)) => {
            return Err(poison(format!(
                "job_id {:?} is not a job id (a lowercase hyphenated UUID)",
                prefix(s)
            )));
        }
        Some(other) => return Err(wrong_type("job_id", "a string or null", other)),
    };

    let entity_type = match fields.get("entity_type") {
        None => return Err(poison("entity_type is missing")),
        Some(Value::String(s)) => s.parse::<EntityType>().map_err(|_| {
            poison(format!(
                "entity_type {:?} is not author, publisher or binder",
                prefix(s)
            ))
        })?,
        Some(other) => return Err(wrong_type("entity_type", "a string", other)),
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
        Some(other) => return Err(wrong_type("entity_id", "a positive integer", other)),
    };

    let force = match fields.get("force") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(wrong_type("force", "a boolean", other)),
    };

    Ok(Message {
        job_id,
        entity: EntityRef::new(entity_type, id),
        force,
    })
}

/// Whether `s` is a job id as the API and `create_job` write it: `Uuid::to_string`'s lowercase
/// hyphenated form, 36 characters. Anything else can match no job and is a mistake or an attack.
fn is_job_id(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::try_parse(s).is_ok_and(|u| u.hyphenated().to_string() == s)
}

/// Deserialises a JSON object only to fail on its first repeated key (values are skipped).
struct UniqueKeys;

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> Visitor<'de> for Keys {
            type Value = UniqueKeys;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
                let mut seen = HashSet::new();
                while let Some(key) = map.next_key::<String>()? {
                    if !seen.insert(key.clone()) {
                        return Err(serde::de::Error::custom(format!(
                            "key {:?} appears more than once",
                            prefix(&key)
                        )));
                    }
                    map.next_value::<IgnoredAny>()?;
                }
                Ok(UniqueKeys)
            }
        }
        deserializer.deserialize_map(Keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: &str = "6f1c2d3e-0000-4000-8000-000000000001";

    fn reason(body: &str) -> String {
        parse(body, 1024).unwrap_err().reason
    }

    #[test]
    fn bodies_use_the_original_json_style_and_parse_back() {
        let batch = Message {
            job_id: Some(JOB.into()),
            entity: EntityRef::new(EntityType::Author, 5),
            force: false,
        };
        assert_eq!(
            batch.body(),
            format!(r#"{{"job_id": "{JOB}", "entity_type": "author", "entity_id": 5}}"#)
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
        assert_eq!(parse(&ad_hoc.body(), 65536).unwrap(), ad_hoc);
        assert_eq!(parse(&batch.body(), 65536).unwrap(), batch);
    }

    #[test]
    fn python_producer_body_parses() {
        let m = parse(
            r#"{"job_id": "0b6f2d3e-0000-4000-8000-000000000002", "entity_type": "author", "entity_id": 5}"#,
            1024,
        )
        .unwrap();
        assert_eq!(
            m,
            Message {
                job_id: Some("0b6f2d3e-0000-4000-8000-000000000002".into()),
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
            demand(&format!(
                r#"{{"job_id": "{JOB}", "entity_type": "author", "entity_id": 1}}"#
            )),
            Demand::IfStale
        );
        assert_eq!(
            demand(&format!(
                r#"{{"job_id": "{JOB}", "entity_type": "author", "entity_id": 1, "force": true}}"#
            )),
            Demand::Forced
        );
    }

    #[test]
    fn reasons_name_the_problem() {
        assert!(reason("nope").starts_with("body is not JSON"));
        for (body, expected) in [
            ("[1]", "body must be a JSON object, got an array"),
            (r#"{"entity_id": 1}"#, "entity_type is missing"),
            (
                r#"{"entity_type": "editor", "entity_id": 1}"#,
                "entity_type \"editor\" is not author, publisher or binder",
            ),
            (
                r#"{"entity_type": "author", "entity_id": 1.0}"#,
                "entity_id must be a positive integer, got a non-integer number",
            ),
            (
                r#"{"entity_type": "author", "entity_id": 0}"#,
                "entity_id must be positive, got 0",
            ),
            (
                r#"{"entity_type": "author", "entity_id": 2147483648}"#,
                "entity_id 2147483648 is larger than the largest id (2147483647)",
            ),
            (
                r#"{"entity_type": "author", "entity_id": 3, "job_id": 4}"#,
                "job_id must be a string or null, got an integer",
            ),
            (
                r#"{"entity_type": "author", "entity_id": 3, "force": "yes"}"#,
                "force must be a boolean, got a string",
            ),
        ] {
            assert_eq!(reason(body), expected, "{body}");
        }
    }

    #[test]
    fn ambiguous_and_implausible_bodies_are_poison() {
        assert!(
            reason(r#"{"entity_type": "author", "entity_id": 1, "entity_id": 2}"#)
                .contains("key \"entity_id\" appears more than once")
        );
        assert!(
            reason(r#"{"entity_type": "author", "entity_id": 1, "x": 1, "x": 1}"#)
                .starts_with("body is ambiguous")
        );
        for job in [
            "",
            "j-1",
            "6F1C2D3E-0000-4000-8000-000000000001",
            "{6f1c2d3e-0000-4000-8000-000000000001}",
            "6f1c2d3e000040008000000000000001",
            "6f1c2d3e-0000-4000-8000-00000000000\\u0000",
        ] {
            let body = format!(r#"{{"job_id": "{job}", "entity_type": "author", "entity_id": 1}}"#);
            assert!(reason(&body).contains("is not a job id"), "{job}");
        }
        let long = format!(
            r#"{{"job_id": "{}", "entity_type": "author", "entity_id": 1}}"#,
            "a".repeat(600)
        );
        assert!(parse(&long, 4096).unwrap_err().reason.len() < 200);
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

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn message() -> impl Strategy<Value = Message> {
            (
                proptest::option::of(any::<u128>()),
                prop_oneof![
                    Just(EntityType::Author),
                    Just(EntityType::Publisher),
                    Just(EntityType::Binder)
                ],
                1..=i32::MAX,
                any::<bool>(),
            )
                .prop_map(|(job, entity_type, id, force)| Message {
                    job_id: job.map(|j| uuid::Uuid::from_u128(j).to_string()),
                    entity: EntityRef::new(entity_type, id),
                    force,
                })
        }

        proptest! {
            #[test]
            fn bodies_round_trip(m in message()) {
                prop_assert_eq!(parse(&m.body(), 65536), Ok(m));
            }

            #[test]
            fn any_text_parses_or_is_poison_without_panicking(body in any::<String>()) {
                let _ = parse(&body, 65536);
            }

            #[test]
            fn json_shaped_text_parses_or_is_poison_without_panicking(
                body in r#"\{("[a-z_]{0,12}": ?(-?[0-9]{1,12}(\.[0-9])?|"[a-z0-9-]{0,40}"|null|true|\[\]|\{\}), ?){0,6}\}"#
            ) {
                if let Ok(m) = parse(&body, 65536) {
                    prop_assert!(m.entity.id >= 1);
                }
            }
        }
    }
}
