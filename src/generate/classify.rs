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

    const ROM: Option<&str> = Some("romantic");
    const VIC: Option<&str> = Some("victorian");
    const UNK: Option<&str> = Some("unknown");
    const NO_YEARS: Years = Years {
        start: None,
        end: None,
    };
    const BRIDGE: Option<NarrativeTrigger> = Some(NarrativeTrigger::CrossEraBridge);
    const CIRCLE: Option<NarrativeTrigger> = Some(NarrativeTrigger::SocialCircle);
    const HUB: Option<NarrativeTrigger> = Some(NarrativeTrigger::HubFigure);

    fn y(start: i32, end: i32) -> Years {
        Years::new(Some(start), Some(end))
    }

    fn from(start: i32) -> Years {
        Years::new(Some(start), None)
    }

    #[test]
    fn classify_follows_the_rules_in_priority_order() {
        // (source era, target era, source years, target years, connections, story, trigger)
        let cases = [
            // Romantic and Victorian figures bridge.
            (ROM, VIC, y(1788, 1824), y(1809, 1882), 2, false, BRIDGE),
            // Same era, a story: a social circle.
            (VIC, VIC, y(1812, 1870), y(1809, 1882), 2, true, CIRCLE),
            // Eight connections make a hub.
            (VIC, VIC, y(1812, 1870), y(1809, 1882), 8, false, HUB),
            // Same era, two connections, no story: nothing.
            (VIC, VIC, y(1812, 1870), y(1809, 1882), 2, false, None),
            // A bridge beats a social circle and a hub.
            (ROM, VIC, y(1788, 1824), y(1809, 1882), 9, true, BRIDGE),
            // The same era never bridges, even with a long span.
            (VIC, VIC, y(1800, 1890), y(1850, 1900), 0, false, None),
            // A missing era never bridges.
            (ROM, None, y(1788, 1824), NO_YEARS, 1, false, None),
            // The original's quirk: "unknown" is an era, and the span may come from one side.
            (VIC, UNK, y(1812, 1870), NO_YEARS, 0, false, BRIDGE),
            // A single year spans nothing.
            (ROM, VIC, from(1790), NO_YEARS, 0, false, None),
            // 39 years are too short, 40 are enough.
            (ROM, VIC, from(1790), from(1829), 0, false, None),
            (ROM, VIC, from(1790), from(1830), 0, false, BRIDGE),
        ];
        for (row, (source_era, target_era, source_years, target_years, count, story, trigger)) in
            cases.into_iter().enumerate()
        {
            let input = ClassifyInput {
                source_era,
                target_era,
                source_years,
                target_years,
                source_connection_count: count,
                has_relationship_story: story,
            };
            assert_eq!(classify(&input), trigger, "row {row}: {input:?}");
        }
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
