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
//! A snapshot file's payload is `u32 voters | voters x u64 | u32 learners | learners x u64
//! | engine snapshot bytes`, so that a restart recovers membership with the data.
//!
//! Decoding never trusts a count or a length before checking it against the bytes left.

use anyhow::{bail, ensure, Result};
use corekv_raft::{ConfState, EntryKind, MemberId};

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
pub fn encode_proposal<'a>(
    origin: u64,
    proposal_id: u64,
    requests: impl ExactSizeIterator<Item = &'a Request>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(PROPOSAL_FORMAT);
    out.extend_from_slice(&origin.to_le_bytes());
    out.extend_from_slice(&proposal_id.to_le_bytes());
    out.extend_from_slice(&(requests.len() as u32).to_le_bytes());
    for request in requests {
        // A codec frame is `u32 body length | body`: exactly this format's item.
        encode_request(0, request, &mut out);
    }
    out
}

/// Reads only the origin member and proposal id of a proposal.
pub fn decode_proposal_origin(data: &[u8]) -> Result<(u64, u64)> {
    let mut reader = Reader {
        bytes: data,
        offset: 0,
    };
    let format = reader.u8()?;
    ensure!(
        format == PROPOSAL_FORMAT,
        "unknown proposal format {format}"
    );
    Ok((reader.u64()?, reader.u64()?))
}

/// Decodes Raft entry data written by [`encode_proposal`].
pub fn decode_proposal(data: &[u8]) -> Result<Proposal> {
    let mut reader = Reader {
        bytes: data,
        offset: 0,
    };
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

/// Wraps engine snapshot bytes with the membership they were taken under.
pub fn encode_snapshot_payload(conf: &ConfState, engine: &[u8]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(16 + 8 * (conf.voters.len() + conf.learners.len()) + engine.len());
    for members in [&conf.voters, &conf.learners] {
        out.extend_from_slice(&(members.len() as u32).to_le_bytes());
        for member in members {
            out.extend_from_slice(&member.0.to_le_bytes());
        }
    }
    out.extend_from_slice(engine);
    out
}

/// Splits a snapshot payload into membership and engine bytes.
pub fn decode_snapshot_payload(payload: &[u8]) -> Result<(ConfState, &[u8])> {
    let mut reader = Reader {
        bytes: payload,
        offset: 0,
    };
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
    let [voters, learners] = lists;
    Ok((ConfState { voters, learners }, &payload[reader.offset..]))
}

struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.offset
    }

    fn take(&mut self, length: usize) -> Result<&'a [u8]> {
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

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
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
        let data = encode_proposal(9, 42, requests.iter());
        assert_eq!(decode_proposal_origin(&data).unwrap(), (9, 42));
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
        let data = encode_proposal(1, 2, requests.iter());
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
        let payload = encode_snapshot_payload(&conf, b"engine");
        let (decoded, engine) = decode_snapshot_payload(&payload).unwrap();
        assert_eq!((decoded, engine), (conf, &b"engine"[..]));
        assert!(decode_snapshot_payload(&payload[..5]).is_err());
    }
}
