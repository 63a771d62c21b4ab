//! Snapshots of a whole store: encoded a chunk at a time with rkyv while writes go on,
//! and decoded with every byte validated before use.
//!
//! Bytes: `magic "CKVSNAP\x02"` (8), then chunks, each
//! `kind u32 LE | payload_len u32 LE | crc32 u32 LE of the payload | 4 zero bytes | payload`,
//! where the payload is an rkyv archive checked with bytecheck before use:
//!
//! * kind 1, once, first: [`SnapshotHeader`] (revision counters, leases);
//! * kind 2, any number: [`SnapshotKeys`], keys in ascending order across chunks;
//! * kind 3, once, last: [`SnapshotTrailer`] (the number of keys, so truncation shows).
//!
//! Taking a snapshot pins the store's revision ([`Store::snapshot_writer`]): compaction
//! stays logical until [`Store::snapshot_finish`], so the versions the snapshot needs stay
//! in memory, and writes made meanwhile (newer revisions) are left out. The node writes
//! one chunk between rounds of work, so a snapshot never stalls writes for long, and
//! never holds more than one chunk in memory besides the store.
//!
//! The snapshot holds replicated state only: versions retained by the compact revision,
//! the revision counters, the leases (their keys are derived again from the versions on
//! decode) and the lease id sequence. Watchers and lease deadlines are node-local. The
//! encoding is canonical: the same logical state and chunk size give the same bytes.

use rkyv::rancor;

use crate::error::{Error, Result};
use crate::index::{Index, VersionFields};
use crate::lease::LeaseTable;
use crate::store::{Store, StoreConfig};
use crate::types::{KeyBytes, LeaseId};

const MAGIC: &[u8; 8] = b"CKVSNAP\x02";
const CHUNK_HEADER_BYTES: usize = 16;
const KIND_HEADER: u32 = 1;
const KIND_KEYS: u32 = 2;
const KIND_TRAILER: u32 = 3;
/// Payload bytes a key chunk aims for (a chunk always holds at least one key).
pub const SNAPSHOT_CHUNK_BYTES_DEFAULT: usize = 1 << 20;
/// The largest chunk payload a decoder accepts.
const CHUNK_BYTES_MAX: usize = 1 << 30;

/// First chunk: everything but the keys.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// Current revision.
    pub current: i64,
    /// Compact revision (-1 if never compacted).
    pub compact: i64,
    /// Lease id sequence (for ids chosen by the store).
    pub lease_id_sequence: u64,
    /// Every lease, in id order.
    pub leases: Vec<SnapshotLease>,
}

/// A chunk of keys.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq, Eq)]
pub struct SnapshotKeys {
    /// Keys in ascending order, each with its retained versions.
    pub keys: Vec<SnapshotKey>,
}

/// Last chunk.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq, Eq)]
pub struct SnapshotTrailer {
    /// Number of keys in all key chunks.
    pub key_count: u64,
}

/// One key and its retained versions, oldest first.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq, Eq)]
pub struct SnapshotKey {
    /// The key.
    pub key: Vec<u8>,
    /// Its versions.
    pub versions: Vec<SnapshotVersion>,
}

/// One version of a key (a tombstone when `version == 0`).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq, Eq)]
pub struct SnapshotVersion {
    /// Main revision.
    pub main: i64,
    /// Sub revision.
    pub sub: u32,
    /// Create revision.
    pub create: i64,
    /// Version (0 = tombstone).
    pub version: i64,
    /// Lease id.
    pub lease: i64,
    /// Value.
    pub value: Vec<u8>,
}

/// One lease.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq, Eq)]
pub struct SnapshotLease {
    /// Id.
    pub id: i64,
    /// TTL in seconds.
    pub ttl_seconds: i64,
}

/// A snapshot being taken: where the next chunk starts.
#[derive(Debug)]
pub struct SnapshotWriter {
    revision: i64,
    compact: i64,
    /// The header, encoded when the writer was made (leases change afterwards).
    header: Option<SnapshotHeader>,
    /// Resume after this key (None: from the first key).
    after: Option<Vec<u8>>,
    key_count: u64,
    finished: bool,
    /// The serializer's buffer, kept from chunk to chunk.
    scratch: rkyv::util::AlignedVec,
}

impl SnapshotWriter {
    /// The store revision the snapshot captures.
    pub fn revision(&self) -> crate::types::Revision {
        crate::types::Revision(self.revision)
    }
}

fn push_chunk(out: &mut Vec<u8>, kind: u32, payload: &[u8]) {
    out.reserve_exact(CHUNK_HEADER_BYTES + payload.len());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(payload);
}

/// Reads the chunk at `offset` into `aligned` (checking its length and checksum) and
/// returns its kind and offset; None at the end of the bytes.
fn next_chunk(
    bytes: &[u8],
    offset: &mut usize,
    aligned: &mut rkyv::util::AlignedVec<16>,
) -> Result<Option<(u32, usize)>> {
    let corrupt = |what: String| Error::CorruptSnapshot(what);
    if *offset == bytes.len() {
        return Ok(None);
    }
    if bytes.len() - *offset < CHUNK_HEADER_BYTES {
        return Err(corrupt(format!(
            "chunk header at offset {offset} is cut short"
        )));
    }
    let field = |at: usize| {
        u32::from_le_bytes(
            bytes[*offset + at..*offset + at + 4]
                .try_into()
                .expect("4 bytes"),
        )
    };
    let (kind, length, crc) = (field(0), field(4) as usize, field(8));
    let payload_at = *offset + CHUNK_HEADER_BYTES;
    if length > CHUNK_BYTES_MAX || length > bytes.len() - payload_at {
        let remain = bytes.len() - payload_at;
        return Err(corrupt(format!(
            "chunk at offset {offset} claims {length} bytes, {remain} remain"
        )));
    }
    let payload = &bytes[payload_at..payload_at + length];
    if crc32fast::hash(payload) != crc {
        return Err(corrupt(format!(
            "chunk at offset {offset}: checksum mismatch"
        )));
    }
    aligned.clear();
    aligned.extend_from_slice(payload);
    let at = *offset;
    *offset = payload_at + length;
    Ok(Some((kind, at)))
}

/// A key chunk as the writer builds it: the archived form is [`SnapshotKeys`]'s, but
/// keys and values are borrowed from the store instead of copied out first.
#[derive(rkyv::Archive, rkyv::Serialize)]
#[rkyv(as = ArchivedSnapshotKeys, serialize_bounds(__S: rkyv::ser::Writer + rkyv::ser::Allocator))]
struct KeysRef<'a> {
    #[rkyv(with = SliceAsVec, omit_bounds)]
    keys: &'a [KeyRef<'a>],
}

#[derive(rkyv::Archive, rkyv::Serialize)]
#[rkyv(as = ArchivedSnapshotKey, serialize_bounds(__S: rkyv::ser::Writer + rkyv::ser::Allocator))]
struct KeyRef<'a> {
    #[rkyv(with = SliceAsVec, omit_bounds)]
    key: &'a [u8],
    #[rkyv(with = SliceAsVec, omit_bounds)]
    versions: &'a [VersionRef<'a>],
}

#[derive(rkyv::Archive, rkyv::Serialize)]
#[rkyv(as = ArchivedSnapshotVersion, serialize_bounds(__S: rkyv::ser::Writer + rkyv::ser::Allocator))]
struct VersionRef<'a> {
    main: i64,
    sub: u32,
    create: i64,
    version: i64,
    lease: i64,
    #[rkyv(with = SliceAsVec, omit_bounds)]
    value: &'a [u8],
}

/// Archives a borrowed slice exactly as a `Vec` of the same items.
struct SliceAsVec;

impl<T: rkyv::Archive> rkyv::with::ArchiveWith<&[T]> for SliceAsVec {
    type Archived = rkyv::vec::ArchivedVec<T::Archived>;
    type Resolver = rkyv::vec::VecResolver;

    fn resolve_with(field: &&[T], resolver: Self::Resolver, out: rkyv::Place<Self::Archived>) {
        rkyv::vec::ArchivedVec::resolve_from_len(field.len(), resolver, out);
    }
}

impl<T, S> rkyv::with::SerializeWith<&[T], S> for SliceAsVec
where
    T: rkyv::Serialize<S>,
    S: rancor::Fallible + rkyv::ser::Allocator + rkyv::ser::Writer + ?Sized,
{
    fn serialize_with(
        field: &&[T],
        serializer: &mut S,
    ) -> std::result::Result<Self::Resolver, S::Error> {
        rkyv::vec::ArchivedVec::serialize_from_slice(field, serializer)
    }
}

/// Archives `value` into `buffer` (cleared first), reusing its allocation.
fn archive_into<T>(value: &T, mut buffer: rkyv::util::AlignedVec) -> rkyv::util::AlignedVec
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            rkyv::util::AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rancor::Error,
        >,
    >,
{
    buffer.clear();
    rkyv::api::high::to_bytes_in::<_, rancor::Error>(value, buffer)
        .expect("snapshot: encoding into memory cannot fail")
}

fn archive<T>(value: &T) -> rkyv::util::AlignedVec
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            rkyv::util::AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rancor::Error,
        >,
    >,
{
    archive_into(value, rkyv::util::AlignedVec::new())
}

impl Store {
    /// Starts a snapshot of the current state: pins the revision (see the module docs)
    /// and captures the leases. Feed it to [`Store::snapshot_next_chunk`] until that
    /// returns false, then hand it back to [`Store::snapshot_finish`].
    pub fn snapshot_writer(&mut self) -> SnapshotWriter {
        let revision = self.pin().0;
        let leases = self
            .leases
            .iter()
            .map(|(id, lease)| SnapshotLease {
                id: id.0,
                ttl_seconds: lease.ttl_seconds,
            })
            .collect();
        let header = SnapshotHeader {
            current: self.current,
            compact: self.compact,
            lease_id_sequence: self.leases.id_sequence(),
            leases,
        };
        SnapshotWriter {
            revision,
            compact: self.compact,
            header: Some(header),
            after: None,
            key_count: 0,
            finished: false,
            scratch: rkyv::util::AlignedVec::new(),
        }
    }

    /// Appends the next chunk (the magic and header first, then keys of about
    /// `chunk_bytes` each, then the trailer) to `out`. Returns false once the trailer has
    /// been written.
    pub fn snapshot_next_chunk(
        &self,
        writer: &mut SnapshotWriter,
        out: &mut Vec<u8>,
        chunk_bytes: usize,
    ) -> bool {
        if writer.finished {
            return false;
        }
        if let Some(header) = writer.header.take() {
            out.extend_from_slice(MAGIC);
            push_chunk(out, KIND_HEADER, &archive(&header));
            return true;
        }
        let start: &[u8] = writer.after.as_deref().unwrap_or(&[]);
        // Versions borrow the store's bytes; one flat list for the chunk, sliced per key.
        let mut versions = Vec::new();
        let mut spans: Vec<(&[u8], usize)> = Vec::new();
        let mut bytes = 0;
        for (key, record) in self.index.range(start, &crate::index::RangeEnd::Unbounded) {
            if writer.after.as_deref() == Some(key.as_bytes()) {
                continue;
            }
            if bytes >= chunk_bytes && !spans.is_empty() {
                break;
            }
            let first = versions.len();
            for v in record.versions() {
                if v.main <= writer.revision && record.retained(&v, writer.compact) {
                    bytes += v.value().len() + 48;
                    versions.push(VersionRef {
                        main: v.main,
                        sub: v.sub,
                        create: v.create,
                        version: v.version,
                        lease: v.lease,
                        value: v.value(),
                    });
                }
            }
            if versions.len() > first {
                bytes += key.as_bytes().len();
                spans.push((key.as_bytes(), first));
            }
        }
        if spans.is_empty() {
            push_chunk(
                out,
                KIND_TRAILER,
                &archive(&SnapshotTrailer {
                    key_count: writer.key_count,
                }),
            );
            writer.finished = true;
            return true;
        }
        let keys: Vec<KeyRef> = spans
            .iter()
            .enumerate()
            .map(|(i, &(key, first))| {
                let end = spans.get(i + 1).map_or(versions.len(), |next| next.1);
                KeyRef {
                    key,
                    versions: &versions[first..end],
                }
            })
            .collect();
        writer.key_count += keys.len() as u64;
        writer.after = keys.last().map(|k| k.key.to_vec());
        let scratch = std::mem::take(&mut writer.scratch);
        let payload = archive_into(&KeysRef { keys: &keys }, scratch);
        push_chunk(out, KIND_KEYS, &payload);
        writer.scratch = payload;
        true
    }

    /// Ends a snapshot: releases the pin and runs any compaction it deferred.
    pub fn snapshot_finish(&mut self, writer: SnapshotWriter) {
        self.unpin(crate::types::Revision(writer.revision));
    }

    /// Encodes the whole store at once (tests, tools and small stores; the node uses the
    /// chunked writer).
    pub fn encode_snapshot(&mut self) -> Vec<u8> {
        let mut writer = self.snapshot_writer();
        let mut out = Vec::new();
        while self.snapshot_next_chunk(&mut writer, &mut out, SNAPSHOT_CHUNK_BYTES_DEFAULT) {}
        self.snapshot_finish(writer);
        out
    }

    /// Validates and decodes a snapshot. Lease deadlines start at a full TTL from
    /// `now_ms`.
    pub fn decode_snapshot(bytes: &[u8], config: StoreConfig, now_ms: u64) -> Result<Store> {
        let corrupt = |what: String| Error::CorruptSnapshot(what);
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(corrupt("bad magic".to_string()));
        }
        let mut offset = MAGIC.len();
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        let archive_error = |at: usize, e: rancor::Error| {
            corrupt(format!("chunk at offset {at} does not validate: {e}"))
        };

        let Some((KIND_HEADER, at)) = next_chunk(bytes, &mut offset, &mut aligned)? else {
            return Err(corrupt("the first chunk is not the header".to_string()));
        };
        let header: SnapshotHeader = rkyv::from_bytes::<SnapshotHeader, rancor::Error>(&aligned)
            .map_err(|e| archive_error(at, e))?;
        let mut index = Index::default();
        let mut leases = LeaseTable::new(config.lease_ttl_seconds_min);
        leases.set_id_sequence(header.lease_id_sequence);
        for lease in &header.leases {
            leases.restore(
                LeaseId(lease.id),
                lease.ttl_seconds,
                header.lease_id_sequence,
                now_ms,
            );
        }
        let mut previous_key: Option<Vec<u8>> = None;
        let mut key_count = 0u64;
        loop {
            let Some((kind, at)) = next_chunk(bytes, &mut offset, &mut aligned)? else {
                return Err(corrupt("the snapshot ends without its trailer".to_string()));
            };
            match kind {
                KIND_KEYS => {
                    let chunk: SnapshotKeys =
                        rkyv::from_bytes::<SnapshotKeys, rancor::Error>(&aligned)
                            .map_err(|e| archive_error(at, e))?;
                    for entry in chunk.keys {
                        let name = String::from_utf8_lossy(&entry.key).into_owned();
                        let ordered = previous_key
                            .as_deref()
                            .is_none_or(|p| KeyBytes::new(p) < KeyBytes::new(&entry.key));
                        if !ordered || entry.versions.is_empty() {
                            return Err(corrupt(format!(
                                "key {name:?} out of order or without versions"
                            )));
                        }
                        if entry.key.is_empty() {
                            // No request can write one (etcd's "key is not provided").
                            return Err(corrupt("an empty key".to_string()));
                        }
                        let mut last_main = i64::MIN;
                        for v in &entry.versions {
                            if v.main <= last_main || v.main > header.current {
                                return Err(corrupt(format!(
                                    "key {name:?}: bad revision {}",
                                    v.main
                                )));
                            }
                            last_main = v.main;
                        }
                        let latest = entry.versions.last().expect("checked non-empty");
                        if latest.version != 0 && latest.lease != 0 {
                            if !leases.contains(LeaseId(latest.lease)) {
                                return Err(corrupt(format!(
                                    "key {name:?} attached to missing lease {:x}",
                                    latest.lease
                                )));
                            }
                            leases.attach(LeaseId(latest.lease), &entry.key);
                        }
                        for v in entry.versions {
                            let fields = VersionFields {
                                main: v.main,
                                sub: v.sub,
                                create: v.create,
                                version: v.version,
                                lease: v.lease,
                            };
                            index.push(&entry.key, fields, &v.value);
                        }
                        key_count += 1;
                        previous_key = Some(entry.key);
                    }
                }
                KIND_TRAILER => {
                    let trailer: SnapshotTrailer =
                        rkyv::from_bytes::<SnapshotTrailer, rancor::Error>(&aligned)
                            .map_err(|e| archive_error(at, e))?;
                    if trailer.key_count != key_count {
                        return Err(corrupt(format!(
                            "trailer counts {} keys, chunks hold {key_count}",
                            trailer.key_count
                        )));
                    }
                    if offset != bytes.len() {
                        return Err(corrupt(format!(
                            "{} bytes follow the trailer",
                            bytes.len() - offset
                        )));
                    }
                    break;
                }
                other => {
                    return Err(corrupt(format!(
                        "chunk at offset {at} has unknown kind {other}"
                    )))
                }
            }
        }
        Ok(Store::from_parts(
            config,
            index,
            leases,
            header.current,
            header.compact,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::store::StoreConfig;

    /// A snapshot of one key, assembled chunk by chunk as the writer would.
    fn snapshot_of(key: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        let header = SnapshotHeader {
            current: 2,
            compact: -1,
            lease_id_sequence: 0,
            leases: Vec::new(),
        };
        push_chunk(&mut out, KIND_HEADER, &archive(&header));
        let version = SnapshotVersion {
            main: 2,
            sub: 0,
            create: 2,
            version: 1,
            lease: 0,
            value: b"v".to_vec(),
        };
        let keys = SnapshotKeys {
            keys: vec![SnapshotKey {
                key: key.to_vec(),
                versions: vec![version],
            }],
        };
        push_chunk(&mut out, KIND_KEYS, &archive(&keys));
        push_chunk(
            &mut out,
            KIND_TRAILER,
            &archive(&SnapshotTrailer { key_count: 1 }),
        );
        out
    }

    #[test]
    fn a_snapshot_with_an_empty_key_is_corrupt() {
        // No request can write an empty key, so a snapshot that holds one was not
        // written by a store.
        let decode = |bytes: &[u8]| Store::decode_snapshot(bytes, StoreConfig::default(), 0);
        let store = decode(&snapshot_of(b"k")).expect("a well-formed snapshot decodes");
        assert_eq!(store.revision(), crate::types::Revision(2));
        match decode(&snapshot_of(b"")) {
            Err(Error::CorruptSnapshot(why)) => assert!(why.contains("empty key"), "{why}"),
            other => panic!("expected corruption, got {:?}", other.map(|s| s.revision())),
        }
    }

    #[test]
    fn borrowed_key_chunks_archive_exactly_as_owned_ones() {
        // The writer archives borrowed keys and values; the decoder reads the owned
        // types' archive. The bytes must be the same, for keys and values of every
        // length, tombstones and several versions per key.
        let owned_version = |main: i64, value: Vec<u8>| SnapshotVersion {
            main,
            sub: main as u32 % 3,
            create: main - 1,
            version: if value.is_empty() { 0 } else { main },
            lease: main * 7,
            value,
        };
        let values: Vec<Vec<u8>> = (0..40).map(|n| vec![n as u8; n * n]).collect();
        let keys: Vec<Vec<u8>> = (1..20).map(|n| vec![b'k'; n]).collect();
        let owned = SnapshotKeys {
            keys: keys
                .iter()
                .enumerate()
                .map(|(k, key)| SnapshotKey {
                    key: key.clone(),
                    versions: (0..=k % 4)
                        .map(|v| owned_version((k * 10 + v) as i64, values[(k + v) % 40].clone()))
                        .collect(),
                })
                .collect(),
        };
        let versions: Vec<Vec<VersionRef>> = owned
            .keys
            .iter()
            .map(|key| {
                key.versions
                    .iter()
                    .map(|v| VersionRef {
                        main: v.main,
                        sub: v.sub,
                        create: v.create,
                        version: v.version,
                        lease: v.lease,
                        value: &v.value,
                    })
                    .collect()
            })
            .collect();
        let borrowed: Vec<KeyRef> = owned
            .keys
            .iter()
            .zip(&versions)
            .map(|(key, versions)| KeyRef {
                key: &key.key,
                versions,
            })
            .collect();
        let scratch = archive_into(&KeysRef { keys: &[] }, rkyv::util::AlignedVec::new());
        let encoded = archive_into(&KeysRef { keys: &borrowed }, scratch);
        assert_eq!(encoded.as_slice(), archive(&owned).as_slice());
    }
}
