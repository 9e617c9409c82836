//! The social-circles graph: who published, bound and knew whom (docs/compatibility.md, "Social-circles graph").
//!
//! [`build`] turns the store's rows into a [`Graph`] with the original's semantics, quirks
//! included, so the value we cache in Redis is interchangeable with the one the Python API
//! writes; [`to_python_json`] and [`from_json`] speak that value's exact format (docs/compatibility.md, "Graph cache in Redis").
//! The pipeline reads a node's neighbourhood through [`Graph::neighbours`].

mod build;
mod json;
mod pyset;

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{EntityRef, EntityType};

pub use build::build;
pub use json::{GraphJsonError, from_json, to_python_json};

/// Most authors of one publisher that get `shared_publisher` edges (the original's cap).
pub const MAX_AUTHORS_PER_PUBLISHER: usize = 20;
/// Most book ids listed on a node.
pub const MAX_NODE_BOOK_IDS: usize = 10;

/// Literary era, derived from an author's birth year (docs/compatibility.md, "Nodes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Era {
    #[serde(rename = "pre_romantic")]
    PreRomantic,
    #[serde(rename = "romantic")]
    Romantic,
    #[serde(rename = "victorian")]
    Victorian,
    #[serde(rename = "edwardian")]
    Edwardian,
    #[serde(rename = "post_1910")]
    Post1910,
    #[serde(rename = "unknown")]
    Unknown,
}

impl Era {
    /// The original's `get_era_from_year`: no year is `unknown`; bounds are exclusive upper limits.
    pub fn from_birth_year(year: Option<i32>) -> Era {
        match year {
            None => Era::Unknown,
            Some(y) if y < 1789 => Era::PreRomantic,
            Some(y) if y < 1837 => Era::Romantic,
            Some(y) if y < 1901 => Era::Victorian,
            Some(y) if y < 1910 => Era::Edwardian,
            Some(_) => Era::Post1910,
        }
    }

    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Era::PreRomantic => "pre_romantic",
            Era::Romantic => "romantic",
            Era::Victorian => "victorian",
            Era::Edwardian => "edwardian",
            Era::Post1910 => "post_1910",
            Era::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Era {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Era {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Era::PreRomantic,
            Era::Romantic,
            Era::Victorian,
            Era::Edwardian,
            Era::Post1910,
            Era::Unknown,
        ]
        .into_iter()
        .find(|e| e.as_str() == s)
        .ok_or_else(|| format!("unknown era {s:?}"))
    }
}

/// Edge type: three derived from books, five discovered by the LLM (the API's `ConnectionType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionType {
    Publisher,
    SharedPublisher,
    Binder,
    Family,
    Friendship,
    Influence,
    Collaboration,
    Scandal,
}

impl ConnectionType {
    const ALL: [ConnectionType; 8] = [
        ConnectionType::Publisher,
        ConnectionType::SharedPublisher,
        ConnectionType::Binder,
        ConnectionType::Family,
        ConnectionType::Friendship,
        ConnectionType::Influence,
        ConnectionType::Collaboration,
        ConnectionType::Scandal,
    ];

    /// The JSON spelling (also the `ai_connections.relationship` value for the LLM kinds).
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionType::Publisher => "publisher",
            ConnectionType::SharedPublisher => "shared_publisher",
            ConnectionType::Binder => "binder",
            ConnectionType::Family => "family",
            ConnectionType::Friendship => "friendship",
            ConnectionType::Influence => "influence",
            ConnectionType::Collaboration => "collaboration",
            ConnectionType::Scandal => "scandal",
        }
    }
}

impl fmt::Display for ConnectionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ConnectionType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown connection type {s:?}"))
    }
}

/// One entity in the graph (the API's `SocialCircleNode`); every field is always serialised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// `"{type}:{entity_id}"`.
    pub id: String,
    pub entity_id: i32,
    pub name: String,
    #[serde(rename = "type")]
    pub entity_type: EntityType,
    /// Authors only.
    #[serde(default)]
    pub birth_year: Option<i32>,
    /// Authors only.
    #[serde(default)]
    pub death_year: Option<i32>,
    /// Authors only, computed from `birth_year`.
    #[serde(default)]
    pub era: Option<Era>,
    #[serde(default)]
    pub tier: Option<String>,
    /// Never populated by the original, kept for the shape.
    #[serde(default)]
    pub founded_year: Option<i32>,
    /// Never populated by the original, kept for the shape.
    #[serde(default)]
    pub closed_year: Option<i32>,
    #[serde(default)]
    pub image_url: Option<String>,
    /// Qualifying books with an author linked to this entity.
    #[serde(default)]
    pub book_count: u32,
    /// At most [`MAX_NODE_BOOK_IDS`] of those books.
    #[serde(default)]
    pub book_ids: Vec<i32>,
}

impl Node {
    /// The entity this node stands for.
    pub fn entity(&self) -> EntityRef {
        EntityRef::new(self.entity_type, self.entity_id)
    }
}

/// One connection (the API's `SocialCircleEdge`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edge {
    pub id: String,
    /// Node id.
    pub source: String,
    /// Node id.
    pub target: String,
    #[serde(rename = "type")]
    pub edge_type: ConnectionType,
    /// 2..=10, validated on parse as Pydantic does.
    pub strength: u8,
    #[serde(default)]
    pub evidence: Option<String>,
    /// Publisher and binder edges only, ascending.
    #[serde(default)]
    pub shared_book_ids: Option<Vec<i32>>,
    /// Never populated by the original, kept for the shape.
    #[serde(default)]
    pub start_year: Option<i32>,
    /// Never populated by the original, kept for the shape.
    #[serde(default)]
    pub end_year: Option<i32>,
}

/// Graph totals (the API's `SocialCirclesMeta`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Qualifying books fetched, including those without an author.
    pub total_books: u32,
    pub total_authors: u32,
    pub total_publishers: u32,
    pub total_binders: u32,
    /// `[from, to]`; may be inverted, as in the original (docs/compatibility.md, "Meta and date range").
    pub date_range: [i32; 2],
    /// Build time, microsecond precision, written with a `Z` suffix.
    #[serde(with = "json::python_datetime")]
    pub generated_at: DateTime<Utc>,
    /// Whether exactly `max_books` books were fetched.
    #[serde(default)]
    pub truncated: bool,
}

/// The whole graph (the API's `SocialCirclesResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Graph {
    /// Authors, then publishers, then binders.
    pub nodes: Vec<Node>,
    /// Publisher edges, shared-publisher edges, binder edges, then AI edges; the pipeline's
    /// tie-breaks depend on this order.
    pub edges: Vec<Edge>,
    pub meta: Meta,
}

/// Build parameters, with the original's defaults (the only ones the worker and API cache use).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GraphParams {
    pub include_binders: bool,
    pub min_book_count: u32,
    pub max_books: u32,
    /// Keep only authors of these eras; `None` (or an empty list, as Python's falsy check) keeps all.
    pub era_filter: Option<Vec<Era>>,
}

impl Default for GraphParams {
    fn default() -> Self {
        Self {
            include_binders: true,
            min_book_count: 1,
            max_books: 5000,
            era_filter: None,
        }
    }
}

impl Graph {
    /// The node with this id (`"{type}:{id}"`), if the entity is in the graph.
    pub fn node(&self, node_id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == node_id)
    }

    /// Edges touching the node, of every type, parallel edges counted separately.
    pub fn source_connection_count(&self, node_id: &str) -> usize {
        self.edges
            .iter()
            .filter(|e| e.source == node_id || e.target == node_id)
            .count()
    }

    /// Edges touching the node with the node at their other end, strongest first; ties keep edge
    /// order. Edges whose other node is missing are skipped; an entity linked twice appears twice.
    pub fn neighbours(&self, node_id: &str) -> Vec<(&Edge, &Node)> {
        let touching: Vec<(&Edge, &str)> = self
            .edges
            .iter()
            .filter_map(|e| {
                if e.source == node_id {
                    Some((e, e.target.as_str()))
                } else if e.target == node_id {
                    Some((e, e.source.as_str()))
                } else {
                    None
                }
            })
            .collect();
        let wanted: HashSet<&str> = touching.iter().map(|(_, other)| *other).collect();
        let found: std::collections::HashMap<&str, &Node> = self
            .nodes
            .iter()
            .filter(|n| wanted.contains(n.id.as_str()))
            .map(|n| (n.id.as_str(), n))
            .collect();
        let mut out: Vec<(&Edge, &Node)> = touching
            .into_iter()
            .filter_map(|(e, other)| found.get(other).map(|n| (e, *n)))
            .collect();
        // `sort_by_key` is stable, which is the original's tie-break.
        out.sort_by_key(|(e, _)| std::cmp::Reverse(e.strength));
        out
    }
}

/// Node id of an entity, `"{type}:{id}"`.
pub fn node_id(entity_type: EntityType, id: i32) -> String {
    format!("{entity_type}:{id}")
}
