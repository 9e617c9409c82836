//! Which Bedrock model a call uses and what its usage costs.

use std::collections::BTreeMap;

use super::Usage;
use crate::config::Price;

/// Name that [`resolve_model`] falls back to.
pub const DEFAULT_MODEL_NAME: &str = "haiku";
/// The original's Haiku id, used when the `haiku` name is missing from `generator.models`.
pub const DEFAULT_MODEL_ID: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";
/// The outcome of model resolution, with the warning to log when a name was unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    pub id: String,
    pub warning: Option<String>,
}

/// Picks the Bedrock model id (docs/decisions.md, "Generation: Converse, the original's calls and caps"): the `app_config` value (`model.entity_profiles`; pass
/// `None` when missing or unreadable) → the configured `generator.model` (alias
/// `ENTITY_PROFILE_MODEL`) → `haiku`. Names map through `models`; a value containing `.` or `:` is
/// a raw model id used as-is; an unknown name resolves to haiku with a warning.
pub fn resolve_model(
    app_config: Option<&str>,
    configured: &str,
    models: &BTreeMap<String, String>,
) -> ResolvedModel {
    let haiku = || {
        models
            .get(DEFAULT_MODEL_NAME)
            .cloned()
            .unwrap_or_else(|| DEFAULT_MODEL_ID.to_string())
    };
    let chosen = [app_config.unwrap_or(""), configured]
        .into_iter()
        .map(str::trim)
        .find(|v| !v.is_empty())
        .unwrap_or(DEFAULT_MODEL_NAME);
    if let Some(id) = models.get(chosen) {
        return ResolvedModel {
            id: id.clone(),
            warning: None,
        };
    }
    if chosen.contains('.') || chosen.contains(':') {
        return ResolvedModel {
            id: chosen.to_string(),
            warning: None,
        };
    }
    if chosen == DEFAULT_MODEL_NAME {
        return ResolvedModel {
            id: haiku(),
            warning: None,
        };
    }
    let known: Vec<&str> = models.keys().map(String::as_str).collect();
    ResolvedModel {
        id: haiku(),
        warning: Some(format!(
            "unknown model name {chosen:?} (known: {}); using {DEFAULT_MODEL_NAME}",
            known.join(", ")
        )),
    }
}

/// Estimated cost in USD of `usage` on `model` from `generator.prices` (USD per million tokens;
/// cache reads and writes at their own prices, the input price when none is set); `None` when the
/// model has no price.
pub fn estimate_cost_usd(
    prices: &BTreeMap<String, Price>,
    model: &str,
    usage: &Usage,
) -> Option<f64> {
    let price = prices.get(model)?;
    Some(
        (usage.input_tokens as f64 * price.input
            + usage.output_tokens as f64 * price.output
            + usage.cache_read_tokens as f64 * price.cache_read.unwrap_or(price.input)
            + usage.cache_write_tokens as f64 * price.cache_write.unwrap_or(price.input))
            / 1_000_000.0,
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn registry() -> BTreeMap<String, String> {
        crate::config::defaults().generator.models
    }

    #[test]
    fn default_resolves_to_haiku() {
        let r = resolve_model(None, "haiku", &registry());
        assert!(r.id.contains("haiku"), "{}", r.id);
        assert_eq!(r.warning, None);
        assert_eq!(resolve_model(None, "", &registry()).id, r.id);
    }

    #[test]
    fn app_config_wins_over_configured() {
        let r = resolve_model(Some("sonnet"), "opus", &registry());
        assert_eq!(r.id, "us.anthropic.claude-sonnet-4-5-20250929-v1:0");
    }

    #[test]
    fn configured_name_is_honoured_when_app_config_is_missing_or_blank() {
        for app in [None, Some(""), Some("  ")] {
            let r = resolve_model(app, "sonnet", &registry());
            assert_eq!(r.id, "us.anthropic.claude-sonnet-4-5-20250929-v1:0");
        }
    }

    #[test]
    fn unknown_name_falls_back_to_haiku_with_a_warning() {
        let r = resolve_model(None, "gpt-7", &registry());
        assert_eq!(r.id, "anthropic.claude-3-5-haiku-20241022-v1:0");
        let warning = r.warning.unwrap();
        assert!(warning.contains("gpt-7"), "{warning}");
    }

    #[test]
    fn raw_ids_are_used_as_is() {
        let r = resolve_model(
            Some("us.anthropic.claude-3-7-sonnet-20250219-v1:0"),
            "haiku",
            &registry(),
        );
        assert_eq!(r.id, "us.anthropic.claude-3-7-sonnet-20250219-v1:0");
        assert_eq!(r.warning, None);
        assert_eq!(
            resolve_model(None, "custom:model", &registry()).id,
            "custom:model"
        );
    }

    #[test]
    fn haiku_without_registry_entry_uses_the_builtin_id() {
        let r = resolve_model(None, "haiku", &BTreeMap::new());
        assert_eq!(r.id, DEFAULT_MODEL_ID);
    }

    #[test]
    fn cost_uses_prices_per_million_tokens() {
        let prices = crate::config::defaults().generator.prices;
        let usage = Usage {
            calls: 3,
            input_tokens: 1_000_000,
            output_tokens: 500_000,
            latency: Duration::ZERO,
            ..Usage::default()
        };
        let cost =
            estimate_cost_usd(&prices, "anthropic.claude-3-5-haiku-20241022-v1:0", &usage).unwrap();
        assert!((cost - 2.8).abs() < 1e-9, "{cost}");
        assert_eq!(estimate_cost_usd(&prices, "offline", &usage), None);
    }
}
