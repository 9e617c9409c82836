//! Secrets Manager on the local moto server: database credentials shaped as RDS keeps them.

use aws_sdk_secretsmanager::Client;

use super::sqs::{local_aws, moto_url};

/// A Secrets Manager client for moto, independent of the code under test.
pub async fn client() -> Client {
    let shared = local_aws().await;
    Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(&shared)
            .endpoint_url(moto_url())
            .build(),
    )
}

/// The secret's JSON for a database URL (user, password, host, port, database).
pub fn credentials_of(url: &str) -> String {
    let url = url::Url::parse(url).expect("database URL");
    let decoded = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .expect("UTF-8")
            .into_owned()
    };
    serde_json::json!({
        "engine": "postgres",
        "username": decoded(url.username()),
        "password": decoded(url.password().unwrap_or("unused")),
        "host": url.host_str().expect("host"),
        "port": url.port().unwrap_or(5432),
        "dbname": url.path().trim_start_matches('/'),
    })
    .to_string()
}

/// Creates a uniquely named secret holding `secret` and returns its ARN.
pub async fn create(secret: String) -> String {
    client()
        .await
        .create_secret()
        .name(format!("pw-test/{}", uuid::Uuid::new_v4().simple()))
        .secret_string(secret)
        .send()
        .await
        .expect("CreateSecret")
        .arn()
        .expect("secret ARN")
        .to_owned()
}

/// Creates a secret with the credentials of the database at `url`; returns its ARN.
pub async fn create_database_secret(url: &str) -> String {
    create(credentials_of(url)).await
}
