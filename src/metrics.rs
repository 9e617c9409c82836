//! Every Prometheus metric of the daemon, in one struct that owns its registry.
//!
//! Label values are small closed sets (outcomes, call kinds, model ids from config); ids of
//! messages, jobs or entities never become labels.

use prometheus::{
    CounterVec, Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::build_info;

const PREFIX: &str = "profile_worker";

/// The daemon's metrics; cheap to clone handles are inside, share it behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    pub messages_received: IntCounter,
    pub messages_processed: IntCounterVec,
    pub message_duration: Histogram,
    pub in_flight: IntGauge,
    pub concurrency_limit: IntGauge,
    pub receive_requests: IntCounterVec,
    pub visibility_extensions: IntCounterVec,
    pub graph_cache_requests: IntCounterVec,
    pub graph_build_seconds: Histogram,
    pub generator_requests: IntCounterVec,
    pub generator_request_seconds: HistogramVec,
    pub generator_tokens: IntCounterVec,
    pub generator_cost_usd: CounterVec,
    pub jobs_completed: IntCounter,
    pub queue_messages: IntGaugeVec,
    pub db_pool_connections: IntGaugeVec,
    pub db_pool_max_connections: IntGauge,
    /// 1 while the dependency is down and receiving is paused (docs/reliability.md).
    pub paused: IntGaugeVec,
    /// Messages kept invisible in process while a dependency is down.
    pub held: IntGauge,
    /// Time Bedrock calls waited for the budget (src/budget/), by where it was decided.
    pub budget_wait_seconds: HistogramVec,
    /// 1 while this replica budgets on its local share (Redis unreachable or not configured).
    pub budget_fallback: IntGauge,
    /// Call leases this replica holds (budget.max_concurrent_calls).
    pub budget_leases: IntGauge,
    /// Calls per minute the budget admits now (adaptive: the learnt rate).
    pub budget_rate: prometheus::Gauge,
    /// Bedrock cost recorded today (UTC) by every replica, as last read before a generation.
    pub spend_today_usd: Gauge,
    /// `budget.daily_cost_usd` in force (0 = no cap).
    pub daily_cap_usd: Gauge,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(PREFIX)
}

fn hopts(name: &str, help: &str, buckets: Vec<f64>) -> HistogramOpts {
    HistogramOpts::new(name, help)
        .namespace(PREFIX)
        .buckets(buckets)
}

impl Metrics {
    /// Creates and registers every metric, plus build info and process metrics.
    pub fn new() -> Self {
        let registry = Registry::new();
        let r = &registry;
        let llm_buckets = vec![
            0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0,
        ];
        let m = Self {
            messages_received: reg(
                r,
                IntCounter::with_opts(opts(
                    "messages_received_total",
                    "Messages received from the queue.",
                )),
            ),
            messages_processed: reg(
                r,
                IntCounterVec::new(
                    opts(
                        "messages_processed_total",
                        "Messages handled, by outcome (done, skipped, retry, failed, poison, released, lost).",
                    ),
                    &["outcome"],
                ),
            ),
            message_duration: reg(
                r,
                Histogram::with_opts(hopts(
                    "message_duration_seconds",
                    "Time from receipt to outcome of one message.",
                    llm_buckets.clone(),
                )),
            ),
            in_flight: reg(
                r,
                IntGauge::with_opts(opts("in_flight", "Messages being handled right now.")),
            ),
            concurrency_limit: reg(
                r,
                IntGauge::with_opts(opts(
                    "concurrency_limit",
                    "Configured maximum of messages handled at once.",
                )),
            ),
            receive_requests: reg(
                r,
                IntCounterVec::new(
                    opts(
                        "receive_requests_total",
                        "ReceiveMessage calls, by result (messages, empty, error).",
                    ),
                    &["result"],
                ),
            ),
            visibility_extensions: reg(
                r,
                IntCounterVec::new(
                    opts(
                        "visibility_extensions_total",
                        "Visibility heartbeats, by result (ok, lost, error).",
                    ),
                    &["result"],
                ),
            ),
            graph_cache_requests: reg(
                r,
                IntCounterVec::new(
                    opts(
                        "graph_cache_requests_total",
                        "Graph cache lookups, by layer (local, redis) and result (hit, miss, error, invalid).",
                    ),
                    &["layer", "result"],
                ),
            ),
            graph_build_seconds: reg(
                r,
                Histogram::with_opts(hopts(
                    "graph_build_seconds",
                    "Time to build the social-circles graph from the database.",
                    vec![
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    ],
                )),
            ),
            generator_requests: reg(
                r,
                IntCounterVec::new(
                    opts(
                        "generator_requests_total",
                        "Generator calls, by call kind and result (ok, throttled, retryable, error; stopped: not sent because the message's call cap was spent or its work cancelled).",
                    ),
                    &["call", "result"],
                ),
            ),
            generator_request_seconds: reg(
                r,
                HistogramVec::new(
                    hopts(
                        "generator_request_seconds",
                        "Latency of one generator call attempt.",
                        llm_buckets,
                    ),
                    &["call"],
                ),
            ),
            generator_tokens: reg(
                r,
                IntCounterVec::new(
                    opts(
                        "generator_tokens_total",
                        "Tokens used by the generator, by model and direction (input: billed at the full rate, output, cache_read, cache_write).",
                    ),
                    &["model", "direction"],
                ),
            ),
            generator_cost_usd: reg(
                r,
                CounterVec::new(
                    opts(
                        "generator_cost_usd_total",
                        "Estimated generator cost in USD, by model.",
                    ),
                    &["model"],
                ),
            ),
            jobs_completed: reg(
                r,
                IntCounter::with_opts(opts(
                    "jobs_completed_total",
                    "Batch jobs this process moved to completed.",
                )),
            ),
            queue_messages: reg(
                r,
                IntGaugeVec::new(
                    opts(
                        "queue_messages",
                        "Approximate queue depth, by state (visible, in_flight, delayed).",
                    ),
                    &["state"],
                ),
            ),
            db_pool_connections: reg(
                r,
                IntGaugeVec::new(
                    opts(
                        "db_pool_connections",
                        "Database pool connections, by state (idle, in_use).",
                    ),
                    &["state"],
                ),
            ),
            db_pool_max_connections: reg(
                r,
                IntGauge::with_opts(opts(
                    "db_pool_max_connections",
                    "Capacity of the database pool (database.pool_size).",
                )),
            ),
            paused: reg(
                r,
                IntGaugeVec::new(
                    opts(
                        "paused",
                        "1 while a dependency (database, bedrock, queue, daily_cost_cap) is down and the daemon holds work.",
                    ),
                    &["dependency"],
                ),
            ),
            held: reg(
                r,
                IntGauge::with_opts(opts(
                    "held_messages",
                    "Messages kept invisible in process until their dependency answers again.",
                )),
            ),
            budget_wait_seconds: reg(
                r,
                HistogramVec::new(
                    hopts(
                        "budget_wait_seconds",
                        "Time a Bedrock call waited for the shared budget before it was admitted, by where it was decided (redis, local).",
                        vec![0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
                    ),
                    &["source"],
                ),
            ),
            budget_fallback: reg(
                r,
                IntGauge::with_opts(opts(
                    "budget_fallback",
                    "1 while this replica budgets Bedrock calls on its local share (Redis unreachable or not configured).",
                )),
            ),
            budget_leases: reg(
                r,
                IntGauge::with_opts(opts(
                    "budget_leases",
                    "Bedrock call leases this replica holds.",
                )),
            ),
            budget_rate: reg(
                r,
                prometheus::Gauge::with_opts(opts(
                    "budget_rate_per_minute",
                    "Bedrock calls per minute the budget admits (the learnt rate when adaptive); the local share during a fallback.",
                )),
            ),
            spend_today_usd: reg(
                r,
                Gauge::with_opts(opts(
                    "spend_today_usd",
                    "Estimated Bedrock cost recorded today (UTC) across all replicas, as last read.",
                )),
            ),
            daily_cap_usd: reg(
                r,
                Gauge::with_opts(opts(
                    "daily_cap_usd",
                    "The daily Bedrock cost cap in force (budget.daily_cost_usd; 0 = none).",
                )),
            ),
            registry,
        };
        let build = reg(
            &m.registry,
            IntGaugeVec::new(
                opts(
                    "build_info",
                    "Version and git commit of the running binary (always 1).",
                ),
                &["version", "commit"],
            ),
        );
        build
            .with_label_values(&[build_info::VERSION, build_info::COMMIT])
            .set(1);
        #[cfg(target_os = "linux")]
        m.registry
            .register(Box::new(
                // No namespace: the standard process_* names dashboards and alerts expect.
                prometheus::process_collector::ProcessCollector::new(std::process::id() as i32, ""),
            ))
            .expect("process collector registers once");
        m
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("encoding to a Vec cannot fail");
        String::from_utf8(buf).expect("Prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Registers a freshly built collector; both steps only fail on programming errors
/// (bad names, duplicates), which the unit test below catches.
fn reg<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    collector: prometheus::Result<C>,
) -> C {
    let c = collector.expect("valid metric definition");
    registry
        .register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_build_info_and_process_metrics() {
        let m = Metrics::new();
        m.messages_processed.with_label_values(&["done"]).inc();
        let text = m.render();
        assert!(text.contains(&format!(
            "profile_worker_build_info{{commit=\"{}\",version=\"{}\"}} 1",
            build_info::COMMIT,
            build_info::VERSION
        )));
        assert!(text.contains("\nprocess_resident_memory_bytes "));
        assert!(!text.contains("profile_worker_process_"));
        assert!(text.contains("profile_worker_messages_processed_total{outcome=\"done\"} 1"));
    }
}
