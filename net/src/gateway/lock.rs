//! The Lock and Election services, built as etcd builds them: from KV, lease and watch
//! requests against the store (keys `<name>/<lease id in hex>`, ordered by create
//! revision). Everything goes through the bridge like any client's request.

use corekv_engine::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, EventKind, KeyValue, LeaseId,
    PutRequest, RangeRequest, RequestOp, ResponseOp, Revision, SortOrder, SortTarget, TxnRequest,
    WatchRequest,
};
use tokio::sync::mpsc;
use tonic::{Code, Request as GrpcRequest, Response as GrpcResponse, Status};

use super::convert::{header, key_value, unexpected};
use super::pb::{v3electionpb as epb, v3lockpb as lpb};
use super::service::{BoxStream, Gateway, ReceiverStream};
use crate::protocol::{Header, Request, Response};
use crate::server::bridge::stream_channel;

fn not_leader() -> Status {
    Status::new(Code::Unknown, "election: not leader")
}

fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn first_created(prefix: &[u8]) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: SortOrder::Ascend,
        sort_target: SortTarget::Create,
        ..RangeRequest::default()
    }
}

fn create_is(key: &[u8], revision: i64) -> Compare {
    Compare {
        result: CompareResult::Equal,
        target: CompareTarget::Create(Revision(revision)),
        key: key.to_vec(),
        range_end: Vec::new(),
    }
}

impl Gateway {
    async fn txn(&self, txn: TxnRequest) -> Result<(Header, corekv_engine::TxnResponse), Status> {
        match self.call(Request::Txn(txn)).await? {
            Response::Txn(h, r) => Ok((h, r)),
            other => Err(unexpected(&other)),
        }
    }

    async fn range(&self, range: RangeRequest) -> Result<(Header, Vec<KeyValue>), Status> {
        match self.call(Request::Range(range)).await? {
            Response::Range(h, r) => Ok((h, r.kvs)),
            other => Err(unexpected(&other)),
        }
    }

    async fn delete(&self, key: &[u8]) -> Result<Header, Status> {
        let delete = DeleteRangeRequest {
            key: key.to_vec(),
            ..DeleteRangeRequest::default()
        };
        match self.call(Request::DeleteRange(delete)).await? {
            Response::DeleteRange(h, _) => Ok(h),
            other => Err(unexpected(&other)),
        }
    }

    /// Creates `key` with `value` under `lease` unless it exists; returns the header and
    /// the key's create revision, and the first-created key under `prefix`.
    async fn enqueue(
        &self,
        key: &[u8],
        value: &[u8],
        lease: i64,
        prefix: &[u8],
    ) -> Result<(Header, i64, Option<KeyValue>, bool), Status> {
        let put = PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease: LeaseId(lease),
            ..PutRequest::default()
        };
        let get = RangeRequest {
            key: key.to_vec(),
            ..RangeRequest::default()
        };
        let txn = TxnRequest {
            compare: vec![create_is(key, 0)],
            success: vec![RequestOp::Put(put), RequestOp::Range(first_created(prefix))],
            failure: vec![
                RequestOp::Range(get),
                RequestOp::Range(first_created(prefix)),
            ],
        };
        let (h, response) = self.txn(txn).await?;
        let mut responses = response.responses.into_iter();
        let mine = responses.next();
        let owner = match responses.next() {
            Some(ResponseOp::Range(r)) => r.kvs.into_iter().next(),
            _ => None,
        };
        let created = if response.succeeded {
            h.revision.0
        } else {
            match mine {
                Some(ResponseOp::Range(r)) => r.kvs.first().map_or(0, |kv| kv.create_revision.0),
                _ => 0,
            }
        };
        Ok((h, created, owner, response.succeeded))
    }

    /// Waits until no key under `prefix` was created at or before `revision`.
    async fn wait_deletes(&self, prefix: &[u8], revision: i64) -> Result<Header, Status> {
        loop {
            let newest_older = RangeRequest {
                key: prefix.to_vec(),
                range_end: prefix_end(prefix),
                limit: 1,
                sort_order: SortOrder::Descend,
                sort_target: SortTarget::Create,
                max_create_revision: Revision(revision),
                ..RangeRequest::default()
            };
            let (h, kvs) = self.range(newest_older).await?;
            let Some(blocker) = kvs.into_iter().next() else {
                return Ok(h);
            };
            self.wait_event(&blocker.key, &[], h.revision.0 + 1, EventKind::Delete)
                .await?;
        }
    }

    /// Waits for the first event of `kind` on `[key, range_end)` from `start`.
    async fn wait_event(
        &self,
        key: &[u8],
        range_end: &[u8],
        start: i64,
        kind: EventKind,
    ) -> Result<KeyValue, Status> {
        let watch = WatchRequest {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            start_revision: Revision(start),
            no_put: kind == EventKind::Delete,
            no_delete: kind == EventKind::Put,
            prev_kv: false,
        };
        Ok(self.first_event(watch).await?.kv)
    }

    /// The next change of `key` from `start`: its new value, or `None` once deleted.
    async fn wait_any(&self, key: &[u8], start: i64) -> Result<Option<KeyValue>, Status> {
        let watch = WatchRequest {
            key: key.to_vec(),
            start_revision: Revision(start),
            ..WatchRequest::default()
        };
        let event = self.first_event(watch).await?;
        Ok(match event.kind {
            EventKind::Put => Some(event.kv),
            EventKind::Delete => None,
        })
    }

    /// Watches on a session of its own until the first event, then closes it.
    async fn first_event(&self, watch: WatchRequest) -> Result<corekv_engine::Event, Status> {
        let session = self.shard.open_session();
        let _closer = SessionCloser(self.shard.clone(), session);
        let (tx, mut rx) = stream_channel();
        self.shard
            .stream(session, Request::WatchCreate(watch), tx)
            .await
            .map_err(|_| Status::unavailable("etcdserver: server stopped"))?;
        while let Some((_, reply)) = rx.recv().await {
            match reply {
                Response::WatchEvents(_, events) => {
                    if let Some(event) = events.into_iter().next() {
                        return Ok(event);
                    }
                }
                Response::WatchCreated(_) => {}
                Response::WatchCanceled { .. } => {
                    return Err(Status::unavailable("corekv: watch canceled while waiting"))
                }
                other => return Err(unexpected(&other)),
            }
        }
        Err(Status::unavailable("etcdserver: server stopped"))
    }
}

/// Closes a bridge session when dropped (a waiter whose client went away).
struct SessionCloser(crate::server::bridge::ShardHandle, u64);

impl Drop for SessionCloser {
    fn drop(&mut self) {
        self.0.close_soon(self.1);
    }
}

/// Deletes a queued key when dropped unless disarmed (a lock or campaign abandoned by
/// its client, as etcd's concurrency package does).
struct Abandon {
    gateway: Option<Gateway>,
    key: Vec<u8>,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if let Some(gateway) = self.gateway.take() {
            let key = std::mem::take(&mut self.key);
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = gateway.delete(&key).await;
                });
            }
        }
    }
}

#[tonic::async_trait]
impl lpb::lock_server::Lock for Gateway {
    async fn lock(
        &self,
        request: GrpcRequest<lpb::LockRequest>,
    ) -> Result<GrpcResponse<lpb::LockResponse>, Status> {
        let request = request.into_inner();
        let mut prefix = request.name.clone();
        prefix.push(b'/');
        let key = [prefix.clone(), format!("{:x}", request.lease).into_bytes()].concat();
        let (h, created, owner, _) = self.enqueue(&key, b"", request.lease, &prefix).await?;
        let mut guard = Abandon {
            gateway: Some(self.clone()),
            key: key.clone(),
        };
        let mut last = h;
        if owner.is_some_and(|owner| owner.create_revision.0 != created) {
            self.wait_deletes(&prefix, created - 1).await?;
            let (h, mine) = self
                .range(RangeRequest {
                    key: key.clone(),
                    ..RangeRequest::default()
                })
                .await?;
            if mine.is_empty() {
                guard.gateway = None;
                return Err(Status::new(Code::Unknown, "concurrency: session expired"));
            }
            last = h;
        }
        guard.gateway = None;
        Ok(GrpcResponse::new(lpb::LockResponse {
            header: header(&last),
            key,
        }))
    }

    async fn unlock(
        &self,
        request: GrpcRequest<lpb::UnlockRequest>,
    ) -> Result<GrpcResponse<lpb::UnlockResponse>, Status> {
        let h = self.delete(&request.into_inner().key).await?;
        Ok(GrpcResponse::new(lpb::UnlockResponse {
            header: header(&h),
        }))
    }
}

#[tonic::async_trait]
impl epb::election_server::Election for Gateway {
    type ObserveStream = BoxStream<epb::LeaderResponse>;

    async fn campaign(
        &self,
        request: GrpcRequest<epb::CampaignRequest>,
    ) -> Result<GrpcResponse<epb::CampaignResponse>, Status> {
        let request = request.into_inner();
        let mut prefix = request.name.clone();
        prefix.push(b'/');
        let key = [prefix.clone(), format!("{:x}", request.lease).into_bytes()].concat();
        let (h, created, _, succeeded) = self
            .enqueue(&key, &request.value, request.lease, &prefix)
            .await?;
        let guard = Abandon {
            gateway: Some(self.clone()),
            key: key.clone(),
        };
        if !succeeded {
            // Already campaigning under this lease: take the new value, as etcd does.
            self.proclaim_at(&key, created, &request.value, request.lease)
                .await?;
        }
        self.wait_deletes(&prefix, created - 1).await?;
        let mut guard = guard;
        guard.gateway = None;
        Ok(GrpcResponse::new(epb::CampaignResponse {
            header: header(&h),
            leader: Some(epb::LeaderKey {
                name: request.name,
                key,
                rev: created,
                lease: request.lease,
            }),
        }))
    }

    async fn proclaim(
        &self,
        request: GrpcRequest<epb::ProclaimRequest>,
    ) -> Result<GrpcResponse<epb::ProclaimResponse>, Status> {
        let request = request.into_inner();
        let leader = request
            .leader
            .ok_or_else(|| Status::invalid_argument("\"leader\" field must be provided"))?;
        let h = self
            .proclaim_at(&leader.key, leader.rev, &request.value, leader.lease)
            .await?;
        Ok(GrpcResponse::new(epb::ProclaimResponse {
            header: header(&h),
        }))
    }

    async fn leader(
        &self,
        request: GrpcRequest<epb::LeaderRequest>,
    ) -> Result<GrpcResponse<epb::LeaderResponse>, Status> {
        let mut prefix = request.into_inner().name;
        prefix.push(b'/');
        let (h, kvs) = self.range(first_created(&prefix)).await?;
        match kvs.into_iter().next() {
            Some(kv) => Ok(GrpcResponse::new(epb::LeaderResponse {
                header: header(&h),
                kv: Some(key_value(kv)),
            })),
            None => Err(Status::new(Code::Unknown, "election: no leader")),
        }
    }

    async fn observe(
        &self,
        request: GrpcRequest<epb::LeaderRequest>,
    ) -> Result<GrpcResponse<Self::ObserveStream>, Status> {
        let mut prefix = request.into_inner().name;
        prefix.push(b'/');
        let (out, responses) = mpsc::channel(16);
        let gateway = self.clone();
        tokio::spawn(async move {
            if let Err(status) = observe(&gateway, &prefix, &out).await {
                let _ = out.send(Err(status)).await;
            }
        });
        Ok(GrpcResponse::new(Box::pin(ReceiverStream(responses))))
    }

    async fn resign(
        &self,
        request: GrpcRequest<epb::ResignRequest>,
    ) -> Result<GrpcResponse<epb::ResignResponse>, Status> {
        let leader = request
            .into_inner()
            .leader
            .ok_or_else(|| Status::invalid_argument("\"leader\" field must be provided"))?;
        let delete = DeleteRangeRequest {
            key: leader.key.clone(),
            ..DeleteRangeRequest::default()
        };
        let txn = TxnRequest {
            compare: vec![create_is(&leader.key, leader.rev)],
            success: vec![RequestOp::DeleteRange(delete)],
            failure: Vec::new(),
        };
        let (h, _) = self.txn(txn).await?;
        Ok(GrpcResponse::new(epb::ResignResponse {
            header: header(&h),
        }))
    }
}

impl Gateway {
    async fn proclaim_at(
        &self,
        key: &[u8],
        revision: i64,
        value: &[u8],
        lease: i64,
    ) -> Result<Header, Status> {
        let put = PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease: LeaseId(lease),
            ..PutRequest::default()
        };
        let txn = TxnRequest {
            compare: vec![create_is(key, revision)],
            success: vec![RequestOp::Put(put)],
            failure: Vec::new(),
        };
        let (h, response) = self.txn(txn).await?;
        if !response.succeeded {
            return Err(not_leader());
        }
        Ok(h)
    }
}

/// Streams the election's leader each time it changes (a new leader, or a new value
/// proclaimed), until the client goes away.
async fn observe(
    gateway: &Gateway,
    prefix: &[u8],
    out: &mpsc::Sender<Result<epb::LeaderResponse, Status>>,
) -> Result<(), Status> {
    loop {
        let (h, kvs) = gateway.range(first_created(prefix)).await?;
        let mut leader = match kvs.into_iter().next() {
            Some(kv) => kv,
            None => {
                gateway
                    .wait_event(
                        prefix,
                        &prefix_end(prefix),
                        h.revision.0 + 1,
                        EventKind::Put,
                    )
                    .await?
            }
        };
        loop {
            let response = epb::LeaderResponse {
                header: header(&Header {
                    revision: leader.mod_revision,
                    ..h
                }),
                kv: Some(key_value(leader.clone())),
            };
            if out.send(Ok(response)).await.is_err() {
                return Ok(());
            }
            let next = gateway
                .wait_any(&leader.key, leader.mod_revision.0 + 1)
                .await?;
            match next {
                Some(kv) => leader = kv,
                None => break,
            }
        }
    }
}
