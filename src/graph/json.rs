//! The cached graph's JSON: exactly what the Python API writes and reads (docs/compatibility.md, "Graph cache in Redis").
//!
//! The API stores `json.dumps(response.model_dump(mode="json"))`: `", "` and `": "`
//! separators, every non-ASCII character escaped as `\uXXXX` (surrogate pairs beyond the BMP),
//! all fields present with nulls. We write the same bytes so neither side can tell the writers
//! apart, and we read whatever Pydantic would accept from older or newer writers.

use std::io;

use serde::Serialize;

use super::Graph;

/// Why a cached value is not a graph; the cache treats it as a miss and overwrites it.
#[derive(Debug, thiserror::Error)]
pub enum GraphJsonError {
    #[error("not a social-circles graph: {0}")]
    Shape(#[from] serde_json::Error),
    #[error("edge {id} has strength {strength}, outside 2..=10")]
    Strength { id: String, strength: u8 },
}

/// Serialises the graph the way the Python API's cache does (`json.dumps` defaults).
pub fn to_python_json(graph: &Graph) -> String {
    let mut out = Vec::with_capacity(256 * (graph.nodes.len() + graph.edges.len()) + 256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    graph
        .serialize(&mut ser)
        .expect("a graph always serialises: string keys, no floats, no custom errors");
    String::from_utf8(out).expect("the Python formatter writes ASCII only")
}

/// Parses a cached graph written by either implementation, validating what Pydantic validates.
/// Takes bytes as the cache reads them; UTF-8 is checked while parsing.
pub fn from_json<T: AsRef<[u8]> + ?Sized>(json: &T) -> Result<Graph, GraphJsonError> {
    let graph: Graph = serde_json::from_slice(json.as_ref())?;
    if let Some(edge) = graph.edges.iter().find(|e| !(2..=10).contains(&e.strength)) {
        return Err(GraphJsonError::Strength {
            id: edge.id.clone(),
            strength: edge.strength,
        });
    }
    Ok(graph)
}

/// `json.dumps` with `ensure_ascii=True` and the default separators.
struct PythonFormatter;

/// Python's item separator, `", "`, before every array value and object key but the first.
fn item_separator<W: ?Sized + io::Write>(writer: &mut W, first: bool) -> io::Result<()> {
    if first {
        Ok(())
    } else {
        writer.write_all(b", ")
    }
}

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        item_separator(writer, first)
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        item_separator(writer, first)
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b": ")
    }

    /// serde_json already escapes `"`, `\` and control characters exactly as Python does; the
    /// rest of Python's `[^ -~]` class (DEL and everything non-ASCII) is escaped here.
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut plain_from = 0;
        for (at, c) in fragment.char_indices() {
            if (' '..='~').contains(&c) {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[plain_from..at])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            plain_from = at + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[plain_from..])
    }
}

/// `generated_at` as Pydantic writes it (`2026-01-31T12:00:00.123456Z`, no fraction when the
/// microseconds are zero) and reads it (any offset, or naive meaning UTC).
pub(super) mod python_datetime {
    use chrono::{DateTime, NaiveDateTime, Timelike, Utc};
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        let micros = at.nanosecond() % 1_000_000_000 / 1_000;
        let text = if micros == 0 {
            at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
        } else {
            format!("{}.{micros:06}Z", at.format("%Y-%m-%dT%H:%M:%S"))
        };
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        if let Ok(at) = DateTime::parse_from_rfc3339(&text) {
            return Ok(at.with_timezone(&Utc));
        }
        ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(&text, f).ok())
            .map(|naive| naive.and_utc())
            .ok_or_else(|| D::Error::custom(format!("generated_at {text:?} is not ISO-8601")))
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Timelike, Utc};

    use super::*;
    use crate::graph::{ConnectionType, Edge, Meta, Node};
    use crate::model::EntityType;

    fn graph(name: &str, micros: u32) -> Graph {
        Graph {
            nodes: vec![Node {
                id: "author:1".into(),
                entity_id: 1,
                name: name.into(),
                entity_type: EntityType::Author,
                birth_year: None,
                death_year: None,
                era: None,
                tier: None,
                founded_year: None,
                closed_year: None,
                image_url: None,
                book_count: 1,
                book_ids: vec![1, 2],
            }],
            edges: vec![Edge {
                id: "e:author:1:author:2:family".into(),
                source: "author:1".into(),
                target: "author:2".into(),
                edge_type: ConnectionType::Family,
                strength: 5,
                evidence: None,
                shared_book_ids: None,
                start_year: None,
                end_year: None,
            }],
            meta: Meta {
                total_books: 1,
                total_authors: 1,
                total_publishers: 0,
                total_binders: 0,
                date_range: [1800, 1900],
                generated_at: Utc
                    .with_ymd_and_hms(2026, 1, 31, 12, 0, 0)
                    .unwrap()
                    .with_nanosecond(micros * 1000)
                    .unwrap(),
                truncated: false,
            },
        }
    }

    #[test]
    fn escapes_like_python() {
        let json = to_python_json(&graph("Brontë \"Currer\" \\ \u{7f}\t𝔊", 0));
        assert!(
            json.contains(r#""name": "Bront\u00eb \"Currer\" \\ \u007f\t\ud835\udd0a""#),
            "{json}"
        );
        assert!(json.is_ascii());
        assert!(json.contains(r#""book_count": 1, "book_ids": [1, 2]}], "edges": ["#));
        assert!(json.contains(r#""generated_at": "2026-01-31T12:00:00Z""#));
        assert_eq!(
            from_json(&json).unwrap(),
            graph("Brontë \"Currer\" \\ \u{7f}\t𝔊", 0)
        );
    }

    #[test]
    fn microseconds_only_when_non_zero() {
        let json = to_python_json(&graph("x", 42));
        assert!(json.contains(r#""generated_at": "2026-01-31T12:00:00.000042Z""#));
        assert_eq!(
            from_json(&json).unwrap().meta.generated_at,
            graph("x", 42).meta.generated_at
        );
    }

    #[test]
    fn reads_offsets_and_naive_times() {
        let base = to_python_json(&graph("x", 0));
        for written in [
            "2026-01-31T12:00:00+00:00",
            "2026-01-31T13:00:00+01:00",
            "2026-01-31T12:00:00",
            "2026-01-31T12:00:00.000000",
        ] {
            let text = base.replace("2026-01-31T12:00:00Z", written);
            assert_eq!(from_json(&text).unwrap(), graph("x", 0), "{written}");
        }
    }

    #[test]
    fn rejects_what_pydantic_rejects() {
        let base = to_python_json(&graph("x", 0));
        let cases = [
            base.replace(r#""strength": 5"#, r#""strength": 1"#),
            base.replace(r#""strength": 5"#, r#""strength": 11"#),
            base.replace(r#""type": "family""#, r#""type": "rival""#),
            base.replace(r#""type": "author""#, r#""type": "editor""#),
            base.replace("[1800, 1900]", "[1800]"),
            base.replace("[1800, 1900]", "[1800, 1900, 2000]"),
            base.replace(
                r#""generated_at": "2026-01-31T12:00:00Z""#,
                r#""generated_at": "soon""#,
            ),
            "[]".to_string(),
            "not json".to_string(),
        ];
        for text in cases {
            assert!(from_json(&text).is_err(), "{text}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_graph_round_trips_through_python_json(
                name in any::<String>(),
                tier in proptest::option::of(any::<String>()),
                evidence in proptest::option::of(any::<String>()),
                micros in 0u32..1_000_000,
                strength in 2u8..=10,
                edge_type in proptest::sample::select(ConnectionType::ALL.to_vec()),
                era in proptest::option::of(proptest::sample::select(vec![
                    crate::graph::Era::PreRomantic, crate::graph::Era::Victorian,
                    crate::graph::Era::Post1910, crate::graph::Era::Unknown,
                ])),
                years in proptest::option::of(any::<i32>()),
                books in proptest::collection::vec(any::<i32>(), 0..5),
            ) {
                let mut g = graph(&name, micros);
                g.nodes[0].tier = tier;
                g.nodes[0].era = era;
                g.nodes[0].birth_year = years;
                g.nodes[0].book_ids = books.clone();
                g.edges[0].evidence = evidence;
                g.edges[0].strength = strength;
                g.edges[0].edge_type = edge_type;
                g.edges[0].shared_book_ids = Some(books);
                let json = to_python_json(&g);
                prop_assert!(json.is_ascii());
                prop_assert_eq!(from_json(&json).unwrap(), g);
            }
        }
    }
}
