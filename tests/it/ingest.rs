//! Integration tests: ingestion end to end.
