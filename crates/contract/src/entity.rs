//! The entities that get profiles, as every other part names them: `type:id` in messages, graph
//! node ids, log lines and CLI arguments.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The three kinds of entity that get profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntityType {
    Author,
    Publisher,
    Binder,
}

impl EntityType {
    /// All types in the order the original lists collection entities.
    pub const ALL: [EntityType; 3] = [
        EntityType::Author,
        EntityType::Publisher,
        EntityType::Binder,
    ];

    /// The string stored in the database and sent in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            EntityType::Author => "author",
            EntityType::Publisher => "publisher",
            EntityType::Binder => "binder",
        }
    }
}

impl fmt::Display for EntityType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EntityType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "author" => Ok(EntityType::Author),
            "publisher" => Ok(EntityType::Publisher),
            "binder" => Ok(EntityType::Binder),
            other => Err(format!(
                "unknown entity type {other:?} (expected author, publisher or binder)"
            )),
        }
    }
}

/// One entity, written `type:id` everywhere (graph node ids, error-log lines, CLI arguments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EntityRef {
    pub entity_type: EntityType,
    pub id: i32,
}

impl EntityRef {
    pub fn new(entity_type: EntityType, id: i32) -> Self {
        Self { entity_type, id }
    }
}

impl fmt::Display for EntityRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.entity_type, self.id)
    }
}

impl FromStr for EntityRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (t, id) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?} is not TYPE:ID"))?;
        let id: i32 = id
            .parse()
            .map_err(|_| format!("{id:?} is not an integer id"))?;
        if id < 1 {
            return Err(format!("entity id must be positive, got {id}"));
        }
        Ok(Self {
            entity_type: t.parse()?,
            id,
        })
    }
}

/// A collection entity as listed for generate-all and the discovery prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionEntity {
    pub entity: EntityRef,
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_ref_round_trips() {
        let e: EntityRef = "publisher:12".parse().unwrap();
        assert_eq!(e, EntityRef::new(EntityType::Publisher, 12));
        assert_eq!(e.to_string(), "publisher:12");
        assert!("author:0".parse::<EntityRef>().is_err());
        assert!("editor:3".parse::<EntityRef>().is_err());
        assert!("author".parse::<EntityRef>().is_err());
    }
}
