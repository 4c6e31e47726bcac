//! Table-driven tests of the whole pipeline: YAML and an environment in, issues and warnings out.
