//! The one integration-test binary: real sockets on 127.0.0.1, real SQLite files, the real binary.

mod config;
mod devnet;
mod store;
mod support;
