//! The console's data: one [`Overview`] gathered from PostgreSQL, SQS, Redis and this process,
//! rendered as the page or returned as JSON by `/api/overview`.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::dlq::{DeadLetter, Depth, MoveStatus};
use super::history::Point;
use super::inflight::ReplicaSet;
use crate::jobs::JobReport;
use crate::store::UsageTotals;

/// Jobs shown by default: every active one plus this many recent ones.
pub const DEFAULT_JOBS: i64 = 50;
/// Most jobs `/api/overview?jobs=N` returns.
pub const MAX_JOBS: i64 = 1000;
/// Dead letters peeked for the panel.
pub const DEAD_LETTERS_SHOWN: usize = 10;

/// Everything the console shows. Each source that could not be read leaves its part empty and
/// adds a line to `problems`, so one outage never blanks the whole page.
#[derive(Debug, Clone)]
pub struct Overview {
    pub generated_at: DateTime<Utc>,
    /// The replica that answered.
    pub replica: String,
    pub actions_enabled: bool,
    pub jobs: Vec<JobReport>,
    pub in_flight: Vec<ReplicaSet>,
    pub queue: Option<Depth>,
    pub dead_letter: Option<Depth>,
    pub dead_letters: Vec<DeadLetter>,
    pub redrive: Option<MoveStatus>,
    pub spend_today: Option<UsageTotals>,
    /// The daily cost cap in force (0 = none); `None` when `app_config` could not be read.
    pub daily_cap_usd: Option<f64>,
    /// The dependencies this replica is paused on (`profile_worker_paused`), e.g. `daily_cost_cap`.
    pub paused: Vec<&'static str>,
    pub chart: Vec<Point>,
    pub problems: Vec<String>,
}

impl Overview {
    pub fn to_json(&self) -> Value {
        json!({
            "generated_at": self.generated_at,
            "replica": self.replica,
            "actions_enabled": self.actions_enabled,
            "jobs": self.jobs.iter().map(JobReport::to_json).collect::<Vec<_>>(),
            "in_flight": self.in_flight,
            "queue": self.queue,
            "dead_letter": {
                "depth": self.dead_letter,
                "recent": self.dead_letters,
                "redrive": self.redrive,
            },
            "spend": {
                "today": self.spend_today.as_ref().map(usage_json),
                "daily_cap_usd": self.daily_cap_usd,
                "paused": self.paused,
            },
            "chart": self.chart,
            "problems": self.problems,
        })
    }
}

pub fn usage_json(u: &UsageTotals) -> Value {
    json!({
        "profiles": u.profiles,
        "calls": u.calls,
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_read_tokens": u.cache_read_tokens,
        "cache_write_tokens": u.cache_write_tokens,
        "estimated_cost_usd": u.cost_usd,
        "discarded_calls": u.discarded_calls,
        "discarded_cost_usd": u.discarded_cost_usd,
    })
}
