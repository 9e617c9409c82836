//! The staleness rule, shared with the Python API's `is_stale` flag, plus the extensions in
//! docs/decisions.md ("Staleness"): forced and person-requested regeneration, and the opt-in
//! model-change rule.

use chrono::{DateTime, Utc};

use super::message::Demand;
use crate::model::StoredProfile;

/// Why a profile is (re)generated; `None` from [`check`] means it is fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleReason {
    /// No profile row, or one without `generated_at`.
    Missing,
    /// A qualifying book changed after the profile was generated.
    BooksChanged,
    /// The profile was made by another model and `staleness.model_change` is on.
    ModelChanged,
    /// The message asked for regeneration (`"force": true`).
    Forced,
    /// A person asked for this profile (a message without a job).
    Requested,
}

/// Decides whether a profile must be regenerated.
///
/// The original rule exactly: no profile (or no `generated_at`) ⇒ stale; otherwise stale iff the
/// newest `updated_at` of the entity's qualifying books is strictly later than `generated_at`.
/// The message's [`Demand`] and `current_model` (set only when `staleness.model_change` is on)
/// extend it.
pub fn check(
    profile: Option<&StoredProfile>,
    latest_book_update: Option<DateTime<Utc>>,
    demand: Demand,
    current_model: Option<&str>,
) -> Option<StaleReason> {
    match demand {
        Demand::Forced => return Some(StaleReason::Forced),
        Demand::Requested => return Some(StaleReason::Requested),
        Demand::IfStale => {}
    }
    let Some(generated_at) = profile.and_then(|p| p.generated_at) else {
        return Some(StaleReason::Missing);
    };
    if latest_book_update.is_some_and(|latest| latest > generated_at) {
        return Some(StaleReason::BooksChanged);
    }
    let model_differs = current_model
        .is_some_and(|model| profile.and_then(|p| p.model_version.as_deref()) != Some(model));
    model_differs.then_some(StaleReason::ModelChanged)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::model::{EntityRef, EntityType};

    fn profile(generated_at: Option<DateTime<Utc>>, model: &str) -> StoredProfile {
        StoredProfile {
            entity: EntityRef::new(EntityType::Author, 1),
            bio_summary: Some("bio".into()),
            personal_stories: None,
            connection_narratives: None,
            relationship_stories: None,
            ai_connections: None,
            generated_at,
            model_version: Some(model.into()),
        }
    }

    fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, day, 12, 0, 0).unwrap()
    }

    #[test]
    fn no_profile_or_no_generated_at_is_stale() {
        assert_eq!(
            check(None, Some(at(1)), Demand::IfStale, None),
            Some(StaleReason::Missing)
        );
        assert_eq!(
            check(Some(&profile(None, "m")), None, Demand::IfStale, None),
            Some(StaleReason::Missing)
        );
    }

    #[test]
    fn book_updated_after_generation_is_stale_strictly() {
        let p = profile(Some(at(10)), "m");
        assert_eq!(
            check(Some(&p), Some(at(11)), Demand::IfStale, None),
            Some(StaleReason::BooksChanged)
        );
        assert_eq!(
            check(Some(&p), Some(at(10)), Demand::IfStale, None),
            None,
            "equal is fresh"
        );
        assert_eq!(check(Some(&p), Some(at(9)), Demand::IfStale, None), None);
        assert_eq!(
            check(Some(&p), None, Demand::IfStale, None),
            None,
            "no qualifying books: nothing newer"
        );
    }

    #[test]
    fn generated_in_the_future_is_fresh() {
        let p = profile(Some(Utc::now() + chrono::Duration::days(1)), "m");
        assert_eq!(
            check(Some(&p), Some(Utc::now()), Demand::IfStale, None),
            None
        );
    }

    #[test]
    fn force_and_model_change_extend_the_rule() {
        let p = profile(Some(at(10)), "old-model");
        assert_eq!(
            check(Some(&p), Some(at(1)), Demand::Forced, None),
            Some(StaleReason::Forced)
        );
        assert_eq!(
            check(Some(&p), Some(at(1)), Demand::Requested, None),
            Some(StaleReason::Requested),
            "a person's request regenerates a fresh profile"
        );
        assert_eq!(
            check(Some(&p), Some(at(1)), Demand::IfStale, Some("new-model")),
            Some(StaleReason::ModelChanged)
        );
        assert_eq!(
            check(Some(&p), Some(at(1)), Demand::IfStale, Some("old-model")),
            None
        );
    }
}
