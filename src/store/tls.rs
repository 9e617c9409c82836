//! Connecting to PostgreSQL with or without TLS, following libpq's `sslmode` in the URL.
//!
//! diesel-async connects through tokio-postgres without TLS, and tokio-postgres only knows
//! `disable`/`prefer`/`require`. Managed databases (RDS with `rds.force_ssl`) refuse plain
//! connections, so the daemon reads the libpq parameters itself:
//! - `disable`, `allow`: plain TCP;
//! - absent or `prefer` (libpq's default): TLS when the server offers it, without certificate
//!   checks, else plain TCP;
//! - `require`: TLS without certificate checks (libpq's meaning: encrypted, not authenticated);
//! - `verify-ca`, `verify-full`: TLS checked against the system roots plus `sslrootcert` (a PEM
//!   file, e.g. the RDS CA bundle); the host name is always checked.
//!
//! Connections are opened through tokio-postgres directly, so a refused login keeps its SQLSTATE
//! ([`ConnectFailure::is_rejected_login`]) whatever language the server answers in.

use std::sync::Arc;

use diesel::ConnectionError;
use diesel_async::AsyncPgConnection;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::error::SqlState;

/// How a URL asks to be connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Plain,
    /// TLS if the server offers it (certificate not checked), else plain.
    Preferred,
    /// Encrypted, server certificate not checked.
    Encrypted,
    /// Encrypted and checked against the system roots and an optional extra CA file.
    Verified {
        root_cert: Option<String>,
    },
}

/// Splits the libpq TLS parameters off a URL: the mode, and the URL tokio-postgres accepts.
pub fn parse(url: &str) -> Result<(Mode, String), String> {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return Ok((Mode::Plain, url.to_string()));
    };
    let mut sslmode = None;
    let mut root_cert = None;
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter_map(|(k, v)| match k.as_ref() {
            "sslmode" => {
                sslmode = Some(v.into_owned());
                None
            }
            "sslrootcert" => {
                root_cert = Some(v.into_owned());
                None
            }
            _ => Some((k.into_owned(), v.into_owned())),
        })
        .collect();
    let mode = match sslmode.as_deref() {
        Some("disable" | "allow") => Mode::Plain,
        None | Some("prefer") => Mode::Preferred,
        Some("require") if root_cert.is_none() => Mode::Encrypted,
        // libpq: `require` with a root certificate behaves like `verify-ca`.
        Some("require" | "verify-ca" | "verify-full") => Mode::Verified { root_cert },
        Some(other) => return Err(format!("unsupported sslmode {other:?}")),
    };
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    match mode {
        Mode::Plain => {}
        Mode::Preferred => {
            parsed.query_pairs_mut().append_pair("sslmode", "prefer");
        }
        Mode::Encrypted | Mode::Verified { .. } => {
            parsed.query_pairs_mut().append_pair("sslmode", "require");
        }
    }
    Ok((mode, parsed.to_string()))
}

/// A connection attempt that failed, with the server's SQLSTATE when it sent one.
#[derive(Debug)]
pub struct ConnectFailure {
    code: Option<SqlState>,
    pub error: ConnectionError,
}

impl ConnectFailure {
    /// The server refused the login (wrong password, unknown role): after a credentials
    /// rotation, new credentials may fix it.
    pub fn is_rejected_login(&self) -> bool {
        self.code.as_ref().is_some_and(|code| {
            *code == SqlState::INVALID_PASSWORD
                || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        })
    }

    fn from_postgres(err: &tokio_postgres::Error) -> Self {
        Self {
            code: err.code().cloned(),
            error: ConnectionError::BadConnection(with_causes(err)),
        }
    }
}

impl From<ConnectFailure> for ConnectionError {
    fn from(failure: ConnectFailure) -> Self {
        failure.error
    }
}

/// Opens one connection as the URL's `sslmode` asks.
pub async fn establish(url: &str) -> Result<AsyncPgConnection, ConnectionError> {
    Ok(connect(url).await?)
}

/// [`establish`], keeping the SQLSTATE of a refused connection.
pub async fn connect(url: &str) -> Result<AsyncPgConnection, ConnectFailure> {
    let bad = |message: String| ConnectFailure {
        code: None,
        error: ConnectionError::BadConnection(message),
    };
    let (mode, url) = parse(url).map_err(bad)?;
    let config = match mode {
        Mode::Plain => {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(|e| ConnectFailure::from_postgres(&e))?;
            return wrap(client, connection).await;
        }
        Mode::Preferred | Mode::Encrypted => client_config(None, true),
        Mode::Verified { root_cert } => client_config(root_cert.as_deref(), false),
    }
    .map_err(bad)?;
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(config);
    let (client, connection) = tokio_postgres::connect(&url, tls)
        .await
        .map_err(|e| ConnectFailure::from_postgres(&e))?;
    wrap(client, connection).await
}

async fn wrap<T>(
    client: tokio_postgres::Client,
    connection: tokio_postgres::Connection<tokio_postgres::Socket, T>,
) -> Result<AsyncPgConnection, ConnectFailure>
where
    T: tokio_postgres::tls::TlsStream + Unpin + Send + 'static,
{
    AsyncPgConnection::try_from_client_and_connection(client, connection)
        .await
        .map_err(|error| ConnectFailure { code: None, error })
}

/// An error with its causes: tokio-postgres says only "error performing TLS handshake", the
/// AWS SDK only "dispatch failure"; the reason is in the causes.
pub(super) fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    text
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn client_config(root_cert: Option<&str>, skip_verification: bool) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    if skip_verification {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())))
            .with_no_client_auth());
    }
    let mut roots = RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A malformed system certificate is skipped, as every TLS client does.
        let _ = roots.add(cert);
    }
    if let Some(path) = root_cert {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read sslrootcert {path}: {e}"))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("cannot read sslrootcert {path}: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("bad certificate in sslrootcert {path}: {e}"))?;
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// `sslmode=require`: any server certificate, but the handshake signatures are still checked.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_split_off_the_url() {
        assert_eq!(
            parse("postgres://u:p@db:5432/app?application_name=w&sslmode=disable").unwrap(),
            (
                Mode::Plain,
                "postgres://u:p@db:5432/app?application_name=w".to_string()
            )
        );
        // libpq's default is `prefer`.
        for url in ["postgres://db/app", "postgres://db/app?sslmode=prefer"] {
            assert_eq!(
                parse(url).unwrap(),
                (
                    Mode::Preferred,
                    "postgres://db/app?sslmode=prefer".to_string()
                )
            );
        }
        assert_eq!(
            parse("postgres://db/app?sslmode=require").unwrap(),
            (
                Mode::Encrypted,
                "postgres://db/app?sslmode=require".to_string()
            )
        );
        let (mode, url) = parse(
            "postgres://db/app?sslmode=verify-full&sslrootcert=/etc/rds.pem&connect_timeout=5",
        )
        .unwrap();
        assert_eq!(
            mode,
            Mode::Verified {
                root_cert: Some("/etc/rds.pem".into())
            }
        );
        assert_eq!(url, "postgres://db/app?connect_timeout=5&sslmode=require");
        assert!(parse("postgres://db/app?sslmode=sometimes").is_err());
    }
}
