//! The peer wire format's frames (docs/peer-protocol.md): batches of
//! `corekv_raft::Message`s, hand-written little-endian. The handshake is in `handshake`.
//!
//! A frame is `[head length: u32][blob length: u64][head][blobs]`. The head holds the
//! codec version, the shard id and every message; the bytes of each `InstallSnapshot`'s
//! snapshot data are not in the head but follow it, in message order, as the blobs. That
//! lets a sender write a snapshot of hundreds of MB straight from the message (no second
//! copy) and a receiver read it straight into one buffer of exactly its size.
//!
//! Invariants: encoding is deterministic (one byte string per message); decoding never
//! panics, rejects every byte it does not understand (unknown versions, kinds, flags,
//! non-0/1 booleans, trailing bytes), and never allocates from a length or count it has
//! not checked against the bytes that remain and the frame limit. Decoding is structural
//! only; what Raft assumes of a message from a peer is checked by [`check_incoming`].
//!
//! Never: IO (the async frame reader lives beside the connections), panics on input.

use corekv_raft::{
    ConfState, Entry, EntryKind, LogIndex, MemberId, Message, MessageBody, RejectHint, Snapshot,
    SnapshotMeta, Term,
};

use super::PeerError;

/// The frame codec's version, the first byte of every frame head.
pub const CODEC_VERSION: u8 = 1;
/// Bytes before a frame's head: head length (u32) and blob length (u64).
pub const FRAME_PREFIX_BYTES: usize = 12;
/// The fixed part of a head: version (u8), shard id (u64), message count (u32).
const HEAD_FIXED_BYTES: usize = 13;
/// The smallest encoded message: kind (u8), from, to, term (u64 each), empty body.
const MESSAGE_BYTES_MIN: usize = 25;
/// The smallest encoded entry: term, index (u64), kind (u8), data length (u32).
const ENTRY_BYTES_MIN: usize = 21;

// Message kinds (the first byte of every message).
const KIND_APPEND: u8 = 1;
const KIND_APPEND_RESPONSE: u8 = 2;
const KIND_HEARTBEAT: u8 = 3;
const KIND_HEARTBEAT_RESPONSE: u8 = 4;
const KIND_REQUEST_VOTE: u8 = 5;
const KIND_VOTE_RESPONSE: u8 = 6;
const KIND_INSTALL_SNAPSHOT: u8 = 7;
const KIND_PROPOSE: u8 = 8;
const KIND_READ_INDEX: u8 = 9;
const KIND_READ_INDEX_RESPONSE: u8 = 10;
const KIND_TIMEOUT_NOW: u8 = 11;
const KIND_NODE: u8 = 12;

// Flag bits of RequestVote and VoteResponse.
const FLAG_PRE_VOTE: u8 = 1;
const FLAG_TRANSFER: u8 = 2;
const FLAG_GRANTED: u8 = 2;

const ENTRY_NORMAL: u8 = 0;
const ENTRY_CONF_CHANGE: u8 = 1;

/// The bytes `message` takes in a frame head (its snapshot data, if any, is a blob).
pub fn head_bytes(message: &Message) -> usize {
    let entries = |entries: &[Entry]| -> usize {
        4 + entries
            .iter()
            .map(|entry| ENTRY_BYTES_MIN + entry.data.len())
            .sum::<usize>()
    };
    MESSAGE_BYTES_MIN
        + match &message.body {
            MessageBody::Append { entries: e, .. } => 24 + entries(e),
            MessageBody::AppendResponse { reject, .. } => {
                8 + 1 + reject.map_or(0, |hint| 8 + 1 + hint.conflict_term.map_or(0, |_| 8))
            }
            MessageBody::Heartbeat { .. } => 16,
            MessageBody::HeartbeatResponse { .. } => 8,
            MessageBody::RequestVote { .. } => 17,
            MessageBody::VoteResponse { .. } => 1,
            MessageBody::InstallSnapshot { snapshot } => {
                let conf = &snapshot.meta.conf_state;
                16 + 4 + 8 * conf.voters.len() + 4 + 8 * conf.learners.len() + 8
            }
            MessageBody::Propose { entries: e } => entries(e),
            MessageBody::ReadIndex { .. } => 8,
            MessageBody::ReadIndexResponse { .. } => 16,
            MessageBody::TimeoutNow => 0,
            MessageBody::Node { data } => 4 + data.len(),
        }
}

/// The blob bytes `message` adds to a frame (its snapshot data).
pub fn blob_bytes(message: &Message) -> usize {
    match &message.body {
        MessageBody::InstallSnapshot { snapshot } => snapshot.data.len(),
        _ => 0,
    }
}

/// The whole frame's length for `messages`: prefix, head and blobs.
pub fn frame_bytes<'a>(messages: impl IntoIterator<Item = &'a Message>) -> u64 {
    let mut total = (FRAME_PREFIX_BYTES + HEAD_FIXED_BYTES) as u64;
    for message in messages {
        total += (head_bytes(message) + blob_bytes(message)) as u64;
    }
    total
}

/// Appends a frame's prefix and head for `messages` to `out`; the frame's blobs, to be
/// written right after, are [`frame_blobs`]. Returns the whole frame's length.
///
/// Fails only if the head would pass 4 GiB (its length is a u32), which no frame under
/// any sane limit reaches: entries travel in frames of a few MB.
pub fn encode_frame_head(
    shard: u64,
    messages: &[Message],
    out: &mut Vec<u8>,
) -> Result<u64, PeerError> {
    if u32::try_from(messages.len()).is_err() || !messages.iter().all(fits_the_format) {
        return Err(PeerError::Malformed(
            "a count or an entry's data over the format's 4 Gi limit",
        ));
    }
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_PREFIX_BYTES]);
    out.push(CODEC_VERSION);
    put_u64(out, shard);
    put_u32(out, messages.len() as u32);
    let mut blobs: u64 = 0;
    for message in messages {
        encode_message(message, out);
        blobs += blob_bytes(message) as u64;
    }
    let head = out.len() - start - FRAME_PREFIX_BYTES;
    let Ok(head_u32) = u32::try_from(head) else {
        out.truncate(start);
        return Err(PeerError::FrameTooLarge {
            length: head as u64,
            max: u32::MAX as u64,
        });
    };
    out[start..start + 4].copy_from_slice(&head_u32.to_le_bytes());
    out[start + 4..start + 12].copy_from_slice(&blobs.to_le_bytes());
    Ok((FRAME_PREFIX_BYTES + head) as u64 + blobs)
}

/// Whether every count and entry length of `message` fits its u32 field.
fn fits_the_format(message: &Message) -> bool {
    let small = |length: usize| u32::try_from(length).is_ok();
    let entries = |entries: &[Entry]| {
        small(entries.len()) && entries.iter().all(|entry| small(entry.data.len()))
    };
    match &message.body {
        MessageBody::Append { entries: e, .. } | MessageBody::Propose { entries: e } => entries(e),
        MessageBody::InstallSnapshot { snapshot } => {
            small(snapshot.meta.conf_state.voters.len())
                && small(snapshot.meta.conf_state.learners.len())
        }
        MessageBody::Node { data } => small(data.len()),
        _ => true,
    }
}

/// The blobs of a frame of `messages`, in the order they follow the head.
pub fn frame_blobs(messages: &[Message]) -> impl Iterator<Item = &[u8]> {
    messages.iter().filter_map(|message| match &message.body {
        MessageBody::InstallSnapshot { snapshot } if !snapshot.data.is_empty() => {
            Some(snapshot.data.as_slice())
        }
        _ => None,
    })
}

/// Encodes a whole frame into one buffer (tests and tools; the transport writes the
/// blobs from the messages instead of copying them).
pub fn encode_frame(shard: u64, messages: &[Message]) -> Result<Vec<u8>, PeerError> {
    let mut out = Vec::new();
    encode_frame_head(shard, messages, &mut out)?;
    for blob in frame_blobs(messages) {
        out.extend_from_slice(blob);
    }
    Ok(out)
}

/// A frame's prefix, checked against the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FramePrefix {
    pub head_bytes: usize,
    pub blob_bytes: u64,
}

/// Decodes and checks a frame prefix: the whole frame must fit in `frame_bytes_max`
/// and the head must at least hold its fixed part.
pub fn decode_frame_prefix(
    prefix: &[u8; FRAME_PREFIX_BYTES],
    frame_bytes_max: usize,
) -> Result<FramePrefix, PeerError> {
    let head = u32::from_le_bytes(prefix[0..4].try_into().expect("4 bytes")) as u64;
    let blobs = u64::from_le_bytes(prefix[4..12].try_into().expect("8 bytes"));
    let total = (FRAME_PREFIX_BYTES as u64 + head).checked_add(blobs);
    match total {
        Some(total) if total <= frame_bytes_max as u64 => {}
        _ => {
            return Err(PeerError::FrameTooLarge {
                length: total.unwrap_or(u64::MAX),
                max: frame_bytes_max as u64,
            })
        }
    }
    if head < HEAD_FIXED_BYTES as u64 {
        return Err(PeerError::Malformed(
            "frame head shorter than its fixed part",
        ));
    }
    Ok(FramePrefix {
        // At most the limit, which is a usize.
        head_bytes: head as usize,
        blob_bytes: blobs,
    })
}

/// A decoded head: the messages with their snapshot data still to be filled from the
/// blobs, whose lengths `blobs` lists in order as (message position, length).
#[derive(Debug)]
pub struct DecodedHead {
    pub shard: u64,
    pub messages: Vec<Message>,
    pub blobs: Vec<(usize, usize)>,
}

/// Decodes a frame head. `blob_bytes` is the prefix's blob length: the snapshot data
/// lengths the head declares must add up to it exactly.
pub fn decode_frame_head(head: &[u8], blob_bytes: u64) -> Result<DecodedHead, PeerError> {
    let mut reader = Reader::new(head);
    let version = reader.u8("frame version")?;
    if version != CODEC_VERSION {
        return Err(PeerError::UnknownVersion(version));
    }
    let shard = reader.u64("frame shard id")?;
    let count = reader.count("message count", MESSAGE_BYTES_MIN)?;
    let mut messages = Vec::with_capacity(count);
    let mut blobs = Vec::new();
    let mut blobs_left = blob_bytes;
    for position in 0..count {
        let message = decode_message(&mut reader, &mut |length| {
            if length > blobs_left {
                return Err(PeerError::Malformed(
                    "snapshot data longer than the frame's blobs",
                ));
            }
            blobs_left -= length;
            // At most the blob length, which fits the frame limit, a usize.
            blobs.push((position, length as usize));
            Ok(())
        })?;
        messages.push(message);
    }
    if reader.remaining() != 0 {
        return Err(PeerError::Malformed(
            "trailing bytes after the last message",
        ));
    }
    if blobs_left != 0 {
        return Err(PeerError::Malformed(
            "frame blobs longer than the snapshot data they carry",
        ));
    }
    Ok(DecodedHead {
        shard,
        messages,
        blobs,
    })
}

/// Puts a blob's bytes where they belong: the snapshot data of its message.
pub fn fill_blob(messages: &mut [Message], position: usize, data: Vec<u8>) {
    if let Some(Message {
        body: MessageBody::InstallSnapshot { snapshot },
        ..
    }) = messages.get_mut(position)
    {
        snapshot.data = data;
    }
}

/// Decodes one whole frame from contiguous bytes; `bytes` must be exactly one frame.
pub fn decode_frame(
    bytes: &[u8],
    frame_bytes_max: usize,
) -> Result<(u64, Vec<Message>), PeerError> {
    let mut reader = Reader::new(bytes);
    let prefix: [u8; FRAME_PREFIX_BYTES] = reader.array("frame prefix")?;
    let prefix = decode_frame_prefix(&prefix, frame_bytes_max)?;
    let head = reader.take(prefix.head_bytes, "frame head")?;
    if reader.remaining() as u64 != prefix.blob_bytes {
        return Err(PeerError::Malformed("frame length differs from its prefix"));
    }
    let DecodedHead {
        shard,
        mut messages,
        blobs,
    } = decode_frame_head(head, prefix.blob_bytes)?;
    for (position, length) in blobs {
        let data = reader.take(length, "snapshot data")?.to_vec();
        fill_blob(&mut messages, position, data);
    }
    Ok((shard, messages))
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

pub(crate) fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_entries(out: &mut Vec<u8>, entries: &[Entry]) {
    put_u32(out, entries.len() as u32);
    for entry in entries {
        put_u64(out, entry.term.0);
        put_u64(out, entry.index.0);
        out.push(match entry.kind {
            EntryKind::Normal => ENTRY_NORMAL,
            EntryKind::ConfChange => ENTRY_CONF_CHANGE,
        });
        put_u32(out, entry.data.len() as u32);
        out.extend_from_slice(&entry.data);
    }
}

fn put_ids(out: &mut Vec<u8>, ids: &[MemberId]) {
    put_u32(out, ids.len() as u32);
    for id in ids {
        put_u64(out, id.0);
    }
}

/// Appends one message's head encoding (snapshot data excluded) to `out`.
fn encode_message(message: &Message, out: &mut Vec<u8>) {
    let kind = match &message.body {
        MessageBody::Append { .. } => KIND_APPEND,
        MessageBody::AppendResponse { .. } => KIND_APPEND_RESPONSE,
        MessageBody::Heartbeat { .. } => KIND_HEARTBEAT,
        MessageBody::HeartbeatResponse { .. } => KIND_HEARTBEAT_RESPONSE,
        MessageBody::RequestVote { .. } => KIND_REQUEST_VOTE,
        MessageBody::VoteResponse { .. } => KIND_VOTE_RESPONSE,
        MessageBody::InstallSnapshot { .. } => KIND_INSTALL_SNAPSHOT,
        MessageBody::Propose { .. } => KIND_PROPOSE,
        MessageBody::ReadIndex { .. } => KIND_READ_INDEX,
        MessageBody::ReadIndexResponse { .. } => KIND_READ_INDEX_RESPONSE,
        MessageBody::TimeoutNow => KIND_TIMEOUT_NOW,
        MessageBody::Node { .. } => KIND_NODE,
    };
    out.push(kind);
    put_u64(out, message.from.0);
    put_u64(out, message.to.0);
    put_u64(out, message.term.0);
    match &message.body {
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => {
            put_u64(out, prev_index.0);
            put_u64(out, prev_term.0);
            put_u64(out, commit.0);
            put_entries(out, entries);
        }
        MessageBody::AppendResponse { index, reject } => {
            put_u64(out, index.0);
            match reject {
                None => out.push(0),
                Some(hint) => {
                    out.push(1);
                    put_u64(out, hint.conflict_index.0);
                    match hint.conflict_term {
                        None => out.push(0),
                        Some(term) => {
                            out.push(1);
                            put_u64(out, term.0);
                        }
                    }
                }
            }
        }
        MessageBody::Heartbeat { commit, read_round } => {
            put_u64(out, commit.0);
            put_u64(out, *read_round);
        }
        MessageBody::HeartbeatResponse { read_round } => put_u64(out, *read_round),
        MessageBody::RequestVote {
            pre_vote,
            last_index,
            last_term,
            transfer,
        } => {
            let mut flags = 0;
            if *pre_vote {
                flags |= FLAG_PRE_VOTE;
            }
            if *transfer {
                flags |= FLAG_TRANSFER;
            }
            out.push(flags);
            put_u64(out, last_index.0);
            put_u64(out, last_term.0);
        }
        MessageBody::VoteResponse { pre_vote, granted } => {
            let mut flags = 0;
            if *pre_vote {
                flags |= FLAG_PRE_VOTE;
            }
            if *granted {
                flags |= FLAG_GRANTED;
            }
            out.push(flags);
        }
        MessageBody::InstallSnapshot { snapshot } => {
            put_u64(out, snapshot.meta.index.0);
            put_u64(out, snapshot.meta.term.0);
            put_ids(out, &snapshot.meta.conf_state.voters);
            put_ids(out, &snapshot.meta.conf_state.learners);
            put_u64(out, snapshot.data.len() as u64);
        }
        MessageBody::Propose { entries } => put_entries(out, entries),
        MessageBody::ReadIndex { request } => put_u64(out, *request),
        MessageBody::ReadIndexResponse { request, index } => {
            put_u64(out, *request);
            put_u64(out, index.0);
        }
        MessageBody::TimeoutNow => {}
        MessageBody::Node { data } => {
            put_u32(out, data.len() as u32);
            out.extend_from_slice(data);
        }
    }
}

/// Decodes one message; `blob` is told the length of its snapshot data, if it has one.
fn decode_message(
    reader: &mut Reader<'_>,
    blob: &mut dyn FnMut(u64) -> Result<(), PeerError>,
) -> Result<Message, PeerError> {
    let kind = reader.u8("message kind")?;
    let from = MemberId(reader.u64("message from")?);
    let to = MemberId(reader.u64("message to")?);
    let term = Term(reader.u64("message term")?);
    let body = match kind {
        KIND_APPEND => MessageBody::Append {
            prev_index: LogIndex(reader.u64("append prev index")?),
            prev_term: Term(reader.u64("append prev term")?),
            commit: LogIndex(reader.u64("append commit")?),
            entries: decode_entries(reader)?,
        },
        KIND_APPEND_RESPONSE => {
            let index = LogIndex(reader.u64("append response index")?);
            let reject = if reader.bool("append response reject tag")? {
                let conflict_index = LogIndex(reader.u64("reject conflict index")?);
                let conflict_term = if reader.bool("reject conflict term tag")? {
                    Some(Term(reader.u64("reject conflict term")?))
                } else {
                    None
                };
                Some(RejectHint {
                    conflict_index,
                    conflict_term,
                })
            } else {
                None
            };
            MessageBody::AppendResponse { index, reject }
        }
        KIND_HEARTBEAT => MessageBody::Heartbeat {
            commit: LogIndex(reader.u64("heartbeat commit")?),
            read_round: reader.u64("heartbeat read round")?,
        },
        KIND_HEARTBEAT_RESPONSE => MessageBody::HeartbeatResponse {
            read_round: reader.u64("heartbeat response read round")?,
        },
        KIND_REQUEST_VOTE => {
            let flags = reader.u8("vote request flags")?;
            if flags & !(FLAG_PRE_VOTE | FLAG_TRANSFER) != 0 {
                return Err(PeerError::Malformed("unknown vote request flag"));
            }
            MessageBody::RequestVote {
                pre_vote: flags & FLAG_PRE_VOTE != 0,
                transfer: flags & FLAG_TRANSFER != 0,
                last_index: LogIndex(reader.u64("vote request last index")?),
                last_term: Term(reader.u64("vote request last term")?),
            }
        }
        KIND_VOTE_RESPONSE => {
            let flags = reader.u8("vote response flags")?;
            if flags & !(FLAG_PRE_VOTE | FLAG_GRANTED) != 0 {
                return Err(PeerError::Malformed("unknown vote response flag"));
            }
            MessageBody::VoteResponse {
                pre_vote: flags & FLAG_PRE_VOTE != 0,
                granted: flags & FLAG_GRANTED != 0,
            }
        }
        KIND_INSTALL_SNAPSHOT => {
            let index = LogIndex(reader.u64("snapshot index")?);
            let snapshot_term = Term(reader.u64("snapshot term")?);
            let voters = decode_ids(reader, "snapshot voters")?;
            let learners = decode_ids(reader, "snapshot learners")?;
            blob(reader.u64("snapshot data length")?)?;
            MessageBody::InstallSnapshot {
                snapshot: Snapshot {
                    meta: SnapshotMeta {
                        index,
                        term: snapshot_term,
                        conf_state: ConfState { voters, learners },
                    },
                    data: Vec::new(),
                },
            }
        }
        KIND_PROPOSE => MessageBody::Propose {
            entries: decode_entries(reader)?,
        },
        KIND_READ_INDEX => MessageBody::ReadIndex {
            request: reader.u64("read index request")?,
        },
        KIND_READ_INDEX_RESPONSE => MessageBody::ReadIndexResponse {
            request: reader.u64("read index response request")?,
            index: LogIndex(reader.u64("read index response index")?),
        },
        KIND_TIMEOUT_NOW => MessageBody::TimeoutNow,
        KIND_NODE => {
            let length = reader.u32("node message length")? as usize;
            MessageBody::Node {
                data: reader.take(length, "node message")?.to_vec(),
            }
        }
        other => return Err(PeerError::UnknownMessageKind(other)),
    };
    Ok(Message {
        from,
        to,
        term,
        body,
    })
}

fn decode_entries(reader: &mut Reader<'_>) -> Result<Vec<Entry>, PeerError> {
    let count = reader.count("entry count", ENTRY_BYTES_MIN)?;
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let term = Term(reader.u64("entry term")?);
        let index = LogIndex(reader.u64("entry index")?);
        let kind = match reader.u8("entry kind")? {
            ENTRY_NORMAL => EntryKind::Normal,
            ENTRY_CONF_CHANGE => EntryKind::ConfChange,
            _ => return Err(PeerError::Malformed("unknown entry kind")),
        };
        let length = reader.u32("entry data length")? as usize;
        let data = reader.take(length, "entry data")?.to_vec();
        entries.push(Entry {
            term,
            index,
            kind,
            data,
        });
    }
    Ok(entries)
}

fn decode_ids(reader: &mut Reader<'_>, during: &'static str) -> Result<Vec<MemberId>, PeerError> {
    let count = reader.count(during, 8)?;
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        ids.push(MemberId(reader.u64(during)?));
    }
    Ok(ids)
}

/// What Raft assumes of a message from a peer, checked before it is stepped: it comes
/// from the member that dialed (`from`) and is addressed to us, an append's entries
/// follow its `prev_index` without a gap and are no newer than its term, and a
/// snapshot's membership is sorted, without duplicates, voters and learners disjoint.
/// `corekv-raft` asserts some of these, so a peer that breaks them must not reach it.
pub fn check_incoming(message: &Message, from: u64, me: u64) -> Result<(), PeerError> {
    if message.from.0 != from {
        return Err(PeerError::Malformed(
            "message sent in the name of another member",
        ));
    }
    if message.to.0 != me {
        return Err(PeerError::Malformed("message addressed to another member"));
    }
    match &message.body {
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            ..
        } => {
            if *prev_term > message.term {
                return Err(PeerError::Malformed("append prev term above its term"));
            }
            let mut expected = prev_index.0;
            for entry in entries {
                expected = expected
                    .checked_add(1)
                    .ok_or(PeerError::Malformed("append entry index overflows"))?;
                if entry.index.0 != expected {
                    return Err(PeerError::Malformed("append entries leave a gap"));
                }
                if entry.term > message.term {
                    return Err(PeerError::Malformed("append entry term above its term"));
                }
            }
        }
        MessageBody::InstallSnapshot { snapshot } => {
            let conf = &snapshot.meta.conf_state;
            let sorted = |ids: &[MemberId]| ids.windows(2).all(|w| w[0] < w[1]);
            if !sorted(&conf.voters) || !sorted(&conf.learners) {
                return Err(PeerError::Malformed(
                    "snapshot membership unsorted or duplicated",
                ));
            }
            if conf
                .learners
                .iter()
                .any(|learner| conf.voters.binary_search(learner).is_ok())
            {
                return Err(PeerError::Malformed(
                    "snapshot member both voter and learner",
                ));
            }
            if snapshot.meta.term > message.term {
                return Err(PeerError::Malformed("snapshot term above its term"));
            }
        }
        _ => {}
    }
    Ok(())
}

/// A cursor over untrusted bytes: every read is checked against what remains.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    pub(crate) fn take(
        &mut self,
        length: usize,
        during: &'static str,
    ) -> Result<&'a [u8], PeerError> {
        if length > self.remaining() {
            return Err(PeerError::Truncated { during });
        }
        let slice = &self.bytes[self.at..self.at + length];
        self.at += length;
        Ok(slice)
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        during: &'static str,
    ) -> Result<[u8; N], PeerError> {
        Ok(self
            .take(N, during)?
            .try_into()
            .expect("take returned N bytes"))
    }

    pub(crate) fn u8(&mut self, during: &'static str) -> Result<u8, PeerError> {
        Ok(self.take(1, during)?[0])
    }

    pub(crate) fn u32(&mut self, during: &'static str) -> Result<u32, PeerError> {
        Ok(u32::from_le_bytes(self.array(during)?))
    }

    pub(crate) fn u64(&mut self, during: &'static str) -> Result<u64, PeerError> {
        Ok(u64::from_le_bytes(self.array(during)?))
    }

    pub(crate) fn bool(&mut self, during: &'static str) -> Result<bool, PeerError> {
        match self.u8(during)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(PeerError::Malformed(
                "a boolean or option tag is not 0 or 1",
            )),
        }
    }

    /// A u32 count of items of at least `item_bytes_min` bytes each, refused if the
    /// bytes that remain cannot hold that many: the count is then safe to allocate for.
    pub(crate) fn count(
        &mut self,
        during: &'static str,
        item_bytes_min: usize,
    ) -> Result<usize, PeerError> {
        let count = self.u32(during)? as usize;
        if count > self.remaining() / item_bytes_min {
            return Err(PeerError::Truncated { during });
        }
        Ok(count)
    }
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
