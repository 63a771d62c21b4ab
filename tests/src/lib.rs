//! corekv-tests: tests that span crates or processes.
//!
//! Multi-process integration tests (real `corekv` processes on loopback, killed and
//! restarted), cluster fault tests and compatibility tests with the real `etcdctl` live
//! here as they arrive. Tests of a single pure crate live beside that crate.
