//! Snapshot of a whole store, encoded with rkyv, and its validated decoding.
//!
//! Bytes: `magic "CKVSNAP\x01"` (8) | `payload_len u64 LE` | `crc32 u32 LE` of the payload |
//! 4 zero bytes | payload (an rkyv archive of [`SnapshotData`], checked with bytecheck
//! before use). The payload starts 24 bytes in, so a page-aligned mapping of the file is
//! 8-byte aligned for rkyv.
//!
//! The snapshot holds replicated state only: versions retained by the compact revision,
//! the revision counters, and the leases with their keys derived again from the versions
//! on decode. Watchers and lease deadlines are node-local and are not included. The
//! encoding is canonical: the same logical state gives the same bytes on every node.

use rkyv::rancor;

use crate::error::{Error, Result};
use crate::index::{Index, VersionRec};
use crate::lease::LeaseTable;
use crate::store::{Store, StoreConfig};
use crate::types::LeaseId;

const MAGIC: &[u8; 8] = b"CKVSNAP\x01";
const HEADER_BYTES: usize = 24;

/// The archived form of a store.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq, Eq)]
pub struct SnapshotData {
    /// Current revision.
    pub current: i64,
    /// Compact revision (-1 if never compacted).
    pub compact: i64,
    /// Lease id sequence (for ids chosen by the store).
    pub lease_id_sequence: u64,
    /// Every key with retained versions, in key order.
    pub keys: Vec<SnapshotKey>,
    /// Every lease, in id order.
    pub leases: Vec<SnapshotLease>,
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

impl Store {
    /// Encodes the whole store (see the module docs for the byte layout).
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let compact = self.compact;
        let keys = self
            .index
            .iter()
            .filter_map(|(key, record)| {
                let versions: Vec<SnapshotVersion> = record
                    .versions()
                    .filter(|v| record.retained(v, compact))
                    .map(|v| SnapshotVersion {
                        main: v.main,
                        sub: v.sub,
                        create: v.create,
                        version: v.version,
                        lease: v.lease,
                        value: v.value.to_vec(),
                    })
                    .collect();
                (!versions.is_empty()).then(|| SnapshotKey {
                    key: key.as_bytes().to_vec(),
                    versions,
                })
            })
            .collect();
        let leases = self
            .leases
            .iter()
            .map(|(id, lease)| SnapshotLease {
                id: id.0,
                ttl_seconds: lease.ttl_seconds,
            })
            .collect();
        let data = SnapshotData {
            current: self.current,
            compact,
            lease_id_sequence: self.leases.id_sequence(),
            keys,
            leases,
        };
        let payload = rkyv::to_bytes::<rancor::Error>(&data)
            .expect("snapshot: encoding into memory cannot fail");
        let mut bytes = Vec::with_capacity(HEADER_BYTES + payload.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(&payload);
        bytes
    }

    /// Validates and decodes a snapshot made by [`Store::encode_snapshot`]. Lease
    /// deadlines start at a full TTL from `now_ms`.
    pub fn decode_snapshot(bytes: &[u8], config: StoreConfig, now_ms: u64) -> Result<Store> {
        let corrupt = |what: &str| Error::CorruptSnapshot(what.to_string());
        if bytes.len() < HEADER_BYTES {
            return Err(corrupt("shorter than its header"));
        }
        if &bytes[..8] != MAGIC {
            return Err(corrupt("bad magic"));
        }
        let payload_len = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        if payload_len != (bytes.len() - HEADER_BYTES) as u64 {
            return Err(corrupt(&format!(
                "payload length {payload_len} but {} bytes follow the header",
                bytes.len() - HEADER_BYTES
            )));
        }
        let crc = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes"));
        let payload = &bytes[HEADER_BYTES..];
        if crc32fast::hash(payload) != crc {
            return Err(corrupt("payload checksum mismatch"));
        }
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(payload.len());
        aligned.extend_from_slice(payload);
        let data: SnapshotData = rkyv::from_bytes::<SnapshotData, rancor::Error>(&aligned)
            .map_err(|e| corrupt(&format!("archive does not validate: {e}")))?;
        Store::from_snapshot_data(data, config, now_ms)
    }

    fn from_snapshot_data(data: SnapshotData, config: StoreConfig, now_ms: u64) -> Result<Store> {
        let corrupt = |what: String| Error::CorruptSnapshot(what);
        let mut index = Index::default();
        let mut leases = LeaseTable::new(config.lease_ttl_seconds_min);
        leases.set_id_sequence(data.lease_id_sequence);
        for lease in &data.leases {
            leases.restore(
                LeaseId(lease.id),
                lease.ttl_seconds,
                data.lease_id_sequence,
                now_ms,
            );
        }
        let mut previous_key: Option<&[u8]> = None;
        for entry in &data.keys {
            if previous_key.is_some_and(|p| p >= entry.key.as_slice()) || entry.versions.is_empty()
            {
                return Err(corrupt(format!(
                    "key {:?} out of order or without versions",
                    String::from_utf8_lossy(&entry.key)
                )));
            }
            previous_key = Some(&entry.key);
            let mut last_main = i64::MIN;
            for v in &entry.versions {
                if v.main <= last_main || v.main > data.current {
                    return Err(corrupt(format!(
                        "key {:?}: bad revision {}",
                        String::from_utf8_lossy(&entry.key),
                        v.main
                    )));
                }
                last_main = v.main;
                index.push(
                    &entry.key,
                    VersionRec {
                        main: v.main,
                        sub: v.sub,
                        create: v.create,
                        version: v.version,
                        lease: v.lease,
                        value: v.value.as_slice().into(),
                    },
                );
            }
            let latest = entry.versions.last().expect("checked non-empty");
            if latest.version != 0 && latest.lease != 0 {
                if !leases.contains(LeaseId(latest.lease)) {
                    return Err(corrupt(format!(
                        "key {:?} attached to missing lease {:x}",
                        String::from_utf8_lossy(&entry.key),
                        latest.lease
                    )));
                }
                leases.attach(LeaseId(latest.lease), &entry.key);
            }
        }
        Ok(Store::from_parts(
            config,
            index,
            leases,
            data.current,
            data.compact,
        ))
    }
}
