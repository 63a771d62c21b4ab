//! Membership changes: one server at a time, taking effect when the change entry is
//! handed to the application (etcd's rule), never two in flight.
//!
//! Why single-server changes rather than joint consensus: etcd's membership API (`member
//! add/remove/promote`) changes one member per request, and any two majorities of
//! configurations that differ by one voter intersect (thesis 4.1), so one-at-a-time is
//! safe without the joint phase. Three rules close the known gaps:
//! 1. the leader accepts a change only after the previous one is applied
//!    (`pending_conf_index`), so configurations in the cluster differ by at most one step;
//! 2. a new leader accepts a change only after committing an entry of its own term (its
//!    no-op), which fixes the single-server bug Ongaro described in 2015;
//! 3. a member with a committed but not yet applied change does not campaign, so it
//!    never counts votes with a configuration older than one it already knows committed.

use crate::node::{RawNode, Role};
use crate::progress::Progress;
use crate::types::{ConfChange, ConfChangeKind, Entry};

impl RawNode {
    /// Applies the change in a committed entry being handed to the application.
    pub(crate) fn apply_conf_change_entry(&mut self, entry: &Entry) {
        let change = ConfChange::decode(&entry.data)
            .expect("conf-change entries are encoded by propose_conf_change");
        if !self.conf.apply(&change) {
            // Invalid against the current membership: a no-op, as in etcd.
            return;
        }
        self.conf_history.push((entry.index, self.conf.clone()));
        if self.role != Role::Leader {
            return;
        }
        let member = change.member;
        let tick = self.tick_count;
        let next = self.log.last_index().next();
        match change.kind {
            ConfChangeKind::AddVoter | ConfChangeKind::AddLearner => {
                // A promoted learner keeps its progress; a new member starts probing.
                if let std::collections::btree_map::Entry::Vacant(slot) =
                    self.progress.entry(member)
                {
                    slot.insert(Progress::new(next, tick));
                    self.send_append(member, true);
                }
            }
            ConfChangeKind::RemoveMember => {
                if member == self.id {
                    // A removed leader stops leading; the rest elect a new one.
                    let term = self.term;
                    self.become_follower(term, None);
                    return;
                }
                self.progress.remove(&member);
                if self.transfer_target == Some(member) {
                    self.transfer_target = None;
                }
            }
        }
        // The quorum changed: commits and read rounds may complete now.
        if self.maybe_commit() {
            self.needs_broadcast = true;
        }
        self.maybe_finish_read_round();
    }
}
