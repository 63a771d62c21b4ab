//! The `corekv` server (in progress).
