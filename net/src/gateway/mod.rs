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
//! * [`serve`]: gRPC and HTTP on one port on the glommio cores (HTTP/2 by [`http2`],
//!   HTTP/1.1 by hyper); `/health`, `/version`, `/metrics`; the tokio runtime streams
//!   and timers use.
//! * [`http2`]: the HTTP/2 server, one task per connection; [`hpack`]: its header
//!   compression.
//!
//! Every request crosses to the shard through `server::bridge`, the same path (edge
//! checks, batching) as the binary protocol's; the gateway's own cost is HTTP/2 and the
//! gRPC and JSON codecs, on the core that accepted the connection.

pub mod convert;
pub mod hpack;
pub mod http2;
pub mod json;
pub mod lock;
pub mod pb;
pub mod serve;
pub mod service;
pub mod unary;
pub mod watch;
