//! Integration tests: the real binary's commands.
