#![allow(dead_code)]
//! Shared test helpers; each test binary uses only some of them.

pub mod graph;
pub mod redis;
