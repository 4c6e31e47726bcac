//! Integration tests: the REST API over a running service.
