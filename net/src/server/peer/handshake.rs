//! The connection handshake of the peer protocol (docs/peer-protocol.md): the dialer's
//! hello, the acceptor's reply, and the one-byte acknowledgement of a snapshot connection.
//!
//! Invariants: both messages have a fixed size, so they are read whole before decoding;
//! decoding never panics and refuses a wrong magic or a set reserved byte. Never: IO.

use super::codec::{put_u64, Reader};
use super::PeerError;

/// The four bytes that open a handshake and its reply.
pub const HANDSHAKE_MAGIC: [u8; 4] = *b"CKVP";
/// The handshake's protocol version; an acceptor refuses any other.
pub const PROTOCOL_VERSION: u16 = 1;
/// Bytes of a dialer's hello.
pub const HELLO_BYTES: usize = 32;
/// Bytes of an acceptor's reply.
pub const REPLY_BYTES: usize = 24;
/// The byte an acceptor writes on a snapshot connection once the snapshot is delivered.
pub const SNAPSHOT_DELIVERED: u8 = 1;

/// Which traffic a connection carries, chosen by the dialer in its hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lane {
    /// The long-lived one-way stream of message frames (never `InstallSnapshot`).
    Messages,
    /// One frame holding one `InstallSnapshot`, acknowledged with [`SNAPSHOT_DELIVERED`],
    /// then closed.
    Snapshot,
    /// A member joining a running cluster asks for the member list (it does not know its
    /// own id or the cluster's yet, so the hello's ids are 0): the acceptor answers the
    /// handshake, then `u32 length | member directory`, and closes.
    Members,
}

impl Lane {
    fn byte(self) -> u8 {
        match self {
            Lane::Messages => 1,
            Lane::Snapshot => 2,
            Lane::Members => 3,
        }
    }

    fn of(byte: u8) -> Option<Lane> {
        match byte {
            1 => Some(Lane::Messages),
            2 => Some(Lane::Snapshot),
            3 => Some(Lane::Members),
            _ => None,
        }
    }
}

/// What a dialer says first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    pub version: u16,
    /// `None` when the lane byte is unknown (the acceptor refuses it).
    pub lane: Option<Lane>,
    pub cluster_id: u64,
    pub from: u64,
    pub to: u64,
}

/// The acceptor's verdict on a hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeStatus {
    Accepted,
    VersionUnsupported,
    ClusterMismatch,
    /// The dialer expected another member at this address.
    WrongMember,
    /// The dialer is not a peer of the acceptor (never added, or removed).
    UnknownMember,
    UnknownLane,
    /// A status byte this version does not know (only ever decoded).
    Other(u8),
}

impl HandshakeStatus {
    /// The status byte on the wire.
    pub fn byte(self) -> u8 {
        match self {
            HandshakeStatus::Accepted => 0,
            HandshakeStatus::VersionUnsupported => 1,
            HandshakeStatus::ClusterMismatch => 2,
            HandshakeStatus::WrongMember => 3,
            HandshakeStatus::UnknownMember => 4,
            HandshakeStatus::UnknownLane => 5,
            HandshakeStatus::Other(byte) => byte,
        }
    }

    fn of(byte: u8) -> HandshakeStatus {
        match byte {
            0 => HandshakeStatus::Accepted,
            1 => HandshakeStatus::VersionUnsupported,
            2 => HandshakeStatus::ClusterMismatch,
            3 => HandshakeStatus::WrongMember,
            4 => HandshakeStatus::UnknownMember,
            5 => HandshakeStatus::UnknownLane,
            other => HandshakeStatus::Other(other),
        }
    }

    /// Words for log lines.
    pub fn describe(self) -> &'static str {
        match self {
            HandshakeStatus::Accepted => "accepted",
            HandshakeStatus::VersionUnsupported => "unsupported peer protocol version",
            HandshakeStatus::ClusterMismatch => "cluster id mismatch",
            HandshakeStatus::WrongMember => "the member at this address has another id",
            HandshakeStatus::UnknownMember => "unknown member",
            HandshakeStatus::UnknownLane => "unknown connection lane",
            HandshakeStatus::Other(_) => "unknown refusal",
        }
    }
}

/// The acceptor's answer to a hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    pub version: u16,
    pub status: HandshakeStatus,
    /// The acceptor's cluster id and member id, so the dialer can log what it reached.
    pub cluster_id: u64,
    pub member: u64,
}

/// Encodes a dialer's hello.
pub fn encode_hello(lane: Lane, cluster_id: u64, from: u64, to: u64) -> [u8; HELLO_BYTES] {
    let mut out = Vec::with_capacity(HELLO_BYTES);
    out.extend_from_slice(&HANDSHAKE_MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    out.push(lane.byte());
    out.push(0);
    put_u64(&mut out, cluster_id);
    put_u64(&mut out, from);
    put_u64(&mut out, to);
    out.try_into().expect("a hello is 32 bytes")
}

/// Decodes a hello; `Err` when the magic is wrong (not a corekv peer) or a reserved byte
/// is set.
pub fn decode_hello(bytes: &[u8; HELLO_BYTES]) -> Result<Hello, PeerError> {
    let mut reader = Reader::new(bytes);
    if reader.take(4, "hello magic")? != HANDSHAKE_MAGIC {
        return Err(PeerError::Malformed("not a corekv peer (bad magic)"));
    }
    let version = u16::from_le_bytes(reader.array("hello version")?);
    let lane = Lane::of(reader.u8("hello lane")?);
    if reader.u8("hello reserved byte")? != 0 {
        return Err(PeerError::Malformed("hello reserved byte is not 0"));
    }
    Ok(Hello {
        version,
        lane,
        cluster_id: reader.u64("hello cluster id")?,
        from: reader.u64("hello member id")?,
        to: reader.u64("hello target member id")?,
    })
}

/// Encodes an acceptor's reply.
pub fn encode_reply(status: HandshakeStatus, cluster_id: u64, member: u64) -> [u8; REPLY_BYTES] {
    let mut out = Vec::with_capacity(REPLY_BYTES);
    out.extend_from_slice(&HANDSHAKE_MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    out.push(status.byte());
    out.push(0);
    put_u64(&mut out, cluster_id);
    put_u64(&mut out, member);
    out.try_into().expect("a reply is 24 bytes")
}

/// Decodes an acceptor's reply.
pub fn decode_reply(bytes: &[u8; REPLY_BYTES]) -> Result<Reply, PeerError> {
    let mut reader = Reader::new(bytes);
    if reader.take(4, "reply magic")? != HANDSHAKE_MAGIC {
        return Err(PeerError::Malformed("not a corekv peer (bad magic)"));
    }
    let version = u16::from_le_bytes(reader.array("reply version")?);
    let status = HandshakeStatus::of(reader.u8("reply status")?);
    if reader.u8("reply reserved byte")? != 0 {
        return Err(PeerError::Malformed("reply reserved byte is not 0"));
    }
    Ok(Reply {
        version,
        status,
        cluster_id: reader.u64("reply cluster id")?,
        member: reader.u64("reply member id")?,
    })
}
