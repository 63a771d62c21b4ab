//! The vocabulary of Raft: terms, indexes, member ids, entries, hard state, membership.
//!
//! Every integer that means something has its own newtype so that a term can never be
//! passed where an index is expected. All of them are plain `u64` inside and `Copy`.

use std::fmt;

macro_rules! newtype_u64 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u64);

        impl $name {
            /// The zero value (no term, the index before the first entry, no member).
            pub const ZERO: $name = $name(0);

            /// The raw integer.
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

newtype_u64!(
    /// A Raft term (thesis 3.3). Term 0 is "before any election".
    Term
);
newtype_u64!(
    /// The position of an entry in the log; the first entry has index 1, index 0 is the
    /// empty prefix.
    LogIndex
);
newtype_u64!(
    /// The id of a cluster member, as etcd's member ID. 0 is never a valid member.
    MemberId
);

impl LogIndex {
    /// The next index.
    pub const fn next(self) -> LogIndex {
        LogIndex(self.0 + 1)
    }

    /// The previous index; panics at 0 because there is nothing before the empty prefix.
    pub fn prev(self) -> LogIndex {
        assert!(self.0 > 0, "LogIndex::prev of index 0");
        LogIndex(self.0 - 1)
    }
}

/// What an entry's `data` means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Application data, opaque to Raft. An empty normal entry is the no-op a new leader
    /// appends (thesis 6.4) and must be skipped by the application.
    Normal,
    /// A membership change: `data` is a [`ConfChange`] encoded with [`ConfChange::encode`].
    ConfChange,
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    pub term: Term,
    pub index: LogIndex,
    pub kind: EntryKind,
    pub data: Vec<u8>,
}

impl Entry {
    /// The bytes this entry counts for in flow-control and size limits.
    pub fn size_bytes(&self) -> u64 {
        // A fixed header estimate plus the payload; exact framing is the WAL's business.
        24 + self.data.len() as u64
    }
}

/// The state that must be durable before a node answers anything that depends on it
/// (thesis 3.8, Figure 3.1 "persistent state").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct HardState {
    pub term: Term,
    /// The member voted for in `term`, if any.
    pub vote: Option<MemberId>,
    /// The commit index known when this was written. Not needed for safety, but lets a
    /// restarted node apply committed entries without waiting for a leader.
    pub commit: LogIndex,
}

/// The membership of the group: who votes and who only receives the log.
#[derive(Clone, Debug, PartialEq, Eq, Default, Hash)]
pub struct ConfState {
    /// Sorted, no duplicates.
    pub voters: Vec<MemberId>,
    /// Sorted, no duplicates, disjoint from `voters`.
    pub learners: Vec<MemberId>,
}

impl ConfState {
    /// Whether `id` is a voter or a learner.
    pub fn contains(&self, id: MemberId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    /// Whether `id` votes.
    pub fn is_voter(&self, id: MemberId) -> bool {
        self.voters.binary_search(&id).is_ok()
    }

    /// Whether `id` is a non-voting learner.
    pub fn is_learner(&self, id: MemberId) -> bool {
        self.learners.binary_search(&id).is_ok()
    }

    /// How many voters make a majority.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// Applies one change. Returns false (and changes nothing) if the change is invalid
    /// for this configuration; see [`ConfState::validate`].
    pub fn apply(&mut self, change: &ConfChange) -> bool {
        if self.validate(change).is_err() {
            return false;
        }
        let id = change.member;
        match change.kind {
            ConfChangeKind::AddVoter => {
                self.learners.retain(|&l| l != id);
                insert_sorted(&mut self.voters, id);
            }
            ConfChangeKind::AddLearner => insert_sorted(&mut self.learners, id),
            ConfChangeKind::RemoveMember => {
                self.voters.retain(|&v| v != id);
                self.learners.retain(|&l| l != id);
            }
        }
        self.assert_well_formed();
        true
    }

    /// Checks a change against etcd's rules: a voter cannot be added twice, a learner
    /// cannot be added over an existing member (demotion is not supported), only members
    /// can be removed, and the last voter can never be removed.
    pub fn validate(&self, change: &ConfChange) -> Result<(), &'static str> {
        let id = change.member;
        if id == MemberId::ZERO {
            return Err("member id 0 is reserved");
        }
        match change.kind {
            ConfChangeKind::AddVoter if self.is_voter(id) => Err("member is already a voter"),
            ConfChangeKind::AddLearner if self.contains(id) => Err("member already exists"),
            ConfChangeKind::RemoveMember if !self.contains(id) => Err("member not found"),
            ConfChangeKind::RemoveMember if self.voters == [id] => {
                Err("cannot remove the last voter")
            }
            _ => Ok(()),
        }
    }

    /// Asserts the sortedness and disjointness the rest of the crate relies on.
    pub fn assert_well_formed(&self) {
        assert!(
            self.voters.windows(2).all(|w| w[0] < w[1]),
            "voters unsorted"
        );
        assert!(
            self.learners.windows(2).all(|w| w[0] < w[1]),
            "learners unsorted"
        );
        assert!(
            self.learners.iter().all(|l| !self.is_voter(*l)),
            "a member is both voter and learner"
        );
    }
}

fn insert_sorted(ids: &mut Vec<MemberId>, id: MemberId) {
    if let Err(at) = ids.binary_search(&id) {
        ids.insert(at, id);
    }
}

/// The kind of one membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConfChangeKind {
    /// Add a voter, or promote an existing learner to voter (etcd's `member promote`).
    AddVoter,
    /// Add a non-voting learner (etcd's `member add --learner`).
    AddLearner,
    /// Remove a voter or a learner.
    RemoveMember,
}

/// One membership change, carried in an [`EntryKind::ConfChange`] entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConfChange {
    pub kind: ConfChangeKind,
    pub member: MemberId,
    /// Opaque to Raft; etcd puts the member's peer URLs here.
    pub context: Vec<u8>,
}

impl ConfChange {
    /// Encodes as `[kind: u8][member: u64 little-endian][context bytes]`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.context.len());
        out.push(match self.kind {
            ConfChangeKind::AddVoter => 1,
            ConfChangeKind::AddLearner => 2,
            ConfChangeKind::RemoveMember => 3,
        });
        out.extend_from_slice(&self.member.0.to_le_bytes());
        out.extend_from_slice(&self.context);
        out
    }

    /// Decodes what [`ConfChange::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<ConfChange, crate::Error> {
        if bytes.len() < 9 {
            return Err(crate::Error::CorruptConfChange("shorter than 9 bytes"));
        }
        let kind = match bytes[0] {
            1 => ConfChangeKind::AddVoter,
            2 => ConfChangeKind::AddLearner,
            3 => ConfChangeKind::RemoveMember,
            _ => return Err(crate::Error::CorruptConfChange("unknown kind byte")),
        };
        let member = MemberId(u64::from_le_bytes(
            bytes[1..9].try_into().expect("slice of length 8"),
        ));
        Ok(ConfChange {
            kind,
            member,
            context: bytes[9..].to_vec(),
        })
    }
}

/// Where a snapshot sits in the log and the membership as of that point.
#[derive(Clone, Debug, PartialEq, Eq, Default, Hash)]
pub struct SnapshotMeta {
    pub index: LogIndex,
    pub term: Term,
    pub conf_state: ConfState,
}

/// A snapshot: metadata plus the application's opaque state bytes.
#[derive(Clone, Debug, PartialEq, Eq, Default, Hash)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub data: Vec<u8>,
}
