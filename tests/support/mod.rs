#![allow(dead_code)]
//! Helpers shared by integration tests; each test binary uses only some of them.

pub mod bedrock;
