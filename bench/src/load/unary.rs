//! Unary gRPC calls straight over an HTTP/2 connection (the h2 crate), for the
//! measured requests of the etcd gRPC mode.
//!
//! Why not tonic's channel: it hands each request's body to a task of its own, so the
//! request's HEADERS and DATA frames leave in two socket writes (two TCP segments per
//! call on loopback, counted with `strace -c`: 40,115 `writev` for 20,000 puts). etcd's
//! own clients (grpc-go) queue a call's frames together and write whatever is queued in
//! one go, so a load generator that doubles the segments would charge both servers for
//! work real clients do not cause. Here a call queues its HEADERS and its one DATA frame
//! (END_STREAM) before the connection task runs, and the connection task writes every
//! frame queued by then, from any number of calls, with one write.
//!
//! The wire format is gRPC's over HTTP/2 (as tonic and grpc-go speak it): `POST` to
//! `/<package>.<Service>/<Method>` with `content-type: application/grpc` and
//! `te: trailers`; the body is one message framed as a 0 byte (not compressed), its
//! length as a big-endian u32, and the protobuf bytes. The answer is HEADERS, the
//! framed message, and trailers with `grpc-status` and `grpc-message`
//! (percent-encoded), or only HEADERS carrying the status when the call failed.
//!
//! Never: retry, or read a message length without checking it against what arrived.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Uri};
use prost::Message;
use tokio::net::TcpStream;
use tonic::{Code, Status};

use super::grpc::{CallError, CONNECT_TIMEOUT};

/// Bytes of gRPC's message prefix: the compressed flag and the length.
const PREFIX_BYTES: usize = 5;
/// The largest answer accepted (etcd's default --max-recv-bytes for clients is far
/// above what the benchmark's requests get back).
const RESPONSE_BYTES_MAX: usize = 16 << 20;

/// One HTTP/2 connection to a gRPC server; cheap to clone, usable from any task.
#[derive(Clone, Debug)]
pub struct UnaryConnection {
    send: h2::client::SendRequest<Bytes>,
    authority: http::uri::Authority,
}

impl UnaryConnection {
    /// Opens a plain-text HTTP/2 connection to `endpoint` (`host:port`) and starts its
    /// connection task on the current runtime.
    pub async fn connect(endpoint: String) -> Result<UnaryConnection, String> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&endpoint))
            .await
            .map_err(|_| format!("no connection within {CONNECT_TIMEOUT:?}"))?
            .map_err(|error| error.to_string())?;
        tcp.set_nodelay(true).map_err(|error| error.to_string())?;
        let authority: http::uri::Authority = endpoint
            .parse()
            .map_err(|error| format!("not a host:port: {error}"))?;
        let tcp = Unvectored(tcp);
        let (send, connection) = tokio::time::timeout(CONNECT_TIMEOUT, h2::client::handshake(tcp))
            .await
            .map_err(|_| format!("no HTTP/2 handshake within {CONNECT_TIMEOUT:?}"))?
            .map_err(|error| error.to_string())?;
        // The task ends when the connection does; calls then fail with its error.
        tokio::spawn(connection);
        Ok(UnaryConnection { send, authority })
    }

    /// Calls `path` (`/etcdserverpb.KV/Put`) with `request` and decodes the answer.
    /// A status other than OK is [`CallError`] with the server's code and message; a
    /// failed connection or stream is a transport error.
    pub async fn call<Q: Message, A: Message + Default>(
        &self,
        path: &str,
        request: &Q,
    ) -> Result<A, CallError> {
        let uri = Uri::builder()
            .scheme("http")
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|error| transport(error.to_string()))?;
        let head = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .map_err(|error| transport(error.to_string()))?;
        let length = request.encoded_len();
        let mut body = BytesMut::with_capacity(PREFIX_BYTES + length);
        body.put_u8(0);
        body.put_u32(length as u32);
        request
            .encode(&mut body)
            .map_err(|error| transport(error.to_string()))?;

        let mut send = self.send.clone().ready().await.map_err(h2_error)?;
        let (answer, mut stream) = send.send_request(head, false).map_err(h2_error)?;
        stream.send_data(body.freeze(), true).map_err(h2_error)?;

        let answer = answer.await.map_err(h2_error)?;
        // A failed call may answer with headers only, the status among them.
        if let Some(error) = status_error(answer.headers()) {
            return Err(error);
        }
        let mut received = answer.into_body();
        let mut message = BytesMut::new();
        while let Some(chunk) = received.data().await {
            let chunk = chunk.map_err(h2_error)?;
            let _ = received.flow_control().release_capacity(chunk.len());
            if message.len() + chunk.len() > RESPONSE_BYTES_MAX {
                return Err(transport(format!(
                    "an answer over {RESPONSE_BYTES_MAX} bytes"
                )));
            }
            message.extend_from_slice(&chunk);
        }
        match received.trailers().await.map_err(h2_error)? {
            Some(trailers) => {
                if let Some(error) = status_error(&trailers) {
                    return Err(error);
                }
                if trailers.get("grpc-status").is_none() {
                    return Err(transport("trailers without grpc-status".to_string()));
                }
            }
            None => return Err(transport("an answer without trailers".to_string())),
        }
        decode_message(&message)
    }
}

/// A socket that tells h2 it has no vectored writes. Over a vectored socket h2 sends a
/// DATA payload above 256 bytes as a buffer of its own and flushes before it queues
/// the next frame, so every put of a 256-byte value cost one write; without, payloads
/// up to 1 KiB are copied into its write buffer and the calls queued meanwhile leave
/// together.
#[derive(Debug)]
struct Unvectored(TcpStream);

impl tokio::io::AsyncRead for Unvectored {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Unvectored {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The one framed message of an answer's body.
fn decode_message<A: Message + Default>(body: &[u8]) -> Result<A, CallError> {
    let Some((prefix, rest)) = body.split_first_chunk::<PREFIX_BYTES>() else {
        return Err(transport(format!(
            "an answer of {} bytes, shorter than a message prefix",
            body.len()
        )));
    };
    if prefix[0] != 0 {
        return Err(transport("a compressed answer (none was asked for)".into()));
    }
    let length = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if length != rest.len() {
        return Err(transport(format!(
            "a message prefix of {length} bytes over a body of {}",
            rest.len()
        )));
    }
    A::decode(rest).map_err(|error| transport(format!("an undecodable answer: {error}")))
}

/// The call's error when `headers` carry a status other than OK.
fn status_error(headers: &HeaderMap) -> Option<CallError> {
    let status = headers.get("grpc-status")?;
    let code = std::str::from_utf8(status.as_bytes())
        .ok()
        .and_then(|text| text.parse::<i32>().ok());
    match code {
        Some(0) => None,
        Some(code) => {
            let message = headers
                .get("grpc-message")
                .map(|message| percent_decode(message.as_bytes()))
                .unwrap_or_default();
            Some(CallError::from(Status::new(Code::from(code), message)))
        }
        None => Some(transport(format!(
            "an unreadable grpc-status {:?}",
            String::from_utf8_lossy(status.as_bytes())
        ))),
    }
}

/// gRPC's percent-encoding of `grpc-message` undone (bytes that do not form an escape
/// stay as they are).
fn percent_decode(text: &[u8]) -> String {
    let hex = |byte: u8| (byte as char).to_digit(16).map(|digit| digit as u8);
    let mut decoded = Vec::with_capacity(text.len());
    let mut index = 0;
    while index < text.len() {
        let escape = match &text[index..] {
            [b'%', high, low, ..] => hex(*high).zip(hex(*low)).map(|(h, l)| h * 16 + l),
            _ => None,
        };
        match escape {
            Some(byte) => {
                decoded.push(byte);
                index += 3;
            }
            None => {
                decoded.push(text[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// A call that got no answer: the connection or the stream failed.
fn transport(reason: String) -> CallError {
    #[derive(Debug)]
    struct Reason(String);
    impl std::fmt::Display for Reason {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl std::error::Error for Reason {}
    let mut status = Status::unavailable(reason.clone());
    status.set_source(Arc::new(Reason(reason)));
    CallError::from(status)
}

fn h2_error(error: h2::Error) -> CallError {
    transport(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_messages_are_percent_decoded() {
        assert_eq!(
            percent_decode(b"etcdserver: key not found%0A"),
            "etcdserver: key not found\n"
        );
        assert_eq!(percent_decode(b"100%25"), "100%");
        // Not an escape: kept as sent.
        assert_eq!(percent_decode(b"50% off %z"), "50% off %z");
        assert_eq!(percent_decode(b"%4"), "%4");
    }

    #[test]
    fn statuses_in_headers_become_errors() {
        let mut headers = HeaderMap::new();
        assert!(status_error(&headers).is_none());
        headers.insert("grpc-status", "0".parse().expect("header"));
        assert!(status_error(&headers).is_none());
        headers.insert("grpc-status", "8".parse().expect("header"));
        headers.insert(
            "grpc-message",
            "etcdserver:%20too%20many%20requests"
                .parse()
                .expect("header"),
        );
        let error = status_error(&headers).expect("an error");
        assert!(!error.is_transport());
        assert_eq!(
            error.to_string(),
            "ResourceExhausted: etcdserver: too many requests"
        );
        headers.insert("grpc-status", "x".parse().expect("header"));
        assert!(status_error(&headers).expect("an error").is_transport());
    }

    #[test]
    fn framed_messages_are_checked_before_decoding() {
        use corekv_net::gateway::pb::etcdserverpb::PutResponse;
        let mut body = vec![0, 0, 0, 0, 0];
        assert!(decode_message::<PutResponse>(&body).is_ok());
        assert!(decode_message::<PutResponse>(&body[..4]).is_err());
        body[4] = 3;
        assert!(
            decode_message::<PutResponse>(&body).is_err(),
            "length past the end"
        );
        body[0] = 1;
        body[4] = 0;
        assert!(decode_message::<PutResponse>(&body).is_err(), "compressed");
    }
}
