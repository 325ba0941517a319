//! cardgate's integration tests: one binary, a real server per test (see `helpers.rs`).
#![forbid(unsafe_code)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity
)]

mod helpers;

mod audit;
mod bankezy;
mod bankezy_input;
mod bankezy_policy;
mod cards;
mod cli;
mod dpop;
mod environments;
mod equals;
mod faults;
mod fiserv;
mod mfa;
mod migration;
mod oauth;
mod operations;
mod outage;
mod pg_cluster;
mod postgres;
mod retention;
mod store_suite;
mod synctera;
mod treasuryprime;
mod vault;
mod webhook;
mod widgets;
