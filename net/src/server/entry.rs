//! What the node writes into Raft entries and WAL records, and the snapshot file's
//! wrapping of the engine snapshot.
//!
//! A proposal is a batch of client writes that becomes one Raft entry:
//!
//! ```text
//! u8  format (1) | u64 origin member id | u64 proposal id | u32 count |
//! count x ( u32 length | request frame body as encoded by protocol::codec )
//! ```
//!
//! The origin and proposal id let the member that proposed the batch find the clients
//! waiting for it when the entry is applied, whichever member led at the time. Every
//! member applies the requests in order, one engine revision per changing request.
//!
//! In the WAL, an entry's payload is `u8 kind (0 normal, 1 conf change) | raft data`.
//!
//! A snapshot file's payload is `u32 0xFFFF_FFFF | u8 format (2) | u32 voters | voters x
//! u64 | u32 learners | learners x u64 | member table | engine snapshot bytes`, so that a
//! restart (or a follower sent the snapshot) recovers membership with the data. The
//! member table is `u32 count | count x (u64 id | member) | u32 removed | removed x u64`,
//! a member `string name | strings peer URLs | strings client URLs | u8 learner`, a string `u32 length
//! | UTF-8`, strings `u32 count | count x string`. Format 1 (no marker, no table) is
//! still read.
//!
//! A membership change entry's context (opaque to Raft) is `u8 format (1) | u64 origin
//! member | u64 proposal id | member`: who asked (so that member answers its client) and
//! the member's name and URLs. The bootstrap entries of a new cluster carry no context.
//!
//! Decoding never trusts a count or a length before checking it against the bytes left.

use anyhow::{bail, ensure, Context, Result};
use corekv_raft::{ConfState, EntryKind, MemberId};

use super::members::{MemberInfo, MemberTable};

use crate::protocol::codec::{decode_request, encode_request};
use crate::protocol::Request;

const PROPOSAL_FORMAT: u8 = 1;

/// A decoded proposal.
#[derive(Debug, PartialEq, Eq)]
pub struct Proposal {
    /// Member that proposed it.
    pub origin: u64,
    /// Id the origin uses to find its waiting clients.
    pub proposal_id: u64,
    /// The writes, in order.
    pub requests: Vec<Request>,
}

/// Encodes a batch of write requests as Raft entry data.
///
/// The buffer is sized from `size_hint` (the requests' expected encoded bytes) and
/// trimmed if that was well over: the entry stays in the in-memory Raft log until the
/// next snapshot, so slack left by doubling a buffer would stay resident as long.
pub fn encode_proposal<'a>(
    origin: u64,
    proposal_id: u64,
    requests: impl ExactSizeIterator<Item = &'a Request>,
    size_hint: usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(PROPOSAL_HEAD_BYTES + size_hint);
    out.push(PROPOSAL_FORMAT);
    out.extend_from_slice(&origin.to_le_bytes());
    out.extend_from_slice(&proposal_id.to_le_bytes());
    out.extend_from_slice(&(requests.len() as u32).to_le_bytes());
    for request in requests {
        // A codec frame is `u32 body length | body`: exactly this format's item.
        encode_request(0, request, &mut out);
    }
    if out.capacity() - out.len() > out.len() / 16 {
        out.shrink_to_fit();
    }
    out
}

/// Bytes of a proposal before its requests: format, origin, proposal id, count.
const PROPOSAL_HEAD_BYTES: usize = 1 + 8 + 8 + 4;

/// Reads only the origin member and proposal id of a proposal.
pub fn decode_proposal_origin(data: &[u8]) -> Result<(u64, u64)> {
    let mut reader = Reader::new(data);
    let format = reader.u8()?;
    ensure!(
        format == PROPOSAL_FORMAT,
        "unknown proposal format {format}"
    );
    Ok((reader.u64()?, reader.u64()?))
}

/// Decodes Raft entry data written by [`encode_proposal`].
pub fn decode_proposal(data: &[u8]) -> Result<Proposal> {
    let mut reader = Reader::new(data);
    let format = reader.u8()?;
    ensure!(
        format == PROPOSAL_FORMAT,
        "unknown proposal format {format}"
    );
    let origin = reader.u64()?;
    let proposal_id = reader.u64()?;
    let count = reader.u32()? as usize;
    // Each request takes at least its 4-byte length.
    ensure!(
        count <= reader.remaining() / 4,
        "proposal claims {count} requests"
    );
    let mut requests = Vec::with_capacity(count);
    for _ in 0..count {
        let length = reader.u32()? as usize;
        let body = reader.take(length)?;
        let (_, request) = decode_request(body)?;
        requests.push(request);
    }
    ensure!(
        reader.remaining() == 0,
        "{} trailing bytes after the proposal",
        reader.remaining()
    );
    Ok(Proposal {
        origin,
        proposal_id,
        requests,
    })
}

/// WAL payload of a Raft entry.
pub fn wal_entry_payload(kind: EntryKind, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + data.len());
    out.push(match kind {
        EntryKind::Normal => 0,
        EntryKind::ConfChange => 1,
    });
    out.extend_from_slice(data);
    out
}

/// Splits a WAL entry payload into kind and Raft data.
pub fn split_wal_entry(payload: &[u8]) -> Result<(EntryKind, &[u8])> {
    match payload.split_first() {
        Some((0, data)) => Ok((EntryKind::Normal, data)),
        Some((1, data)) => Ok((EntryKind::ConfChange, data)),
        Some((kind, _)) => bail!("unknown entry kind {kind}"),
        None => bail!("empty entry payload"),
    }
}

/// Marks a snapshot payload of format 2 or later (format 1 began with the voter count,
/// which is never this large).
const SNAPSHOT_FORMAT_MARKER: u32 = u32::MAX;
const SNAPSHOT_FORMAT: u8 = 2;
const CONF_CONTEXT_FORMAT: u8 = 1;

/// Wraps engine snapshot bytes with the membership they were taken under.
pub fn encode_snapshot_payload(conf: &ConfState, table: &MemberTable, engine: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + engine.len());
    out.extend_from_slice(&SNAPSHOT_FORMAT_MARKER.to_le_bytes());
    out.push(SNAPSHOT_FORMAT);
    for members in [&conf.voters, &conf.learners] {
        out.extend_from_slice(&(members.len() as u32).to_le_bytes());
        for member in members {
            out.extend_from_slice(&member.0.to_le_bytes());
        }
    }
    put_member_table(&mut out, table);
    out.extend_from_slice(engine);
    out
}

/// Encodes a member table (in snapshots, and as the directory a joining member is sent).
pub fn encode_member_table(table: &MemberTable) -> Vec<u8> {
    let mut out = Vec::new();
    put_member_table(&mut out, table);
    out
}

/// Decodes what [`encode_member_table`] wrote.
pub fn decode_member_table(bytes: &[u8]) -> Result<MemberTable> {
    let mut reader = Reader::new(bytes);
    let table = reader.member_table()?;
    ensure!(reader.remaining() == 0, "member table has trailing bytes");
    Ok(table)
}

fn put_member_table(out: &mut Vec<u8>, table: &MemberTable) {
    put_u32(out, table.members.len() as u32);
    for (id, member) in &table.members {
        out.extend_from_slice(&id.to_le_bytes());
        put_member(out, member);
    }
    put_u32(out, table.removed.len() as u32);
    for id in &table.removed {
        out.extend_from_slice(&id.to_le_bytes());
    }
}

/// Splits a snapshot payload into membership, member table and engine bytes.
pub fn decode_snapshot_payload(payload: &[u8]) -> Result<(ConfState, MemberTable, &[u8])> {
    let mut reader = Reader::new(payload);
    let format = if payload.len() >= 5 && payload[..4] == SNAPSHOT_FORMAT_MARKER.to_le_bytes() {
        reader.take(4)?;
        reader.u8()?
    } else {
        1
    };
    ensure!(
        format <= SNAPSHOT_FORMAT,
        "snapshot payload format {format} is newer than this build"
    );
    let mut lists = [Vec::new(), Vec::new()];
    for list in &mut lists {
        let count = reader.u32()? as usize;
        ensure!(
            count <= reader.remaining() / 8,
            "snapshot claims {count} members"
        );
        for _ in 0..count {
            list.push(MemberId(reader.u64()?));
        }
    }
    let table = if format >= 2 {
        reader.member_table()?
    } else {
        MemberTable::default()
    };
    let [voters, learners] = lists;
    Ok((
        ConfState { voters, learners },
        table,
        &payload[reader.offset..],
    ))
}

/// Who asked for a membership change, and the member's attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfContext {
    /// The member whose client asked.
    pub origin: u64,
    /// The proposal that carried the request, on `origin`.
    pub proposal_id: u64,
    /// The member's name and URLs.
    pub member: MemberInfo,
}

/// Encodes a membership change's context.
pub fn encode_conf_context(context: &ConfContext) -> Vec<u8> {
    let mut out = vec![CONF_CONTEXT_FORMAT];
    out.extend_from_slice(&context.origin.to_le_bytes());
    out.extend_from_slice(&context.proposal_id.to_le_bytes());
    put_member(&mut out, &context.member);
    out
}

/// Decodes a membership change's context; `None` for the bootstrap entries' empty one.
pub fn decode_conf_context(bytes: &[u8]) -> Result<Option<ConfContext>> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let mut reader = Reader::new(bytes);
    let format = reader.u8()?;
    ensure!(
        format == CONF_CONTEXT_FORMAT,
        "unknown membership change format {format}"
    );
    let context = ConfContext {
        origin: reader.u64()?,
        proposal_id: reader.u64()?,
        member: reader.member()?,
    };
    ensure!(
        reader.remaining() == 0,
        "membership change has trailing bytes"
    );
    Ok(Some(context))
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_string(out: &mut Vec<u8>, value: &str) {
    put_u32(out, value.len() as u32);
    out.extend_from_slice(value.as_bytes());
}

fn put_strings(out: &mut Vec<u8>, values: &[String]) {
    put_u32(out, values.len() as u32);
    for value in values {
        put_string(out, value);
    }
}

fn put_member(out: &mut Vec<u8>, member: &MemberInfo) {
    put_string(out, &member.name);
    put_strings(out, &member.peer_urls);
    put_strings(out, &member.client_urls);
    out.push(u8::from(member.is_learner));
}

/// Little-endian reads over a byte slice, each checked against what is left (the
/// encodings of this module and the shard's node messages).
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, offset: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.offset
    }

    pub(crate) fn take(&mut self, length: usize) -> Result<&'a [u8]> {
        ensure!(
            length <= self.remaining(),
            "needs {length} bytes at offset {}, {} left",
            self.offset,
            self.remaining()
        );
        let slice = &self.bytes[self.offset..self.offset + length];
        self.offset += length;
        Ok(slice)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn string(&mut self) -> Result<String> {
        let length = self.u32()? as usize;
        let bytes = self.take(length)?;
        String::from_utf8(bytes.to_vec()).context("a string is not UTF-8")
    }

    fn strings(&mut self) -> Result<Vec<String>> {
        let count = self.u32()? as usize;
        ensure!(count <= self.remaining() / 4, "claims {count} strings");
        (0..count).map(|_| self.string()).collect()
    }

    fn member_table(&mut self) -> Result<MemberTable> {
        let mut table = MemberTable::default();
        let count = self.u32()? as usize;
        ensure!(count <= self.remaining() / 20, "claims {count} members");
        for _ in 0..count {
            let id = self.u64()?;
            let member = self.member()?;
            table.members.insert(id, member);
        }
        let removed = self.u32()? as usize;
        ensure!(
            removed <= self.remaining() / 8,
            "claims {removed} removed members"
        );
        for _ in 0..removed {
            table.removed.insert(self.u64()?);
        }
        Ok(table)
    }

    fn member(&mut self) -> Result<MemberInfo> {
        Ok(MemberInfo {
            name: self.string()?,
            peer_urls: self.strings()?,
            client_urls: self.strings()?,
            is_learner: match self.u8()? {
                0 => false,
                1 => true,
                other => bail!("learner flag {other}"),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use corekv_engine::{LeaseId, PutRequest, Revision};

    use super::*;

    /// A proposal decodes to exactly the requests, origin and id that were encoded.
    #[test]
    fn proposal_round_trip() {
        let requests = vec![
            Request::Put(PutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            }),
            Request::LeaseRevoke { id: LeaseId(7) },
            Request::Compact {
                revision: Revision(3),
                physical: false,
            },
        ];
        let data = encode_proposal(9, 42, requests.iter(), 0);
        assert_eq!(decode_proposal_origin(&data).unwrap(), (9, 42));
        // Whatever the hint, the entry keeps little slack (it lives until a snapshot).
        for hint in [0, 1 << 20] {
            let sized = encode_proposal(9, 42, requests.iter(), hint);
            assert_eq!(sized, data);
            assert!(sized.capacity() - sized.len() <= sized.len() / 16);
        }
        let proposal = decode_proposal(&data).unwrap();
        assert_eq!(
            proposal,
            Proposal {
                origin: 9,
                proposal_id: 42,
                requests
            }
        );
    }

    /// Truncated or padded proposals are errors, never panics.
    #[test]
    fn damaged_proposals_are_errors() {
        let requests = [Request::LeaseLeases];
        let data = encode_proposal(1, 2, requests.iter(), 1 << 20);
        for cut in 0..data.len() {
            assert!(decode_proposal(&data[..cut]).is_err(), "cut at {cut}");
        }
        let mut padded = data.clone();
        padded.push(0);
        assert!(decode_proposal(&padded).is_err());
    }

    /// Snapshot payloads keep membership and engine bytes apart.
    #[test]
    fn snapshot_payload_round_trip() {
        let conf = ConfState {
            voters: vec![MemberId(1), MemberId(2)],
            learners: vec![MemberId(3)],
        };
        let mut table = MemberTable::default();
        table.members.insert(
            1,
            MemberInfo {
                name: "a".to_string(),
                peer_urls: vec!["http://127.0.0.1:2380".to_string()],
                client_urls: vec![],
                is_learner: true,
            },
        );
        table.removed.insert(4);
        let payload = encode_snapshot_payload(&conf, &table, b"engine");
        let (decoded, decoded_table, engine) = decode_snapshot_payload(&payload).unwrap();
        assert_eq!(
            (decoded, decoded_table, engine),
            (conf.clone(), table, &b"engine"[..])
        );
        for cut in 0..40 {
            assert!(
                decode_snapshot_payload(&payload[..cut]).is_err(),
                "cut {cut}"
            );
        }
        // Format 1: voter and learner lists, then the engine's bytes.
        let mut old = Vec::new();
        for list in [&conf.voters, &conf.learners] {
            old.extend_from_slice(&(list.len() as u32).to_le_bytes());
            for member in list {
                old.extend_from_slice(&member.0.to_le_bytes());
            }
        }
        old.extend_from_slice(b"engine");
        let (decoded, decoded_table, engine) = decode_snapshot_payload(&old).unwrap();
        assert_eq!(decoded, conf);
        assert!(decoded_table.members.is_empty());
        assert_eq!(engine, b"engine");
    }

    /// A membership change's context round-trips; damage is an error.
    #[test]
    fn conf_context_round_trip() {
        let context = ConfContext {
            origin: 7,
            proposal_id: 99,
            member: MemberInfo {
                name: String::new(),
                peer_urls: vec!["http://10.0.0.1:2380".to_string()],
                client_urls: vec![],
                is_learner: false,
            },
        };
        let bytes = encode_conf_context(&context);
        assert_eq!(decode_conf_context(&bytes).unwrap(), Some(context));
        assert_eq!(decode_conf_context(&[]).unwrap(), None);
        for cut in 1..bytes.len() {
            assert!(decode_conf_context(&bytes[..cut]).is_err(), "cut {cut}");
        }
    }
}
