//! The async client over the binary protocol (in progress).
