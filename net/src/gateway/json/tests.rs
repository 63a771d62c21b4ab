//! Tests of the JSON codec and the gateway router against what a real etcd answers.
//!
//! Every expected string below was copied from a real etcd 3.4.23 (Debian's
//! `etcd-server`), started with
//!
//!     etcd --data-dir /tmp/pb-etcd --listen-client-urls http://127.0.0.1:23790 \
//!       --advertise-client-urls http://127.0.0.1:23790 \
//!       --listen-peer-urls http://127.0.0.1:23800 \
//!       --initial-advertise-peer-urls http://127.0.0.1:23800 \
//!       --initial-cluster default=http://127.0.0.1:23800
//!
//! and asked, in this order (E=localhost:23790, `curl -s -i -X POST $E<path> -d <body>`):
//!
//!     /v3/kv/range      '{"key":"!!!"}'        400 illegal base64
//!     /v3/kv/range      'garbage'              400 invalid character 'g'
//!     /v3/kv/put        '{"key":"Zm9v","value":"YmFy","lease":"12345"}'   404 lease not found
//!     /v3/kv/put        '{"key":"Zm9v","value":"YmFy"}'                   revision 2
//!     /v3/kv/put        '{"key":"Zm9v","value":"YmF6","prev_kv":true}'    revision 3
//!     /v3/kv/range      '{"key":"Zm9v"}'
//!     /v3/kv/range      ''  and  '{"foo":1}'   400 key is not provided (unknown field ignored)
//!     /v3/kv/range      'null'  and  '{"key":null}'   the same (null is "not set")
//!     /v3/kv/range      '{"key":"Zm9v","revision":100}'   400 code 11 future revision
//!     /v3/kv/range      '{"key":"Zm9v"} garbage'          200 (rest of the body ignored)
//!     /v3/kv/txn        '{"compare":[{"key":"Zm9v","result":"EQUAL","target":"VALUE",
//!                         "value":"YmF6"}],"success":[{"request_range":{"key":"Zm9v"}},
//!                         {"request_put":{"key":"Zm9v","value":"cXV4"}}],"failure":[]}'
//!     /v3/lease/grant   '{"TTL":"30","ID":"777"}'
//!     /v3/lease/timetolive '{"ID":"777","keys":true}'
//!     /v3/maintenance/status, /v3/maintenance/alarm, /v3/maintenance/hash,
//!     /v3/cluster/member/list (empty bodies)
//!     /v3beta/kv/range  '{"key":"Zm9v"}'       200;  /v3/kv/nonexist: 404 "Not Found"
//!     curl -X GET / -X PUT /v3/kv/range         405 "Method Not Allowed"
//!     curl -N /v3/watch '{"create_request":{"key":"Zm9v"}}', then
//!       `etcdctl put foo v1; etcdctl put foo v2; etcdctl del foo`
//!     curl -N /v3/watch '{"create_request":{"key":"Zm9v"}}{"create_request":{"key":"YmFy"}}'
//!     curl -N /v3/watch '{"create_request":{"key":"Zm9v"}}\n{"progress_request":{}}'
//!     curl -N /v3/watch 'garbage' and /v3/lease/keepalive 'garbage'   500 code 2
//!     curl -N /v3/lease/keepalive '{"ID":"777"}' and '{"ID":"778"}' and ''  (200, no line)
//!     /v3/election/leader '{"name":"bm9uZQ=="}'                      500 no leader
//!     then `etcdctl user add root; user grant-role root root; auth enable`, and
//!     curl -N /v3/maintenance/snapshot ''      500 stream error chunk
//!     /v3/auth/authenticate '{"name":"root","password":"rootpw"}'
//!     /v3/kv/range with `-H "Authorization: bogus"`                   401 code 16
//!
//! The service behind the router here is a fake that answers with the messages etcd
//! answered with, so the bytes the router writes can be compared with etcd's.

mod etcd;
mod fake;

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use axum::body::{Body, Bytes};
use axum::http::{Request as HttpRequest, StatusCode};
use axum::response::Response as HttpResponse;
use axum::Router;
use futures_lite::future::block_on;
use futures_lite::{Stream, StreamExt};
use tonic::{Code, Status};
use tower::ServiceExt;

use super::{http_status, router, router_with_body_limit, BodyError, JsonReader};
use crate::gateway::pb::etcdserverpb::*;
use etcd::*;
use fake::Fake;

// ---- Driving the router ----

fn post(path: &str, body: impl Into<Body>) -> HttpRequest<Body> {
    HttpRequest::post(path)
        .body(body.into())
        .expect("a valid request")
}

fn send(router: &Router, request: HttpRequest<Body>) -> HttpResponse {
    block_on(router.clone().oneshot(request)).expect("the router is infallible")
}

/// Status, content type and the whole body as text.
fn send_and_read(router: &Router, request: HttpRequest<Body>) -> (StatusCode, String, String) {
    let response = send(router, request);
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().expect("ascii").to_string())
        .unwrap_or_default();
    let body = block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
        .expect("the body is readable");
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).expect("utf-8"),
    )
}

/// The response body's chunks as they come; each is one line of a stream.
fn chunks(response: HttpResponse) -> impl Stream<Item = String> {
    response.into_body().into_data_stream().map(|chunk| {
        String::from_utf8(chunk.expect("the body is readable").to_vec()).expect("utf-8")
    })
}

fn fake_router(fake: Fake) -> (Arc<Fake>, Router) {
    let fake = Arc::new(fake);
    (Arc::clone(&fake), router(Arc::clone(&fake)))
}

// ---- Unary endpoints ----

#[test]
fn a_unary_call_answers_200_with_the_message_as_etcd_wrote_it() {
    let (fake, router) = fake_router(
        Fake::default()
            .answer("range", Ok(range_response()))
            .answer("txn", Ok(txn_response()))
            .answer("status", Ok(status_response()))
            .answer("member_list", Ok(member_list_response())),
    );
    let (status, content_type, body) =
        send_and_read(&router, post("/v3/kv/range", r#"{"key":"Zm9v"}"#));
    assert_eq!(
        (status, content_type.as_str(), body.as_str()),
        (StatusCode::OK, "application/json", RANGE_RESPONSE)
    );
    let (status, _, body) = send_and_read(&router, post("/v3/kv/txn", TXN_REQUEST));
    assert_eq!((status, body.as_str()), (StatusCode::OK, TXN_RESPONSE));
    let (_, _, body) = send_and_read(&router, post("/v3/maintenance/status", ""));
    assert_eq!(body, STATUS_RESPONSE);
    let (_, _, body) = send_and_read(&router, post("/v3/cluster/member/list", ""));
    assert_eq!(body, MEMBER_LIST_RESPONSE);

    let methods: Vec<&str> = fake.calls().iter().map(|call| call.method).collect();
    assert_eq!(methods, ["range", "txn", "status", "member_list"]);
    assert_eq!(fake.calls()[0].request, r#"{"key":"Zm9v"}"#);
    assert_eq!(
        fake.calls()[1].request,
        to_json(&serde_json::from_str::<TxnRequest>(TXN_REQUEST).expect("parses"))
    );
}

#[test]
fn every_etcd_path_reaches_its_method() {
    // Each path of etcd 3.4's gateway (plus 3.5's hashkv and auth/status) calls the
    // method of the same name, under /v3 and /v3beta alike; the fake answers
    // Unimplemented, which proves the call got there.
    let paths = [
        ("/kv/range", "range"),
        ("/kv/put", "put"),
        ("/kv/deleterange", "delete_range"),
        ("/kv/txn", "txn"),
        ("/kv/compaction", "compact"),
        ("/lease/grant", "lease_grant"),
        ("/lease/revoke", "lease_revoke"),
        ("/kv/lease/revoke", "lease_revoke"),
        ("/lease/timetolive", "lease_time_to_live"),
        ("/kv/lease/timetolive", "lease_time_to_live"),
        ("/lease/leases", "lease_leases"),
        ("/kv/lease/leases", "lease_leases"),
        ("/cluster/member/add", "member_add"),
        ("/cluster/member/remove", "member_remove"),
        ("/cluster/member/update", "member_update"),
        ("/cluster/member/list", "member_list"),
        ("/cluster/member/promote", "member_promote"),
        ("/maintenance/alarm", "alarm"),
        ("/maintenance/status", "status"),
        ("/maintenance/defragment", "defragment"),
        ("/maintenance/hash", "hash"),
        ("/maintenance/hashkv", "hash_kv"),
        ("/maintenance/transfer-leadership", "move_leader"),
        ("/auth/enable", "auth_enable"),
        ("/auth/disable", "auth_disable"),
        ("/auth/status", "auth_status"),
        ("/auth/authenticate", "authenticate"),
        ("/auth/user/add", "user_add"),
        ("/auth/user/get", "user_get"),
        ("/auth/user/list", "user_list"),
        ("/auth/user/delete", "user_delete"),
        ("/auth/user/changepw", "user_change_password"),
        ("/auth/user/grant", "user_grant_role"),
        ("/auth/user/revoke", "user_revoke_role"),
        ("/auth/role/add", "role_add"),
        ("/auth/role/get", "role_get"),
        ("/auth/role/list", "role_list"),
        ("/auth/role/delete", "role_delete"),
        ("/auth/role/grant", "role_grant_permission"),
        ("/auth/role/revoke", "role_revoke_permission"),
        ("/lock/lock", "lock"),
        ("/lock/unlock", "unlock"),
        ("/election/campaign", "campaign"),
        ("/election/proclaim", "proclaim"),
        ("/election/leader", "leader"),
        ("/election/resign", "resign"),
    ];
    for prefix in ["/v3", "/v3beta"] {
        let (fake, router) = fake_router(Fake::default());
        for (path, method) in paths {
            let (status, _, body) = send_and_read(&router, post(&format!("{prefix}{path}"), ""));
            assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{prefix}{path}");
            assert_eq!(
                body,
                format!(r#"{{"error":"{method}","message":"{method}","code":12}}"#)
            );
        }
        let called: Vec<&str> = fake.calls().iter().map(|call| call.method).collect();
        let expected: Vec<&str> = paths.iter().map(|(_, method)| *method).collect();
        assert_eq!(called, expected);
    }
}

#[test]
fn service_errors_become_etcds_status_and_error_body() {
    let cases = [
        (
            "/v3/kv/put",
            "put",
            Status::not_found("etcdserver: requested lease not found"),
            StatusCode::NOT_FOUND,
            LEASE_NOT_FOUND_ERROR,
        ),
        (
            "/v3/kv/range",
            "range",
            Status::invalid_argument("etcdserver: key is not provided"),
            StatusCode::BAD_REQUEST,
            KEY_NOT_PROVIDED_ERROR,
        ),
        (
            "/v3/kv/range",
            "range",
            Status::out_of_range("etcdserver: mvcc: required revision is a future revision"),
            StatusCode::BAD_REQUEST,
            FUTURE_REVISION_ERROR,
        ),
        (
            "/v3/kv/range",
            "range",
            Status::unauthenticated("etcdserver: invalid auth token"),
            StatusCode::UNAUTHORIZED,
            INVALID_TOKEN_ERROR,
        ),
        (
            "/v3/election/leader",
            "leader",
            Status::unknown("election: no leader"),
            StatusCode::INTERNAL_SERVER_ERROR,
            NO_LEADER_ERROR,
        ),
    ];
    for (path, method, error, http, body) in cases {
        let (_, router) = fake_router(Fake::default().answer::<RangeResponse>(method, Err(error)));
        let (status, content_type, text) = send_and_read(&router, post(path, r#"{"key":"Zm9v"}"#));
        assert_eq!(
            (status, content_type.as_str(), text.as_str()),
            (http, "application/json", body)
        );
    }
}

#[test]
fn grpc_codes_map_to_the_http_statuses_of_etcds_gateway() {
    let expected = [
        (Code::Ok, 200),
        (Code::Cancelled, 408),
        (Code::Unknown, 500),
        (Code::InvalidArgument, 400),
        (Code::DeadlineExceeded, 504),
        (Code::NotFound, 404),
        (Code::AlreadyExists, 409),
        (Code::PermissionDenied, 403),
        (Code::Unauthenticated, 401),
        (Code::ResourceExhausted, 429),
        (Code::FailedPrecondition, 412),
        (Code::Aborted, 409),
        (Code::OutOfRange, 400),
        (Code::Unimplemented, 501),
        (Code::Internal, 500),
        (Code::Unavailable, 503),
        (Code::DataLoss, 500),
    ];
    for (code, http) in expected {
        assert_eq!(http_status(code).as_u16(), http, "{code:?}");
    }
}

/// The status and message of a body refused as JSON, after checking that the body
/// has etcd's shape exactly: `{"error":m,"message":m,"code":3}`.
fn refused_json(router: &Router, path: &str, body: &'static str) -> (StatusCode, String) {
    let (status, content_type, text) = send_and_read(router, post(path, body));
    assert_eq!(content_type, "application/json");
    let error: serde_json::Value = serde_json::from_str(&text).expect("the error body is JSON");
    let message = error["message"].as_str().expect("a message").to_string();
    let quoted = serde_json::to_string(&message).expect("a string");
    assert_eq!(
        text,
        format!(r#"{{"error":{quoted},"message":{quoted},"code":3}}"#)
    );
    (status, message)
}

#[test]
fn a_body_that_does_not_parse_is_invalid_argument_before_the_service() {
    // etcd: 400 {"error":"<why>","message":"<why>","code":3}; the words differ
    // (serde_json's, not Go's), the shape does not.
    let (fake, router) = fake_router(Fake::default());
    for body in ["garbage", r#"{"key":"!!!"}"#, r#"{"limit":"abc"}"#, "[1]"] {
        let (status, message) = refused_json(&router, "/v3/kv/range", body);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {message}");
    }
    // A body cut inside a value: Go's words exactly.
    let (status, message) = refused_json(&router, "/v3/kv/put", r#"{"key":"Zm9v""#);
    assert_eq!(
        (status, message.as_str()),
        (StatusCode::BAD_REQUEST, "unexpected EOF")
    );
    assert!(fake.calls().is_empty());
}

#[test]
fn only_the_first_json_value_of_the_body_is_read() {
    // etcd answered '{"key":"Zm9v"} garbage' and '{"key":"Zm9v"}{"key":"Zm9v"}' as a
    // plain range of foo; an empty body is the default request.
    let (fake, router) = fake_router(Fake::default().answer("range", Ok(range_response())));
    for body in [
        r#"{"key":"Zm9v"} garbage"#,
        r#" {"key":"Zm9v"}{"key":"YmFy"}"#,
        "",
    ] {
        let (status, _, text) = send_and_read(&router, post("/v3/kv/range", body));
        assert_eq!((status, text.as_str()), (StatusCode::OK, RANGE_RESPONSE));
    }
    let requests: Vec<String> = fake.calls().into_iter().map(|call| call.request).collect();
    assert_eq!(requests, [r#"{"key":"Zm9v"}"#, r#"{"key":"Zm9v"}"#, "{}"]);
}

#[test]
fn null_means_not_set_as_in_etcd() {
    // etcd took 'null' and '{"key":null}' as an empty range request ("key is not
    // provided"), and null for a nested message as not set.
    let (fake, router) = fake_router(Fake::default().answer("range", Ok(range_response())));
    for body in [
        "null",
        r#"{"key":null,"limit":null}"#,
        r#"{"key":"Zm9v","range_end":null}"#,
    ] {
        let (status, _, _) = send_and_read(&router, post("/v3/kv/range", body));
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let requests: Vec<String> = fake.calls().into_iter().map(|call| call.request).collect();
    assert_eq!(requests, ["{}", "{}", r#"{"key":"Zm9v"}"#]);
    let parsed: TxnRequest = super::parse_message(
        br#"{"success":[{"request_put":{"key":"Zm9v","value":"bnVsbA==","lease":null}}],"compare":null}"#,
    )
    .expect("parses");
    assert_eq!(
        parsed.success[0].request,
        Some(request_op::Request::RequestPut(PutRequest {
            key: b"foo".to_vec(),
            value: b"null".to_vec(),
            ..Default::default()
        }))
    );
}

#[test]
fn the_authorization_header_and_grpc_metadata_headers_reach_the_service() {
    let (fake, router) = fake_router(Fake::default().answer(
        "authenticate",
        Ok(AuthenticateResponse {
            header: header(7),
            token: "KJjeHwNJBQIiMPKU.19".to_string(),
        }),
    ));
    let (_, _, body) = send_and_read(
        &router,
        post(
            "/v3/auth/authenticate",
            r#"{"name":"root","password":"rootpw"}"#,
        ),
    );
    assert_eq!(body, AUTHENTICATE_RESPONSE);
    let request = HttpRequest::post("/v3/kv/range")
        .header("Authorization", "KJjeHwNJBQIiMPKU.19")
        .header("Grpc-Metadata-Token", "tok")
        .header("X-Other", "dropped")
        .body(Body::from(r#"{"key":"Zm9v"}"#))
        .expect("a valid request");
    send(&router, request);
    let calls = fake.calls();
    assert_eq!(calls[0].request, r#"{"name":"root","password":"rootpw"}"#);
    assert_eq!(calls[0].authorization, None);
    assert_eq!(
        calls[1].authorization.as_deref(),
        Some("KJjeHwNJBQIiMPKU.19")
    );
    assert_eq!(calls[1].token.as_deref(), Some("tok"));
}

#[test]
fn response_metadata_comes_back_as_grpc_metadata_headers() {
    // The fake's answers carry none: no such header. A status carries some.
    let (_, router) = fake_router(Fake::default().answer("range", Ok(range_response())));
    let response = send(&router, post("/v3/kv/range", r#"{"key":"Zm9v"}"#));
    assert!(!response
        .headers()
        .keys()
        .any(|name| name.as_str().starts_with("grpc-metadata-")));

    let mut status = Status::unavailable("etcdserver: no leader");
    status
        .metadata_mut()
        .insert("x-corekv-hint", "retry".parse().expect("ascii"));
    let (_, router) = fake_router(Fake::default().answer::<RangeResponse>("range", Err(status)));
    let response = send(&router, post("/v3/kv/range", r#"{"key":"Zm9v"}"#));
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["grpc-metadata-x-corekv-hint"], "retry");
}

#[test]
fn other_paths_and_methods_answer_as_go_does() {
    let (fake, router) = fake_router(Fake::default());
    for path in [
        "/v3/kv/nonexist",
        "/v3/",
        "/v3/kv/range/",
        "/v3beta/nothing",
    ] {
        let (status, content_type, body) = send_and_read(&router, post(path, "{}"));
        assert_eq!(
            (status, content_type.as_str(), body.as_str()),
            (
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "Not Found\n"
            ),
            "{path}"
        );
    }
    for method in ["GET", "PUT", "DELETE"] {
        let request = HttpRequest::builder()
            .method(method)
            .uri("/v3/kv/range")
            .body(Body::from(r#"{"key":"Zm9v"}"#))
            .expect("a valid request");
        let response = send(&router, request);
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        let (status, body) = (
            response.status(),
            block_on(axum::body::to_bytes(response.into_body(), usize::MAX)).expect("readable"),
        );
        assert_eq!(
            (status, &body[..]),
            (StatusCode::METHOD_NOT_ALLOWED, &b"Method Not Allowed\n"[..]),
            "{method}"
        );
    }
    assert!(fake.calls().is_empty());
}

#[test]
fn a_body_over_the_limit_is_resource_exhausted() {
    // The limit is 64 bytes: a body of 64 passes, 65 does not; on a stream the limit
    // is per request.
    let fake = Arc::new(Fake::default().answer("put", Ok(PutResponse::default())));
    let router = router_with_body_limit(Arc::clone(&fake), 64);
    let body_of = |length: usize| {
        let padding = length - r#"{"key":"Zm9v","value":""}"#.len();
        format!(r#"{{"key":"Zm9v","value":"{}"}}"#, "A".repeat(padding))
    };
    let (status, _, _) = send_and_read(&router, post("/v3/kv/put", body_of(64)));
    assert_eq!(status, StatusCode::OK);
    let (status, _, text) = send_and_read(&router, post("/v3/kv/put", body_of(65)));
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        text,
        r#"{"error":"gateway: request body larger than the limit of 64 bytes","message":"gateway: request body larger than the limit of 64 bytes","code":8}"#
    );
    assert_eq!(fake.calls().len(), 1);
}

// ---- Streams ----

#[test]
fn a_watch_streams_each_response_as_a_result_line_and_drops_the_stream_with_the_body() {
    let (fake, router) = fake_router(Fake::default());
    let response = send(
        &router,
        post("/v3/watch", r#"{"create_request":{"key":"Zm9v"}}"#),
    );
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let mut lines = chunks(response);
    for expected in WATCH_LINES {
        let line = block_on(lines.next()).expect("a line per response");
        assert_eq!(line, format!("{expected}\n"));
    }
    // The watch is still open (etcd's too): the client hanging up is what ends it.
    assert!(!fake.watch_dropped.load(Ordering::SeqCst));
    drop(lines);
    assert!(fake.watch_dropped.load(Ordering::SeqCst));
}

#[test]
fn a_watch_gets_every_request_of_the_body() {
    // Two creates (etcd answered the second with watch_id 1), then a progress request
    // on its own line.
    let (_, router) = fake_router(Fake::default());
    let body = "{\"create_request\":{\"key\":\"Zm9v\"}}{\"create_request\":{\"key\":\"YmFy\"}}\n{\"progress_request\":{}}";
    let mut lines = chunks(send(&router, post("/v3/watch", body)));
    let received: Vec<String> = (0..6)
        .map(|_| block_on(lines.next()).expect("a line"))
        .collect();
    let mut expected: Vec<String> = WATCH_LINES.iter().map(|line| format!("{line}\n")).collect();
    expected.push(format!("{WATCH_SECOND_CREATED_LINE}\n"));
    expected.push(format!("{WATCH_PROGRESS_LINE}\n"));
    assert_eq!(received, expected);
}

/// A request body the test writes to while the router reads it.
#[derive(Clone, Default)]
struct OpenBody(Arc<Mutex<OpenBodyState>>);

#[derive(Default)]
struct OpenBodyState {
    chunks: VecDeque<Bytes>,
    closed: bool,
    waker: Option<Waker>,
}

impl OpenBody {
    fn send(&self, chunk: &'static str) {
        let mut state = self.0.lock().expect("not poisoned");
        state.chunks.push_back(Bytes::from_static(chunk.as_bytes()));
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }
}

impl Stream for OpenBody {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut state = self.0.lock().expect("not poisoned");
        if let Some(chunk) = state.chunks.pop_front() {
            return Poll::Ready(Some(Ok(chunk)));
        }
        if state.closed {
            return Poll::Ready(None);
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[test]
fn a_watch_reads_requests_as_they_arrive_even_split_mid_value() {
    // The client keeps the body open: the first create, cut in two chunks, opens the
    // stream; a second create sent later is answered on the same stream.
    let (_, router) = fake_router(Fake::default());
    let body = OpenBody::default();
    body.send("{\"create_request\":{\"ke");
    body.send("y\":\"Zm9v\"}}\n");
    let mut lines = chunks(send(
        &router,
        post("/v3/watch", Body::from_stream(body.clone())),
    ));
    for expected in WATCH_LINES {
        assert_eq!(
            block_on(lines.next()).expect("a line"),
            format!("{expected}\n")
        );
    }
    body.send("{\"create_request\":{\"key\":\"YmFy\"}}");
    assert_eq!(
        block_on(lines.next()).expect("a line"),
        format!("{WATCH_SECOND_CREATED_LINE}\n")
    );
}

#[test]
fn a_bidirectional_stream_whose_first_request_does_not_parse_fails_with_500() {
    // etcd: HTTP 500 and code 2 (not 400 and 3 as for unary calls).
    let (_, router) = fake_router(Fake::default());
    for path in ["/v3/watch", "/v3/lease/keepalive"] {
        let (status, _, text) = send_and_read(&router, post(path, "garbage"));
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        let error: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(error["code"], 2, "{text}");
        assert_eq!(error["error"], error["message"]);
    }
}

#[test]
fn keepalive_answers_each_request_and_ends_with_the_body() {
    let (_, router) = fake_router(Fake::default());
    let (status, _, text) = send_and_read(&router, post("/v3/lease/keepalive", r#"{"ID":"777"}"#));
    assert_eq!(
        (status, text),
        (StatusCode::OK, format!("{KEEPALIVE_LINE}\n"))
    );
    let (_, _, text) = send_and_read(&router, post("/v3/lease/keepalive", r#"{"ID":"778"}"#));
    assert_eq!(text, format!("{KEEPALIVE_UNKNOWN_LINE}\n"));
    let (_, _, text) = send_and_read(
        &router,
        post("/v3/lease/keepalive", r#"{"ID":"777"} {"ID":"778"}"#),
    );
    assert_eq!(
        text,
        format!("{KEEPALIVE_LINE}\n{KEEPALIVE_UNKNOWN_LINE}\n")
    );
}

#[test]
fn a_stream_that_fails_before_its_first_message_takes_the_errors_status() {
    // etcd's snapshot without a token: HTTP 500 and one error chunk, no newline.
    let (_, router) = fake_router(Fake::default());
    let (status, content_type, text) = send_and_read(&router, post("/v3/maintenance/snapshot", ""));
    assert_eq!(
        (status, content_type.as_str(), text.as_str()),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/json",
            SNAPSHOT_NO_USER_ERROR
        )
    );
    // A call that fails before any stream exists looks the same.
    let (status, _, text) = send_and_read(
        &router,
        post("/v3/election/observe", r#"{"name":"bm9uZQ=="}"#),
    );
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        text,
        r#"{"error":{"grpc_code":2,"http_code":500,"message":"election: no leader","http_status":"Internal Server Error"}}"#
    );
}

#[test]
fn a_stream_that_fails_later_ends_with_an_error_chunk_after_a_200() {
    let (_, router) = fake_router(Fake::default());
    let request = HttpRequest::post("/v3/maintenance/snapshot")
        .header("Authorization", "token")
        .body(Body::empty())
        .expect("a valid request");
    let (status, _, text) = send_and_read(&router, request);
    assert_eq!(status, StatusCode::OK);
    let header = r#""header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"7","raft_term":"2"}"#;
    assert_eq!(
        text,
        format!(
            "{{\"result\":{{{header},\"remaining_bytes\":\"1\",\"blob\":\"AAEC\"}}}}\n\
             {{\"result\":{{{header},\"blob\":\"Aw==\"}}}}\n\
             {{\"error\":{{\"grpc_code\":14,\"http_code\":503,\"message\":\"etcdserver: leader changed\",\"http_status\":\"Service Unavailable\"}}}}"
        )
    );
}

// ---- The body reader ----

/// Every value the reader finds in `chunks`, as text, and how it stopped.
fn read_values(chunks: &[&'static str], limit_bytes: usize) -> (Vec<String>, Option<BodyError>) {
    let chunks: Vec<Result<Bytes, std::io::Error>> = chunks
        .iter()
        .map(|chunk| Ok(Bytes::from_static(chunk.as_bytes())))
        .collect();
    let stream = futures_lite::stream::iter(chunks);
    let mut reader = JsonReader::new(Body::from_stream(stream), limit_bytes);
    let mut values = Vec::new();
    loop {
        match block_on(reader.next_value()) {
            Ok(Some(range)) => {
                values.push(String::from_utf8(reader.buffer[range].to_vec()).expect("utf-8"))
            }
            Ok(None) => return (values, None),
            Err(error) => return (values, Some(error)),
        }
    }
}

#[test]
fn the_reader_splits_values_wherever_the_chunks_are_cut() {
    // Braces and escaped quotes inside strings do not end a value.
    let body = r#" {"a":"}\"{","b":[1,{"c":[]}]} [2] {"d":"\\"}"#;
    let expected = [r#"{"a":"}\"{","b":[1,{"c":[]}]}"#, "[2]", r#"{"d":"\\"}"#];
    let whole = read_values(&[body], 1024);
    assert_eq!(whole, (expected.map(str::to_string).to_vec(), None));
    // Cut at every byte.
    let bytes: Vec<&'static str> = (0..body.len()).map(|at| &body[at..at + 1]).collect();
    assert_eq!(read_values(&bytes, 1024), whole);
}

#[test]
fn the_reader_reports_an_empty_body_a_cut_value_and_a_value_over_the_limit() {
    assert_eq!(read_values(&[" \n\t"], 1024), (Vec::new(), None));
    assert_eq!(
        read_values(&["{\"a\":", "1"], 1024),
        (Vec::new(), Some(BodyError::UnexpectedEof))
    );
    // Exactly at the limit passes; one byte over does not.
    assert_eq!(
        read_values(&["{\"a\":1}"], 7),
        (vec!["{\"a\":1}".to_string()], None)
    );
    assert_eq!(
        read_values(&["{\"a\":", "12}"], 7),
        (Vec::new(), Some(BodyError::TooLarge { limit_bytes: 7 }))
    );
    // Something that is not JSON is handed over whole for the typed parse to refuse.
    assert_eq!(
        read_values(&["garbage"], 1024),
        (vec!["garbage".to_string()], None)
    );
}
