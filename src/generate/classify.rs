//! Which graph connections get a narrative, and which kind (docs/compatibility.md, "Narrative selection"), quirks included so
//! both implementations pick the same connections.

use crate::model::Entity;

/// Span in years that makes two eras' figures a "bridge".
pub const CROSS_ERA_THRESHOLD: i32 = 40;
/// Connections that make the profiled entity a hub.
pub const HUB_THRESHOLD: usize = 5;

/// Why a connection deserves a narrative. The original also reserves `influence_chain`, which it
/// never returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NarrativeTrigger {
    CrossEraBridge,
    SocialCircle,
    HubFigure,
}

impl NarrativeTrigger {
    /// The name the original uses (also sent in the relationship-story prompt).
    pub fn as_str(self) -> &'static str {
        match self {
            NarrativeTrigger::CrossEraBridge => "cross_era_bridge",
            NarrativeTrigger::SocialCircle => "social_circle",
            NarrativeTrigger::HubFigure => "hub_figure",
        }
    }

    /// High-impact triggers get a full relationship story; the others a one-sentence narrative.
    pub fn is_high_impact(self) -> bool {
        matches!(
            self,
            NarrativeTrigger::CrossEraBridge | NarrativeTrigger::SocialCircle
        )
    }
}

/// The years a graph node offers: (birth or founded, death or closed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Years {
    pub start: Option<i32>,
    pub end: Option<i32>,
}

impl Years {
    pub fn new(start: Option<i32>, end: Option<i32>) -> Self {
        Self { start, end }
    }

    /// As the original derives them from a graph node.
    pub fn of(entity: &Entity) -> Self {
        Self {
            start: entity.birth_year.or(entity.founded_year),
            end: entity.death_year.or(entity.closed_year),
        }
    }
}

/// Everything the rules read about one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassifyInput<'a> {
    /// Graph node era; `Some("unknown")` counts as a real era, `None` does not (publishers and
    /// binders have none, so they never bridge).
    pub source_era: Option<&'a str>,
    pub target_era: Option<&'a str>,
    pub source_years: Years,
    pub target_years: Years,
    /// Edges touching the profiled entity (all types, parallel edges included).
    pub source_connection_count: usize,
    /// Always false while generating; the API passes whether a story is cached.
    pub has_relationship_story: bool,
}

/// The trigger of one connection, by priority; `None` skips it (without using up the cap).
pub fn classify(input: &ClassifyInput<'_>) -> Option<NarrativeTrigger> {
    if is_cross_era(input) {
        return Some(NarrativeTrigger::CrossEraBridge);
    }
    if input.has_relationship_story {
        return Some(NarrativeTrigger::SocialCircle);
    }
    if input.source_connection_count >= HUB_THRESHOLD {
        return Some(NarrativeTrigger::HubFigure);
    }
    None
}

/// Different eras and a span of at least 40 years among the known years. The span is taken over
/// all four years together, so one long-lived endpoint satisfies it alone (the original's quirk).
fn is_cross_era(input: &ClassifyInput<'_>) -> bool {
    let (Some(a), Some(b)) = (input.source_era, input.target_era) else {
        return false;
    };
    if a == b {
        return false;
    }
    let years: Vec<i32> = [
        input.source_years.start,
        input.source_years.end,
        input.target_years.start,
        input.target_years.end,
    ]
    .into_iter()
    .flatten()
    .collect();
    match (years.iter().min(), years.iter().max()) {
        (Some(min), Some(max)) if years.len() >= 2 => max - min >= CROSS_ERA_THRESHOLD,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn y(start: i32, end: i32) -> Years {
        Years::new(Some(start), Some(end))
    }

    #[test]
    fn romantic_and_victorian_bridge() {
        let input = ClassifyInput {
            source_era: Some("romantic"),
            target_era: Some("victorian"),
            source_years: y(1788, 1824),
            target_years: y(1809, 1882),
            source_connection_count: 2,
            has_relationship_story: false,
        };
        assert_eq!(classify(&input), Some(NarrativeTrigger::CrossEraBridge));
    }

    #[test]
    fn same_era_with_story_is_social_circle() {
        let input = ClassifyInput {
            source_era: Some("victorian"),
            target_era: Some("victorian"),
            source_years: y(1812, 1870),
            target_years: y(1809, 1882),
            source_connection_count: 2,
            has_relationship_story: true,
        };
        assert_eq!(classify(&input), Some(NarrativeTrigger::SocialCircle));
    }

    #[test]
    fn eight_connections_make_a_hub() {
        let input = ClassifyInput {
            source_era: Some("victorian"),
            target_era: Some("victorian"),
            source_years: y(1812, 1870),
            target_years: y(1809, 1882),
            source_connection_count: 8,
            has_relationship_story: false,
        };
        assert_eq!(classify(&input), Some(NarrativeTrigger::HubFigure));
    }

    #[test]
    fn same_era_two_connections_is_nothing() {
        let input = ClassifyInput {
            source_era: Some("victorian"),
            target_era: Some("victorian"),
            source_years: y(1812, 1870),
            target_years: y(1809, 1882),
            source_connection_count: 2,
            has_relationship_story: false,
        };
        assert_eq!(classify(&input), None);
    }

    #[test]
    fn cross_era_beats_social_circle() {
        let input = ClassifyInput {
            source_era: Some("romantic"),
            target_era: Some("victorian"),
            source_years: y(1788, 1824),
            target_years: y(1809, 1882),
            source_connection_count: 9,
            has_relationship_story: true,
        };
        assert_eq!(classify(&input), Some(NarrativeTrigger::CrossEraBridge));
    }

    #[test]
    fn same_era_never_bridges_even_with_a_long_span() {
        let input = ClassifyInput {
            source_era: Some("victorian"),
            target_era: Some("victorian"),
            source_years: y(1800, 1890),
            target_years: y(1850, 1900),
            ..Default::default()
        };
        assert_eq!(classify(&input), None);
    }

    #[test]
    fn missing_era_never_bridges() {
        let input = ClassifyInput {
            source_era: Some("romantic"),
            target_era: None,
            source_years: y(1788, 1824),
            target_years: Years::default(),
            source_connection_count: 1,
            has_relationship_story: false,
        };
        assert_eq!(classify(&input), None);
    }

    #[test]
    fn unknown_era_with_one_long_life_bridges() {
        // The original's quirk: the span comes from the source alone.
        let input = ClassifyInput {
            source_era: Some("victorian"),
            target_era: Some("unknown"),
            source_years: y(1812, 1870),
            target_years: Years::default(),
            ..Default::default()
        };
        assert_eq!(classify(&input), Some(NarrativeTrigger::CrossEraBridge));
    }

    #[test]
    fn a_single_year_or_a_short_span_does_not_bridge() {
        let one = ClassifyInput {
            source_era: Some("romantic"),
            target_era: Some("victorian"),
            source_years: Years::new(Some(1790), None),
            ..Default::default()
        };
        assert_eq!(classify(&one), None);
        let short = ClassifyInput {
            target_years: Years::new(Some(1829), None),
            ..one
        };
        assert_eq!(classify(&short), None);
        let exact = ClassifyInput {
            target_years: Years::new(Some(1830), None),
            ..one
        };
        assert_eq!(classify(&exact), Some(NarrativeTrigger::CrossEraBridge));
    }

    #[test]
    fn years_of_an_entity_fall_back_to_founding() {
        let publisher = Entity {
            entity: "publisher:2".parse().unwrap(),
            name: "Smith, Elder".into(),
            birth_year: None,
            death_year: None,
            founded_year: Some(1816),
            closed_year: None,
        };
        assert_eq!(Years::of(&publisher), Years::new(Some(1816), None));
    }
}
