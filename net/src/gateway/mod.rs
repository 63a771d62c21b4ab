//! The gateway: etcd's gRPC services and its HTTP JSON gateway on the client URLs.
//!
//! It translates each call into the shard's requests and its answers back into
//! etcd's messages and errors; it never touches engine state itself.
//!
//! * [`pb`]: the generated messages, servers and clients of etcd's API.
//! * [`json`]: the HTTP JSON gateway (`POST /v3/kv/range`, ...) over any
//!   implementation of the gRPC service traits.

pub mod json;
pub mod pb;
