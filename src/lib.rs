//! profile-worker: a long-running SQS consumer that generates entity profiles for a rare-book
//! collection with Amazon Bedrock, a drop-in replacement for the original Python Lambda.
//!
//! Data flow of one message: the consumer receives it (bounded concurrency, visibility
//! heartbeat) → the pipeline checks the entity's qualifying books and the profile's staleness →
//! loads the social-circles graph (in-process cache, then Redis, else built from `books`) →
//! generates the profile → writes profile, AI connections and job progress in one transaction →
//! the consumer deletes the message.
//!
//! Start with `docs/architecture.md` (layers, ports, one message hop by hop), then
//! `src/main.rs` and [`app`]. Module map:
//! - [`cli`]: command line; [`config`]: layered, validated configuration;
//!   [`telemetry`]: logging; [`build_info`]: version stamps; [`model`]: domain types.
//! - [`app`]: the composition root — builds every adapter from the configuration for `run`,
//!   `demo` and the operator commands ([`app::commands`]), owns start-up and shutdown order
//!   ([`app::daemon`]) and the exit statuses ([`app::exit`]); [`aws`]: the one AWS SDK
//!   configuration the SQS and Bedrock clients share; [`shutdown`]: signals to a cancellation
//!   token, and the clock of the periodic tasks. Start reading at `src/main.rs`, then [`app`].
//! - [`pipeline`]: one message (its [`pipeline::message`] contract); [`generate`]: the
//!   generator port, Bedrock and offline adapters, prompts, narrative classifier. The message
//!   contract and the output hygiene live in the `profile-worker-contract` crate
//!   (`crates/contract`), re-exported here, so they can be fuzzed on their own.
//! - [`server`]: `/metrics`, `/health`, `/ready`, `/version`; [`health`]: liveness and
//!   readiness state; [`metrics`]: every Prometheus metric.
//! - [`store`]: the `Store` port (PostgreSQL and in-memory adapters), embedded migrations and
//!   the start-up schema check.
//! - [`queue`]: the `Queue` port (SQS, in-memory); [`consumer`]: receive loop, concurrency,
//!   visibility heartbeat, graceful drain; [`outcome`]: what each ending does to the message
//!   and to its job; [`retry`]: the backoff every retrying loop uses.
//! - [`jobs`]: batch jobs for operators (`enqueue`, `status`, `cancel`, `jobs`) and the
//!   stuck-job rescue `run` hosts.
//! - [`graph`]: the social-circles graph, built from rows, in the Python cache's JSON;
//!   [`cache`]: its in-process and Redis cache; [`budget`]: the Bedrock call budget shared by
//!   all replicas through Redis, a decorator of the generator port.

pub mod app;
pub mod aws;
pub mod budget;
pub mod build_info;
pub mod cache;
pub mod cli;
pub mod config;
pub mod console;
pub mod consumer;
pub mod demo;
pub mod generate;
pub mod graph;
pub mod health;
pub mod jobs;
pub mod metrics;
pub mod model;
pub mod outcome;
pub mod pipeline;
pub mod queue;
pub mod retry;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod telemetry;
