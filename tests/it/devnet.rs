//! Integration tests: devnet.
