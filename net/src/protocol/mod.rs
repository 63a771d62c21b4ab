//! corekv's binary protocol (docs/protocol.md): messages and their encoding.

pub mod codec;
pub mod messages;

pub use messages::{Header, Request, Response, StatusResponse};
