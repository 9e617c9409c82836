//! Pause state: which dependencies are down, why, and since when.
//!
//! A held message or the receive loop reports a dependency down; a later success reports it up.
//! Every change is logged once, mirrored in `profile_worker_paused{dependency}` and in the
//! required "paused" readiness check, whose detail names each dependency and its cause.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::health::Check;
use crate::metrics::Metrics;
use crate::outcome::Dependency;

/// Shared pause state; cheap to clone.
#[derive(Clone)]
pub struct Pauses {
    inner: Arc<Inner>,
}

struct Inner {
    down: Mutex<BTreeMap<Dependency, String>>,
    /// Messages held per dependency: when the last one goes without an answer, receiving
    /// resumes so that new messages probe the dependency.
    holders: Mutex<BTreeMap<Dependency, usize>>,
    /// Whether receiving is blocked; bumped on every change.
    blocked: watch::Sender<bool>,
    check: Check,
    metrics: Arc<Metrics>,
}

impl Pauses {
    pub fn new(check: Check, metrics: Arc<Metrics>) -> Self {
        check.set(true, "not paused");
        for dependency in Dependency::ALL {
            metrics
                .paused
                .with_label_values(&[dependency.as_str()])
                .set(0);
        }
        Self {
            inner: Arc::new(Inner {
                down: Mutex::default(),
                holders: Mutex::default(),
                blocked: watch::Sender::new(false),
                check,
                metrics,
            }),
        }
    }

    /// Marks `dependency` down with `cause`; logs when it was up or the cause changed.
    pub fn pause(&self, dependency: Dependency, cause: &str) {
        let mut down = self.inner.down.lock().expect("pause lock");
        let previous = down.insert(dependency, cause.to_string());
        if previous.as_deref() == Some(cause) {
            return;
        }
        if previous.is_none() {
            tracing::warn!(
                dependency = dependency.as_str(),
                cause,
                "paused: dependency down; receiving stops, messages in hand are held"
            );
        } else {
            tracing::warn!(
                dependency = dependency.as_str(),
                cause,
                "paused: cause changed"
            );
        }
        self.publish(&down);
    }

    /// Marks `dependency` up again; logs when it was down.
    pub fn resume(&self, dependency: Dependency) {
        let mut down = self.inner.down.lock().expect("pause lock");
        if down.remove(&dependency).is_some() {
            tracing::info!(
                dependency = dependency.as_str(),
                "resumed: dependency answers again"
            );
            self.publish(&down);
        }
    }

    /// A message starts being held for `dependency`.
    pub fn hold(&self, dependency: Dependency) {
        *self
            .inner
            .holders
            .lock()
            .expect("pause lock")
            .entry(dependency)
            .or_default() += 1;
    }

    /// A held message ended: `answered` when its handler ran to an outcome other than hold
    /// (the dependency answers again). The last holder leaving unanswered also resumes, so
    /// that receiving — and with it probing — does not stop for good.
    pub fn release_hold(&self, dependency: Dependency, answered: bool) {
        let last = {
            let mut holders = self.inner.holders.lock().expect("pause lock");
            let n = holders.entry(dependency).or_default();
            *n = n.saturating_sub(1);
            *n == 0
        };
        if answered || last {
            self.resume(dependency);
        }
    }

    /// True while any dependency a handler needs is down (the queue itself is probed by
    /// receiving, so its outage does not stop the receive loop).
    pub fn blocks_receiving(&self) -> bool {
        *self.inner.blocked.borrow()
    }

    /// Waits until receiving is no longer blocked.
    pub async fn unblocked(&self) {
        let mut rx = self.inner.blocked.subscribe();
        let _ = rx.wait_for(|blocked| !blocked).await;
    }

    fn publish(&self, down: &BTreeMap<Dependency, String>) {
        for dependency in Dependency::ALL {
            self.inner
                .metrics
                .paused
                .with_label_values(&[dependency.as_str()])
                .set(i64::from(down.contains_key(&dependency)));
        }
        if down.is_empty() {
            self.inner.check.set(true, "not paused");
        } else {
            let reason = down
                .iter()
                .map(|(d, cause)| format!("{} down: {cause}", d.as_str()))
                .collect::<Vec<_>>()
                .join("; ");
            self.inner.check.set(false, format!("paused: {reason}"));
        }
        let blocked = down.keys().any(|d| *d != Dependency::Queue);
        self.inner.blocked.send_replace(blocked);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Health;

    #[test]
    fn pause_names_the_cause_and_resume_clears_it() {
        let health = Health::new();
        let metrics = Arc::new(Metrics::new());
        let pauses = Pauses::new(health.check("paused", true), metrics.clone());
        assert!(health.readiness().ready);
        pauses.pause(Dependency::Bedrock, "AccessDeniedException: not enabled");
        let r = health.readiness();
        assert!(!r.ready);
        assert!(
            r.checks["paused"]
                .detail
                .contains("bedrock down: AccessDeniedException")
        );
        assert!(pauses.blocks_receiving());
        let gauge = |d: &str| metrics.paused.with_label_values(&[d]).get();
        assert_eq!((gauge("bedrock"), gauge("database")), (1, 0));

        pauses.pause(Dependency::Queue, "unreachable");
        pauses.resume(Dependency::Bedrock);
        assert!(
            !pauses.blocks_receiving(),
            "a queue outage alone does not block receiving"
        );
        assert!(!health.readiness().ready);
        pauses.resume(Dependency::Queue);
        assert!(health.readiness().ready);
        assert_eq!(gauge("bedrock"), 0);
    }
}
