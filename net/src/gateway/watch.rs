//! The Watch service: many watches on one bidirectional stream, as etcd serves them.
//!
//! Each gRPC stream is one bridge session (so closing the stream cancels its watches
//! in the shard). Watch ids are chosen by the client (non-zero `watch_id`) or by the
//! server (the smallest free id counting up from 0, as etcd). Created responses come
//! before the watch's events because the shard answers the create before it polls the
//! watcher, on the same ordered channel. Large event batches are split into fragments
//! of at most `--max-request-bytes` plus the gRPC allowance when the watch asked for it; progress requests are
//! answered once every watch of the stream has caught up; `progress_notify` watches get
//! an empty response every [`PROGRESS_NOTIFY_INTERVAL`] they are idle.

use std::collections::HashMap;
use std::time::Duration;

use corekv_engine::{Revision, WatchRequest};
use prost::Message;
use tokio::sync::mpsc;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status, Streaming};

use super::convert::{event, header, unexpected};
use super::pb::etcdserverpb as pb;
use super::service::{BoxStream, Gateway, ReceiverStream};
use crate::protocol::{Request, Response};
use crate::server::bridge::{stream_channel, STREAM_OVERFLOW_MESSAGE};

/// How often an idle `progress_notify` watch hears the current revision (etcd's
/// default).
pub const PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_secs(600);
/// Responses queued for a slow gRPC client before the stream stops reading the shard.
const OUTGOING_QUEUE_MAX: usize = 256;
/// How long a progress request waits for unsynced watches, retrying.
const PROGRESS_RETRY: Duration = Duration::from_millis(50);

/// etcd's id for responses that belong to no watch.
const INVALID_WATCH_ID: i64 = -1;

struct WatchState {
    id: i64,
    fragment: bool,
    progress_notify: bool,
    /// Events or progress sent since the last notify tick.
    active: bool,
}

#[tonic::async_trait]
impl pb::watch_server::Watch for Gateway {
    type WatchStream = BoxStream<pb::WatchResponse>;

    async fn watch(
        &self,
        request: GrpcRequest<Streaming<pb::WatchRequest>>,
    ) -> Result<GrpcResponse<Self::WatchStream>, Status> {
        let incoming = request.into_inner();
        let (out, responses) = mpsc::channel(OUTGOING_QUEUE_MAX);
        let gateway = self.clone();
        tokio::spawn(async move {
            let session = gateway.shard.open_session();
            serve_stream(&gateway, session, incoming, out).await;
            gateway.shard.close(session).await;
        });
        Ok(GrpcResponse::new(Box::pin(ReceiverStream(responses))))
    }
}

type Out = mpsc::Sender<Result<pb::WatchResponse, Status>>;

async fn serve_stream(
    gateway: &Gateway,
    session: u64,
    mut incoming: Streaming<pb::WatchRequest>,
    out: Out,
) {
    let (replies_tx, mut replies) = stream_channel();
    // Bridge request id -> watch; gRPC watch id -> bridge request id.
    let mut watches: HashMap<u64, WatchState> = HashMap::new();
    let mut by_id: HashMap<i64, u64> = HashMap::new();
    let mut next_id: i64 = 0;
    let mut notify = tokio::time::interval(PROGRESS_NOTIFY_INTERVAL);
    notify.tick().await;
    // etcd fragments above what one gRPC message may carry: the request limit plus the
    // gRPC allowance.
    let fragment_bytes = gateway.config.request_bytes_max + super::serve::GRPC_OVERHEAD_BYTES;
    // A client that closes its sending side still receives (as etcd): the stream ends
    // when the client stops listening or the transport breaks.
    let mut receiving = true;
    loop {
        tokio::select! {
            _ = out.closed() => return,
            message = incoming.message(), if receiving => {
                let request = match message {
                    Ok(Some(request)) => request,
                    Ok(None) => {
                        receiving = false;
                        continue;
                    }
                    Err(_) => return,
                };
                use pb::watch_request::RequestUnion;
                match request.request_union {
                    Some(RequestUnion::CreateRequest(create)) => {
                        let id = if create.watch_id != 0 {
                            if by_id.contains_key(&create.watch_id) {
                                let failed = created_failed(
                                    gateway,
                                    "mvcc: duplicate watch ID provided on the WatchStream",
                                )
                                .await;
                                if out.send(failed).await.is_err() {
                                    return;
                                }
                                continue;
                            }
                            create.watch_id
                        } else {
                            while by_id.contains_key(&next_id) {
                                next_id += 1;
                            }
                            next_id += 1;
                            next_id - 1
                        };
                        let key = if create.key.is_empty() { vec![0] } else { create.key };
                        let range_end = create.range_end;
                        if !range_end.is_empty() && range_end != [0] && key >= range_end {
                            let failed = created_failed(gateway, "mvcc: watcher range is empty").await;
                            if out.send(failed).await.is_err() {
                                return;
                            }
                            continue;
                        }
                        let watch = WatchRequest {
                            key,
                            range_end,
                            start_revision: Revision(create.start_revision),
                            no_put: create.filters.contains(&0),
                            no_delete: create.filters.contains(&1),
                            prev_kv: create.prev_kv,
                        };
                        let Ok(request_id) = gateway
                            .shard
                            .stream(session, Request::WatchCreate(watch), replies_tx.clone())
                            .await
                        else {
                            return;
                        };
                        by_id.insert(id, request_id);
                        watches.insert(
                            request_id,
                            WatchState {
                                id,
                                fragment: create.fragment,
                                progress_notify: create.progress_notify,
                                active: false,
                            },
                        );
                    }
                    Some(RequestUnion::CancelRequest(cancel)) => {
                        // Answered when the shard's cancellation reaches the watch's own
                        // replies (below), so it follows every event already sent.
                        if let Some(request_id) = by_id.get(&cancel.watch_id) {
                            let cancel = Request::WatchCancel { watch_id: *request_id };
                            if gateway.shard.call_in(session, cancel).await.is_err() {
                                return;
                            }
                        }
                    }
                    Some(RequestUnion::ProgressRequest(_)) => {
                        let gateway = gateway.clone();
                        let out = out.clone();
                        tokio::spawn(async move {
                            if let Some(progress) = synced_progress(&gateway, session).await {
                                let _ = out.send(Ok(progress)).await;
                            }
                        });
                    }
                    // etcd ignores a request with nothing in it.
                    None => {}
                }
            }
            reply = replies.recv() => {
                let Some((request_id, response)) = reply else { return };
                let Some(state) = watches.get_mut(&request_id) else { continue };
                let id = state.id;
                match response {
                    Response::WatchCreated(h) => {
                        let created = pb::WatchResponse {
                            header: header(&h),
                            watch_id: id,
                            created: true,
                            ..pb::WatchResponse::default()
                        };
                        if out.send(Ok(created)).await.is_err() {
                            return;
                        }
                    }
                    Response::WatchEvents(h, events) => {
                        state.active = true;
                        let response = pb::WatchResponse {
                            header: header(&h),
                            watch_id: id,
                            events: events.into_iter().map(event).collect(),
                            ..pb::WatchResponse::default()
                        };
                        let pieces = if state.fragment {
                            fragments(response, fragment_bytes)
                        } else {
                            vec![response]
                        };
                        for piece in pieces {
                            if out.send(Ok(piece)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Response::WatchCanceled { header: h, compact_revision } => {
                        watches.remove(&request_id);
                        by_id.remove(&id);
                        // etcd's cancellation by compaction carries no revision.
                        let h = if compact_revision.0 != 0 {
                            crate::protocol::Header { revision: Revision(0), ..h }
                        } else {
                            h
                        };
                        let canceled = pb::WatchResponse {
                            header: header(&h),
                            watch_id: id,
                            canceled: true,
                            compact_revision: compact_revision.0,
                            ..pb::WatchResponse::default()
                        };
                        if out.send(Ok(canceled)).await.is_err() {
                            return;
                        }
                    }
                    Response::Error { code, message } if message == STREAM_OVERFLOW_MESSAGE => {
                        let _ = out.send(Err(super::convert::status(code, message))).await;
                        return;
                    }
                    other => {
                        // An error creating the watch: etcd reports it as a created and
                        // canceled response with the reason.
                        watches.remove(&request_id);
                        by_id.remove(&id);
                        let reason = match &other {
                            Response::Error { message, .. } => message.clone(),
                            _ => unexpected(&other).message().to_string(),
                        };
                        let failed = pb::WatchResponse {
                            header: gateway.current_header().await.ok().flatten(),
                            watch_id: id,
                            created: true,
                            canceled: true,
                            cancel_reason: reason,
                            ..pb::WatchResponse::default()
                        };
                        if out.send(Ok(failed)).await.is_err() {
                            return;
                        }
                    }
                }
            }
            _ = notify.tick() => {
                let idle: Vec<i64> = watches
                    .values_mut()
                    .filter(|w| w.progress_notify)
                    .filter_map(|w| {
                        let idle = !w.active;
                        w.active = false;
                        idle.then_some(w.id)
                    })
                    .collect();
                if idle.is_empty() {
                    continue;
                }
                let Some(progress) = synced_progress(gateway, session).await else { continue };
                for id in idle {
                    let response = pb::WatchResponse { watch_id: id, ..progress.clone() };
                    if out.send(Ok(response)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// A created-and-canceled response for a create etcd refuses.
async fn created_failed(gateway: &Gateway, reason: &str) -> Result<pb::WatchResponse, Status> {
    Ok(pb::WatchResponse {
        header: gateway.current_header().await?,
        watch_id: INVALID_WATCH_ID,
        created: true,
        canceled: true,
        cancel_reason: reason.to_string(),
        ..pb::WatchResponse::default()
    })
}

/// The current revision once every watch of the session has caught up (asking again
/// while some are behind), as a response for no particular watch; `None` if the server
/// stops first.
async fn synced_progress(gateway: &Gateway, session: u64) -> Option<pb::WatchResponse> {
    loop {
        match gateway.shard.call_in(session, Request::WatchProgress).await {
            Ok(Response::WatchProgress(h)) if h.revision.0 != 0 => {
                return Some(pb::WatchResponse {
                    header: header(&h),
                    watch_id: INVALID_WATCH_ID,
                    ..pb::WatchResponse::default()
                });
            }
            Ok(Response::WatchProgress(_)) => tokio::time::sleep(PROGRESS_RETRY).await,
            _ => return None,
        }
    }
}

/// Splits a response into fragments of at most `max_bytes` (etcd's rule: a fragment
/// holds at least one event; every fragment but the last has `fragment` set).
pub fn fragments(response: pb::WatchResponse, max_bytes: usize) -> Vec<pb::WatchResponse> {
    if response.encoded_len() < max_bytes || response.events.len() < 2 {
        return vec![response];
    }
    let mut pieces = Vec::new();
    let template = pb::WatchResponse {
        events: Vec::new(),
        fragment: true,
        ..response.clone()
    };
    let mut current = template.clone();
    let mut current_bytes = current.encoded_len();
    for event in response.events {
        let event_bytes = event.encoded_len() + 4;
        if !current.events.is_empty() && current_bytes + event_bytes >= max_bytes {
            pieces.push(std::mem::replace(&mut current, template.clone()));
            current_bytes = current.encoded_len();
        }
        current_bytes += event_bytes;
        current.events.push(event);
    }
    current.fragment = false;
    pieces.push(current);
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::pb::mvccpb;

    fn event_of(bytes: usize) -> mvccpb::Event {
        mvccpb::Event {
            kv: Some(mvccpb::KeyValue {
                key: b"k".to_vec(),
                value: vec![7; bytes],
                ..mvccpb::KeyValue::default()
            }),
            ..mvccpb::Event::default()
        }
    }

    /// Fragments keep every event in order, stay under the limit (but for single large
    /// events), and only the last is unflagged.
    #[test]
    fn fragments_split_by_size() {
        let response = pb::WatchResponse {
            watch_id: 3,
            events: (0..10).map(|i| event_of(100 + i)).collect(),
            ..pb::WatchResponse::default()
        };
        let pieces = fragments(response.clone(), 350);
        assert!(pieces.len() > 3, "{}", pieces.len());
        let mut events = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            assert_eq!(piece.watch_id, 3);
            assert_eq!(piece.fragment, i + 1 < pieces.len());
            assert!(piece.encoded_len() < 350 || piece.events.len() == 1);
            events.extend(piece.events.clone());
        }
        assert_eq!(events, response.events);
        // Small enough: one response, unflagged.
        let whole = fragments(response.clone(), 1 << 20);
        assert_eq!(whole, vec![response]);
    }
}
