//! The one integration-test binary: real sockets on 127.0.0.1, real SQLite files, the real binary.

mod anvil;
mod api;
mod cli;
mod config;
mod deploy;
mod devnet;
mod gateway;
mod health;
mod ingest;
mod reorg;
mod status_page;
mod store;
mod stream;
mod support;
