//! Livechain: a multi-provider EVM event indexer.
//!
//! Layout (see `ARCHITECTURE.md` for the data flow and invariants):
//! - [`config`]: YAML config, environment substitution, validation with paths.
//! - [`domain`]: events, their identity, cursors and finality; no I/O.
//! - [`store`]: SQLite (sqlx, WAL), refinery migrations, the only module that knows SQL.
//! - [`devnet`]: a simulated EVM chain served over JSON-RPC HTTP and WebSocket.
//! - [`provider`]: JSON-RPC over HTTP and WebSocket; the only module that knows its framing.
//! - [`ingest`]: listeners, aggregator, range sync and writer: providers in, each event once.
//! - [`breaker`]: the circuit breaker, a pure state machine; [`registry`]: supervised tasks.
//! - [`backoff`]: the one curve of retry delays.
//! - [`health`]: per provider breaker, head, lag, latency and error rate; failover order.
//! - [`publish`]: committed changes to live subscribers, after commit only; the replay.
//! - [`retention`]: each chain's history kept within its limits, oldest whole blocks first.
//! - [`api`]: the axum HTTP API; the only module that knows HTTP and response JSON.
//! - [`gateway`]: callers' JSON-RPC (`/rpc/{chain}`) forwarded to the providers with failover.
//! - [`telemetry`]: tracing setup and every metric name.
//! - [`app`]: wiring and shutdown; [`cli`]: the command line; [`shutdown`]: signals;
//!   [`console`]: what the binary prints for people, never panicking on a closed pipe.

pub mod api;
pub mod app;
pub mod backoff;
pub mod breaker;
pub mod cli;
pub mod config;
pub mod console;
pub mod devnet;
pub mod domain;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod health;
pub mod ingest;
pub mod progress;
pub mod provider;
pub mod publish;
pub mod registry;
pub mod retention;
pub mod shutdown;
pub mod status;
pub mod store;
pub mod telemetry;
