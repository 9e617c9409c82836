//! The last hour of this replica's throughput and latency, for the console's chart.
//!
//! Sampled once a minute from the daemon's own Prometheus counters (cumulative totals), kept in a
//! ring buffer of [`SLOTS`] samples; a point of the chart is the difference of two samples. The
//! chart's last point runs from the newest sample to now, so it moves before a minute is up.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus::core::Collector;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Samples kept: one hour plus the starting point.
pub const SLOTS: usize = 61;
/// Time between samples.
pub const EVERY: Duration = Duration::from_secs(60);

/// Cumulative counters at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at: DateTime<Utc>,
    /// Messages handled, whatever the outcome.
    pub processed: u64,
    /// Sum and count of message durations, seconds.
    pub duration_sum: f64,
    pub duration_count: u64,
}

impl Sample {
    pub fn read(metrics: &Metrics, at: DateTime<Utc>) -> Self {
        let processed = metrics
            .messages_processed
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .map(|m| m.get_counter().get_value() as u64)
            .sum();
        Self {
            at,
            processed,
            duration_sum: metrics.message_duration.get_sample_sum(),
            duration_count: metrics.message_duration.get_sample_count(),
        }
    }
}

/// One point of the chart: what happened between two samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// End of the interval.
    pub at: DateTime<Utc>,
    /// Messages handled per minute over the interval.
    pub per_minute: f64,
    /// Mean time from receipt to outcome, seconds; `None` when nothing finished.
    pub mean_seconds: Option<f64>,
}

/// The ring buffer.
#[derive(Clone, Default)]
pub struct History {
    samples: Arc<Mutex<VecDeque<Sample>>>,
}

impl History {
    pub fn push(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() == SLOTS {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// The chart's points, oldest first, ending with the interval from the newest sample to `now`.
    pub fn points(&self, now: Sample) -> Vec<Point> {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<Sample> = samples.iter().copied().collect();
        drop(samples);
        if all.last().is_some_and(|last| now.at > last.at) {
            all.push(now);
        }
        all.windows(2).map(|w| point(&w[0], &w[1])).collect()
    }
}

fn point(from: &Sample, to: &Sample) -> Point {
    let minutes = ((to.at - from.at).num_milliseconds() as f64 / 60_000.0).max(1e-3);
    let done = to.processed.saturating_sub(from.processed);
    let count = to.duration_count.saturating_sub(from.duration_count);
    Point {
        at: to.at,
        per_minute: done as f64 / minutes,
        mean_seconds: (count > 0).then(|| (to.duration_sum - from.duration_sum) / count as f64),
    }
}

/// Samples `metrics` into `history` now and every [`EVERY`] until `stop`.
pub async fn sample_loop(history: History, metrics: Arc<Metrics>, stop: CancellationToken) {
    loop {
        history.push(Sample::read(&metrics, Utc::now()));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: i64, processed: u64, sum: f64, count: u64) -> Sample {
        Sample {
            at: DateTime::from_timestamp(minute * 60, 0).unwrap(),
            processed,
            duration_sum: sum,
            duration_count: count,
        }
    }

    #[test]
    fn points_are_differences_and_the_ring_keeps_an_hour() {
        let h = History::default();
        for m in 0..100 {
            h.push(at(m, m as u64 * 30, m as f64 * 15.0, m as u64 * 30));
        }
        let points = h.points(at(99, 2970, 1485.0, 2970));
        assert_eq!(points.len(), SLOTS - 1);
        assert!(points.iter().all(|p| (p.per_minute - 30.0).abs() < 1e-9));
        assert!(
            points
                .iter()
                .all(|p| (p.mean_seconds.unwrap() - 0.5).abs() < 1e-9)
        );
        // The live point covers the part-minute since the newest sample.
        let live = h.points(at(100, 3000, 1485.0, 2970));
        assert_eq!(live.len(), SLOTS);
        assert_eq!(live.last().unwrap().mean_seconds, None);
    }

    #[test]
    fn reads_the_daemon_counters() {
        let metrics = Metrics::new();
        metrics
            .messages_processed
            .with_label_values(&["done"])
            .inc_by(3);
        metrics
            .messages_processed
            .with_label_values(&["failed"])
            .inc();
        metrics.message_duration.observe(2.0);
        let s = Sample::read(&metrics, Utc::now());
        assert_eq!((s.processed, s.duration_count), (4, 1));
        assert_eq!(s.duration_sum, 2.0);
    }
}
