//! Livechain: a multi-provider EVM event indexer.
//!
//! Layout (see `ARCHITECTURE.md` for the data flow and invariants):
//! - [`config`]: YAML config, environment substitution, validation with paths.
//! - [`domain`]: events, their identity, cursors and finality; no I/O.
//! - [`store`]: SQLite (sqlx, WAL), refinery migrations, the only module that knows SQL.
//! - [`devnet`]: a simulated EVM chain served over JSON-RPC HTTP and WebSocket.
//! - [`api`]: the axum HTTP API; the only module that knows HTTP and response JSON.
//! - [`telemetry`]: tracing setup and every metric name.
//! - [`app`]: wiring and shutdown; [`cli`]: the command line; [`shutdown`]: signals.

// pub mod api; (enabled once store lands)
// pub mod app;
pub mod breaker;
pub mod cli;
pub mod config;
pub mod devnet;
pub mod domain;
pub mod provider;
pub mod shutdown;
pub mod store;
pub mod telemetry;
