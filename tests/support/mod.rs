#![allow(dead_code)]
//! Helpers shared by the integration tests; each test binary uses only some of them.

pub mod aws_proxy;
pub mod bedrock;
pub mod consumer;
pub mod daemon;
pub mod db;
pub mod entities;
pub mod graph;
pub mod iam;
pub mod jobs;
pub mod pipeline;
pub mod postgres;
pub mod queue;
pub mod redis;
pub mod secrets;
pub mod sqs;
