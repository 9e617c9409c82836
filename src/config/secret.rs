//! Secrets that never print: URLs with passwords, and any key named like a secret.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Words that mark a key as secret wherever it appears.
const SECRET_WORDS: [&str; 3] = ["secret", "password", "token"];

/// A secret value that never reaches Debug output, logs or `config`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The real value.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn shown(&self) -> &'static str {
        if self.0.is_empty() { "" } else { "***" }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.shown())
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.shown())
    }
}

/// A connection URL whose password never reaches Debug output, logs, `config` or metrics.
/// Only [`SecretUrl::expose`] hands out the real value, for the one place that connects.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The real URL, password included.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The URL with its password replaced by `***`; an unparsable value is hidden whole.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

/// Replaces the password of a URL with `***`; hides the whole value when it does not parse.
pub fn redact_url(raw: &str) -> String {
    if raw.is_empty() {
        return String::new();
    }
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                // Cannot fail for a URL that already has a password.
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        Err(_) => "***".to_string(),
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted())
    }
}

fn is_secret_key(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|s| lower.contains(s))
}

/// Replaces the value of any key named like a secret, whatever its section.
pub(super) fn redact_secret_keys(value: &mut toml::Value) {
    if let toml::Value::Table(table) = value {
        for (key, v) in table.iter_mut() {
            if is_secret_key(key) {
                *v = toml::Value::String("***".into());
            } else {
                redact_secret_keys(v);
            }
        }
    }
}

/// A rendered value as an error message may show it: URLs without their password, secret
/// keys not at all.
pub(super) fn shown(key: &str, rendered: &str) -> String {
    if key.ends_with("url") {
        format!("{:?}", redact_url(rendered.trim_matches('"')))
    } else if is_secret_key(key) {
        "\"***\"".into()
    } else {
        rendered.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_named_keys_are_redacted_in_output() {
        let mut v: toml::Value = toml::from_str("[a]\napi_token = \"x\"\nkeep = \"y\"").unwrap();
        redact_secret_keys(&mut v);
        assert_eq!(v["a"]["api_token"].as_str(), Some("***"));
        assert_eq!(v["a"]["keep"].as_str(), Some("y"));
    }

    #[test]
    fn a_url_loses_its_password_and_garbage_is_hidden_whole() {
        let url = SecretUrl::new("postgres://u:hunter2@db/app");
        assert_eq!(format!("{url:?}"), "\"postgres://u:***@db/app\"");
        assert_eq!(url.to_string(), "postgres://u:***@db/app");
        assert_eq!(redact_url("not a url with hunter2"), "***");
        assert_eq!(shown("database.url", "\"not a url\""), "\"***\"");
        assert_eq!(shown("x.api_token", "\"t\""), "\"***\"");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// No password ever appears in Debug, Display or serialised form, raw or
            /// percent-encoded (each starts with `~`, which nothing else in the URL contains).
            #[test]
            fn a_url_password_never_leaks(
                user in "[a-z]{1,8}",
                rest in "[!-~]{0,24}",
                host in "[a-z]{1,10}",
                path in "[a-z0-9_]{0,10}",
            ) {
                let password = format!("~{rest}");
                let encoded = percent_encoding::utf8_percent_encode(
                    &password,
                    percent_encoding::NON_ALPHANUMERIC,
                )
                .to_string();
                let url = SecretUrl::new(format!("postgres://{user}:{encoded}@{host}/{path}"));
                let shown = [
                    format!("{url:?}"),
                    url.to_string(),
                    serde_json::to_string(&url).unwrap(),
                    url.redacted(),
                ];
                for text in shown {
                    prop_assert!(!text.contains(&encoded), "{} in {}", encoded, text);
                    prop_assert!(!text.contains(&password), "{} in {}", password, text);
                }
                let secret = Secret::new(password.clone());
                prop_assert_eq!(format!("{secret:?}"), "\"***\"");
                prop_assert_eq!(serde_json::to_string(&secret).unwrap(), "\"***\"");
            }

            /// Whatever the value, a string that is not a URL is hidden whole.
            #[test]
            fn garbage_is_hidden_whole(raw in "[^:]{1,40}") {
                prop_assert_eq!(SecretUrl::new(raw).to_string(), "***");
            }
        }
    }
}
