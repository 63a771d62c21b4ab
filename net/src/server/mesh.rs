//! What crosses between cores: client requests to the shard, replies back.
//!
//! Every core batches: a connection core sends all the requests its connections decoded
//! since its last send as one message, and the shard answers each core with one message
//! per round. Channels are bounded; see `connection` and `shard` for what happens when
//! one is full.

use std::time::Instant;

use crate::protocol::{Request, Response};

/// One decoded client request on its way to the shard.
#[derive(Debug)]
pub(crate) struct ClientRequest {
    /// Core whose connection sent it.
    pub core: usize,
    /// Connection id, unique on that core.
    pub connection: u64,
    /// The client's request id.
    pub request_id: u64,
    /// The request.
    pub request: Request,
    /// When the connection core decoded it (for request timeouts).
    pub received: Instant,
}

/// A message from a connection core to the shard.
#[derive(Debug)]
pub(crate) enum ToShard {
    /// Requests, in the order they were decoded.
    Requests(Vec<ClientRequest>),
    /// A connection closed: drop its watchers.
    Closed {
        /// Its core.
        core: usize,
        /// Its id.
        connection: u64,
    },
}

/// A response on its way to a connection.
#[derive(Debug)]
pub(crate) struct Reply {
    /// Connection id on the receiving core.
    pub connection: u64,
    /// Request id (for watch events: the id of the request that created the watch).
    pub request_id: u64,
    /// The response.
    pub response: Response,
    /// Whether this ends its request (watch events and cancellations do not).
    pub completes: bool,
}
