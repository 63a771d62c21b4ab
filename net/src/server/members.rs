//! Member and cluster ids, derived from the same inputs as etcd derives them, so that
//! the same `--initial-cluster`, peer URLs and `--initial-cluster-token` give the same
//! ids on every member (and the same ids etcd would give):
//!
//! * a member's id is the first 8 bytes (big-endian) of the SHA-1 of its peer URLs,
//!   sorted and concatenated, followed by the cluster token;
//! * the cluster's id is the first 8 bytes of the SHA-1 of its members' ids, sorted,
//!   each as 8 big-endian bytes.

//!
//! A member added at run time (etcd's `member add`) gets an id from its peer URLs, the
//! token and the time of the request, as etcd's do, so that a member removed and added
//! back never reuses the id of the one removed.
//!
//! [`MemberTable`] is the replicated list of members and their attributes: every member
//! changes it in log order (bootstrap and membership entries, published attributes,
//! peer URL updates) and snapshots carry it.

use std::collections::{BTreeMap, BTreeSet};

use sha1::{Digest, Sha1};

use super::config::ServerConfig;

/// One member named in `--initial-cluster`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialMember {
    /// Its name.
    pub name: String,
    /// Its id.
    pub id: u64,
    /// Its peer URLs, in the order given.
    pub peer_urls: Vec<String>,
}

/// A member's id from its peer URLs and the cluster token.
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    hash_member(peer_urls, token, &[])
}

/// The id of a member added at `nanos` (nanoseconds since the Unix epoch).
pub fn added_member_id(peer_urls: &[String], token: &str, nanos: u64) -> u64 {
    hash_member(peer_urls, token, &nanos.to_be_bytes())
}

/// SHA-1 of the sorted peer URLs, the token and `salt`; its first 8 bytes.
fn hash_member(peer_urls: &[String], token: &str, salt: &[u8]) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    urls.sort_unstable();
    let mut hasher = Sha1::new();
    for url in urls {
        hasher.update(url.as_bytes());
    }
    hasher.update(token.as_bytes());
    hasher.update(salt);
    first_u64(&hasher.finalize())
}

/// One member's attributes as the cluster knows them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberInfo {
    /// Its name (empty until it has started and published it).
    pub name: String,
    /// Its peer URLs.
    pub peer_urls: Vec<String>,
    /// Its client URLs (empty until it has published them).
    pub client_urls: Vec<String>,
    /// A learner does not vote.
    pub is_learner: bool,
}

/// The members of the cluster and the ids removed from it (never to come back).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberTable {
    /// Members by id.
    pub members: BTreeMap<u64, MemberInfo>,
    /// Ids of removed members.
    pub removed: BTreeSet<u64>,
}

impl MemberTable {
    /// The member, other than `except`, that already uses one of `peer_urls`.
    pub fn peer_url_owner(&self, peer_urls: &[String], except: Option<u64>) -> Option<u64> {
        self.members
            .iter()
            .filter(|(id, _)| Some(**id) != except)
            .find(|(_, member)| member.peer_urls.iter().any(|url| peer_urls.contains(url)))
            .map(|(id, _)| *id)
    }
}

/// What `--initial-cluster` says of member `id` (its name and peer URLs), if it names it.
pub fn initial_member_info(config: &ServerConfig, id: u64) -> Option<MemberInfo> {
    initial_members(config)
        .into_iter()
        .find(|m| m.id == id)
        .map(|m| MemberInfo {
            name: m.name,
            peer_urls: m.peer_urls,
            ..MemberInfo::default()
        })
}

/// The cluster's id from its members' ids.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut hasher = Sha1::new();
    for id in ids {
        hasher.update(id.to_be_bytes());
    }
    first_u64(&hasher.finalize())
}

fn first_u64(digest: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(bytes)
}

/// The members of `--initial-cluster`, one per name (a name may be listed with several
/// URLs), in the order first named.
pub fn initial_members(config: &ServerConfig) -> Vec<InitialMember> {
    let mut members: Vec<InitialMember> = Vec::new();
    for (name, url) in &config.initial_cluster {
        match members.iter_mut().find(|m| &m.name == name) {
            Some(member) => member.peer_urls.push(url.clone()),
            None => members.push(InitialMember {
                name: name.clone(),
                id: 0,
                peer_urls: vec![url.clone()],
            }),
        }
    }
    for member in &mut members {
        member.id = member_id(&member.peer_urls, &config.cluster_token);
    }
    members
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ids etcd 3.4 prints for `etcd --name n1 --initial-cluster
    /// n1=http://127.0.0.1:2380` with the default token (`etcdctl member list`,
    /// `endpoint status`): corekv derives the same.
    #[test]
    fn ids_match_etcds() {
        let token = "etcd-cluster";
        let default = member_id(&["http://localhost:2380".to_string()], token);
        assert_eq!(format!("{default:x}"), "8e9e05c52164694d");
        assert_eq!(format!("{:x}", cluster_id(&[default])), "cdf818194e3a8c32");
    }

    /// Several URLs of one name make one member; order of URLs does not matter.
    #[test]
    fn initial_members_group_urls_by_name() {
        let config = ServerConfig {
            initial_cluster: vec![
                ("a".to_string(), "http://10.0.0.1:2380".to_string()),
                ("b".to_string(), "http://10.0.0.2:2380".to_string()),
                ("a".to_string(), "http://10.0.0.3:2380".to_string()),
            ],
            ..ServerConfig::default()
        };
        let members = initial_members(&config);
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].peer_urls.len(), 2);
        let reversed = vec![
            "http://10.0.0.3:2380".to_string(),
            "http://10.0.0.1:2380".to_string(),
        ];
        assert_eq!(members[0].id, member_id(&reversed, "etcd-cluster"));
        assert_ne!(members[0].id, members[1].id);
    }
}
