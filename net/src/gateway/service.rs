//! The unary gRPC services (KV, Lease, Cluster, Maintenance, Auth) and the lease
//! keep-alive and snapshot streams: each call becomes one shard request through the
//! bridge, and its answer etcd's message or etcd's error.

use std::pin::Pin;
use std::sync::Arc;

use corekv_engine::{LeaseId, Revision};
use futures_lite::Stream;
use prost::Message;
use tokio::sync::mpsc;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status, Streaming};

use super::convert::{self, header, status, unexpected};
use super::pb::etcdserverpb as pb;
use crate::protocol::{
    AlarmAction, AlarmType, Header, MemberChange, MemberChangeKind, Request, Response,
};
use crate::server::bridge::stream_channel;
use crate::server::bridge::ShardHandle;
use crate::server::config::ServerConfig;
use crate::server::metrics::Metrics;

/// The etcd server version corekv reports where clients parse one (Status, /version):
/// the etcd API it speaks.
pub const ETCD_VERSION: &str = "3.4.0";
/// The etcd cluster version reported by /version.
pub const ETCD_CLUSTER_VERSION: &str = "3.4.0";

/// A boxed response stream.
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The gateway's services; cheap to clone.
#[derive(Clone, Debug)]
pub struct Gateway {
    pub(crate) shard: ShardHandle,
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) metrics: Arc<Metrics>,
}

impl Gateway {
    /// A gateway over the shard reached through `shard`.
    pub fn new(shard: ShardHandle, config: Arc<ServerConfig>, metrics: Arc<Metrics>) -> Gateway {
        Gateway {
            shard,
            config,
            metrics,
        }
    }

    /// One request, one answer; a shard error becomes etcd's status.
    pub(crate) async fn call(&self, request: Request) -> Result<Response, Status> {
        match self.shard.call(request).await {
            Ok(Response::Error { code, message }) => Err(status(code, message)),
            Ok(response) => Ok(response),
            Err(_) => Err(Status::unavailable("etcdserver: server stopped")),
        }
    }

    /// etcd's limit on a write's size (`--max-request-bytes`).
    fn check_size(&self, bytes: usize) -> Result<(), Status> {
        if bytes > self.config.request_bytes_max {
            return Err(Status::invalid_argument("etcdserver: request is too large"));
        }
        Ok(())
    }

    /// The current header (from a serializable status read).
    pub(crate) async fn current_header(&self) -> Result<Option<pb::ResponseHeader>, Status> {
        match self.call(Request::Status).await? {
            Response::Status(status) => Ok(header(&status.header)),
            other => Err(unexpected(&other)),
        }
    }
}

/// The unary calls the tonic services and the fast path (`gateway::unary`) both serve:
/// one function per method, so both paths handle a request the same way.
impl Gateway {
    pub(crate) async fn unary_range(
        &self,
        request: pb::RangeRequest,
    ) -> Result<pb::RangeResponse, Status> {
        let request = convert::range_request(request);
        match self.call(Request::Range(request)).await? {
            Response::Range(h, r) => Ok(convert::range_response(header(&h), r)),
            other => Err(unexpected(&other)),
        }
    }

    pub(crate) async fn unary_put(
        &self,
        request: pb::PutRequest,
    ) -> Result<pb::PutResponse, Status> {
        self.check_size(request.encoded_len())?;
        let request = convert::put_request(request);
        match self.call(Request::Put(request)).await? {
            Response::Put(h, r) => Ok(convert::put_response(header(&h), r)),
            other => Err(unexpected(&other)),
        }
    }

    pub(crate) async fn unary_delete_range(
        &self,
        request: pb::DeleteRangeRequest,
    ) -> Result<pb::DeleteRangeResponse, Status> {
        let request = convert::delete_range_request(request);
        match self.call(Request::DeleteRange(request)).await? {
            Response::DeleteRange(h, r) => Ok(convert::delete_range_response(header(&h), r)),
            other => Err(unexpected(&other)),
        }
    }

    pub(crate) async fn unary_txn(
        &self,
        request: pb::TxnRequest,
    ) -> Result<pb::TxnResponse, Status> {
        self.check_size(request.encoded_len())?;
        let request = convert::txn_request(request)?;
        match self.call(Request::Txn(request)).await? {
            Response::Txn(h, r) => Ok(convert::txn_response(header(&h), r)),
            other => Err(unexpected(&other)),
        }
    }

    pub(crate) async fn unary_lease_grant(
        &self,
        request: pb::LeaseGrantRequest,
    ) -> Result<pb::LeaseGrantResponse, Status> {
        let grant = Request::LeaseGrant {
            id: LeaseId(request.id),
            ttl_seconds: request.ttl,
        };
        match self.call(grant).await? {
            Response::LeaseGrant {
                header: h,
                id,
                ttl_seconds,
            } => Ok(pb::LeaseGrantResponse {
                header: header(&h),
                id: id.0,
                ttl: ttl_seconds,
                error: String::new(),
            }),
            other => Err(unexpected(&other)),
        }
    }

    pub(crate) async fn unary_lease_revoke(
        &self,
        request: pb::LeaseRevokeRequest,
    ) -> Result<pb::LeaseRevokeResponse, Status> {
        let id = LeaseId(request.id);
        match self.call(Request::LeaseRevoke { id }).await? {
            Response::LeaseRevoke(h) => Ok(pb::LeaseRevokeResponse { header: header(&h) }),
            other => Err(unexpected(&other)),
        }
    }

    pub(crate) async fn unary_lease_time_to_live(
        &self,
        request: pb::LeaseTimeToLiveRequest,
    ) -> Result<pb::LeaseTimeToLiveResponse, Status> {
        let ask = Request::LeaseTimeToLive {
            id: LeaseId(request.id),
            keys: request.keys,
        };
        match self.call(ask).await? {
            Response::LeaseTimeToLive {
                header: h,
                id,
                ttl_seconds,
                granted_ttl_seconds,
                keys,
            } => Ok(pb::LeaseTimeToLiveResponse {
                header: header(&h),
                id: id.0,
                ttl: ttl_seconds,
                granted_ttl: granted_ttl_seconds,
                keys,
            }),
            other => Err(unexpected(&other)),
        }
    }
}

#[tonic::async_trait]
impl pb::kv_server::Kv for Gateway {
    async fn range(
        &self,
        request: GrpcRequest<pb::RangeRequest>,
    ) -> Result<GrpcResponse<pb::RangeResponse>, Status> {
        self.unary_range(request.into_inner())
            .await
            .map(GrpcResponse::new)
    }

    async fn put(
        &self,
        request: GrpcRequest<pb::PutRequest>,
    ) -> Result<GrpcResponse<pb::PutResponse>, Status> {
        self.unary_put(request.into_inner())
            .await
            .map(GrpcResponse::new)
    }

    async fn delete_range(
        &self,
        request: GrpcRequest<pb::DeleteRangeRequest>,
    ) -> Result<GrpcResponse<pb::DeleteRangeResponse>, Status> {
        self.unary_delete_range(request.into_inner())
            .await
            .map(GrpcResponse::new)
    }

    async fn txn(
        &self,
        request: GrpcRequest<pb::TxnRequest>,
    ) -> Result<GrpcResponse<pb::TxnResponse>, Status> {
        self.unary_txn(request.into_inner())
            .await
            .map(GrpcResponse::new)
    }

    async fn compact(
        &self,
        request: GrpcRequest<pb::CompactionRequest>,
    ) -> Result<GrpcResponse<pb::CompactionResponse>, Status> {
        let request = request.into_inner();
        let compact = Request::Compact {
            revision: Revision(request.revision),
            physical: request.physical,
        };
        match self.call(compact).await? {
            Response::Compact(h) => Ok(GrpcResponse::new(pb::CompactionResponse {
                header: header(&h),
            })),
            other => Err(unexpected(&other)),
        }
    }
}

#[tonic::async_trait]
impl pb::lease_server::Lease for Gateway {
    type LeaseKeepAliveStream = BoxStream<pb::LeaseKeepAliveResponse>;

    async fn lease_grant(
        &self,
        request: GrpcRequest<pb::LeaseGrantRequest>,
    ) -> Result<GrpcResponse<pb::LeaseGrantResponse>, Status> {
        self.unary_lease_grant(request.into_inner())
            .await
            .map(GrpcResponse::new)
    }

    async fn lease_revoke(
        &self,
        request: GrpcRequest<pb::LeaseRevokeRequest>,
    ) -> Result<GrpcResponse<pb::LeaseRevokeResponse>, Status> {
        self.unary_lease_revoke(request.into_inner())
            .await
            .map(GrpcResponse::new)
    }

    async fn lease_keep_alive(
        &self,
        request: GrpcRequest<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<GrpcResponse<Self::LeaseKeepAliveStream>, Status> {
        let mut incoming = request.into_inner();
        let (out, replies) = mpsc::channel(64);
        let gateway = self.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    // The client stopped listening.
                    _ = out.closed() => return,
                    next = incoming.message() => match next {
                        Ok(Some(next)) => next,
                        // The client closed its side (every request is answered), or the
                        // stream broke.
                        Ok(None) | Err(_) => return,
                    },
                };
                let id = LeaseId(next.id);
                let answer = match gateway.call(Request::LeaseKeepAlive { id }).await {
                    Ok(Response::LeaseKeepAlive {
                        header: h,
                        id,
                        ttl_seconds,
                    }) => Ok(pb::LeaseKeepAliveResponse {
                        header: header(&h),
                        id: id.0,
                        ttl: ttl_seconds,
                    }),
                    Ok(other) => Err(unexpected(&other)),
                    Err(status) => Err(status),
                };
                let failed = answer.is_err();
                if out.send(answer).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(GrpcResponse::new(Box::pin(ReceiverStream(replies))))
    }

    async fn lease_time_to_live(
        &self,
        request: GrpcRequest<pb::LeaseTimeToLiveRequest>,
    ) -> Result<GrpcResponse<pb::LeaseTimeToLiveResponse>, Status> {
        self.unary_lease_time_to_live(request.into_inner())
            .await
            .map(GrpcResponse::new)
    }

    async fn lease_leases(
        &self,
        _request: GrpcRequest<pb::LeaseLeasesRequest>,
    ) -> Result<GrpcResponse<pb::LeaseLeasesResponse>, Status> {
        match self.call(Request::LeaseLeases).await? {
            Response::LeaseLeases(h, ids) => Ok(GrpcResponse::new(pb::LeaseLeasesResponse {
                header: header(&h),
                leases: ids
                    .into_iter()
                    .map(|id| pb::LeaseStatus { id: id.0 })
                    .collect(),
            })),
            other => Err(unexpected(&other)),
        }
    }
}

impl Gateway {
    async fn members(
        &self,
        linearizable: bool,
    ) -> Result<(Option<pb::ResponseHeader>, Vec<pb::Member>), Status> {
        match self.call(Request::MemberList { linearizable }).await? {
            // etcd's cluster service fills in ids and term but no revision.
            Response::MemberList(h, members) => Ok((
                header(&Header {
                    revision: Revision(0),
                    ..h
                }),
                members.into_iter().map(convert::member).collect(),
            )),
            other => Err(unexpected(&other)),
        }
    }

    /// Makes a membership change through the log; answers with the members after it.
    async fn change_members(
        &self,
        change: MemberChange,
    ) -> Result<(Option<pb::ResponseHeader>, Vec<pb::Member>), Status> {
        match self.call(Request::MemberChange(change)).await? {
            Response::MemberList(h, members) => Ok((
                header(&Header {
                    revision: Revision(0),
                    ..h
                }),
                members.into_iter().map(convert::member).collect(),
            )),
            other => Err(unexpected(&other)),
        }
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for Gateway {
    async fn member_add(
        &self,
        request: GrpcRequest<pb::MemberAddRequest>,
    ) -> Result<GrpcResponse<pb::MemberAddResponse>, Status> {
        let request = request.into_inner();
        let change = MemberChange {
            kind: MemberChangeKind::Add,
            id: 0,
            peer_urls: request.peer_ur_ls.clone(),
            is_learner: request.is_learner,
        };
        let (header, members) = self.change_members(change).await?;
        // The member holding the new peer URLs is the one added (URLs are unique).
        let member = members
            .iter()
            .find(|m| m.peer_ur_ls == request.peer_ur_ls)
            .map(|m| pb::Member {
                id: m.id,
                peer_ur_ls: m.peer_ur_ls.clone(),
                is_learner: m.is_learner,
                ..pb::Member::default()
            });
        Ok(GrpcResponse::new(pb::MemberAddResponse {
            header,
            member,
            members,
        }))
    }

    async fn member_remove(
        &self,
        request: GrpcRequest<pb::MemberRemoveRequest>,
    ) -> Result<GrpcResponse<pb::MemberRemoveResponse>, Status> {
        let change = MemberChange {
            kind: MemberChangeKind::Remove,
            id: request.into_inner().id,
            peer_urls: Vec::new(),
            is_learner: false,
        };
        let (header, members) = self.change_members(change).await?;
        Ok(GrpcResponse::new(pb::MemberRemoveResponse {
            header,
            members,
        }))
    }

    async fn member_update(
        &self,
        request: GrpcRequest<pb::MemberUpdateRequest>,
    ) -> Result<GrpcResponse<pb::MemberUpdateResponse>, Status> {
        let request = request.into_inner();
        let change = MemberChange {
            kind: MemberChangeKind::Update,
            id: request.id,
            peer_urls: request.peer_ur_ls,
            is_learner: false,
        };
        let (header, members) = self.change_members(change).await?;
        Ok(GrpcResponse::new(pb::MemberUpdateResponse {
            header,
            members,
        }))
    }

    async fn member_list(
        &self,
        request: GrpcRequest<pb::MemberListRequest>,
    ) -> Result<GrpcResponse<pb::MemberListResponse>, Status> {
        let (header, members) = self.members(request.into_inner().linearizable).await?;
        Ok(GrpcResponse::new(pb::MemberListResponse {
            header,
            members,
        }))
    }

    async fn member_promote(
        &self,
        request: GrpcRequest<pb::MemberPromoteRequest>,
    ) -> Result<GrpcResponse<pb::MemberPromoteResponse>, Status> {
        let change = MemberChange {
            kind: MemberChangeKind::Promote,
            id: request.into_inner().id,
            peer_urls: Vec::new(),
            is_learner: false,
        };
        let (header, members) = self.change_members(change).await?;
        Ok(GrpcResponse::new(pb::MemberPromoteResponse {
            header,
            members,
        }))
    }
}

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for Gateway {
    type SnapshotStream = BoxStream<pb::SnapshotResponse>;

    async fn alarm(
        &self,
        request: GrpcRequest<pb::AlarmRequest>,
    ) -> Result<GrpcResponse<pb::AlarmResponse>, Status> {
        let request = request.into_inner();
        let alarm = Request::Alarm {
            action: match request.action {
                1 => AlarmAction::Activate,
                2 => AlarmAction::Deactivate,
                _ => AlarmAction::Get,
            },
            member_id: request.member_id,
            alarm: match request.alarm {
                1 => AlarmType::NoSpace,
                2 => AlarmType::Corrupt,
                _ => AlarmType::None,
            },
        };
        match self.call(alarm).await? {
            // etcd answers alarms without a header.
            Response::Alarm(_, alarms) => Ok(GrpcResponse::new(pb::AlarmResponse {
                header: None,
                alarms: alarms.into_iter().map(convert::alarm_member).collect(),
            })),
            other => Err(unexpected(&other)),
        }
    }

    async fn status(
        &self,
        _request: GrpcRequest<pb::StatusRequest>,
    ) -> Result<GrpcResponse<pb::StatusResponse>, Status> {
        let status = match self.call(Request::Status).await? {
            Response::Status(status) => status,
            other => return Err(unexpected(&other)),
        };
        let alarms = match self
            .call(Request::Alarm {
                action: AlarmAction::Get,
                member_id: 0,
                alarm: AlarmType::None,
            })
            .await?
        {
            Response::Alarm(_, alarms) => alarms,
            other => return Err(unexpected(&other)),
        };
        let member = status.header.member_id;
        Ok(GrpcResponse::new(pb::StatusResponse {
            header: header(&status.header),
            version: ETCD_VERSION.to_string(),
            db_size: status.db_size as i64,
            leader: status.leader,
            raft_index: status.raft_index,
            raft_term: status.raft_term,
            raft_applied_index: status.raft_applied_index,
            errors: alarms
                .into_iter()
                .filter(|alarm| alarm.member_id == member)
                .map(|alarm| {
                    format!(
                        "memberID:{} alarm:{} ",
                        alarm.member_id,
                        convert::alarm_type_name(alarm.alarm)
                    )
                })
                .collect(),
            db_size_in_use: status.db_size as i64,
            is_learner: status.is_learner,
        }))
    }

    async fn defragment(
        &self,
        _request: GrpcRequest<pb::DefragmentRequest>,
    ) -> Result<GrpcResponse<pb::DefragmentResponse>, Status> {
        match self.call(Request::Defragment).await? {
            // etcd answers without a header.
            Response::Defragment(_) => {
                Ok(GrpcResponse::new(pb::DefragmentResponse { header: None }))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn hash(
        &self,
        _request: GrpcRequest<pb::HashRequest>,
    ) -> Result<GrpcResponse<pb::HashResponse>, Status> {
        match self.call(Request::Hash).await? {
            Response::Hash { header: h, hash } => Ok(GrpcResponse::new(pb::HashResponse {
                header: header(&h),
                hash,
            })),
            other => Err(unexpected(&other)),
        }
    }

    async fn hash_kv(
        &self,
        request: GrpcRequest<pb::HashKvRequest>,
    ) -> Result<GrpcResponse<pb::HashKvResponse>, Status> {
        let revision = Revision(request.into_inner().revision);
        match self.call(Request::HashKv { revision }).await? {
            Response::HashKv {
                header: h,
                hash,
                compact_revision,
                hash_revision,
            } => Ok(GrpcResponse::new(pb::HashKvResponse {
                header: header(&h),
                hash,
                // etcd reports -1 until the first compaction.
                compact_revision: if compact_revision.0 == 0 {
                    -1
                } else {
                    compact_revision.0
                },
                hash_revision: hash_revision.0,
            })),
            other => Err(unexpected(&other)),
        }
    }

    async fn snapshot(
        &self,
        _request: GrpcRequest<pb::SnapshotRequest>,
    ) -> Result<GrpcResponse<Self::SnapshotStream>, Status> {
        let (chunks_tx, mut chunks) = stream_channel();
        let session = self.shard.open_session();
        self.shard
            .stream(session, Request::Snapshot, chunks_tx)
            .await
            .map_err(|_| Status::unavailable("etcdserver: server stopped"))?;
        let (out, replies) = mpsc::channel(4);
        let shard = self.shard.clone();
        tokio::spawn(async move {
            // etcd's snapshot is a database file followed by its SHA-256, sent in chunks
            // without a header; etcdctl checks that the size is a multiple of 512 plus
            // 32. corekv's snapshot is its store's encoding, padded with zeros to that
            // shape, then the SHA-256 of everything before it.
            let mut digest = Sha256::new();
            let mut length: u64 = 0;
            while let Some((_, response)) = chunks.recv().await {
                match response {
                    Response::SnapshotChunk {
                        header: _,
                        remaining_bytes,
                        mut blob,
                    } => {
                        if remaining_bytes == 0 {
                            let padding = (512 - (length + blob.len() as u64) % 512) % 512;
                            blob.extend(std::iter::repeat_n(0u8, padding as usize));
                            digest.update(&blob);
                            let sum = digest.finalize();
                            let last = pb::SnapshotResponse {
                                header: None,
                                remaining_bytes: 0,
                                blob: [blob, sum.to_vec()].concat(),
                            };
                            let _ = out.send(Ok(last)).await;
                            break;
                        }
                        length += blob.len() as u64;
                        digest.update(&blob);
                        let chunk = pb::SnapshotResponse {
                            header: None,
                            remaining_bytes: remaining_bytes + 32,
                            blob,
                        };
                        if out.send(Ok(chunk)).await.is_err() {
                            break;
                        }
                    }
                    other => {
                        let _ = out.send(Err(unexpected(&other))).await;
                        break;
                    }
                }
            }
            shard.close(session).await;
        });
        Ok(GrpcResponse::new(Box::pin(ReceiverStream(replies))))
    }

    async fn move_leader(
        &self,
        request: GrpcRequest<pb::MoveLeaderRequest>,
    ) -> Result<GrpcResponse<pb::MoveLeaderResponse>, Status> {
        let target = request.into_inner().target_id;
        match self.call(Request::MoveLeader { target }).await? {
            // etcd answers without a header.
            Response::MoveLeader(_) => {
                Ok(GrpcResponse::new(pb::MoveLeaderResponse { header: None }))
            }
            other => Err(unexpected(&other)),
        }
    }
}

/// etcd's answer to auth changes while the auth store does not exist yet.
fn auth_unsupported() -> Status {
    Status::failed_precondition("corekv: users and roles are not supported by this build yet")
}

#[tonic::async_trait]
impl pb::auth_server::Auth for Gateway {
    async fn auth_enable(
        &self,
        _request: GrpcRequest<pb::AuthEnableRequest>,
    ) -> Result<GrpcResponse<pb::AuthEnableResponse>, Status> {
        Err(Status::failed_precondition(
            "etcdserver: root user does not exist",
        ))
    }

    async fn auth_disable(
        &self,
        _request: GrpcRequest<pb::AuthDisableRequest>,
    ) -> Result<GrpcResponse<pb::AuthDisableResponse>, Status> {
        Ok(GrpcResponse::new(pb::AuthDisableResponse {
            header: self.current_header().await?,
        }))
    }

    async fn auth_status(
        &self,
        _request: GrpcRequest<pb::AuthStatusRequest>,
    ) -> Result<GrpcResponse<pb::AuthStatusResponse>, Status> {
        Ok(GrpcResponse::new(pb::AuthStatusResponse {
            header: self.current_header().await?,
            enabled: false,
            auth_revision: 0,
        }))
    }

    async fn authenticate(
        &self,
        _request: GrpcRequest<pb::AuthenticateRequest>,
    ) -> Result<GrpcResponse<pb::AuthenticateResponse>, Status> {
        Err(Status::failed_precondition(
            "etcdserver: authentication is not enabled",
        ))
    }

    async fn user_add(
        &self,
        _request: GrpcRequest<pb::AuthUserAddRequest>,
    ) -> Result<GrpcResponse<pb::AuthUserAddResponse>, Status> {
        Err(auth_unsupported())
    }

    async fn user_get(
        &self,
        _request: GrpcRequest<pb::AuthUserGetRequest>,
    ) -> Result<GrpcResponse<pb::AuthUserGetResponse>, Status> {
        Err(Status::failed_precondition(
            "etcdserver: user name not found",
        ))
    }

    async fn user_list(
        &self,
        _request: GrpcRequest<pb::AuthUserListRequest>,
    ) -> Result<GrpcResponse<pb::AuthUserListResponse>, Status> {
        Ok(GrpcResponse::new(pb::AuthUserListResponse {
            header: self.current_header().await?,
            users: Vec::new(),
        }))
    }

    async fn user_delete(
        &self,
        _request: GrpcRequest<pb::AuthUserDeleteRequest>,
    ) -> Result<GrpcResponse<pb::AuthUserDeleteResponse>, Status> {
        Err(Status::failed_precondition(
            "etcdserver: user name not found",
        ))
    }

    async fn user_change_password(
        &self,
        _request: GrpcRequest<pb::AuthUserChangePasswordRequest>,
    ) -> Result<GrpcResponse<pb::AuthUserChangePasswordResponse>, Status> {
        Err(Status::failed_precondition(
            "etcdserver: user name not found",
        ))
    }

    async fn user_grant_role(
        &self,
        _request: GrpcRequest<pb::AuthUserGrantRoleRequest>,
    ) -> Result<GrpcResponse<pb::AuthUserGrantRoleResponse>, Status> {
        Err(Status::failed_precondition(
            "etcdserver: user name not found",
        ))
    }

    async fn user_revoke_role(
        &self,
        _request: GrpcRequest<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<GrpcResponse<pb::AuthUserRevokeRoleResponse>, Status> {
        Err(Status::failed_precondition(
            "etcdserver: user name not found",
        ))
    }

    async fn role_add(
        &self,
        _request: GrpcRequest<pb::AuthRoleAddRequest>,
    ) -> Result<GrpcResponse<pb::AuthRoleAddResponse>, Status> {
        Err(auth_unsupported())
    }

    async fn role_get(
        &self,
        _request: GrpcRequest<pb::AuthRoleGetRequest>,
    ) -> Result<GrpcResponse<pb::AuthRoleGetResponse>, Status> {
        Err(Status::failed_precondition(
            "etcdserver: role name not found",
        ))
    }

    async fn role_list(
        &self,
        _request: GrpcRequest<pb::AuthRoleListRequest>,
    ) -> Result<GrpcResponse<pb::AuthRoleListResponse>, Status> {
        Ok(GrpcResponse::new(pb::AuthRoleListResponse {
            header: self.current_header().await?,
            roles: Vec::new(),
        }))
    }

    async fn role_delete(
        &self,
        _request: GrpcRequest<pb::AuthRoleDeleteRequest>,
    ) -> Result<GrpcResponse<pb::AuthRoleDeleteResponse>, Status> {
        Err(Status::failed_precondition(
            "etcdserver: role name not found",
        ))
    }

    async fn role_grant_permission(
        &self,
        _request: GrpcRequest<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<GrpcResponse<pb::AuthRoleGrantPermissionResponse>, Status> {
        Err(Status::failed_precondition(
            "etcdserver: role name not found",
        ))
    }

    async fn role_revoke_permission(
        &self,
        _request: GrpcRequest<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<GrpcResponse<pb::AuthRoleRevokePermissionResponse>, Status> {
        Err(Status::failed_precondition(
            "etcdserver: role name not found",
        ))
    }
}

/// A tokio receiver as a stream.
pub(crate) struct ReceiverStream<T>(pub(crate) mpsc::Receiver<T>);

impl<T> Stream for ReceiverStream<T> {
    type Item = T;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

use sha2::{Digest, Sha256};
