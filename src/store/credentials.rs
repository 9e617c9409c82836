//! Database credentials from AWS Secrets Manager, the way the original worker got them.
//!
//! `database.secret_id` (the original's `DATABASE_SECRET_ARN`, also `BMX_DATABASE_SECRET_ARN` and
//! `DATABASE_SECRET_NAME`) names a secret shaped as RDS-managed and rotated secrets are:
//! `username`, `password`, and optionally `host`, `port`, `dbname` (or `database`). What the
//! secret leaves out comes from `database.url` (an RDS-managed master secret holds only the user
//! and password; the URL gives the host and options such as `sslmode`). The secret is read at
//! start-up and read again when PostgreSQL rejects the password after a rotation
//! (docs/decisions.md, "Database credentials from Secrets Manager").

use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_sdk_secretsmanager::Client;
use serde_json::Value;

use crate::config::SecretUrl;

/// The original's database name when neither the secret nor the URL names one.
const DEFAULT_DATABASE: &str = "bluemoxon";
/// Shortest time between two reads of the secret after rejected passwords, so a password that is
/// simply wrong costs one `GetSecretValue` per interval, not one per connection attempt.
const REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// Why the secret could not give a database URL.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Secrets Manager did not answer, or answered with a fault that goes away (throttling,
    /// 5xx): worth waiting for.
    #[error("cannot read database secret {id}: {message}")]
    Unreachable { id: String, message: String },
    /// The secret does not exist, access is denied, or it cannot be used as credentials: the
    /// operator must fix `database.secret_id`, the secret or the role.
    #[error("database secret {id} (database.secret_id): {message}")]
    Invalid { id: String, message: String },
}

impl SecretError {
    pub fn is_unreachable(&self) -> bool {
        matches!(self, SecretError::Unreachable { .. })
    }
}

/// A database URL kept in step with a Secrets Manager secret.
pub struct DatabaseSecret {
    client: Client,
    id: String,
    /// `database.url`: what the secret does not say (host, port, database, query options).
    base: String,
    current: RwLock<SecretUrl>,
    last_read: Mutex<Instant>,
}

impl std::fmt::Debug for DatabaseSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSecret")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl DatabaseSecret {
    /// Reads the secret once; the URL it gives is [`DatabaseSecret::url`].
    pub async fn load(sdk: &SdkConfig, id: &str, base: &SecretUrl) -> Result<Self, SecretError> {
        let client = Client::new(sdk);
        let url = read(&client, id, base.expose()).await?;
        Ok(Self {
            client,
            id: id.to_owned(),
            base: base.expose().to_owned(),
            current: RwLock::new(url),
            last_read: Mutex::new(Instant::now()),
        })
    }

    /// The URL from the latest read of the secret.
    pub fn url(&self) -> SecretUrl {
        self.current.read().expect("secret lock").clone()
    }

    /// Reads the secret again after PostgreSQL rejected its password (a rotation), at most once
    /// per [`REFRESH_INTERVAL`]. Returns whether the URL changed.
    pub async fn refresh(&self) -> bool {
        {
            let mut last = self.last_read.lock().expect("secret lock");
            if last.elapsed() < REFRESH_INTERVAL {
                return false;
            }
            *last = Instant::now();
        }
        match read(&self.client, &self.id, &self.base).await {
            Ok(url) => {
                let mut current = self.current.write().expect("secret lock");
                let changed = current.expose() != url.expose();
                if changed {
                    tracing::info!(secret = %self.id, "database credentials rotated; using the new ones");
                    *current = url;
                }
                changed
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot re-read the database secret");
                false
            }
        }
    }
}

async fn read(client: &Client, id: &str, base: &str) -> Result<SecretUrl, SecretError> {
    let reply = client
        .get_secret_value()
        .secret_id(id)
        .send()
        .await
        .map_err(|err| {
            let service = err.as_service_error();
            let message = service.map_or_else(
                || super::tls::with_causes(&err),
                |e| format!("{}: {}", e.meta().code().unwrap_or("error"), e),
            );
            let permanent = service.is_some_and(|e| {
                e.is_resource_not_found_exception()
                    || e.is_invalid_parameter_exception()
                    || e.is_invalid_request_exception()
                    || e.is_decryption_failure()
                    || e.meta().code() == Some("AccessDeniedException")
            });
            if permanent {
                SecretError::Invalid {
                    id: id.to_owned(),
                    message,
                }
            } else {
                SecretError::Unreachable {
                    id: id.to_owned(),
                    message,
                }
            }
        })?;
    let text = reply.secret_string().ok_or_else(|| SecretError::Invalid {
        id: id.to_owned(),
        message: "the secret has no SecretString (binary secrets are not credentials)".into(),
    })?;
    url_from_secret(text, base).map_err(|message| SecretError::Invalid {
        id: id.to_owned(),
        message,
    })
}

/// Builds the connection URL from the secret's JSON over `base` (may be empty).
fn url_from_secret(secret: &str, base: &str) -> Result<SecretUrl, String> {
    let value: Value =
        serde_json::from_str(secret).map_err(|_| "the secret is not a JSON object".to_owned())?;
    let field = |name: &str| -> Option<String> {
        match value.get(name)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let mut url = if base.is_empty() {
        url::Url::parse("postgresql://localhost").expect("static URL")
    } else {
        url::Url::parse(base).map_err(|e| format!("database.url cannot be read: {e}"))?
    };
    let username = field("username").ok_or("the secret has no \"username\"")?;
    let password = field("password").ok_or("the secret has no \"password\"")?;
    let host = match field("host") {
        Some(host) => host,
        None if !base.is_empty() => url.host_str().unwrap_or_default().to_owned(),
        None => String::new(),
    };
    if host.is_empty() {
        return Err("neither the secret nor database.url names a host".into());
    }
    url.set_host(Some(&host))
        .map_err(|e| format!("bad host {host:?}: {e}"))?;
    if let Some(port) = field("port") {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("bad port {port:?} in the secret"))?;
        url.set_port(Some(port))
            .map_err(|()| "cannot set the port".to_owned())?;
    }
    let database = field("dbname").or_else(|| field("database"));
    match database {
        Some(name) => url.set_path(&format!("/{}", encode(&name))),
        None if url.path().len() <= 1 => url.set_path(&format!("/{DEFAULT_DATABASE}")),
        None => {}
    }
    url.set_username(&encode(&username))
        .map_err(|()| "cannot set the user name".to_owned())?;
    url.set_password(Some(&encode(&password)))
        .map_err(|()| "cannot set the password".to_owned())?;
    Ok(SecretUrl::new(url.to_string()))
}

/// Percent-encodes a URL component (passwords from rotation are full of `@`, `/`, `:`).
fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotated_secret_gives_every_part() {
        let url = url_from_secret(
            r#"{"engine":"postgres","username":"app","password":"p@ss/w:rd","host":"db.internal","port":5433,"dbname":"books"}"#,
            "",
        )
        .unwrap();
        let parsed = url::Url::parse(url.expose()).unwrap();
        assert_eq!(parsed.host_str(), Some("db.internal"));
        assert_eq!(parsed.port(), Some(5433));
        assert_eq!(parsed.path(), "/books");
        assert_eq!(parsed.username(), "app");
        let password = percent_encoding::percent_decode_str(parsed.password().unwrap())
            .decode_utf8()
            .unwrap();
        assert_eq!(password, "p@ss/w:rd");
    }

    #[test]
    fn a_managed_master_secret_takes_the_rest_from_the_url() {
        let url = url_from_secret(
            r#"{"username":"admin","password":"x"}"#,
            "postgresql://rds.example:5432/app?sslmode=verify-full&sslrootcert=/etc/rds.pem",
        )
        .unwrap();
        assert_eq!(
            url.expose(),
            "postgresql://admin:x@rds.example:5432/app?sslmode=verify-full&sslrootcert=/etc/rds.pem"
        );
    }

    #[test]
    fn database_falls_back_to_database_key_then_the_original_default() {
        let with_key = url_from_secret(
            r#"{"username":"u","password":"p","host":"h","port":"5432","database":"other"}"#,
            "",
        )
        .unwrap();
        assert!(with_key.expose().ends_with("@h:5432/other"));
        let bare = url_from_secret(r#"{"username":"u","password":"p","host":"h"}"#, "").unwrap();
        assert!(bare.expose().ends_with("@h/bluemoxon"));
    }

    #[test]
    fn unusable_secrets_say_what_is_missing() {
        assert!(
            url_from_secret("not json", "")
                .unwrap_err()
                .contains("JSON")
        );
        assert!(
            url_from_secret(r#"{"password":"p","host":"h"}"#, "")
                .unwrap_err()
                .contains("username")
        );
        assert!(
            url_from_secret(r#"{"username":"u","password":"p"}"#, "")
                .unwrap_err()
                .contains("host")
        );
    }
}
