//! The console's actions: cancel a job, redrive the dead-letter queue, regenerate one entity.
//!
//! Off unless `console.token` (or `console.token_file`) is set. Each needs `Authorization: Bearer
//! <token>`, compared in constant time over SHA-256 digests (so neither the content nor the length
//! of the token leaks through timing); each attempt is logged with the caller's address, refused
//! ones included. Actions are POST only: no GET ever changes state.

use std::net::SocketAddr;

use hyper::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Console;
use crate::jobs::enqueue_one;
use crate::model::EntityRef;
use crate::store::{CancelOutcome, JobStore};

/// The action token, kept only as its digest.
#[derive(Clone)]
pub struct Token([u8; 32]);

impl Token {
    pub fn new(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// True when `authorization` is `Bearer <the token>`.
    pub fn verify(&self, authorization: Option<&str>) -> bool {
        let presented = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or_default();
        let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        digest.ct_eq(&self.0).into()
    }
}

/// One action, parsed from the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Cancel(String),
    Redrive,
    Regenerate(Result<EntityRef, String>),
}

impl Action {
    /// The action at `path` (after the prefix), if it names one.
    pub fn parse(path: &str) -> Option<Action> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match parts.as_slice() {
            ["api", "jobs", id, "cancel"] if !id.is_empty() => Some(Action::Cancel(decode(id))),
            ["api", "dlq", "redrive"] => Some(Action::Redrive),
            ["api", "entities", kind, id, "regenerate"] => Some(Action::Regenerate(
                format!("{}:{}", decode(kind), decode(id)).parse(),
            )),
            _ => None,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Action::Cancel(_) => "cancel",
            Action::Redrive => "redrive",
            Action::Regenerate(_) => "regenerate",
        }
    }
}

fn decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

/// Authorises and runs `action`; the answer is a status and a JSON body with a `message`.
pub async fn run(
    console: &Console,
    action: Action,
    authorization: Option<&str>,
    peer: SocketAddr,
) -> (StatusCode, Value) {
    let name = action.name();
    let Some(token) = &console.token else {
        tracing::warn!(action = name, %peer, "console action refused: actions are disabled");
        return (
            StatusCode::FORBIDDEN,
            json!({"message": "actions are disabled: set console.token or console.token_file"}),
        );
    };
    if !token.verify(authorization) {
        tracing::warn!(action = name, %peer, "console action refused: missing or wrong token");
        return (
            StatusCode::UNAUTHORIZED,
            json!({"message": "a valid bearer token is required"}),
        );
    }
    let (status, body) = perform(console, action.clone()).await;
    tracing::info!(
        action = name,
        target = ?action,
        %peer,
        status = status.as_u16(),
        result = %body["message"].as_str().unwrap_or_default(),
        "console action"
    );
    (status, body)
}

async fn perform(console: &Console, action: Action) -> (StatusCode, Value) {
    match action {
        Action::Cancel(id) => match console.store.cancel_job(&id).await {
            Ok(CancelOutcome::Cancelled(job)) => (
                StatusCode::OK,
                json!({"message": format!("job {id} cancelled"), "status": job.status}),
            ),
            Ok(CancelOutcome::NotFound) => (
                StatusCode::NOT_FOUND,
                json!({"message": format!("no job {id}")}),
            ),
            Ok(CancelOutcome::AlreadyTerminal(status)) => (
                StatusCode::CONFLICT,
                json!({"message": format!("job {id} had already ended ({status})"), "status": status}),
            ),
            Err(err) => unavailable(err),
        },
        Action::Redrive => match console.dead_letters.redrive().await {
            Ok(status) => (
                StatusCode::ACCEPTED,
                json!({"message": format!("redrive started ({})", status.mode), "redrive": status}),
            ),
            Err(err @ super::dlq::DlqError::AlreadyRunning(_)) => {
                (StatusCode::CONFLICT, json!({"message": err.to_string()}))
            }
            Err(err @ super::dlq::DlqError::NoDeadLetterQueue) => {
                (StatusCode::NOT_FOUND, json!({"message": err.to_string()}))
            }
            Err(err) => unavailable(err),
        },
        Action::Regenerate(Err(reason)) => (StatusCode::BAD_REQUEST, json!({"message": reason})),
        Action::Regenerate(Ok(entity)) => match enqueue_one(&*console.queue, entity).await {
            Ok(message_id) => (
                StatusCode::ACCEPTED,
                json!({"message": format!("queued {entity} (message {message_id})"), "message_id": message_id}),
            ),
            Err(err) => unavailable(err),
        },
    }
}

fn unavailable(err: impl std::fmt::Display) -> (StatusCode, Value) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"message": err.to_string()}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_needs_the_exact_bearer_value() {
        let t = Token::new("s3cret-token-0123");
        assert!(t.verify(Some("Bearer s3cret-token-0123")));
        assert!(!t.verify(Some("Bearer s3cret-token-012")));
        assert!(!t.verify(Some("s3cret-token-0123")));
        assert!(!t.verify(Some("Basic s3cret-token-0123")));
        assert!(!t.verify(None));
    }

    #[test]
    fn actions_are_parsed_from_their_paths() {
        assert_eq!(
            Action::parse("/api/jobs/ab%20c/cancel"),
            Some(Action::Cancel("ab c".into()))
        );
        assert_eq!(Action::parse("/api/dlq/redrive"), Some(Action::Redrive));
        assert_eq!(
            Action::parse("/api/entities/author/12/regenerate"),
            Some(Action::Regenerate(Ok("author:12".parse().unwrap())))
        );
        assert!(matches!(
            Action::parse("/api/entities/editor/1/regenerate"),
            Some(Action::Regenerate(Err(_)))
        ));
        assert_eq!(Action::parse("/api/overview"), None);
    }
}
