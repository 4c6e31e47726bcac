//! Process registry (in progress).
