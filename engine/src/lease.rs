//! The leases table: grants, attached keys, and expiry computed from times the caller
//! passes in.
//!
//! Which leases exist, their TTLs and their keys are replicated state (every node applies
//! the same grants, revokes and puts in the same order). Expiry deadlines are not: each
//! node keeps its own, in milliseconds of the caller's monotonic clock, and only the
//! leader acts on them (by proposing revokes). A follower's deadlines are "never"
//! ([`LeaseTable::demote`]); a new leader restarts every deadline at a full TTL plus an
//! extension ([`LeaseTable::promote`]), as etcd does, so that a leader change can never
//! expire a lease early.
//!
//! Never reads a clock.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Error, Result};
use crate::types::{Key, LeaseId};

/// etcd's `MaxLeaseTTL`: the largest TTL a grant may ask for, in seconds.
pub const LEASE_TTL_SECONDS_MAX: i64 = 9_000_000_000;

/// etcd's minimum TTL with default timings: ceil(1.5 x 1000 ms election timeout) = 2 s.
/// The node derives the real value from `--election-timeout`.
pub const LEASE_TTL_SECONDS_MIN_DEFAULT: i64 = 2;

/// One lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Lease {
    /// TTL in seconds, after the minimum was applied.
    pub ttl_seconds: i64,
    /// Keys attached to the lease, in key order (revocation deletes them in this order).
    pub keys: BTreeSet<Key>,
    /// When this node considers the lease expired, in caller milliseconds; None = never
    /// (this node is not the leader).
    pub deadline_ms: Option<u64>,
}

/// What a time-to-live query returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseTimeToLive {
    /// The lease.
    pub id: LeaseId,
    /// Seconds left (truncated), or the granted TTL when this node is not tracking expiry.
    pub ttl_seconds: i64,
    /// The TTL the lease was granted with.
    pub granted_ttl_seconds: i64,
    /// The attached keys, when asked for.
    pub keys: Vec<Vec<u8>>,
}

/// The leases table.
#[derive(Clone, Debug)]
pub(crate) struct LeaseTable {
    leases: BTreeMap<LeaseId, Lease>,
    /// Whether deadlines are tracked (this node is the leader).
    primary: bool,
    /// Minimum TTL applied to grants, seconds.
    ttl_seconds_min: i64,
    /// Sequence used to choose ids for grants that do not name one; replicated, so that
    /// every node chooses the same id.
    id_sequence: u64,
}

impl LeaseTable {
    pub fn new(ttl_seconds_min: i64) -> LeaseTable {
        LeaseTable {
            leases: BTreeMap::new(),
            primary: true,
            ttl_seconds_min,
            id_sequence: 0,
        }
    }

    pub fn contains(&self, id: LeaseId) -> bool {
        self.leases.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn ids(&self) -> impl Iterator<Item = LeaseId> + '_ {
        self.leases.keys().copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = (LeaseId, &Lease)> {
        self.leases.iter().map(|(id, lease)| (*id, lease))
    }

    pub fn id_sequence(&self) -> u64 {
        self.id_sequence
    }

    /// Chooses a fresh, positive lease id deterministically (same on every node).
    fn choose_id(&mut self) -> LeaseId {
        loop {
            self.id_sequence += 1;
            // splitmix64 spreads sequential numbers over the id space, as etcd's ids are.
            let mut z = self.id_sequence.wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let id = LeaseId((z & (i64::MAX as u64)) as i64);
            if !id.is_none() && !self.leases.contains_key(&id) {
                return id;
            }
        }
    }

    /// Grants a lease; `id` NONE chooses one. Returns the id and the effective TTL.
    pub fn grant(&mut self, id: LeaseId, ttl_seconds: i64, now_ms: u64) -> Result<(LeaseId, i64)> {
        if ttl_seconds > LEASE_TTL_SECONDS_MAX {
            return Err(Error::LeaseTtlTooLarge);
        }
        let id = if id.is_none() { self.choose_id() } else { id };
        if self.leases.contains_key(&id) {
            return Err(Error::LeaseExists);
        }
        let ttl_seconds = ttl_seconds.max(self.ttl_seconds_min);
        self.insert(id, ttl_seconds, now_ms);
        Ok((id, ttl_seconds))
    }

    /// Restores a lease from a snapshot.
    pub fn restore(&mut self, id: LeaseId, ttl_seconds: i64, id_sequence: u64, now_ms: u64) {
        self.id_sequence = self.id_sequence.max(id_sequence);
        self.insert(id, ttl_seconds, now_ms);
    }

    /// Adds a lease without keys; a leader starts its deadline at a full TTL from now.
    fn insert(&mut self, id: LeaseId, ttl_seconds: i64, now_ms: u64) {
        let deadline_ms = self.primary.then(|| deadline(now_ms, ttl_seconds));
        let lease = Lease {
            ttl_seconds,
            keys: BTreeSet::new(),
            deadline_ms,
        };
        self.leases.insert(id, lease);
    }

    pub fn set_id_sequence(&mut self, id_sequence: u64) {
        self.id_sequence = id_sequence;
    }

    /// Removes a lease, returning its keys (the caller deletes them).
    pub fn remove(&mut self, id: LeaseId) -> Result<BTreeSet<Key>> {
        self.leases
            .remove(&id)
            .map(|lease| lease.keys)
            .ok_or(Error::LeaseNotFound)
    }

    pub fn attach(&mut self, id: LeaseId, key: &[u8]) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.keys.insert(Key::new(key));
        }
    }

    pub fn detach(&mut self, id: LeaseId, key: &[u8]) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.keys.remove(crate::types::KeyBytes::new(key));
        }
    }

    /// Keep-alive: restarts the deadline at a full TTL. Returns the TTL.
    pub fn renew(&mut self, id: LeaseId, now_ms: u64) -> Result<i64> {
        let primary = self.primary;
        let lease = self.leases.get_mut(&id).ok_or(Error::LeaseNotFound)?;
        if primary {
            lease.deadline_ms = Some(deadline(now_ms, lease.ttl_seconds));
        }
        Ok(lease.ttl_seconds)
    }

    pub fn time_to_live(
        &self,
        id: LeaseId,
        now_ms: u64,
        with_keys: bool,
    ) -> Result<LeaseTimeToLive> {
        let lease = self.leases.get(&id).ok_or(Error::LeaseNotFound)?;
        let ttl_seconds = match lease.deadline_ms {
            Some(deadline_ms) => (deadline_ms.saturating_sub(now_ms) / 1000) as i64,
            None => lease.ttl_seconds,
        };
        let keys = if with_keys {
            lease
                .keys
                .iter()
                .map(|key| key.as_bytes().to_vec())
                .collect()
        } else {
            Vec::new()
        };
        Ok(LeaseTimeToLive {
            id,
            ttl_seconds,
            granted_ttl_seconds: lease.ttl_seconds,
            keys,
        })
    }

    /// Leases whose deadline is at or before `now_ms`, in deadline order, at most `limit`.
    pub fn expired(&self, now_ms: u64, limit: usize) -> Vec<LeaseId> {
        let mut expired: Vec<(u64, LeaseId)> = self
            .leases
            .iter()
            .filter_map(|(id, lease)| match lease.deadline_ms {
                Some(deadline_ms) if deadline_ms <= now_ms => Some((deadline_ms, *id)),
                _ => None,
            })
            .collect();
        expired.sort_unstable();
        expired.into_iter().take(limit).map(|(_, id)| id).collect()
    }

    /// This node became leader: every lease gets a full TTL plus `extend_ms` from now.
    pub fn promote(&mut self, now_ms: u64, extend_ms: u64) {
        self.primary = true;
        for lease in self.leases.values_mut() {
            lease.deadline_ms = Some(deadline(now_ms, lease.ttl_seconds).saturating_add(extend_ms));
        }
    }

    /// This node stopped being leader: it no longer tracks deadlines.
    pub fn demote(&mut self) {
        self.primary = false;
        for lease in self.leases.values_mut() {
            lease.deadline_ms = None;
        }
    }
}

fn deadline(now_ms: u64, ttl_seconds: i64) -> u64 {
    now_ms.saturating_add((ttl_seconds.max(0) as u64).saturating_mul(1000))
}
