//! A diagnostic handler for driving the real binary without the profile pipeline (hidden
//! `--diagnostic-hold-ms` flag of `run`): it holds each message for a fixed time, then reports
//! it done. End-to-end tests use it to have a message in flight when they kill the process.

use std::time::Duration;

use async_trait::async_trait;

use super::{Delivery, Handler, Outcome};

/// Holds every message for `hold`, then reports [`Outcome::Done`].
#[derive(Debug, Clone)]
pub struct HoldHandler {
    hold: Duration,
}

impl HoldHandler {
    pub fn new(hold: Duration) -> Self {
        Self { hold }
    }
}

#[async_trait]
impl Handler for HoldHandler {
    async fn handle(&self, delivery: &Delivery) -> Outcome {
        tracing::info!(
            hold_ms = self.hold.as_millis() as u64,
            attempt = delivery.attempt,
            "diagnostic handler holding message"
        );
        tokio::time::sleep(self.hold).await;
        tracing::info!("diagnostic handler done");
        Outcome::Done
    }
}
