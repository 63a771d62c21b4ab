//! A fake implementation of every etcd service: unary methods answer what the test
//! registered, streams behave as described on each method.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_lite::{Stream, StreamExt};
use serde::Serialize;
use tonic::{Request, Response, Status, Streaming};

use super::etcd::{foo_watch_responses, header, to_json};
use crate::gateway::pb::etcdserverpb::auth_server::Auth;
use crate::gateway::pb::etcdserverpb::cluster_server::Cluster;
use crate::gateway::pb::etcdserverpb::kv_server::Kv;
use crate::gateway::pb::etcdserverpb::lease_server::Lease;
use crate::gateway::pb::etcdserverpb::maintenance_server::Maintenance;
use crate::gateway::pb::etcdserverpb::watch_server::Watch;
use crate::gateway::pb::etcdserverpb::*;
use crate::gateway::pb::v3electionpb::election_server::Election;
use crate::gateway::pb::v3electionpb::*;
use crate::gateway::pb::v3lockpb::lock_server::Lock;
use crate::gateway::pb::v3lockpb::*;

/// One call the fake received.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Call {
    pub(super) method: &'static str,
    /// The request as the fake got it, in JSON.
    pub(super) request: String,
    /// The `authorization` metadata, if any.
    pub(super) authorization: Option<String>,
    /// The `token` metadata, if any.
    pub(super) token: Option<String>,
}

type Answer = Result<Arc<dyn Any + Send + Sync>, Status>;

/// Answers each unary method with what [`Fake::answer`] registered (Unimplemented
/// otherwise), and the streams as described on each stream method.
#[derive(Default)]
pub(super) struct Fake {
    answers: Mutex<HashMap<&'static str, Answer>>,
    calls: Mutex<Vec<Call>>,
    /// Set when the response stream of a watch is dropped.
    pub(super) watch_dropped: Arc<AtomicBool>,
}

impl Fake {
    pub(super) fn answer<T: Send + Sync + 'static>(
        self,
        method: &'static str,
        answer: Result<T, Status>,
    ) -> Self {
        let answer: Answer = answer.map(|message| Arc::new(message) as Arc<dyn Any + Send + Sync>);
        self.answers
            .lock()
            .expect("not poisoned")
            .insert(method, answer);
        self
    }

    fn record<T: Serialize>(&self, method: &'static str, request: &Request<T>) {
        let metadata = |key: &str| {
            request
                .metadata()
                .get(key)
                .map(|value| value.to_str().expect("ascii").to_string())
        };
        let call = Call {
            method,
            request: to_json(request.get_ref()),
            authorization: metadata("authorization"),
            token: metadata("token"),
        };
        self.calls.lock().expect("not poisoned").push(call);
    }

    pub(super) fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("not poisoned").clone()
    }

    fn unary<Req: Serialize, Resp: Clone + 'static>(
        &self,
        method: &'static str,
        request: Request<Req>,
    ) -> Result<Response<Resp>, Status> {
        self.record(method, &request);
        match self.answers.lock().expect("not poisoned").get(method) {
            None => Err(Status::unimplemented(method)),
            Some(Err(status)) => Err(status.clone()),
            Some(Ok(message)) => Ok(Response::new(
                message
                    .downcast_ref::<Resp>()
                    .expect("the test registered the method's response type")
                    .clone(),
            )),
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Implements a service trait on [`Fake`]: the listed unary methods through
/// [`Fake::unary`], plus whatever follows (stream types and methods).
macro_rules! fake_service {
    ($service:ident { $($method:ident($request:ident) -> $response:ident;)* } $($rest:tt)*) => {
        #[tonic::async_trait]
        impl $service for Fake {
            $(
                async fn $method(
                    &self,
                    request: Request<$request>,
                ) -> Result<Response<$response>, Status> {
                    self.unary(stringify!($method), request)
                }
            )*
            $($rest)*
        }
    };
}

fake_service!(Kv {
    range(RangeRequest) -> RangeResponse;
    put(PutRequest) -> PutResponse;
    delete_range(DeleteRangeRequest) -> DeleteRangeResponse;
    txn(TxnRequest) -> TxnResponse;
    compact(CompactionRequest) -> CompactionResponse;
});

fake_service!(Lease {
    lease_grant(LeaseGrantRequest) -> LeaseGrantResponse;
    lease_revoke(LeaseRevokeRequest) -> LeaseRevokeResponse;
    lease_time_to_live(LeaseTimeToLiveRequest) -> LeaseTimeToLiveResponse;
    lease_leases(LeaseLeasesRequest) -> LeaseLeasesResponse;
}
    type LeaseKeepAliveStream = BoxStream<LeaseKeepAliveResponse>;

    /// One answer per request, TTL 30 for lease 777 and 0 (gone) for any other; the
    /// stream ends with the requests, as etcd's does.
    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let answers = request.into_inner().map(|request| {
            let id = request?.id;
            Ok(LeaseKeepAliveResponse {
                header: header(7),
                id,
                ttl: if id == 777 { 30 } else { 0 },
            })
        });
        Ok(Response::new(Box::pin(answers)))
    }
);

fake_service!(Cluster {
    member_add(MemberAddRequest) -> MemberAddResponse;
    member_remove(MemberRemoveRequest) -> MemberRemoveResponse;
    member_update(MemberUpdateRequest) -> MemberUpdateResponse;
    member_list(MemberListRequest) -> MemberListResponse;
    member_promote(MemberPromoteRequest) -> MemberPromoteResponse;
});

fake_service!(Maintenance {
    alarm(AlarmRequest) -> AlarmResponse;
    status(StatusRequest) -> StatusResponse;
    defragment(DefragmentRequest) -> DefragmentResponse;
    hash(HashRequest) -> HashResponse;
    hash_kv(HashKvRequest) -> HashKvResponse;
    move_leader(MoveLeaderRequest) -> MoveLeaderResponse;
}
    type SnapshotStream = BoxStream<SnapshotResponse>;

    /// Without a token: fails before the first chunk, with etcd's error. With one: two
    /// chunks, then the leader is lost.
    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let items = if request.metadata().get("authorization").is_none() {
            vec![Err(Status::unknown("auth: user name is empty"))]
        } else {
            vec![
                Ok(SnapshotResponse {
                    header: header(7),
                    remaining_bytes: 1,
                    blob: vec![0, 1, 2],
                }),
                Ok(SnapshotResponse {
                    header: header(7),
                    remaining_bytes: 0,
                    blob: vec![3],
                }),
                Err(Status::unavailable("etcdserver: leader changed")),
            ]
        };
        Ok(Response::new(Box::pin(futures_lite::stream::iter(items))))
    }
);

fake_service!(Auth {
    auth_enable(AuthEnableRequest) -> AuthEnableResponse;
    auth_disable(AuthDisableRequest) -> AuthDisableResponse;
    auth_status(AuthStatusRequest) -> AuthStatusResponse;
    authenticate(AuthenticateRequest) -> AuthenticateResponse;
    user_add(AuthUserAddRequest) -> AuthUserAddResponse;
    user_get(AuthUserGetRequest) -> AuthUserGetResponse;
    user_list(AuthUserListRequest) -> AuthUserListResponse;
    user_delete(AuthUserDeleteRequest) -> AuthUserDeleteResponse;
    user_change_password(AuthUserChangePasswordRequest) -> AuthUserChangePasswordResponse;
    user_grant_role(AuthUserGrantRoleRequest) -> AuthUserGrantRoleResponse;
    user_revoke_role(AuthUserRevokeRoleRequest) -> AuthUserRevokeRoleResponse;
    role_add(AuthRoleAddRequest) -> AuthRoleAddResponse;
    role_get(AuthRoleGetRequest) -> AuthRoleGetResponse;
    role_list(AuthRoleListRequest) -> AuthRoleListResponse;
    role_delete(AuthRoleDeleteRequest) -> AuthRoleDeleteResponse;
    role_grant_permission(AuthRoleGrantPermissionRequest) -> AuthRoleGrantPermissionResponse;
    role_revoke_permission(AuthRoleRevokePermissionRequest) -> AuthRoleRevokePermissionResponse;
});

fake_service!(Lock {
    lock(LockRequest) -> LockResponse;
    unlock(UnlockRequest) -> UnlockResponse;
});

fake_service!(Election {
    campaign(CampaignRequest) -> CampaignResponse;
    proclaim(ProclaimRequest) -> ProclaimResponse;
    leader(LeaderRequest) -> LeaderResponse;
    resign(ResignRequest) -> ResignResponse;
}
    type ObserveStream = BoxStream<LeaderResponse>;

    /// Fails at once, before any stream exists.
    async fn observe(
        &self,
        _request: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        Err(Status::unknown("election: no leader"))
    }
);

/// Sets its flag when dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The state of the fake's watch stream.
struct FakeWatch {
    requests: Streaming<WatchRequest>,
    pending: VecDeque<WatchResponse>,
    next_watch_id: i64,
    _dropped: DropFlag,
}

#[tonic::async_trait]
impl Watch for Fake {
    type WatchStream = BoxStream<WatchResponse>;

    /// Answers a create with `created` (watch ids 0, 1, ...), and the first watch with
    /// the three events etcd sent; a progress request with watch_id -1. When the
    /// requests end the stream stays open, as etcd's does, until it is dropped.
    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let state = FakeWatch {
            requests: request.into_inner(),
            pending: VecDeque::new(),
            next_watch_id: 0,
            _dropped: DropFlag(Arc::clone(&self.watch_dropped)),
        };
        let responses = futures_lite::stream::unfold(state, |mut state| async move {
            loop {
                if let Some(response) = state.pending.pop_front() {
                    return Some((Ok(response), state));
                }
                match state.requests.next().await {
                    Some(Ok(WatchRequest {
                        request_union: Some(watch_request::RequestUnion::CreateRequest(_)),
                    })) => {
                        let watch_id = state.next_watch_id;
                        state.next_watch_id += 1;
                        if watch_id == 0 {
                            state.pending.extend(foo_watch_responses(watch_id));
                        } else {
                            state.pending.push_back(WatchResponse {
                                header: header(7),
                                watch_id,
                                created: true,
                                ..Default::default()
                            });
                        }
                    }
                    Some(Ok(_)) => state.pending.push_back(WatchResponse {
                        header: header(7),
                        watch_id: -1,
                        ..Default::default()
                    }),
                    Some(Err(status)) => return Some((Err(status), state)),
                    None => futures_lite::future::pending::<()>().await,
                }
            }
        });
        Ok(Response::new(Box::pin(responses)))
    }
}
