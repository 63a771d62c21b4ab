//! The gateway: etcd's gRPC services and its HTTP JSON gateway on the client URLs.
//!
//! It translates each call into the shard's requests and its answers back into
//! etcd's messages and errors; it never touches engine state itself.
//!
//! * [`pb`]: the generated messages, servers and clients of etcd's API.
//! * [`json`]: the HTTP JSON gateway (`POST /v3/kv/range`, ...) over any
//!   implementation of the gRPC service traits.
//! * [`service`]: KV, Lease, Cluster, Maintenance and Auth; [`watch`]: the Watch
//!   stream; [`lock`]: Lock and Election, built from KV, lease and watch requests.
//! * [`convert`]: etcd's messages to and from the shard's requests and responses.
//! * [`unary`]: the service in front of the router; plain unary gRPC calls (KV, lease
//!   grant/revoke/time-to-live) skip the router and tonic on its fast path.
//! * [`serve`]: gRPC and HTTP on one port, served by hyper on the glommio cores;
//!   `/health`, `/version`, `/metrics`; the tokio runtime streams and timers use.
//! * [`authority`]: below hyper, rewrites the `scheme://host:port` HTTP/2 authority
//!   that etcd 3.4 clients send (and h2 rejects) to `host:port`.
//!
//! Every request crosses to the shard through `server::bridge`, the same path (edge
//! checks, batching) as the binary protocol's; the gateway's own cost is HTTP/2 and the
//! gRPC and JSON codecs, on the core that accepted the connection.

pub mod authority;
pub mod convert;
pub mod json;
pub mod lock;
pub mod pb;
pub mod serve;
pub mod service;
pub mod unary;
pub mod watch;
