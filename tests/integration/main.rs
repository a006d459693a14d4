//! The integration tests, built as one test binary (`cargo test --test integration`): one link
//! of the broker and the client crates instead of one per file. Each file here is a module; run
//! one area or one test with a filter, e.g. `cargo test --test integration paging::` or
//! `cargo test --test integration basic::recover_requeues_unacked_as_redelivered`.
//!
//! The tests of every module run side by side in this one process, so none may change what is
//! global to it (a panic hook, environment variables, the working directory, resource limits):
//! a test that must is a binary of its own next to this directory, as `tests/mutated_frames.rs`
//! is (it counts panics in its process). Brokers that need a process of their own (restarts,
//! `kill -9`, memory or file-descriptor measurements) are started as child processes
//! (`common::ChildBroker`). The harness, `tests/common/`, serves both binaries.

#[path = "../common/mod.rs"]
mod common;

mod access_control;
mod adversarial;
mod alarms;
mod basic;
mod cluster;
mod config_file;
mod confirms;
mod connection;
mod connections_api;
mod ctl;
mod data_file;
mod disk_full;
mod durability;
mod http_api;
mod http_limits;
mod limits;
mod malformed;
mod management_amqp;
mod management_writes;
mod memory_alarm;
mod paging;
mod policies;
mod queue_features;
mod queues;
mod routing;
mod sasl;
mod streams;
mod tls;
