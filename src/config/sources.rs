//! Where settings come from, later wins: the embedded defaults → the file from `--config` /
//! `PROFILE_WORKER_CONFIG` → `PROFILE_WORKER_<SECTION>__<KEY>` variables → the original
//! system's variable names. Also names, for any key, the layer its value came from, spelled as the
//! operator wrote it (the variable or the file), so every message can point there.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::value::Value;
use figment::{Figment, Metadata, Provider, Source};

use super::secret::shown;
use super::{ConfigError, Problem, schema::DEFAULTS};

/// Prefix of the daemon's own environment variables.
pub const ENV_PREFIX: &str = "PROFILE_WORKER_";
/// `PROFILE_WORKER_*` variables that are not configuration keys (as figment sees them, prefix
/// removed): the config file path, and the commit that container builds hand to `build.rs`.
const NOT_KEYS: &[&str] = &["config", "git_commit"];
/// The variable naming the config file.
const CONFIG_FILE_VAR: &str = "PROFILE_WORKER_CONFIG";

/// Environment variables of the original system, mapped to our keys. Later entries win, so the
/// `BMX_` spellings (which the original preferred) override the plain ones. An empty variable is
/// ignored, as the original did.
const ALIASES: &[(&str, &str)] = &[
    ("PROFILE_GENERATION_QUEUE_NAME", "queue.name"),
    ("BMX_PROFILE_GENERATION_QUEUE_NAME", "queue.name"),
    ("DATABASE_URL", "database.url"),
    ("BMX_DATABASE_URL", "database.url"),
    ("REDIS_URL", "cache.redis_url"),
    ("BMX_REDIS_URL", "cache.redis_url"),
    ("ENTITY_PROFILE_MODEL", "generator.model"),
    ("AWS_REGION", "aws.region"),
];

/// The daemon's own variables: `PROFILE_WORKER_CONSUMER__CONCURRENCY` → `consumer.concurrency`.
fn prefixed() -> Env {
    Env::prefixed(ENV_PREFIX).ignore(NOT_KEYS).split("__")
}

/// The original's variable `var`, read as `key`.
fn alias(var: &'static str, key: &'static str) -> Env {
    Env::raw().only(&[var]).map(move |_| key.into())
}

fn is_set(var: &str) -> bool {
    std::env::var_os(var).is_some_and(|v| !v.is_empty())
}

/// Layers the sources over the embedded defaults; fails only when a named file is missing.
pub(super) fn layered(file: Option<&Path>) -> Result<Figment, ConfigError> {
    let mut figment = Figment::from(Toml::string(DEFAULTS));
    let file: Option<PathBuf> = file.map(Path::to_path_buf).or_else(|| {
        std::env::var_os(CONFIG_FILE_VAR)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    if let Some(path) = &file {
        if !path.is_file() {
            return Err(ConfigError {
                problems: vec![Problem {
                    key: "--config".into(),
                    message: format!("config file {} does not exist", path.display()),
                }],
            });
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment.merge(prefixed());
    for &(var, key) in ALIASES {
        if is_set(var) {
            figment = figment.merge(alias(var, key));
        }
    }
    Ok(figment)
}

/// Where the value of a dotted key came from: a variable exactly as it is spelled in the
/// environment, a file path, or "built-in defaults".
pub(super) fn source_of(figment: &Figment, key: &str) -> String {
    describe(figment.find_metadata(key), key)
}

fn describe(metadata: Option<&Metadata>, key: &str) -> String {
    let Some(md) = metadata else {
        return "unknown source".into();
    };
    if md.name == prefixed().metadata().name {
        let wanted = format!("{ENV_PREFIX}{}", key.replace('.', "__"));
        return std::env::vars_os()
            .filter_map(|(k, _)| k.into_string().ok())
            .find(|k| k.eq_ignore_ascii_case(&wanted))
            .unwrap_or_else(|| wanted.to_ascii_uppercase());
    }
    if md.name == Env::raw().metadata().name {
        // One provider per set alias, merged in `ALIASES` order: the last set one won.
        if let Some((var, _)) = ALIASES
            .iter()
            .rev()
            .find(|(var, k)| *k == key && is_set(var))
        {
            return (*var).to_string();
        }
    }
    match &md.source {
        Some(Source::File(path)) => path.display().to_string(),
        Some(Source::Code(_)) => "built-in defaults".into(),
        None if md.name == "TOML source string" => "built-in defaults".into(),
        Some(Source::Custom(s)) => s.clone(),
        _ => md.name.to_string(),
    }
}

/// The value of a key as a message shows it (strings quoted, secrets hidden); `None` when unset.
pub(super) fn shown_value(figment: &Figment, key: &str) -> Option<String> {
    match figment.find_value(key) {
        Ok(Value::Dict(..)) | Err(_) => None,
        Ok(v) => Some(shown(key, &render(&v))),
    }
}

/// One line for the operator: `key = value (from SOURCE): rule`.
pub(super) fn problem(figment: &Figment, key: &str, rule: &str) -> Problem {
    problem_in(figment, key, rule, None)
}

/// [`problem`], with the layer that reported an error as the source of a key that has none.
fn problem_in(figment: &Figment, key: &str, rule: &str, reporter: Option<&Metadata>) -> Problem {
    let source = describe(figment.find_metadata(key).or(reporter), key);
    let message = match shown_value(figment, key) {
        Some(value) => format!("{key} = {value} (from {source}): {rule}"),
        None => format!("{key} (from {source}): {rule}"),
    };
    Problem {
        key: key.to_string(),
        message,
    }
}

/// Renders a figment value for an error message (strings quoted, as in TOML).
fn render(value: &Value) -> String {
    match value {
        Value::String(_, s) => format!("{s:?}"),
        Value::Char(_, c) => format!("{c:?}"),
        Value::Bool(_, b) => b.to_string(),
        Value::Num(_, n) => n
            .to_i128()
            .map(|i| i.to_string())
            .or_else(|| n.to_u128().map(|u| u.to_string()))
            .or_else(|| n.to_f64().map(|f| f.to_string()))
            .unwrap_or_else(|| format!("{n:?}")),
        Value::Empty(_, _) => "(empty)".into(),
        Value::Dict(_, _) => "{…}".into(),
        Value::Array(_, items) => {
            let items: Vec<String> = items.iter().map(render).collect();
            format!("[{}]", items.join(", "))
        }
    }
}

/// Every key with a value at or under `key`, so an unknown section is reported by the keys the
/// operator actually wrote (`quota.requests_per_minute`, not `quota`).
fn leaves(figment: &Figment, key: &str) -> Vec<String> {
    fn walk(prefix: &str, value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Dict(_, dict) if !dict.is_empty() => {
                for (k, v) in dict {
                    walk(&format!("{prefix}.{k}"), v, out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }
    let mut out = Vec::new();
    match figment.find_value(key) {
        Ok(value) => walk(key, &value, &mut out),
        Err(_) => out.push(key.to_string()),
    }
    out
}

/// Turns a figment extraction error into problems naming the keys as written.
pub(super) fn extraction_problems(figment: &Figment, err: figment::Error) -> Vec<Problem> {
    use figment::error::Kind;
    err.into_iter()
        .flat_map(|err| {
            let mut path = err.path.clone();
            match &err.kind {
                Kind::UnknownField(field, expected) => {
                    // figment's path may or may not end with the field already.
                    if path.last() != Some(field) {
                        path.push(field.clone());
                    }
                    let key = path.join(".");
                    let expected = expected.join(", ");
                    leaves(figment, &key)
                        .into_iter()
                        .map(|leaf| {
                            let rule = if leaf == key {
                                format!("unknown key; expected one of: {expected}")
                            } else {
                                format!("unknown key; {field:?} is not one of: {expected}")
                            };
                            problem_in(figment, &leaf, &rule, err.metadata.as_ref())
                        })
                        .collect::<Vec<_>>()
                }
                Kind::MissingField(field) => {
                    if path.last().map(String::as_str) != Some(field.as_ref()) {
                        path.push(field.to_string());
                    }
                    vec![problem_in(
                        figment,
                        &path.join("."),
                        "missing key",
                        err.metadata.as_ref(),
                    )]
                }
                other => vec![problem_in(
                    figment,
                    &path.join("."),
                    &other.to_string(),
                    err.metadata.as_ref(),
                )],
            }
        })
        .collect()
}
