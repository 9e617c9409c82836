//! Entities for generation requests, as the store would hand them over.

use profile_worker::model::{CollectionEntity, Entity};

/// An entity `r` ("type:id") named `name`, without years.
pub fn entity(r: &str, name: &str) -> Entity {
    Entity {
        entity: r.parse().expect("type:id"),
        name: name.into(),
        birth_year: None,
        death_year: None,
        founded_year: None,
        closed_year: None,
    }
}

/// A collection entity `r` ("type:id") named `name`.
pub fn ce(r: &str, name: &str) -> CollectionEntity {
    CollectionEntity {
        entity: r.parse().expect("type:id"),
        name: name.into(),
    }
}

/// author:5, Charles Dickens (1812–1870).
pub fn dickens() -> Entity {
    Entity {
        birth_year: Some(1812),
        death_year: Some(1870),
        ..entity("author:5", "Charles Dickens")
    }
}
