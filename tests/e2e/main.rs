//! End-to-end tests: every test drives a real server over real gRPC on
//! 127.0.0.1:0 with a temp data dir. One binary, so the build links once.

mod audit;
mod auth;
mod backup;
mod big_events;
mod cli;
mod cluster;
mod cluster_backup;
mod cluster_faults;
mod connections;
mod corruption;
mod crash;
mod dead_letters;
mod delivery;
mod disk_full;
mod errors;
mod filters;
mod idempotency;
mod kill_loop;
mod limits;
mod metrics;
mod migrate;
mod ops;
mod ordering;
mod power_loss;
mod publish_stream;
mod replay;
mod restart;
mod retention;
mod sdk;
mod sdk_admin;
mod seek;
mod subscribe_stream;
mod support;
mod tls;
mod tracing;
