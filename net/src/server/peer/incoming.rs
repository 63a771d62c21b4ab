//! Incoming traffic: the accept loop, the acceptor's side of the handshake, and the
//! reading of frames into the inbox.
//!
//! Invariants: nothing is allocated from a length before it is checked against
//! `frame_bytes_max`; a message reaches the inbox only if it passed
//! [`codec::check_incoming`] for the member that dialed; a frame's messages reach the
//! inbox together, in order. Never: panic on a peer's bytes, write after the handshake
//! reply (except a snapshot connection's one-byte acknowledgement).

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use corekv_raft::{Message, MessageBody};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use super::codec;
use super::handshake::{self, HandshakeStatus, Lane};
use super::{
    Incoming, PeerError, Shared, HANDSHAKE_TIMEOUT, INCOMING_CONNECTIONS_MAX,
    SNAPSHOT_READ_PIECE_BYTES,
};
use crate::server::shard::SHARD_ID;

/// A frame head buffer larger than this is released after its frame instead of kept.
const HEAD_BUFFER_KEEP_BYTES: usize = 1 << 20;

/// Accepts peer connections until cancelled.
pub(crate) async fn accept_loop(shared: Rc<Shared>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                if shared.incoming.borrow().len() >= INCOMING_CONNECTIONS_MAX {
                    if shared.should_log_refusal(0, HandshakeStatus::Other(u8::MAX)) {
                        eprintln!(
                            "corekv: refused peer connections: {INCOMING_CONNECTIONS_MAX} are open already"
                        );
                    }
                    drop(stream);
                    continue;
                }
                let connection = shared.next_connection.get();
                shared.next_connection.set(connection + 1);
                let task = glommio::spawn_local(serve(shared.clone(), connection, stream));
                shared.incoming.borrow_mut().insert(
                    connection,
                    Incoming {
                        from: None,
                        task: task.detach(),
                    },
                );
            }
            Err(error) => {
                eprintln!("corekv: accepting a peer connection failed: {error}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Forgets an accepted connection when its task ends, however it ends.
struct Registered {
    shared: Rc<Shared>,
    connection: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut incoming) = self.shared.incoming.try_borrow_mut() {
            incoming.remove(&self.connection);
        }
    }
}

async fn serve(shared: Rc<Shared>, connection: u64, stream: TcpStream) {
    let _registered = Registered {
        shared: shared.clone(),
        connection,
    };
    let address = stream.peer_addr().ok();
    let mut from = None;
    if let Err(error) = serve_connection(&shared, connection, stream, &mut from).await {
        let who = match from {
            Some(member) => format!("member {member:x}"),
            None => "an unidentified peer".to_string(),
        };
        let at = address.map_or_else(String::new, |address| format!(" at {address}"));
        eprintln!("corekv: closed the peer connection from {who}{at}: {error}");
    }
}

async fn serve_connection(
    shared: &Shared,
    connection: u64,
    mut stream: TcpStream,
    from: &mut Option<u64>,
) -> Result<(), PeerError> {
    stream
        .set_nodelay(true)
        .map_err(PeerError::glommio("setting TCP_NODELAY"))?;
    stream
        .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(PeerError::glommio("setting a read timeout"))?;
    let mut hello = [0u8; handshake::HELLO_BYTES];
    stream
        .read_exact(&mut hello)
        .await
        .map_err(PeerError::io("reading the handshake"))?;
    let hello = handshake::decode_hello(&hello)?;
    let status = shared.judge(&hello);
    let reply = handshake::encode_reply(status, shared.cluster_id, shared.me);
    stream
        .write_all(&reply)
        .await
        .map_err(PeerError::io("writing the handshake reply"))?;
    let lane = match (status, hello.lane) {
        (HandshakeStatus::Accepted, Some(lane)) => lane,
        _ => {
            log_refusal(shared, &hello, status, stream.peer_addr().ok());
            return Ok(());
        }
    };
    if lane == Lane::Members {
        let directory = shared.directory.borrow().clone();
        let mut answer = (directory.len() as u32).to_le_bytes().to_vec();
        answer.extend_from_slice(&directory);
        stream
            .write_all(&answer)
            .await
            .map_err(PeerError::io("writing the member directory"))?;
        return Ok(());
    }
    *from = Some(hello.from);
    shared.register_incoming(connection, hello.from, lane);
    stream
        .set_read_timeout(None)
        .map_err(PeerError::glommio("clearing the read timeout"))?;
    let mut stream = stream.buffered();
    let mut head = Vec::new();
    match lane {
        Lane::Messages => loop {
            let Some(messages) = read_frame(
                &mut stream,
                shared.frame_bytes_max,
                shared.frame_bytes_max,
                &mut head,
            )
            .await?
            else {
                return Ok(());
            };
            for message in &messages {
                if matches!(message.body, MessageBody::InstallSnapshot { .. }) {
                    return Err(PeerError::Malformed("a snapshot on the message connection"));
                }
                codec::check_incoming(message, hello.from, shared.me)?;
            }
            if !messages.is_empty() && shared.inbox.send(messages).await.is_err() {
                return Ok(());
            }
        },
        Lane::Members => Ok(()),
        Lane::Snapshot => {
            // The snapshot's data may be gigabytes; its head is a few bytes per member
            // and is held to the message limit (it is allocated before it is read).
            let messages = read_frame(
                &mut stream,
                shared.snapshot_bytes_max,
                shared.frame_bytes_max,
                &mut head,
            )
            .await?
            .ok_or(PeerError::Closed)?;
            let [message] = messages.as_slice() else {
                return Err(PeerError::Malformed(
                    "a snapshot frame holds other than one message",
                ));
            };
            if !matches!(message.body, MessageBody::InstallSnapshot { .. }) {
                return Err(PeerError::Malformed(
                    "a snapshot connection carried another message",
                ));
            }
            codec::check_incoming(message, hello.from, shared.me)?;
            if shared.inbox.send(messages).await.is_err() {
                return Ok(());
            }
            stream
                .write_all(&[handshake::SNAPSHOT_DELIVERED])
                .await
                .map_err(PeerError::io("acknowledging a snapshot"))?;
            Ok(())
        }
    }
}

fn log_refusal(
    shared: &Shared,
    hello: &handshake::Hello,
    status: HandshakeStatus,
    address: Option<SocketAddr>,
) {
    if !shared.should_log_refusal(hello.from, status) {
        return;
    }
    let at = address.map_or_else(String::new, |address| format!(" at {address}"));
    let detail = match status {
        HandshakeStatus::ClusterMismatch => format!(
            "it belongs to cluster {:x}, this member to cluster {:x}",
            hello.cluster_id, shared.cluster_id
        ),
        HandshakeStatus::WrongMember => format!(
            "it expected member {:x}, this is member {:x}",
            hello.to, shared.me
        ),
        HandshakeStatus::VersionUnsupported => format!(
            "it speaks peer protocol version {}, this member version {}",
            hello.version,
            handshake::PROTOCOL_VERSION
        ),
        HandshakeStatus::UnknownMember => format!(
            "member {:x} is not among the peers of member {:x} (never added, or removed)",
            hello.from, shared.me
        ),
        _ => status.describe().to_string(),
    };
    eprintln!(
        "corekv: refused a peer connection from member {:x}{at}: {}: {detail}",
        hello.from,
        status.describe()
    );
}

/// Reads one frame: `None` if the stream ends cleanly before it. The head is read into
/// `head` and each snapshot's data straight into its own buffer, read
/// [`SNAPSHOT_READ_PIECE_BYTES`] at a time and grown (doubling, never past the announced
/// length) only as the bytes arrive; every length is checked
/// against `frame_bytes_max` (the whole frame) and `head_bytes_max` (prefix and head,
/// which are allocated at once) before anything is allocated.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    frame_bytes_max: usize,
    head_bytes_max: usize,
    head: &mut Vec<u8>,
) -> Result<Option<Vec<Message>>, PeerError> {
    let mut prefix = [0u8; codec::FRAME_PREFIX_BYTES];
    let first = reader
        .read(&mut prefix)
        .await
        .map_err(PeerError::io("reading a frame prefix"))?;
    if first == 0 {
        return Ok(None);
    }
    reader
        .read_exact(&mut prefix[first..])
        .await
        .map_err(PeerError::io("reading a frame prefix"))?;
    let prefix = codec::decode_frame_prefix(&prefix, frame_bytes_max)?;
    let head_frame = (codec::FRAME_PREFIX_BYTES + prefix.head_bytes) as u64;
    if head_frame > head_bytes_max as u64 {
        return Err(PeerError::FrameTooLarge {
            length: head_frame,
            max: head_bytes_max as u64,
        });
    }
    head.clear();
    head.resize(prefix.head_bytes, 0);
    reader
        .read_exact(head)
        .await
        .map_err(PeerError::io("reading a frame head"))?;
    let decoded = codec::decode_frame_head(head, prefix.blob_bytes);
    if head.capacity() > HEAD_BUFFER_KEEP_BYTES {
        *head = Vec::new();
    }
    let codec::DecodedHead {
        shard,
        mut messages,
        blobs,
    } = decoded?;
    if shard != SHARD_ID {
        return Err(PeerError::Malformed("a frame for an unknown shard"));
    }
    for (position, length) in blobs {
        let mut data = Vec::new();
        while data.len() < length {
            let start = data.len();
            let end = length.min(start + SNAPSHOT_READ_PIECE_BYTES);
            if data.capacity() < end {
                // Double, but never past the announced length: no slack is kept.
                let capacity = (data.capacity() * 2).clamp(end, length);
                data.reserve_exact(capacity - start);
            }
            data.resize(end, 0);
            reader
                .read_exact(&mut data[start..])
                .await
                .map_err(PeerError::io("reading snapshot data"))?;
        }
        codec::fill_blob(&mut messages, position, data);
    }
    Ok(Some(messages))
}
