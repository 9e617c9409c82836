//! Liveness and readiness state, written by the components and read by the side server.
//!
//! Components push their state here; the probes only read it, so `/health` and `/ready` never
//! call a dependency and answer in microseconds even when a dependency hangs. Ages are read on
//! tokio's clock (the system clock in the daemon), so tests with paused time can age a heartbeat.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// Shared liveness and readiness registry.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    started: Instant,
    beats: Mutex<BTreeMap<&'static str, Arc<BeatState>>>,
    checks: Mutex<BTreeMap<&'static str, CheckState>>,
}

struct BeatState {
    last_ms: AtomicU64,
    max_age: Duration,
}

/// The state of one readiness check as `/ready` reports it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CheckState {
    /// Whether this check passes.
    pub ok: bool,
    /// Whether `/ready` fails when this check fails (Redis, for one, is only reported).
    pub required: bool,
    /// What the component last observed.
    pub detail: String,
}

/// A loop's proof of life: call [`Heartbeat::beat`] once per iteration.
#[derive(Clone)]
pub struct Heartbeat {
    state: Arc<BeatState>,
    started: Instant,
}

impl Heartbeat {
    pub fn beat(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.state.last_ms.store(ms, Ordering::Relaxed);
    }
}

/// Handle a component uses to report one readiness check.
#[derive(Clone)]
pub struct Check {
    health: Health,
    name: &'static str,
}

impl Check {
    pub fn set(&self, ok: bool, detail: impl Into<String>) {
        let mut checks = self.health.inner.checks.lock().expect("health lock");
        if let Some(state) = checks.get_mut(self.name) {
            state.ok = ok;
            state.detail = detail.into();
        }
    }
}

/// What `/ready` answers.
#[derive(Debug, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub checks: BTreeMap<&'static str, CheckState>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                started: Instant::now(),
                beats: Mutex::default(),
                checks: Mutex::default(),
            }),
        }
    }

    fn started(&self) -> Instant {
        self.inner.started
    }

    /// Registers a loop that must beat at least every `max_age` for `/health` to pass.
    pub fn heartbeat(&self, name: &'static str, max_age: Duration) -> Heartbeat {
        let started = self.started();
        let state = Arc::new(BeatState {
            last_ms: AtomicU64::new(started.elapsed().as_millis() as u64),
            max_age,
        });
        self.inner
            .beats
            .lock()
            .expect("health lock")
            .insert(name, state.clone());
        Heartbeat { state, started }
    }

    /// Registers a readiness check, initially failing with "starting".
    pub fn check(&self, name: &'static str, required: bool) -> Check {
        self.inner.checks.lock().expect("health lock").insert(
            name,
            CheckState {
                ok: false,
                required,
                detail: "starting".into(),
            },
        );
        Check {
            health: self.clone(),
            name,
        }
    }

    /// Declares a required check before its component registers it: `/ready` fails, reporting it
    /// as "not started", until the component has registered it and it passes. The daemon declares
    /// its checks before the side server listens, so no probe sees an empty, passing list.
    pub fn expect(&self, name: &'static str) {
        self.inner
            .checks
            .lock()
            .expect("health lock")
            .entry(name)
            .or_insert(CheckState {
                ok: false,
                required: true,
                detail: "not started".into(),
            });
    }

    /// `Ok` when every registered loop beat recently; else the names of the stalled loops.
    pub fn liveness(&self) -> Result<(), Vec<&'static str>> {
        let now = self.started().elapsed();
        let stalled: Vec<_> = self
            .inner
            .beats
            .lock()
            .expect("health lock")
            .iter()
            .filter(|(_, b)| {
                let last = Duration::from_millis(b.last_ms.load(Ordering::Relaxed));
                now.saturating_sub(last) > b.max_age
            })
            .map(|(name, _)| *name)
            .collect();
        if stalled.is_empty() {
            Ok(())
        } else {
            Err(stalled)
        }
    }

    /// Ready when every required check passes.
    pub fn readiness(&self) -> Readiness {
        let checks = self.inner.checks.lock().expect("health lock").clone();
        let ready = checks.values().all(|c| c.ok || !c.required);
        Readiness { ready, checks }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_required_checks_only() {
        let health = Health::new();
        assert!(health.readiness().ready, "nothing registered yet");
        let db = health.check("database", true);
        let redis = health.check("redis", false);
        assert!(!health.readiness().ready);
        db.set(true, "ok");
        redis.set(false, "connection refused");
        let r = health.readiness();
        assert!(r.ready);
        assert_eq!(r.checks["redis"].detail, "connection refused");
    }

    #[test]
    fn an_expected_check_is_unready_until_registered_and_passing() {
        let health = Health::new();
        health.expect("queue");
        let r = health.readiness();
        assert!(!r.ready);
        assert_eq!(r.checks["queue"].detail, "not started");
        let queue = health.check("queue", true);
        assert!(!health.readiness().ready, "registered but not yet passing");
        queue.set(true, "ok");
        assert!(health.readiness().ready);
    }

    #[test]
    fn liveness_fails_when_a_loop_stops_beating() {
        let health = Health::new();
        let beat = health.heartbeat("poller", Duration::from_millis(30));
        beat.beat();
        assert!(health.liveness().is_ok());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(health.liveness(), Err(vec!["poller"]));
        beat.beat();
        assert!(health.liveness().is_ok());
    }
}
