//! The byte encoding of corekv's binary protocol: the handshake, frames, and every
//! [`Request`] and [`Response`]. docs/protocol.md describes the same format byte by byte;
//! the two must change together.
//!
//! A frame is `[u32 LE body length][body]` and a body is
//! `[u64 LE request id][u8 message tag][payload]`. Every integer has an explicit width
//! and is little-endian; byte strings are `[u32 LE length][bytes]`; lists are
//! `[u32 LE count][items]`; there are no optional fields beyond the explicit presence
//! byte of `Option`s, and no padding.
//!
//! Invariants:
//! * **Deterministic.** The same message always encodes to the same bytes (no maps, no
//!   varints with several spellings), because the shard stores `encode_request(0, ..)`
//!   bytes as Raft log entries that every member decodes alike. The format is
//!   versioned by [`PROTOCOL_VERSION`]: changing the encoding of an existing message
//!   means a new version whose decoder still reads the old log.
//! * **Decoding never panics** on any input and never allocates more than the body
//!   allows: every length and count is checked against the bytes that remain before
//!   anything is allocated, nested transactions are bounded by [`TXN_DEPTH_MAX`], and
//!   trailing bytes are an error. [`read_frame`] checks the length prefix against the
//!   limit before it allocates.
//! * **Strict.** Unknown tags, flag bits that are not defined, booleans other than 0
//!   and 1, and strings that are not UTF-8 are errors, so that every accepted body has
//!   exactly one meaning (and re-encodes to the same bytes).
//!
//! Never: read a socket beyond one frame, interpret a request (validation is the
//! engine's), or allocate from an unchecked length.

mod decode;
mod encode;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::messages::{Request, Response};
use decode::Decoder;
use encode::{begin_frame, encode_request_payload, encode_response_payload, finish_frame};

/// The 8 bytes each side sends first: "COREKV", a zero byte, and the magic's own
/// revision (1). A peer that is not speaking this protocol fails here.
pub const MAGIC: [u8; 8] = *b"COREKV\0\x01";

/// The protocol version this build speaks. Version 1 is the format of docs/protocol.md.
/// Raft log entries written by this build are in this format.
pub const PROTOCOL_VERSION: u16 = 1;

/// Bytes of the handshake each side sends: magic, u16 version, u16 status/flags.
pub const HANDSHAKE_BYTES: usize = 12;

/// Handshake status: the server accepts the connection.
pub const HANDSHAKE_STATUS_OK: u16 = 0;

/// Handshake status: the server does not speak the client's version (the server's
/// version is in the reply), and closes the connection.
pub const HANDSHAKE_STATUS_UNSUPPORTED_VERSION: u16 = 1;

/// The request limit in bytes of etcd's `--max-request-bytes` default (1.5 MiB).
pub const REQUEST_BYTES_MAX_DEFAULT: usize = 1_572_864;

/// Allowance for the frame's own fields and the encoding's length prefixes on top of
/// [`REQUEST_BYTES_MAX_DEFAULT`], so that a request etcd accepts also fits in a frame.
pub const FRAME_HEADER_ALLOWANCE_BYTES: usize = 4_096;

/// Default largest frame body a server reads (`--max-request-bytes` + allowance). A
/// longer frame is answered with an error frame and the connection is closed.
pub const FRAME_BYTES_MAX_DEFAULT: usize = REQUEST_BYTES_MAX_DEFAULT + FRAME_HEADER_ALLOWANCE_BYTES;

/// Default largest response frame body a client reads: etcd clients' default
/// `MaxCallRecvMsgSize` (`math.MaxInt32`). Range responses may be far larger than
/// requests.
pub const RESPONSE_FRAME_BYTES_MAX_DEFAULT: usize = i32::MAX as usize;

/// Deepest nesting of transactions inside transactions that decodes. etcd bounds
/// nesting only through `--max-txn-ops` (each level uses at least one op of its
/// parent's budget), so its default of 128 is also ours; the bound keeps decoding,
/// validation and drop from recursing without limit on hostile input.
pub const TXN_DEPTH_MAX: usize = 128;

/// Bytes of the body before the payload: request id and message tag.
pub const FRAME_BODY_BYTES_MIN: usize = 9;

/// Request id reserved for errors about frames whose id could not be read (an
/// oversized or truncated frame). Clients never send it.
pub const REQUEST_ID_CONNECTION: u64 = 0;

/// Why bytes could not be read as the protocol, and where.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The socket failed.
    #[error("i/o error while {during}: {source}")]
    Io {
        /// What was being read or written.
        during: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The connection closed in the middle of a frame or the handshake.
    #[error("connection closed while {during} ({read} of {expected} bytes read)")]
    UnexpectedEof {
        /// What was being read.
        during: &'static str,
        /// Bytes read before the end.
        read: usize,
        /// Bytes expected.
        expected: usize,
    },
    /// The length prefix exceeds the limit; nothing was allocated.
    #[error("frame of {length} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The announced body length.
        length: usize,
        /// The limit.
        max: usize,
    },
    /// The body is shorter than a request id and a tag.
    #[error("frame of {length} bytes is shorter than the {FRAME_BODY_BYTES_MIN}-byte minimum")]
    FrameTooShort {
        /// The body length.
        length: usize,
    },
    /// A field runs past the end of the body.
    #[error("truncated {field} at offset {offset}: needs {needed} bytes, {remaining} remain")]
    Truncated {
        /// The field.
        field: &'static str,
        /// Offset of the field in the body.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the body.
        remaining: usize,
    },
    /// A list announces more items than the rest of the body could hold.
    #[error(
        "{field} at offset {offset} announces {count} items but only {remaining} bytes remain"
    )]
    CountTooLarge {
        /// The list.
        field: &'static str,
        /// Offset of the count.
        offset: usize,
        /// The announced count.
        count: u64,
        /// Bytes left in the body.
        remaining: usize,
    },
    /// An enum or message tag that this version does not define.
    #[error("unknown {field} tag {tag} at offset {offset}")]
    UnknownTag {
        /// What the tag selects.
        field: &'static str,
        /// The tag.
        tag: u8,
        /// Its offset.
        offset: usize,
    },
    /// A boolean other than 0 or 1, or flag bits this version does not define.
    #[error("invalid {field} value {value:#04x} at offset {offset}")]
    InvalidFlags {
        /// The field.
        field: &'static str,
        /// The byte.
        value: u8,
        /// Its offset.
        offset: usize,
    },
    /// A string that is not UTF-8.
    #[error("{field} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field.
        field: &'static str,
        /// Its offset.
        offset: usize,
    },
    /// Transactions nested deeper than [`TXN_DEPTH_MAX`].
    #[error("transactions nested deeper than {TXN_DEPTH_MAX} at offset {offset}")]
    NestingTooDeep {
        /// Offset of the transaction that was one level too deep.
        offset: usize,
    },
    /// Bytes left over after the message.
    #[error("{trailing} trailing bytes after the message at offset {offset}")]
    TrailingBytes {
        /// Where the message ended.
        offset: usize,
        /// How many bytes follow.
        trailing: usize,
    },
    /// The peer's handshake did not start with [`MAGIC`].
    #[error("handshake magic {got:02x?} is not corekv's binary protocol")]
    BadMagic {
        /// The 8 bytes received.
        got: [u8; 8],
    },
    /// The server does not speak the client's version.
    #[error("protocol version {client} is not supported (server speaks version {server})")]
    UnsupportedVersion {
        /// The client's version.
        client: u16,
        /// The server's version.
        server: u16,
    },
    /// The server's handshake reply carried a status this client does not know.
    #[error("handshake rejected with unknown status {status}")]
    HandshakeRejected {
        /// The status.
        status: u16,
    },
}

impl ProtocolError {
    /// The gRPC status code of the error frame a server sends for this error:
    /// RESOURCE_EXHAUSTED (8) for an oversized frame, as gRPC answers a message over
    /// its size limit, INVALID_ARGUMENT (3) for every other malformed input, and
    /// UNAVAILABLE (14) for socket errors.
    pub fn grpc_code(&self) -> u32 {
        match self {
            ProtocolError::FrameTooLarge { .. } => 8,
            ProtocolError::Io { .. } | ProtocolError::UnexpectedEof { .. } => 14,
            _ => 3,
        }
    }

    /// The error frame's response for this error; its message starts with
    /// "corekv: protocol: " and says what was wrong and where.
    pub fn to_response(&self) -> Response {
        Response::Error {
            code: self.grpc_code(),
            message: format!("corekv: protocol: {self}"),
        }
    }
}

// ---- frames ------------------------------------------------------------------------

/// Appends one whole request frame (length prefix included) to `out`.
///
/// Panics if a byte string, a list or the frame is longer than `u32::MAX` (4 GiB): no
/// frame under any limit comes near it.
pub fn encode_request(request_id: u64, request: &Request, out: &mut Vec<u8>) {
    let start = begin_frame(request_id, request_tag(request), out);
    encode_request_payload(request, out);
    finish_frame(start, out);
}

/// Appends one whole response frame (length prefix included) to `out`.
///
/// Panics as [`encode_request`].
pub fn encode_response(request_id: u64, response: &Response, out: &mut Vec<u8>) {
    let start = begin_frame(request_id, response_tag(response), out);
    encode_response_payload(response, out);
    finish_frame(start, out);
}

/// Decodes a request frame body (the bytes after the length prefix).
pub fn decode_request(frame_body: &[u8]) -> Result<(u64, Request), ProtocolError> {
    let mut decoder = Decoder::frame(frame_body)?;
    let request_id = decoder.u64("request id")?;
    let request = decoder.request()?;
    decoder.finish()?;
    Ok((request_id, request))
}

/// Decodes a response frame body (the bytes after the length prefix).
pub fn decode_response(frame_body: &[u8]) -> Result<(u64, Response), ProtocolError> {
    let mut decoder = Decoder::frame(frame_body)?;
    let request_id = decoder.u64("request id")?;
    let response = decoder.response()?;
    decoder.finish()?;
    Ok((request_id, response))
}

/// The request id of a frame body, if it is long enough to hold one; lets a server
/// address the error frame for a body that failed to decode.
pub fn peek_request_id(frame_body: &[u8]) -> Option<u64> {
    let head = frame_body.first_chunk::<8>()?;
    Some(u64::from_le_bytes(*head))
}

/// Reads one frame body into `buf` (cleared first); `Ok(false)` on a clean end of
/// stream before a frame. The length prefix is checked against `frame_bytes_max` (and
/// the minimum body) before anything is allocated.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    frame_bytes_max: usize,
) -> Result<bool, ProtocolError> {
    buf.clear();
    let mut prefix = [0u8; 4];
    let read = read_full(reader, &mut prefix, "reading a frame length").await?;
    if read == 0 {
        return Ok(false);
    }
    if read < prefix.len() {
        return Err(ProtocolError::UnexpectedEof {
            during: "reading a frame length",
            read,
            expected: prefix.len(),
        });
    }
    let length = u32::from_le_bytes(prefix) as usize;
    if length > frame_bytes_max {
        return Err(ProtocolError::FrameTooLarge {
            length,
            max: frame_bytes_max,
        });
    }
    if length < FRAME_BODY_BYTES_MIN {
        return Err(ProtocolError::FrameTooShort { length });
    }
    buf.resize(length, 0);
    let read = read_full(reader, buf, "reading a frame body").await?;
    if read < length {
        return Err(ProtocolError::UnexpectedEof {
            during: "reading a frame body",
            read,
            expected: length,
        });
    }
    Ok(true)
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
async fn read_full<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
    during: &'static str,
) -> Result<usize, ProtocolError> {
    let mut read = 0;
    while read < buf.len() {
        match reader.read(&mut buf[read..]).await {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => return Err(ProtocolError::Io { during, source }),
        }
    }
    Ok(read)
}

// ---- handshake ---------------------------------------------------------------------

fn handshake_bytes(version: u16, status: u16) -> [u8; HANDSHAKE_BYTES] {
    let mut bytes = [0u8; HANDSHAKE_BYTES];
    bytes[..8].copy_from_slice(&MAGIC);
    bytes[8..10].copy_from_slice(&version.to_le_bytes());
    bytes[10..12].copy_from_slice(&status.to_le_bytes());
    bytes
}

async fn read_handshake<S: AsyncRead + Unpin>(
    stream: &mut S,
    during: &'static str,
) -> Result<(u16, u16), ProtocolError> {
    let mut bytes = [0u8; HANDSHAKE_BYTES];
    let read = read_full(stream, &mut bytes, during).await?;
    let magic_read = read.min(MAGIC.len());
    if bytes[..magic_read] != MAGIC[..magic_read] {
        let mut got = [0u8; 8];
        got[..magic_read].copy_from_slice(&bytes[..magic_read]);
        return Err(ProtocolError::BadMagic { got });
    }
    if read < HANDSHAKE_BYTES {
        return Err(ProtocolError::UnexpectedEof {
            during,
            read,
            expected: HANDSHAKE_BYTES,
        });
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    let status = u16::from_le_bytes([bytes[10], bytes[11]]);
    Ok((version, status))
}

async fn write_all<S: AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
    during: &'static str,
) -> Result<(), ProtocolError> {
    stream
        .write_all(bytes)
        .await
        .map_err(|source| ProtocolError::Io { during, source })?;
    stream
        .flush()
        .await
        .map_err(|source| ProtocolError::Io { during, source })
}

/// The client's side of the handshake: sends magic and [`PROTOCOL_VERSION`] and waits
/// for the server's acceptance.
pub async fn client_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
) -> Result<(), ProtocolError> {
    let hello = handshake_bytes(PROTOCOL_VERSION, 0);
    write_all(stream, &hello, "sending the handshake").await?;
    let (version, status) = read_handshake(stream, "reading the server's handshake").await?;
    match status {
        HANDSHAKE_STATUS_OK => Ok(()),
        HANDSHAKE_STATUS_UNSUPPORTED_VERSION => Err(ProtocolError::UnsupportedVersion {
            client: PROTOCOL_VERSION,
            server: version,
        }),
        status => Err(ProtocolError::HandshakeRejected { status }),
    }
}

/// The server's side of the handshake: reads the client's magic and version and
/// answers. A client of another version gets a reply naming the server's version
/// with status [`HANDSHAKE_STATUS_UNSUPPORTED_VERSION`], and this returns an error
/// (the caller closes the connection).
pub async fn server_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
) -> Result<(), ProtocolError> {
    let (version, _flags) = read_handshake(stream, "reading the client's handshake").await?;
    if version != PROTOCOL_VERSION {
        let reply = handshake_bytes(PROTOCOL_VERSION, HANDSHAKE_STATUS_UNSUPPORTED_VERSION);
        write_all(stream, &reply, "rejecting the handshake").await?;
        return Err(ProtocolError::UnsupportedVersion {
            client: version,
            server: PROTOCOL_VERSION,
        });
    }
    let reply = handshake_bytes(PROTOCOL_VERSION, HANDSHAKE_STATUS_OK);
    write_all(stream, &reply, "answering the handshake").await
}

// ---- message tags ------------------------------------------------------------------

/// Message tags of requests (docs/protocol.md, "Messages").
pub(crate) mod tag {
    pub const RANGE: u8 = 0x01;
    pub const PUT: u8 = 0x02;
    pub const DELETE_RANGE: u8 = 0x03;
    pub const TXN: u8 = 0x04;
    pub const COMPACT: u8 = 0x05;
    pub const LEASE_GRANT: u8 = 0x10;
    pub const LEASE_REVOKE: u8 = 0x11;
    pub const LEASE_KEEP_ALIVE: u8 = 0x12;
    pub const LEASE_TIME_TO_LIVE: u8 = 0x13;
    pub const LEASE_LEASES: u8 = 0x14;
    pub const WATCH_CREATE: u8 = 0x20;
    pub const WATCH_CANCEL: u8 = 0x21;
    pub const WATCH_PROGRESS: u8 = 0x22;
    pub const STATUS: u8 = 0x30;
    pub const ALARM: u8 = 0x31;
    pub const HASH: u8 = 0x32;
    pub const HASH_KV: u8 = 0x33;
    pub const DEFRAGMENT: u8 = 0x34;
    pub const SNAPSHOT: u8 = 0x35;
    pub const MOVE_LEADER: u8 = 0x36;
    pub const MEMBER_LIST: u8 = 0x40;
    pub const PUBLISH_MEMBER: u8 = 0x41;
    pub const MEMBER_CHANGE: u8 = 0x42;
    pub const MEMBER_CHANGE_REFUSED: u8 = 0x43;

    /// Responses answer with the request's tag with the high bit set.
    pub const RESPONSE: u8 = 0x80;
    pub const WATCH_CREATED: u8 = RESPONSE | WATCH_CREATE;
    pub const WATCH_EVENTS: u8 = 0xA3;
    pub const WATCH_CANCELED: u8 = RESPONSE | WATCH_CANCEL;
    pub const ERROR: u8 = 0xFF;
}

/// Every response tag but [`tag::ERROR`]; checked before the header is read so that an
/// unknown tag is reported at its own offset.
const RESPONSE_TAGS: [u8; 22] = [
    tag::RESPONSE | tag::RANGE,
    tag::RESPONSE | tag::PUT,
    tag::RESPONSE | tag::DELETE_RANGE,
    tag::RESPONSE | tag::TXN,
    tag::RESPONSE | tag::COMPACT,
    tag::RESPONSE | tag::LEASE_GRANT,
    tag::RESPONSE | tag::LEASE_REVOKE,
    tag::RESPONSE | tag::LEASE_KEEP_ALIVE,
    tag::RESPONSE | tag::LEASE_TIME_TO_LIVE,
    tag::RESPONSE | tag::LEASE_LEASES,
    tag::WATCH_CREATED,
    tag::WATCH_CANCELED,
    tag::RESPONSE | tag::WATCH_PROGRESS,
    tag::WATCH_EVENTS,
    tag::RESPONSE | tag::STATUS,
    tag::RESPONSE | tag::ALARM,
    tag::RESPONSE | tag::HASH,
    tag::RESPONSE | tag::HASH_KV,
    tag::RESPONSE | tag::DEFRAGMENT,
    tag::RESPONSE | tag::SNAPSHOT,
    tag::RESPONSE | tag::MOVE_LEADER,
    tag::RESPONSE | tag::MEMBER_LIST,
];

fn request_tag(request: &Request) -> u8 {
    match request {
        Request::Range(_) => tag::RANGE,
        Request::Put(_) => tag::PUT,
        Request::DeleteRange(_) => tag::DELETE_RANGE,
        Request::Txn(_) => tag::TXN,
        Request::Compact { .. } => tag::COMPACT,
        Request::LeaseGrant { .. } => tag::LEASE_GRANT,
        Request::LeaseRevoke { .. } => tag::LEASE_REVOKE,
        Request::LeaseKeepAlive { .. } => tag::LEASE_KEEP_ALIVE,
        Request::LeaseTimeToLive { .. } => tag::LEASE_TIME_TO_LIVE,
        Request::LeaseLeases => tag::LEASE_LEASES,
        Request::WatchCreate(_) => tag::WATCH_CREATE,
        Request::WatchCancel { .. } => tag::WATCH_CANCEL,
        Request::WatchProgress => tag::WATCH_PROGRESS,
        Request::Status => tag::STATUS,
        Request::Alarm { .. } => tag::ALARM,
        Request::Hash => tag::HASH,
        Request::HashKv { .. } => tag::HASH_KV,
        Request::Defragment => tag::DEFRAGMENT,
        Request::Snapshot => tag::SNAPSHOT,
        Request::MoveLeader { .. } => tag::MOVE_LEADER,
        Request::MemberList { .. } => tag::MEMBER_LIST,
        Request::PublishMember { .. } => tag::PUBLISH_MEMBER,
        Request::MemberChange(_) => tag::MEMBER_CHANGE,
        Request::MemberChangeRefused { .. } => tag::MEMBER_CHANGE_REFUSED,
    }
}

fn response_tag(response: &Response) -> u8 {
    match response {
        Response::Error { .. } => tag::ERROR,
        Response::Range(..) => tag::RESPONSE | tag::RANGE,
        Response::Put(..) => tag::RESPONSE | tag::PUT,
        Response::DeleteRange(..) => tag::RESPONSE | tag::DELETE_RANGE,
        Response::Txn(..) => tag::RESPONSE | tag::TXN,
        Response::Compact(_) => tag::RESPONSE | tag::COMPACT,
        Response::LeaseGrant { .. } => tag::RESPONSE | tag::LEASE_GRANT,
        Response::LeaseRevoke(_) => tag::RESPONSE | tag::LEASE_REVOKE,
        Response::LeaseKeepAlive { .. } => tag::RESPONSE | tag::LEASE_KEEP_ALIVE,
        Response::LeaseTimeToLive { .. } => tag::RESPONSE | tag::LEASE_TIME_TO_LIVE,
        Response::LeaseLeases(..) => tag::RESPONSE | tag::LEASE_LEASES,
        Response::WatchCreated(_) => tag::WATCH_CREATED,
        Response::WatchEvents(..) => tag::WATCH_EVENTS,
        Response::WatchCanceled { .. } => tag::WATCH_CANCELED,
        Response::WatchProgress(_) => tag::RESPONSE | tag::WATCH_PROGRESS,
        Response::Status(_) => tag::RESPONSE | tag::STATUS,
        Response::Alarm(..) => tag::RESPONSE | tag::ALARM,
        Response::Hash { .. } => tag::RESPONSE | tag::HASH,
        Response::HashKv { .. } => tag::RESPONSE | tag::HASH_KV,
        Response::Defragment(_) => tag::RESPONSE | tag::DEFRAGMENT,
        Response::SnapshotChunk { .. } => tag::RESPONSE | tag::SNAPSHOT,
        Response::MoveLeader(_) => tag::RESPONSE | tag::MOVE_LEADER,
        Response::MemberList(..) => tag::RESPONSE | tag::MEMBER_LIST,
    }
}
