//! The client URLs' HTTP/2 server (RFC 9113, without TLS, as etcd's clients speak it).
//!
//! One task per connection does everything on the core that accepted it: it reads the
//! client's frames, decodes header blocks, hands each request to the
//! [`ClientService`] (the unary fast path or the router), drives the calls' futures
//! and response bodies itself (no task per stream), and writes every frame that is
//! ready with one socket write. gRPC's unary calls, etcd's streams (watch, lease
//! keep-alive, snapshot, election observe) and the JSON gateway over HTTP/2 all go
//! through it.
//!
//! * **Requests.** A request's body is a [`RequestBody`] the connection feeds as DATA
//!   arrives; it may be read on any thread (stream handlers run on the gateway's tokio
//!   runtime). Bytes count against the stream's and the connection's receive windows
//!   until the reader takes them; then they are granted back ([`Credit`]), so a reader
//!   that stops reading stops its client, and the server holds at most the windows.
//! * **Responses.** Each call's future pushes its head, data and trailers into the
//!   stream's [`Outbox`]; the connection writes them within the client's windows and
//!   frame size. A producer waits while its outbox holds [`OUTBOX_BYTES_MAX`] bytes.
//! * **Authority.** The `:authority` is not interpreted: etcd 3.4 clients send the
//!   endpoint URL (`http://host:port`) there, and requests are routed by path alone.
//! * **Errors.** Malformed frames, bad HPACK and flow-control violations end the
//!   connection with GOAWAY and the RFC's code; a malformed request gets RST_STREAM
//!   with PROTOCOL_ERROR. A client's RST_STREAM cancels its call.
//!
//! Never: block, hold a `RefCell` borrow across an await, buffer more than the windows
//! and the outboxes allow, or panic on anything a client sends.

mod frame;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use axum::http::{
    header, HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version,
};
use bytes::{Buf, Bytes};
use futures_lite::{AsyncRead, AsyncWrite};
use futures_util::future::{AbortHandle, Abortable};
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::task::AtomicWaker;
use hyper::body::{Body, Frame, SizeHint};

use super::hpack;
use super::unary::{ClientService, UnaryAnswer, UnaryMethod, REPLY_HEADERS, REPLY_TRAILERS};
use frame::Head;

/// The HTTP/2 client connection preface (§3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The read buffer: more than the largest frame the server accepts plus its head.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Output queued for the socket above which no more response frames are added.
const WRITE_BUFFER_HIGH_BYTES: usize = 256 * 1024;
/// Each stream's receive window (SETTINGS_INITIAL_WINDOW_SIZE).
const STREAM_WINDOW: u32 = 1 << 20;
/// The connection's receive window.
const CONNECTION_WINDOW: u32 = 8 << 20;
/// A response's data queued in its outbox before its producer waits.
const OUTBOX_BYTES_MAX: usize = 256 * 1024;
/// The largest header block (HEADERS plus CONTINUATIONs) a client may send.
const HEADER_BLOCK_BYTES_MAX: usize = 64 * 1024;
/// The largest decoded header list (indexed fields may make it larger than its block;
/// SETTINGS_MAX_HEADER_LIST_SIZE announces only the block's limit).
const HEADER_LIST_BYTES_MAX: usize = 2 * HEADER_BLOCK_BYTES_MAX;
/// `:status: 200`, index 8 of HPACK's static table.
const STATUS_200: u8 = 0x88;
/// Read-handle-write rounds a connection runs before it yields to the core's other
/// tasks.
const ROUNDS_PER_POLL: usize = 16;
/// The client's HPACK table size (SETTINGS_HEADER_TABLE_SIZE's default).
const HEADER_TABLE_BYTES: usize = 4096;

/// Serves one HTTP/2 connection whose client preface was already read, until the
/// client goes away or breaks the protocol.
pub async fn serve<S>(app: ClientService, io: S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut connection = Connection::new(app, io);
    poll_fn(|cx| connection.poll(cx)).await;
}

/// A frame the connection writes for a stream, in order.
#[derive(Debug)]
enum Out {
    /// The response head; `end_stream` for a response without a body.
    Head {
        status: StatusCode,
        headers: HeaderMap,
        end_stream: bool,
    },
    /// The head of a successful fast-path answer ([`REPLY_HEADERS`]).
    ReplyHead,
    /// Its trailers ([`REPLY_TRAILERS`]), which end the stream.
    ReplyTrailers,
    /// Body bytes.
    Data(Bytes),
    /// The trailers, which end the stream.
    Trailers(HeaderMap),
    /// The end of a body without trailers.
    End,
    /// The response failed: reset the stream with this code.
    Reset(u32),
}

/// A stream's frames on their way to the connection.
#[derive(Debug, Default)]
struct Outbox {
    frames: VecDeque<Out>,
    /// Data bytes in `frames`.
    queued_bytes: usize,
    /// Whether the stream is in the connection's ready list.
    scheduled: bool,
    /// Whether the stream is in the connection's list of streams waiting for a window.
    blocked: bool,
    /// The producer waiting for room.
    producer: Option<Waker>,
}

/// Streams whose outboxes got frames since the connection last looked.
type Ready = Rc<RefCell<Vec<u32>>>;

fn push(outbox: &RefCell<Outbox>, ready: &Ready, stream: u32, frame: Out) {
    {
        let mut outbox = outbox.borrow_mut();
        if let Out::Data(data) = &frame {
            outbox.queued_bytes += data.len();
        }
        outbox.frames.push_back(frame);
    }
    schedule(outbox, ready, stream);
}

/// Bytes request readers took (or dropped), to grant back to the client.
#[derive(Debug, Default)]
struct Credit {
    taken: Mutex<Vec<(u32, usize)>>,
    connection: AtomicWaker,
}

impl Credit {
    fn report(&self, stream: u32, bytes: usize) {
        if bytes == 0 {
            return;
        }
        lock(&self.taken).push((stream, bytes));
        self.connection.wake();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Debug, Default)]
struct BodyState {
    chunks: VecDeque<Bytes>,
    ended: bool,
    error: Option<tonic::Status>,
    reader: Option<Waker>,
    /// The reader is gone: bytes that arrive now are granted back at once.
    dropped: bool,
}

/// A request's body, fed by the connection as DATA frames arrive.
#[derive(Debug)]
pub struct RequestBody {
    state: Arc<Mutex<BodyState>>,
    stream: u32,
    credit: Arc<Credit>,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut state = lock(&self.state);
        if let Some(chunk) = state.chunks.pop_front() {
            drop(state);
            self.credit.report(self.stream, chunk.len());
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(error) = state.error.take() {
            state.ended = true;
            return Poll::Ready(Some(Err(Box::new(error))));
        }
        if state.ended {
            return Poll::Ready(None);
        }
        state.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let state = lock(&self.state);
        state.ended && state.chunks.is_empty() && state.error.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        let mut state = lock(&self.state);
        state.dropped = true;
        let untaken: usize = state.chunks.drain(..).map(|chunk| chunk.len()).sum();
        drop(state);
        self.credit.report(self.stream, untaken);
    }
}

/// The connection's side of a request body.
#[derive(Debug)]
struct BodyFeed {
    state: Arc<Mutex<BodyState>>,
}

impl BodyFeed {
    /// Hands `chunk` to the reader; false if the reader is gone (grant it back).
    fn push(&self, chunk: Bytes) -> bool {
        let mut state = lock(&self.state);
        if state.dropped {
            return false;
        }
        state.chunks.push_back(chunk);
        if let Some(reader) = state.reader.take() {
            reader.wake();
        }
        true
    }

    fn end(&self, error: Option<tonic::Status>) {
        let mut state = lock(&self.state);
        if state.ended {
            return;
        }
        state.ended = error.is_none();
        state.error = error;
        if let Some(reader) = state.reader.take() {
            reader.wake();
        }
    }
}

/// One open stream.
#[derive(Debug)]
struct Stream {
    /// The request body, while the client may still send on the stream.
    body: Option<BodyFeed>,
    /// What the client may still send before the server grants more.
    recv_window: i64,
    /// Taken by the reader, not granted back yet.
    recv_unacked: usize,
    /// What the server may still send.
    send_window: i64,
    outbox: Rc<RefCell<Outbox>>,
    abort: AbortHandle,
}

/// A header block still waiting for its CONTINUATIONs.
#[derive(Debug)]
struct Continuing {
    stream: u32,
    end_stream: bool,
    block: Vec<u8>,
}

/// A connection-level failure: GOAWAY with this code, then close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ConnectionError(u32);

type Call = Abortable<Pin<Box<dyn Future<Output = ()>>>>;

struct Connection<S> {
    app: ClientService,
    io: S,
    read: Box<[u8]>,
    read_start: usize,
    read_end: usize,
    read_closed: bool,
    write: Vec<u8>,
    written: usize,
    /// A GOAWAY was queued: write what is queued, then close.
    closing: bool,
    decoder: hpack::Decoder,
    headers: HeaderEncoder,
    /// The client's SETTINGS_MAX_FRAME_SIZE.
    max_frame_bytes: usize,
    /// The client's SETTINGS_INITIAL_WINDOW_SIZE.
    initial_send_window: i64,
    /// What the server may still send on the connection.
    send_window: i64,
    /// What the client may still send on the connection.
    recv_window: i64,
    /// Taken by readers or dropped, not granted back yet.
    recv_unacked: usize,
    streams: HashMap<u32, Stream>,
    /// The highest stream the client opened.
    last_stream: u32,
    continuing: Option<Continuing>,
    calls: FuturesUnordered<Call>,
    ready: Ready,
    /// Streams with data waiting for a window.
    blocked: Vec<u32>,
    credit: Arc<Credit>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    fn new(app: ClientService, io: S) -> Connection<S> {
        let mut write = Vec::with_capacity(16 * 1024);
        frame::put_settings(
            &mut write,
            &[
                (frame::SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW),
                // What a block may hold encoded; decoded lists get twice that.
                (
                    frame::SETTINGS_MAX_HEADER_LIST_SIZE,
                    HEADER_BLOCK_BYTES_MAX as u32,
                ),
            ],
        );
        frame::put_window_update(
            &mut write,
            0,
            CONNECTION_WINDOW - frame::DEFAULT_WINDOW as u32,
        );
        Connection {
            app,
            io,
            read: vec![0; READ_BUFFER_BYTES].into_boxed_slice(),
            read_start: 0,
            read_end: 0,
            read_closed: false,
            write,
            written: 0,
            closing: false,
            decoder: hpack::Decoder::new(HEADER_TABLE_BYTES),
            headers: HeaderEncoder::default(),
            max_frame_bytes: frame::DEFAULT_MAX_FRAME_BYTES,
            initial_send_window: frame::DEFAULT_WINDOW,
            send_window: frame::DEFAULT_WINDOW,
            recv_window: i64::from(CONNECTION_WINDOW),
            recv_unacked: 0,
            streams: HashMap::new(),
            last_stream: 0,
            continuing: None,
            calls: FuturesUnordered::new(),
            ready: Rc::new(RefCell::new(Vec::new())),
            blocked: Vec::new(),
            credit: Arc::new(Credit::default()),
        }
    }

    /// Runs the connection until it ends.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.credit.connection.register(cx.waker());
        for _ in 0..ROUNDS_PER_POLL {
            let mut progress = false;
            // A client that does not read its answers is not read either.
            let backlog = self.write.len() - self.written;
            if !self.closing && !self.read_closed && backlog < 2 * WRITE_BUFFER_HIGH_BYTES {
                match self.poll_read(cx) {
                    Poll::Ready(true) => progress = true,
                    Poll::Ready(false) => self.read_closed = true,
                    Poll::Pending => {}
                }
                if let Err(ConnectionError(code)) = self.process_frames() {
                    self.go_away(code);
                }
            }
            if self.read_closed {
                // The client closed its side: nothing more can be asked or answered.
                return Poll::Ready(());
            }
            while let Poll::Ready(Some(_)) = self.calls.poll_next_unpin(cx) {}
            self.take_credit();
            if !self.closing {
                self.fill_output();
            }
            match self.poll_write(cx) {
                Poll::Ready(Ok(wrote)) => progress |= wrote,
                Poll::Ready(Err(())) => return Poll::Ready(()),
                Poll::Pending => {}
            }
            if self.closing && self.written == self.write.len() {
                return Poll::Ready(());
            }
            if !progress {
                return Poll::Pending;
            }
        }
        // A busy connection lets the core's other tasks (the shard among them) run.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Reads what the socket has; `Ready(false)` at its end or on an error.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        if self.read_start == self.read_end {
            self.read_start = 0;
            self.read_end = 0;
        } else if self.read_end == self.read.len() {
            self.read.copy_within(self.read_start..self.read_end, 0);
            self.read_end -= self.read_start;
            self.read_start = 0;
        }
        match Pin::new(&mut self.io).poll_read(cx, &mut self.read[self.read_end..]) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => Poll::Ready(false),
            Poll::Ready(Ok(read)) => {
                self.read_end += read;
                Poll::Ready(true)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Writes queued output; `Ready(Ok(true))` if any went out.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, ()>> {
        let mut wrote = false;
        while self.written < self.write.len() {
            match Pin::new(&mut self.io).poll_write(cx, &self.write[self.written..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Err(())),
                Poll::Ready(Ok(count)) => {
                    self.written += count;
                    wrote = true;
                }
                Poll::Pending if wrote => break,
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.written == self.write.len() {
            self.write.clear();
            self.written = 0;
        }
        Poll::Ready(Ok(wrote))
    }

    fn go_away(&mut self, code: u32) {
        if !self.closing {
            frame::put_goaway(&mut self.write, self.last_stream, code);
            self.closing = true;
        }
    }

    /// Handles every whole frame in the read buffer.
    fn process_frames(&mut self) -> Result<(), ConnectionError> {
        loop {
            let available = self.read_end - self.read_start;
            if available < frame::HEAD_BYTES {
                return Ok(());
            }
            let head_bytes: &[u8; frame::HEAD_BYTES] = self.read
                [self.read_start..self.read_start + frame::HEAD_BYTES]
                .try_into()
                .expect("nine bytes");
            let head = Head::parse(head_bytes);
            if head.length > frame::DEFAULT_MAX_FRAME_BYTES {
                return Err(ConnectionError(frame::FRAME_SIZE_ERROR));
            }
            if available < frame::HEAD_BYTES + head.length {
                return Ok(());
            }
            let start = self.read_start + frame::HEAD_BYTES;
            self.read_start = start + head.length;
            // The payload is borrowed from the buffer while the handlers change the
            // rest of the connection: the buffer is lent out meanwhile.
            let read = std::mem::take(&mut self.read);
            let result = self.handle_frame(head, &read[start..start + head.length]);
            self.read = read;
            result?;
        }
    }

    fn handle_frame(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnectionError> {
        if let Some(continuing) = &self.continuing {
            if head.kind != frame::CONTINUATION || head.stream != continuing.stream {
                return Err(ConnectionError(frame::PROTOCOL_ERROR));
            }
        }
        match head.kind {
            frame::DATA => self.on_data(head, payload),
            frame::HEADERS => self.on_headers(head, payload),
            frame::CONTINUATION => self.on_continuation(head, payload),
            frame::PRIORITY => {
                if head.stream == 0 {
                    return Err(ConnectionError(frame::PROTOCOL_ERROR));
                }
                Ok(())
            }
            frame::RST_STREAM => {
                if head.stream == 0 {
                    return Err(ConnectionError(frame::PROTOCOL_ERROR));
                }
                if payload.len() != 4 {
                    return Err(ConnectionError(frame::FRAME_SIZE_ERROR));
                }
                self.cancel(head.stream);
                Ok(())
            }
            frame::SETTINGS => self.on_settings(head, payload),
            frame::PUSH_PROMISE => Err(ConnectionError(frame::PROTOCOL_ERROR)),
            frame::PING => {
                if head.stream != 0 {
                    return Err(ConnectionError(frame::PROTOCOL_ERROR));
                }
                let payload: &[u8; 8] = payload
                    .try_into()
                    .map_err(|_| ConnectionError(frame::FRAME_SIZE_ERROR))?;
                if !head.has(frame::FLAG_ACK) {
                    frame::put_ping_ack(&mut self.write, payload);
                }
                Ok(())
            }
            frame::GOAWAY => {
                if head.stream != 0 {
                    return Err(ConnectionError(frame::PROTOCOL_ERROR));
                }
                // The client opens no more streams; the open ones finish as usual.
                Ok(())
            }
            frame::WINDOW_UPDATE => self.on_window_update(head, payload),
            // Unknown frame types are ignored (§5.5).
            _ => Ok(()),
        }
    }

    fn on_settings(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnectionError> {
        if head.stream != 0 {
            return Err(ConnectionError(frame::PROTOCOL_ERROR));
        }
        if head.has(frame::FLAG_ACK) {
            return if payload.is_empty() {
                Ok(())
            } else {
                Err(ConnectionError(frame::FRAME_SIZE_ERROR))
            };
        }
        if payload.len() % 6 != 0 {
            return Err(ConnectionError(frame::FRAME_SIZE_ERROR));
        }
        for setting in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([setting[0], setting[1]]);
            let value = u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
            match id {
                frame::SETTINGS_HEADER_TABLE_SIZE if (value as usize) < HEADER_TABLE_BYTES => {
                    self.headers.table_size_update = true;
                }
                frame::SETTINGS_INITIAL_WINDOW_SIZE => {
                    if i64::from(value) > frame::WINDOW_MAX {
                        return Err(ConnectionError(frame::FLOW_CONTROL_ERROR));
                    }
                    let delta = i64::from(value) - self.initial_send_window;
                    self.initial_send_window = i64::from(value);
                    for stream in self.streams.values_mut() {
                        stream.send_window += delta;
                        if stream.send_window > frame::WINDOW_MAX {
                            return Err(ConnectionError(frame::FLOW_CONTROL_ERROR));
                        }
                    }
                    if delta > 0 {
                        self.unblock_all();
                    }
                }
                frame::SETTINGS_MAX_FRAME_SIZE => {
                    if !(frame::DEFAULT_MAX_FRAME_BYTES as u32..=frame::MAX_FRAME_BYTES_LIMIT)
                        .contains(&value)
                    {
                        return Err(ConnectionError(frame::PROTOCOL_ERROR));
                    }
                    self.max_frame_bytes = value as usize;
                }
                // ENABLE_PUSH (the server never pushes), MAX_CONCURRENT_STREAMS (it
                // opens none), MAX_HEADER_LIST_SIZE (its headers are small), unknown.
                _ => {}
            }
        }
        frame::put_settings_ack(&mut self.write);
        Ok(())
    }

    fn on_window_update(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnectionError> {
        let bytes: [u8; 4] = payload
            .try_into()
            .map_err(|_| ConnectionError(frame::FRAME_SIZE_ERROR))?;
        let increment = i64::from(u32::from_be_bytes(bytes) & 0x7fff_ffff);
        if head.stream == 0 {
            if increment == 0 {
                return Err(ConnectionError(frame::PROTOCOL_ERROR));
            }
            self.send_window += increment;
            if self.send_window > frame::WINDOW_MAX {
                return Err(ConnectionError(frame::FLOW_CONTROL_ERROR));
            }
            self.unblock_all();
            return Ok(());
        }
        let Some(stream) = self.streams.get_mut(&head.stream) else {
            return Ok(());
        };
        if increment == 0 {
            self.reset(head.stream, frame::PROTOCOL_ERROR);
            return Ok(());
        }
        stream.send_window += increment;
        if stream.send_window > frame::WINDOW_MAX {
            self.reset(head.stream, frame::FLOW_CONTROL_ERROR);
            return Ok(());
        }
        schedule(&stream.outbox, &self.ready, head.stream);
        Ok(())
    }

    fn unblock_all(&mut self) {
        for id in std::mem::take(&mut self.blocked) {
            if let Some(stream) = self.streams.get(&id) {
                stream.outbox.borrow_mut().blocked = false;
                schedule(&stream.outbox, &self.ready, id);
            }
        }
    }

    fn on_data(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnectionError> {
        if head.stream == 0 {
            return Err(ConnectionError(frame::PROTOCOL_ERROR));
        }
        let length = payload.len();
        self.recv_window -= length as i64;
        if self.recv_window < 0 {
            return Err(ConnectionError(frame::FLOW_CONTROL_ERROR));
        }
        let data = frame::unpad(&head, payload).ok_or(ConnectionError(frame::PROTOCOL_ERROR))?;
        let Some(stream) = self
            .streams
            .get_mut(&head.stream)
            .filter(|stream| stream.body.is_some())
        else {
            if head.stream > self.last_stream {
                return Err(ConnectionError(frame::PROTOCOL_ERROR));
            }
            // A stream already closed or reset: its bytes are granted back at once.
            self.recv_unacked += length;
            return Ok(());
        };
        stream.recv_window -= length as i64;
        if stream.recv_window < 0 {
            self.recv_unacked += length;
            self.reset(head.stream, frame::FLOW_CONTROL_ERROR);
            return Ok(());
        }
        let body = stream.body.as_ref().expect("filtered above");
        // Padding is granted back at once, data once the reader takes it.
        let mut granted = length - data.len();
        if !data.is_empty() && !body.push(Bytes::copy_from_slice(&payload[data.clone()])) {
            granted += data.len();
        }
        if granted > 0 {
            // Granted with what readers took, stream and connection alike.
            lock(&self.credit.taken).push((head.stream, granted));
        }
        if head.has(frame::FLAG_END_STREAM) {
            if let Some(body) = stream.body.take() {
                body.end(None);
            }
        }
        Ok(())
    }

    fn on_headers(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnectionError> {
        if head.stream == 0 {
            return Err(ConnectionError(frame::PROTOCOL_ERROR));
        }
        let range = frame::unpad(&head, payload).ok_or(ConnectionError(frame::PROTOCOL_ERROR))?;
        let end_stream = head.has(frame::FLAG_END_STREAM);
        if head.has(frame::FLAG_END_HEADERS) {
            return self.on_header_block(head.stream, end_stream, &payload[range]);
        }
        self.continuing = Some(Continuing {
            stream: head.stream,
            end_stream,
            block: payload[range].to_vec(),
        });
        Ok(())
    }

    fn on_continuation(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnectionError> {
        let Some(continuing) = self.continuing.as_mut() else {
            return Err(ConnectionError(frame::PROTOCOL_ERROR));
        };
        if continuing.block.len() + payload.len() > HEADER_BLOCK_BYTES_MAX {
            return Err(ConnectionError(frame::ENHANCE_YOUR_CALM));
        }
        continuing.block.extend_from_slice(payload);
        if head.has(frame::FLAG_END_HEADERS) {
            let continuing = self.continuing.take().expect("checked above");
            return self.on_header_block(
                continuing.stream,
                continuing.end_stream,
                &continuing.block,
            );
        }
        Ok(())
    }

    fn on_header_block(
        &mut self,
        id: u32,
        end_stream: bool,
        block: &[u8],
    ) -> Result<(), ConnectionError> {
        // Every block is decoded, even one that is refused, to keep the table in step.
        let fields = self
            .decoder
            .decode(block, HEADER_LIST_BYTES_MAX)
            .map_err(|_| ConnectionError(frame::COMPRESSION_ERROR))?;
        if let Some(stream) = self.streams.get_mut(&id) {
            // Trailers of the request: they end its body (gRPC sends none).
            match stream.body.take() {
                Some(body) if end_stream => body.end(None),
                Some(body) => {
                    body.end(Some(tonic::Status::internal(
                        "h2 protocol error: malformed trailers",
                    )));
                    self.reset(id, frame::PROTOCOL_ERROR);
                }
                None => self.reset(id, frame::STREAM_CLOSED),
            }
            return Ok(());
        }
        if id % 2 == 0 {
            return Err(ConnectionError(frame::PROTOCOL_ERROR));
        }
        if id <= self.last_stream {
            // A stream already closed (the server may have reset it while the client's
            // trailers were on their way): ignored, as its DATA is (§5.1).
            return Ok(());
        }
        self.last_stream = id;
        let Some(parsed) = Parsed::from_fields(fields) else {
            frame::put_rst_stream(&mut self.write, id, frame::PROTOCOL_ERROR);
            return Ok(());
        };
        let state = Arc::new(Mutex::new(BodyState {
            ended: end_stream,
            ..BodyState::default()
        }));
        let body = RequestBody {
            state: state.clone(),
            stream: id,
            credit: self.credit.clone(),
        };
        let outbox = Rc::new(RefCell::new(Outbox::default()));
        let app = self.app.clone();
        let (ready, sink) = (self.ready.clone(), outbox.clone());
        let call: Pin<Box<dyn Future<Output = ()>>> = match parsed.fast_method(&app) {
            Some(method) => Box::pin(async move {
                match app.answer_unary(method, body).await {
                    UnaryAnswer::Reply(framed) => {
                        push(&sink, &ready, id, Out::ReplyHead);
                        push(&sink, &ready, id, Out::Data(framed));
                        push(&sink, &ready, id, Out::ReplyTrailers);
                    }
                    UnaryAnswer::Failed(response) => send(*response, &sink, &ready, id).await,
                }
            }),
            None => {
                let Some(request) = parsed.into_request(body) else {
                    frame::put_rst_stream(&mut self.write, id, frame::PROTOCOL_ERROR);
                    return Ok(());
                };
                Box::pin(async move {
                    let response = match hyper::service::Service::call(&app, request).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    };
                    send(response, &sink, &ready, id).await;
                })
            }
        };
        let (abort, registration) = AbortHandle::new_pair();
        self.calls.push(Abortable::new(call, registration));
        self.streams.insert(
            id,
            Stream {
                body: (!end_stream).then_some(BodyFeed { state }),
                recv_window: i64::from(STREAM_WINDOW),
                recv_unacked: 0,
                send_window: self.initial_send_window,
                outbox,
                abort,
            },
        );
        Ok(())
    }

    /// The client reset a stream: its call is dropped, its body fails as cancelled.
    fn cancel(&mut self, id: u32) {
        self.close_stream(id, "h2 protocol error: stream cancelled");
    }

    /// The server resets a stream with `code`.
    fn reset(&mut self, id: u32, code: u32) {
        if self.close_stream(id, "h2 protocol error: stream reset") {
            frame::put_rst_stream(&mut self.write, id, code);
        }
    }

    /// Drops an open stream's call and fails its body with `reason`; false if the
    /// stream was not open.
    fn close_stream(&mut self, id: u32, reason: &str) -> bool {
        let Some(stream) = self.streams.remove(&id) else {
            return false;
        };
        stream.abort.abort();
        if let Some(body) = stream.body {
            body.end(Some(tonic::Status::cancelled(reason)));
        }
        true
    }

    /// Grants back what readers took: a WINDOW_UPDATE once a quarter of a window is
    /// owed, so small requests do not cost a frame each.
    fn take_credit(&mut self) {
        let taken = std::mem::take(&mut *lock(&self.credit.taken));
        let stream_threshold = STREAM_WINDOW as usize / 4;
        for (id, bytes) in taken {
            self.recv_unacked += bytes;
            let Some(stream) = self.streams.get_mut(&id) else {
                continue;
            };
            if stream.body.is_none() {
                continue;
            }
            stream.recv_unacked += bytes;
            if stream.recv_unacked >= stream_threshold {
                frame::put_window_update(&mut self.write, id, stream.recv_unacked as u32);
                stream.recv_window += stream.recv_unacked as i64;
                stream.recv_unacked = 0;
            }
        }
        if self.recv_unacked >= CONNECTION_WINDOW as usize / 4 {
            frame::put_window_update(&mut self.write, 0, self.recv_unacked as u32);
            self.recv_window += self.recv_unacked as i64;
            self.recv_unacked = 0;
        }
    }

    /// Moves ready streams' frames into the output, within the windows.
    fn fill_output(&mut self) {
        let ids = std::mem::take(&mut *self.ready.borrow_mut());
        for (position, &id) in ids.iter().enumerate() {
            if self.write.len() - self.written >= WRITE_BUFFER_HIGH_BYTES {
                // The rest wait for the socket.
                self.ready.borrow_mut().extend_from_slice(&ids[position..]);
                return;
            }
            let Some(stream) = self.streams.get_mut(&id) else {
                continue;
            };
            let outbox_rc = stream.outbox.clone();
            let mut outbox = outbox_rc.borrow_mut();
            outbox.scheduled = false;
            let mut finished = false;
            let mut was_reset = false;
            while let Some(out) = outbox.frames.pop_front() {
                match out {
                    Out::Head {
                        status,
                        headers,
                        end_stream,
                    } => {
                        self.headers.put(
                            &mut self.write,
                            id,
                            end_stream,
                            self.max_frame_bytes,
                            |block| {
                                let status = status.as_str();
                                if status == "200" {
                                    block.push(STATUS_200);
                                } else {
                                    hpack::encode_field(
                                        block,
                                        b":status",
                                        status.as_bytes(),
                                        false,
                                    );
                                }
                                encode_headers(block, &headers);
                            },
                        );
                        if end_stream {
                            finished = true;
                            break;
                        }
                    }
                    Out::Data(mut data) => {
                        let window = self.send_window.min(stream.send_window).max(0) as usize;
                        let count = data.len().min(window).min(self.max_frame_bytes);
                        if count == 0 && !data.is_empty() {
                            outbox.frames.push_front(Out::Data(data));
                            if !std::mem::replace(&mut outbox.blocked, true) {
                                self.blocked.push(id);
                            }
                            break;
                        }
                        frame::put_data(&mut self.write, id, &data[..count], false);
                        self.send_window -= count as i64;
                        stream.send_window -= count as i64;
                        outbox.queued_bytes -= count;
                        if count < data.len() {
                            data.advance(count);
                            outbox.frames.push_front(Out::Data(data));
                            if self.write.len() - self.written >= WRITE_BUFFER_HIGH_BYTES {
                                outbox.scheduled = true;
                                self.ready.borrow_mut().push(id);
                                break;
                            }
                        }
                    }
                    Out::ReplyHead => {
                        self.headers.put(
                            &mut self.write,
                            id,
                            false,
                            self.max_frame_bytes,
                            |block| {
                                block.push(STATUS_200);
                                encode_fields(block, &REPLY_HEADERS);
                            },
                        );
                    }
                    Out::ReplyTrailers => {
                        self.headers.put(
                            &mut self.write,
                            id,
                            true,
                            self.max_frame_bytes,
                            |block| encode_fields(block, &REPLY_TRAILERS),
                        );
                        finished = true;
                        break;
                    }
                    Out::Trailers(trailers) => {
                        self.headers.put(
                            &mut self.write,
                            id,
                            true,
                            self.max_frame_bytes,
                            |block| encode_headers(block, &trailers),
                        );
                        finished = true;
                        break;
                    }
                    Out::End => {
                        frame::put_data(&mut self.write, id, &[], true);
                        finished = true;
                        break;
                    }
                    Out::Reset(code) => {
                        frame::put_rst_stream(&mut self.write, id, code);
                        finished = true;
                        was_reset = true;
                        break;
                    }
                }
            }
            if outbox.queued_bytes < OUTBOX_BYTES_MAX {
                if let Some(producer) = outbox.producer.take() {
                    producer.wake();
                }
            }
            drop(outbox);
            if finished {
                let stream = self.streams.remove(&id).expect("looked up above");
                match stream.body {
                    Some(body) if was_reset => body.end(Some(tonic::Status::cancelled(
                        "h2 protocol error: stream reset",
                    ))),
                    Some(body) => {
                        // The answer is complete while the client still sends: it may stop.
                        body.end(None);
                        frame::put_rst_stream(&mut self.write, id, frame::NO_ERROR);
                    }
                    None => {}
                }
            }
        }
    }
}

/// Writes the server's header blocks. HPACK state is none: every field is a literal
/// (see [`hpack`]), so the only thing to remember is a table size update owed to a
/// client that lowered SETTINGS_HEADER_TABLE_SIZE.
#[derive(Debug, Default)]
struct HeaderEncoder {
    /// Scratch for the block being encoded.
    block: Vec<u8>,
    /// The next block starts with a dynamic table size update to 0 (RFC 7541 §6.3).
    table_size_update: bool,
}

impl HeaderEncoder {
    /// Appends `encode`'s fields to `write` as HEADERS (plus CONTINUATIONs) of `stream`.
    fn put(
        &mut self,
        write: &mut Vec<u8>,
        stream: u32,
        end_stream: bool,
        max_frame_bytes: usize,
        encode: impl FnOnce(&mut Vec<u8>),
    ) {
        self.block.clear();
        if std::mem::take(&mut self.table_size_update) {
            self.block.push(0x20);
        }
        encode(&mut self.block);
        frame::put_header_block(write, stream, &self.block, end_stream, max_frame_bytes);
    }
}

fn schedule(outbox: &RefCell<Outbox>, ready: &Ready, id: u32) {
    let mut outbox = outbox.borrow_mut();
    if !outbox.scheduled && !outbox.frames.is_empty() {
        outbox.scheduled = true;
        ready.borrow_mut().push(id);
    }
}

/// Headers a response never carries in HTTP/2 (§8.2.2).
fn connection_specific(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

fn encode_fields(block: &mut Vec<u8>, fields: &[(&str, &str)]) {
    for (name, value) in fields {
        hpack::encode_field(block, name.as_bytes(), value.as_bytes(), false);
    }
}

fn encode_headers(block: &mut Vec<u8>, headers: &HeaderMap) {
    for (name, value) in headers {
        if !connection_specific(name) {
            hpack::encode_field(
                block,
                name.as_str().as_bytes(),
                value.as_bytes(),
                value.is_sensitive(),
            );
        }
    }
}

/// A request's header fields, checked (§8.3): pseudo fields first, each once,
/// `:method`, `:scheme` and `:path` present, names lowercase tokens, values without
/// control characters, no connection-specific fields, `te` only as `trailers`.
#[derive(Debug)]
struct Parsed {
    method: Vec<u8>,
    path: Vec<u8>,
    fields: Vec<hpack::Field>,
}

impl Parsed {
    /// The checked request, or `None` if it is malformed.
    fn from_fields(mut fields: Vec<hpack::Field>) -> Option<Parsed> {
        let mut method = None;
        let mut scheme = false;
        let mut path = None;
        let pseudo_count = fields
            .iter()
            .take_while(|field| field.name.first() == Some(&b':'))
            .count();
        for field in fields.drain(..pseudo_count) {
            let slot_taken = match &field.name[1..] {
                b"method" => method.replace(field.value).is_some(),
                b"scheme" => std::mem::replace(&mut scheme, true),
                b"path" => path.replace(field.value).is_some(),
                b"authority" => false,
                _ => return None,
            };
            if slot_taken {
                return None;
            }
        }
        for field in &fields {
            if !valid_name(&field.name) || !valid_value(&field.value) {
                return None;
            }
            let name = field.name.as_slice();
            if matches!(
                name,
                b"connection"
                    | b"keep-alive"
                    | b"proxy-connection"
                    | b"transfer-encoding"
                    | b"upgrade"
            ) || (name == b"te" && field.value != b"trailers")
            {
                return None;
            }
        }
        let method = method.filter(|method| valid_name_token(method))?;
        let path = path.filter(|path| !path.is_empty())?;
        scheme.then_some(Parsed {
            method,
            path,
            fields,
        })
    }

    /// The fast-path method, if this is a plain unary call the fast path serves.
    fn fast_method(&self, app: &ClientService) -> Option<UnaryMethod> {
        if !app.takes_fast_path() {
            return None;
        }
        let first = |name: &[u8]| {
            self.fields
                .iter()
                .find(|field| field.name == name)
                .map(|field| field.value.as_slice())
        };
        UnaryMethod::of_plain_parts(
            &self.method,
            &self.path,
            first(b"content-type"),
            first(b"grpc-encoding"),
        )
    }

    /// The request for the service.
    fn into_request(self, body: RequestBody) -> Option<Request<RequestBody>> {
        let mut headers = HeaderMap::with_capacity(self.fields.len());
        for field in self.fields {
            let name = HeaderName::from_bytes(&field.name).ok()?;
            let mut value = HeaderValue::from_bytes(&field.value).ok()?;
            value.set_sensitive(field.never_indexed);
            headers.append(name, value);
        }
        let mut request = Request::new(body);
        *request.method_mut() = Method::from_bytes(&self.method).ok()?;
        *request.uri_mut() = Uri::from_maybe_shared(Bytes::from(self.path)).ok()?;
        *request.version_mut() = Version::HTTP_2;
        *request.headers_mut() = headers;
        Some(request)
    }
}

/// A header name as HTTP/2 allows it: a token of lowercase letters, digits and
/// `!#$%&'*+-.^_`|~`.
fn valid_name(name: &[u8]) -> bool {
    valid_name_token(name) && !name.iter().any(u8::is_ascii_uppercase)
}

fn valid_name_token(token: &[u8]) -> bool {
    !token.is_empty()
        && token
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(byte))
}

/// A header value without control characters (tab allowed), as `HeaderValue` takes.
fn valid_value(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&byte| byte == b'\t' || (byte >= 0x20 && byte != 0x7f))
}

/// Feeds a response's head, data and trailers to the stream's outbox, waiting while
/// the outbox is full.
async fn send(
    response: axum::http::Response<super::unary::ClientBody>,
    outbox: &Rc<RefCell<Outbox>>,
    ready: &Ready,
    id: u32,
) {
    let (parts, body) = response.into_parts();
    let mut body = pin!(body);
    let mut headers = parts.headers;
    // As hyper: a body of known size gets its content-length.
    if let Some(length) = body.size_hint().exact() {
        if !headers.contains_key(header::CONTENT_LENGTH) {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
    }
    let end_stream = body.is_end_stream();
    push(
        outbox,
        ready,
        id,
        Out::Head {
            status: parts.status,
            headers,
            end_stream,
        },
    );
    if end_stream {
        return;
    }
    loop {
        poll_fn(|cx| {
            let mut outbox = outbox.borrow_mut();
            if outbox.queued_bytes < OUTBOX_BYTES_MAX {
                Poll::Ready(())
            } else {
                outbox.producer = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        let next = match poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            None => Out::End,
            Some(Err(_)) => Out::Reset(frame::INTERNAL_ERROR),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if data.is_empty() => continue,
                Ok(data) => Out::Data(data),
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => Out::Trailers(trailers),
                    Err(_) => continue,
                },
            },
        };
        let last = !matches!(next, Out::Data(_));
        push(outbox, ready, id, next);
        if last {
            return;
        }
    }
}
