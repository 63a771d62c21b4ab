//! Membership on the shard: etcd's MemberAdd, MemberRemove, MemberUpdate and
//! MemberPromote, the replicated member table they change, the peer transport that
//! follows the table, and how a member joining a running cluster learns its ids.
//!
//! A change travels in two steps, so that any member can take the request and every
//! member decides alike:
//!
//! 1. The request is proposed as an ordinary write (a follower's proposal is forwarded
//!    to the leader). When it is applied, every member checks it against the member
//!    table, which every member changes in log order, with etcd's rules and errors
//!    (URLs in use, unknown or removed ids, too many learners, not enough started
//!    members). An update only changes peer URLs and takes effect here.
//! 2. For add, remove and promote, the leader then proposes the Raft configuration
//!    change (one at a time, queued), whose context names the member that took the
//!    request; that member answers its client when the change is applied. A promotion
//!    of a learner that has not caught up (90% of the leader's log, as etcd) is refused
//!    by the leader through the log the same way.
//!
//! A removed member stops. Ids of removed members never come back: an added member's id
//! hashes the time of the request, as etcd's do.

use std::time::{SystemTime, UNIX_EPOCH};

use corekv_raft::{ConfChange, ConfChangeKind};

use std::collections::BTreeMap;

use super::*;
use crate::protocol::{MemberChange, MemberChangeKind};
use crate::server::config::parse_addresses;
use crate::server::entry::{
    decode_conf_context, decode_member_table, encode_conf_context, encode_member_table, ConfContext,
};
use crate::server::members::{added_member_id, initial_member_info, MemberInfo};
use crate::server::peer::fetch_directory;

/// gRPC's "invalid argument".
const CODE_INVALID_ARGUMENT: u32 = 3;
/// gRPC's "not found".
const CODE_NOT_FOUND: u32 = 5;
const MEMBER_EXISTS: &str = "etcdserver: member ID already exist";
const PEER_URL_EXISTS: &str = "etcdserver: Peer URLs already exists";
const NOT_ENOUGH_STARTED: &str =
    "etcdserver: re-configuration failed due to not enough started members";
const BAD_URLS: &str = "etcdserver: given member URLs are invalid";
const MEMBER_NOT_FOUND: &str = "etcdserver: member not found";
const MEMBER_NOT_LEARNER: &str = "etcdserver: can only promote a learner member";
const LEARNER_NOT_READY: &str =
    "etcdserver: can only promote a learner member which is in sync with leader";
const TOO_MANY_LEARNERS: &str = "etcdserver: too many learner members in cluster";
/// Learners a cluster may have at once (etcd 3.4's limit).
const LEARNERS_MAX: usize = 1;
/// A learner may be promoted once its log holds this share of the leader's.
const LEARNER_READY_SHARE: f64 = 0.9;
/// How long a joining member keeps asking its peers for the member list.
const DISCOVERY_PATIENCE: Duration = Duration::from_secs(10);

impl Shard {
    /// Takes a membership request from a client: an added member gets its id here, URLs
    /// are checked, and the request waits for the next proposal like any write.
    pub(super) fn accept_member_change(&mut self, mut request: ClientRequest) {
        let client = Client::of(&request);
        let Request::MemberChange(change) = &mut request.request else {
            unreachable!("shard: only membership changes come here");
        };
        if matches!(
            change.kind,
            MemberChangeKind::Add | MemberChangeKind::Update
        ) && !valid_peer_urls(&change.peer_urls)
        {
            self.reply_error(client, CODE_INVALID_ARGUMENT, BAD_URLS);
            return;
        }
        if change.kind == MemberChangeKind::Add {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_nanos() as u64);
            change.id = added_member_id(&change.peer_urls, &self.config.cluster_token, nanos);
        }
        if let Some(reason) = &self.poisoned {
            let message = format!("corekv: shard stopped taking writes: {reason}");
            self.reply_error(client, CODE_UNAVAILABLE, &message);
            return;
        }
        self.writes.push(request);
    }

    /// Step 1 of a change, on every member: checks it against the member table. `None`
    /// when the answer waits for the configuration change (step 2).
    pub(super) fn apply_member_change(
        &mut self,
        change: &MemberChange,
        origin: u64,
        proposal_id: u64,
    ) -> Option<Response> {
        let refuse = |code: u32, message: &str| {
            Some(Response::Error {
                code,
                message: message.to_string(),
            })
        };
        let table = &self.member_table;
        let existing = table.members.get(&change.id);
        let raft_kind = match change.kind {
            MemberChangeKind::Add => {
                if table.removed.contains(&change.id) {
                    return refuse(CODE_NOT_FOUND, MEMBER_NOT_FOUND);
                }
                if existing.is_some() {
                    return refuse(CODE_FAILED_PRECONDITION, MEMBER_EXISTS);
                }
                if table.peer_url_owner(&change.peer_urls, None).is_some() {
                    return refuse(CODE_FAILED_PRECONDITION, PEER_URL_EXISTS);
                }
                if change.is_learner {
                    if table.members.values().filter(|m| m.is_learner).count() >= LEARNERS_MAX {
                        return refuse(CODE_FAILED_PRECONDITION, TOO_MANY_LEARNERS);
                    }
                    ConfChangeKind::AddLearner
                } else {
                    if !self.ready_to_add_voter() {
                        return refuse(CODE_FAILED_PRECONDITION, NOT_ENOUGH_STARTED);
                    }
                    ConfChangeKind::AddVoter
                }
            }
            MemberChangeKind::Remove => {
                let Some(member) = existing else {
                    return refuse(CODE_NOT_FOUND, MEMBER_NOT_FOUND);
                };
                if !member.is_learner && !self.ready_to_remove_voter(change.id) {
                    return refuse(CODE_FAILED_PRECONDITION, NOT_ENOUGH_STARTED);
                }
                ConfChangeKind::RemoveMember
            }
            MemberChangeKind::Promote => {
                let Some(member) = existing else {
                    return refuse(CODE_NOT_FOUND, MEMBER_NOT_FOUND);
                };
                if !member.is_learner {
                    return refuse(CODE_FAILED_PRECONDITION, MEMBER_NOT_LEARNER);
                }
                if !self.ready_to_promote() {
                    return refuse(CODE_FAILED_PRECONDITION, NOT_ENOUGH_STARTED);
                }
                ConfChangeKind::AddVoter
            }
            MemberChangeKind::Update => {
                if existing.is_none() {
                    return refuse(CODE_NOT_FOUND, MEMBER_NOT_FOUND);
                }
                if table
                    .peer_url_owner(&change.peer_urls, Some(change.id))
                    .is_some()
                {
                    return refuse(CODE_FAILED_PRECONDITION, PEER_URL_EXISTS);
                }
                if let Some(member) = self.member_table.members.get_mut(&change.id) {
                    member.peer_urls = change.peer_urls.clone();
                }
                self.peers_dirty = true;
                return Some(Response::MemberList(self.header(), self.members()));
            }
        };
        if self.raft.role() == Role::Leader {
            if change.kind == MemberChangeKind::Promote && !self.learner_caught_up(change.id) {
                self.internal_writes.push(Request::MemberChangeRefused {
                    origin,
                    proposal_id,
                    code: CODE_FAILED_PRECONDITION,
                    message: LEARNER_NOT_READY.to_string(),
                });
                return None;
            }
            let context = ConfContext {
                origin,
                proposal_id,
                member: MemberInfo {
                    peer_urls: change.peer_urls.clone(),
                    ..MemberInfo::default()
                },
            };
            self.conf_queue.push_back(ConfChange {
                kind: raft_kind,
                member: MemberId(change.id),
                context: encode_conf_context(&context),
            });
        }
        None
    }

    /// The leader's refusal of a change: the member whose client asked answers it.
    pub(super) fn apply_member_change_refused(
        &mut self,
        origin: u64,
        proposal_id: u64,
        code: u32,
        message: &str,
    ) {
        if origin != self.ids.member {
            return;
        }
        if let Some((client, _)) = self.conf_waiters.remove(&proposal_id) {
            self.reply_error(client, code, message);
        }
    }

    /// Step 2, applied on every member: the member table follows Raft's configuration,
    /// the transport follows the table, and the member that took the request answers.
    pub(super) fn apply_conf_change(&mut self, entry: &Entry) {
        let change = match ConfChange::decode(&entry.data) {
            Ok(change) => change,
            Err(error) => {
                self.poison(format!(
                    "membership change at index {} does not decode: {error}",
                    entry.index.0
                ));
                return;
            }
        };
        let context = decode_conf_context(&change.context).unwrap_or_else(|error| {
            eprintln!(
                "corekv: membership change at index {} has an unreadable context: {error:#}",
                entry.index.0
            );
            None
        });
        let id = change.member.0;
        match change.kind {
            ConfChangeKind::AddVoter | ConfChangeKind::AddLearner => {
                let learner = change.kind == ConfChangeKind::AddLearner;
                match self.member_table.members.get_mut(&id) {
                    Some(member) => member.is_learner = learner,
                    None => {
                        // The bootstrap entries carry no context: --initial-cluster names
                        // those members (the same flags on every member).
                        let mut member = context
                            .as_ref()
                            .map(|c| c.member.clone())
                            .or_else(|| initial_member_info(&self.config, id))
                            .unwrap_or_default();
                        member.is_learner = learner;
                        self.member_table.members.insert(id, member);
                    }
                }
            }
            ConfChangeKind::RemoveMember => {
                self.member_table.members.remove(&id);
                self.member_table.removed.insert(id);
                if id == self.ids.member {
                    eprintln!(
                        "corekv: this member ({id:x}) was removed from the cluster; stopping \
                         (remove its data dir before adding it again)"
                    );
                    super::super::request_shutdown();
                }
            }
        }
        self.peers_dirty = true;
        if let Some(context) = context {
            if context.origin == self.ids.member {
                if let Some((client, _)) = self.conf_waiters.remove(&context.proposal_id) {
                    let response = Response::MemberList(self.header(), self.members());
                    self.reply(client, response, true);
                }
            }
        }
    }

    /// The leader proposes the next queued configuration change, if Raft takes one now.
    pub(super) fn propose_conf_changes(&mut self) {
        if self.raft.role() != Role::Leader {
            self.conf_queue.clear();
            return;
        }
        while let Some(change) = self.conf_queue.front().cloned() {
            match self.raft.propose_conf_change(change.clone()) {
                Ok(_) => {
                    self.conf_queue.pop_front();
                }
                Err(corekv_raft::Error::InvalidConfChange(reason)) => {
                    self.conf_queue.pop_front();
                    if let Ok(Some(context)) = decode_conf_context(&change.context) {
                        self.internal_writes.push(Request::MemberChangeRefused {
                            origin: context.origin,
                            proposal_id: context.proposal_id,
                            code: CODE_FAILED_PRECONDITION,
                            message: format!("corekv: membership change refused: {reason}"),
                        });
                    }
                }
                // The previous change is not applied yet, or the leader has not
                // committed an entry of its term: try again next round.
                Err(_) => break,
            }
        }
    }

    /// Answers clients whose membership change never came (the leader changed before
    /// proposing it).
    pub(super) fn expire_conf_waiters(&mut self) {
        let now = Instant::now();
        let expired: Vec<u64> = self
            .conf_waiters
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let (client, _) = self.conf_waiters.remove(&id).expect("listed above");
            self.reply_error(client, CODE_UNAVAILABLE, "etcdserver: request timed out");
        }
    }

    /// Points the peer transport at the member table's members (starting the transport
    /// when the first other member appears) and refreshes the directory joining members
    /// are sent.
    pub(crate) fn sync_peers(&mut self) -> Result<()> {
        if !self.peers_dirty {
            return Ok(());
        }
        self.peers_dirty = false;
        let me = self.ids.member;
        let mut wanted: BTreeMap<u64, Vec<std::net::SocketAddr>> = BTreeMap::new();
        // Until the log (or a snapshot) has named any member, the members of
        // --initial-cluster: a restarted member must reach the others before it has
        // applied the entries that name them. Once the table knows members, the flags
        // are history (as etcd ignores --initial-cluster once the data dir exists).
        let table = &self.member_table;
        let fallback = initial_members(&self.config)
            .into_iter()
            .filter(|m| {
                table.members.is_empty()
                    && !m
                        .peer_urls
                        .iter()
                        .any(|url| self.config.advertise_peer_urls.contains(url))
            })
            .map(|m| (m.id, m.peer_urls));
        let known = self
            .member_table
            .members
            .iter()
            .map(|(id, m)| (*id, m.peer_urls.clone()));
        for (id, urls) in fallback.chain(known) {
            if id == me || urls.is_empty() {
                continue;
            }
            match parse_addresses(&urls.join(",")) {
                Ok(addresses) => {
                    wanted.insert(id, addresses);
                }
                Err(error) => eprintln!("corekv: member {id:x} has unusable peer URLs: {error}"),
            }
        }
        if self.peers.is_none() {
            if wanted.is_empty() {
                return Ok(());
            }
            let peers =
                super::super::start_peer_transport(&self.config, self.ids, self.events.clone())?;
            self.peers = Some(peers);
        }
        let peers = self.peers.clone().expect("started above");
        for id in self.peer_ids.iter().filter(|id| !wanted.contains_key(id)) {
            peers.remove_peer(*id);
        }
        self.peer_ids = wanted.keys().copied().collect();
        for (id, addresses) in wanted {
            peers.set_peer(id, addresses);
        }
        peers.set_directory(encode_member_table(&self.member_table));
        Ok(())
    }

    /// Whether a voter may be added: the started voters must stay a quorum of the
    /// voters after the addition (etcd's strict reconfiguration check).
    fn ready_to_add_voter(&self) -> bool {
        let voters: Vec<&MemberInfo> = self.voters().collect();
        let members = voters.len() + 1;
        let started = voters.iter().filter(|m| !m.name.is_empty()).count();
        (started == 1 && members == 2) || started > members / 2
    }

    /// Whether voter `id` may be removed: the other started voters must stay a quorum.
    fn ready_to_remove_voter(&self, id: u64) -> bool {
        let others: Vec<(&u64, &MemberInfo)> = self
            .member_table
            .members
            .iter()
            .filter(|(other, m)| **other != id && !m.is_learner)
            .collect();
        let started = others.iter().filter(|(_, m)| !m.name.is_empty()).count();
        started > others.len() / 2
    }

    /// Whether a learner may be promoted: counting it as started, the started voters stay
    /// a quorum.
    fn ready_to_promote(&self) -> bool {
        let voters: Vec<&MemberInfo> = self.voters().collect();
        let members = voters.len() + 1;
        let started = voters.iter().filter(|m| !m.name.is_empty()).count() + 1;
        started > members / 2
    }

    fn voters(&self) -> impl Iterator<Item = &MemberInfo> {
        self.member_table.members.values().filter(|m| !m.is_learner)
    }

    /// On the leader: whether learner `id`'s log holds most of the leader's.
    fn learner_caught_up(&self, id: u64) -> bool {
        let last = self.raft.status().last_index.0;
        self.raft
            .progress_of(MemberId(id))
            .is_some_and(|(matched, _)| matched.0 as f64 >= last as f64 * LEARNER_READY_SHARE)
    }
}

/// Peer URLs etcd would take and the transport can dial: `http(s)://ip:port`.
fn valid_peer_urls(urls: &[String]) -> bool {
    !urls.is_empty()
        && urls.iter().all(|url| {
            (url.starts_with("http://") || url.starts_with("https://"))
                && parse_addresses(url).is_ok()
        })
}

/// A member started with `--initial-cluster-state existing` and an empty data dir asks
/// the other members of `--initial-cluster` for the member list, and finds itself in it
/// by its peer URLs (it must have been added with `member add` first, as etcd requires).
pub(super) async fn discover(config: &ServerConfig) -> Result<(Ids, MemberTable)> {
    let mine = &config.advertise_peer_urls;
    let mut addresses = Vec::new();
    for member in initial_members(config) {
        if member.peer_urls.iter().any(|url| mine.contains(url)) {
            continue;
        }
        addresses.extend(parse_addresses(&member.peer_urls.join(","))?);
    }
    if addresses.is_empty() {
        bail!("--initial-cluster-state existing: --initial-cluster names no other member to join");
    }
    let deadline = Instant::now() + DISCOVERY_PATIENCE;
    let mut last_problem = String::new();
    loop {
        for address in &addresses {
            match fetch_directory(*address).await {
                Ok((cluster, bytes)) => {
                    let table = decode_member_table(&bytes)
                        .with_context(|| format!("the member list from {address} is corrupt"))?;
                    let me = table
                        .members
                        .iter()
                        .find(|(_, m)| m.peer_urls.iter().any(|url| mine.contains(url)));
                    match me {
                        Some((id, _)) => {
                            let ids = Ids {
                                cluster,
                                member: *id,
                            };
                            return Ok((ids, table));
                        }
                        None => {
                            last_problem = format!(
                                "the cluster's members ({address} answered) do not include \
                                 peer URLs {}: add this member first (etcdctl member add)",
                                mine.join(",")
                            )
                        }
                    }
                }
                Err(error) => last_problem = format!("{address}: {error}"),
            }
        }
        if Instant::now() >= deadline {
            bail!("cannot join the cluster: {last_problem}");
        }
        glommio::timer::sleep(Duration::from_millis(200)).await;
    }
}
