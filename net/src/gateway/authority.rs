//! Accepting etcd 3.4 clients that send the endpoint URL as the HTTP/2 `:authority`.
//!
//! etcd 3.4's `etcdctl` (and clientv3 of that era) dials some connections with a gRPC
//! "passthrough" target, and grpc-go then sends the whole endpoint as the authority:
//! `:authority: http://127.0.0.1:2379`. That happens for `endpoint status`,
//! `endpoint hashkv`, `defrag`, `snapshot save`, `move-leader`, anything with
//! `--cluster`, and generally whenever an endpoint is given with its scheme. grpc-go's
//! server (etcd) does not look at the authority; the h2 crate under hyper rejects it
//! as malformed and resets the stream with PROTOCOL_ERROR, so etcdctl fails with
//! `stream terminated by RST_STREAM with error code: PROTOCOL_ERROR`. h2 has no switch
//! for this, and corekv does not fork it.
//!
//! So [`FixAuthority`] wraps each accepted connection below hyper and rewrites the
//! client's bytes before h2 reads them:
//!
//! 1. **Preface.** A connection that does not start with the HTTP/2 client preface
//!    (HTTP/1.1) passes through untouched from the first differing byte.
//! 2. **Inspect.** Frames are passed on as they arrive until the first header block
//!    is complete (HEADERS plus CONTINUATIONs, which are held, within
//!    [`HEADER_BLOCK_BYTES_MAX`]). It is HPACK-decoded. If its `:authority` has no
//!    `://`, the held frames go on as they came and the connection passes through
//!    untouched from then on: a normal client costs one preface comparison and one
//!    decoded block. Anything unexpected here (bad HPACK, a frame out of place, an
//!    oversized block) also turns the connection to pass-through, so h2 sees the
//!    client's own bytes and answers them as it always does.
//! 3. **Rewrite.** Otherwise every header block of the connection, this one
//!    included, is decoded with a decoder that follows the client's dynamic table,
//!    `:authority` becomes `host:port` (the URL's scheme and any path are dropped),
//!    and the list is re-encoded with literals only (no table state, see
//!    [`hpack`]) into HEADERS plus CONTINUATIONs of at most 16,384 bytes, keeping
//!    END_STREAM and the priority; padding is dropped. Every other frame passes
//!    through byte for byte. In this mode malformed input is an error: the
//!    connection closes (the client's table is no longer known, so nothing later
//!    could be decoded).
//!
//! A connection's mode only moves forward (preface, inspect, then pass-through or
//! rewrite) and never back. Bytes the server writes are never touched.
//!
//! Never: panic on any input, allocate from a length that was not checked against a
//! limit, hold more than one header block plus one read's worth of output, or change
//! a byte of a connection whose first request had a valid authority.

mod hpack;
#[cfg(test)]
mod tests;

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use hpack::HpackError;

/// The HTTP/2 client connection preface (RFC 7540 §3.5).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Bytes of an HTTP/2 frame header (RFC 7540 §4.1).
const FRAME_HEAD_BYTES: usize = 9;
/// Largest frame payload written: SETTINGS_MAX_FRAME_SIZE's initial value and the
/// smallest any server may advertise (RFC 7540 §6.5.2), so right whatever it said.
const FRAME_PAYLOAD_BYTES_MAX: usize = 16_384;
/// Bytes of the HEADERS priority fields (exclusive bit, dependency, weight).
const PRIORITY_BYTES: usize = 5;
/// Bytes of one client header block as received (frame headers, padding and
/// priority included) held while it is assembled. Larger blocks turn an inspected
/// connection to pass-through and close a rewritten one. h2 refuses header lists over
/// 16 KiB (hyper's SETTINGS_MAX_HEADER_LIST_SIZE) anyway; this only bounds memory.
pub const HEADER_BLOCK_BYTES_MAX: usize = 64 * 1024;
/// Bytes of a decoded header list (name + value + 32 per field, as RFC 7540 §6.5.2
/// counts them). Twice the block limit: Huffman coding and table references make a
/// list larger than its block.
pub const HEADER_LIST_BYTES_MAX: usize = 2 * HEADER_BLOCK_BYTES_MAX;
/// The HPACK table size the server allows the client (SETTINGS_HEADER_TABLE_SIZE):
/// h2's default, which the client listeners do not change.
const HEADER_TABLE_BYTES_MAX: usize = 4096;

const FRAME_HEADERS: u8 = 0x1;
const FRAME_PUSH_PROMISE: u8 = 0x5;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// A client connection whose HTTP/2 `:authority` is fixed on the way in (see the
/// module doc). Writes go straight to the inner stream.
#[derive(Debug)]
pub struct FixAuthority<S> {
    inner: S,
    /// `None` once the connection passes through and every rewritten byte was read:
    /// from then on a read is the inner stream's read.
    rewriter: Option<Box<Rewriter>>,
}

impl<S> FixAuthority<S> {
    /// Wraps a freshly accepted connection (nothing read from it yet).
    pub fn new(inner: S) -> FixAuthority<S> {
        FixAuthority {
            inner,
            rewriter: Some(Box::default()),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FixAuthority<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let Some(rewriter) = this.rewriter.as_deref_mut() else {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            };
            if rewriter.has_output() {
                rewriter.read_output(buf);
                if rewriter.mode == Mode::PassThrough && !rewriter.has_output() {
                    this.rewriter = None;
                }
                return Poll::Ready(Ok(()));
            }
            if let Some(error) = rewriter.failed.take() {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, error)));
            }
            if rewriter.mode == Mode::PassThrough {
                this.rewriter = None;
                continue;
            }
            if rewriter.ended || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            // Read into the caller's buffer, take the bytes through the rewriter, then
            // hand back what it produced in their place.
            let filled = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            let input = &buf.filled()[filled..];
            if input.is_empty() {
                rewriter.end_of_input();
            } else if let Err(error) = rewriter.feed(input) {
                // What came before the error is read first, then the error, then
                // nothing more.
                rewriter.failed = Some(error);
                rewriter.ended = true;
            }
            buf.set_filled(filled);
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FixAuthority<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Why a rewritten connection is closed.
#[derive(Debug, thiserror::Error)]
enum Malformed {
    /// A header block did not decode.
    #[error("malformed HTTP/2 header block from the client: {0}")]
    Hpack(#[from] HpackError),
    /// Frames that HTTP/2 does not allow, or a header block over the limit.
    #[error("malformed HTTP/2 from the client: {0}")]
    Framing(&'static str),
}

/// Where a connection is; it only moves down this list, skipping none but Rewrite or
/// PassThrough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Comparing the first bytes with the preface; `matched` of them so far.
    Preface { matched: usize },
    /// HTTP/2, waiting for the end of the first header block.
    Inspect,
    /// The first authority had a scheme: every header block is re-encoded.
    Rewrite,
    /// Every byte goes on as it came.
    PassThrough,
}

/// A frame header (RFC 7540 §4.1).
#[derive(Debug, Clone, Copy)]
struct FrameHead {
    length: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl FrameHead {
    fn parse(bytes: &[u8; FRAME_HEAD_BYTES]) -> FrameHead {
        FrameHead {
            length: usize::from(bytes[0]) << 16
                | usize::from(bytes[1]) << 8
                | usize::from(bytes[2]),
            kind: bytes[3],
            flags: bytes[4],
            stream: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        let length = u32::try_from(self.length).expect("written frames are at most 16,384 bytes");
        out.extend_from_slice(&length.to_be_bytes()[1..]);
        out.push(self.kind);
        out.push(self.flags);
        out.extend_from_slice(&self.stream.to_be_bytes());
    }
}

/// Where the reader is within the current frame.
#[derive(Debug)]
enum FrameState {
    /// Reading a frame header; `filled` bytes of it so far.
    Head {
        bytes: [u8; FRAME_HEAD_BYTES],
        filled: usize,
    },
    /// Passing on `left` more payload bytes of a frame that is not a header block.
    Forward { left: usize },
    /// Collecting the payload of a HEADERS or CONTINUATION frame.
    Collect {
        head: FrameHead,
        raw_head: [u8; FRAME_HEAD_BYTES],
        payload: Vec<u8>,
    },
}

impl FrameState {
    fn head() -> FrameState {
        FrameState::Head {
            bytes: [0; FRAME_HEAD_BYTES],
            filled: 0,
        }
    }
}

/// A header block being assembled.
#[derive(Debug)]
struct HeaderBlock {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; PRIORITY_BYTES]>,
    /// The HPACK bytes of the HEADERS and CONTINUATIONs so far.
    fragment: Vec<u8>,
    /// While inspecting: the frames exactly as received, to pass on if untouched.
    raw: Vec<u8>,
    /// Bytes received for the block so far, frame headers and padding included.
    received_bytes: usize,
}

/// The byte-level state machine behind [`FixAuthority`]: client bytes in, the bytes
/// h2 should read out. No IO.
#[derive(Debug)]
struct Rewriter {
    mode: Mode,
    frame: FrameState,
    block: Option<HeaderBlock>,
    decoder: hpack::Decoder,
    /// Bytes for the reader; `output[output_read..]` are not read yet.
    output: Vec<u8>,
    output_read: usize,
    /// The client closed its side, or sent what closes the connection.
    ended: bool,
    /// Why the connection closes, once the output before it is read.
    failed: Option<Malformed>,
}

impl Default for Rewriter {
    fn default() -> Rewriter {
        Rewriter {
            mode: Mode::Preface { matched: 0 },
            frame: FrameState::head(),
            block: None,
            decoder: hpack::Decoder::new(HEADER_TABLE_BYTES_MAX),
            output: Vec::new(),
            output_read: 0,
            ended: false,
            failed: None,
        }
    }
}

impl Rewriter {
    fn has_output(&self) -> bool {
        self.output_read < self.output.len()
    }

    /// Moves as much output as fits into `buf`.
    fn read_output(&mut self, buf: &mut ReadBuf<'_>) {
        let pending = &self.output[self.output_read..];
        let length = pending.len().min(buf.remaining());
        buf.put_slice(&pending[..length]);
        self.output_read += length;
        if self.output_read == self.output.len() {
            self.output.clear();
            self.output_read = 0;
        }
    }

    /// The client closed its side: a block held while inspecting goes on as it came
    /// (h2 then sees the truncated frame it would have seen); a partial frame while
    /// rewriting is dropped.
    fn end_of_input(&mut self) {
        self.ended = true;
        if self.mode == Mode::Inspect {
            self.pass_through(&[]);
        }
    }

    /// Takes the next bytes from the client.
    fn feed(&mut self, mut input: &[u8]) -> Result<(), Malformed> {
        while !input.is_empty() {
            let consumed = match self.mode {
                Mode::PassThrough => {
                    self.output.extend_from_slice(input);
                    input.len()
                }
                Mode::Preface { matched } => {
                    let expected = &PREFACE[matched..];
                    let length = expected.len().min(input.len());
                    if input[..length] != expected[..length] {
                        // The matched part went out already; the rest follows as is.
                        self.mode = Mode::PassThrough;
                        continue;
                    }
                    self.output.extend_from_slice(&input[..length]);
                    self.mode = if matched + length == PREFACE.len() {
                        Mode::Inspect
                    } else {
                        Mode::Preface {
                            matched: matched + length,
                        }
                    };
                    length
                }
                Mode::Inspect | Mode::Rewrite => self.feed_frames(input)?,
            };
            input = &input[consumed..];
        }
        Ok(())
    }

    /// Takes bytes of the frame in progress; returns how many.
    fn feed_frames(&mut self, input: &[u8]) -> Result<usize, Malformed> {
        match std::mem::replace(&mut self.frame, FrameState::head()) {
            FrameState::Head { mut bytes, filled } => {
                let length = (FRAME_HEAD_BYTES - filled).min(input.len());
                bytes[filled..filled + length].copy_from_slice(&input[..length]);
                if filled + length == FRAME_HEAD_BYTES {
                    self.begin_frame(bytes)?;
                } else {
                    self.frame = FrameState::Head {
                        bytes,
                        filled: filled + length,
                    };
                }
                Ok(length)
            }
            FrameState::Forward { left } => {
                let length = left.min(input.len());
                self.output.extend_from_slice(&input[..length]);
                if left > length {
                    self.frame = FrameState::Forward {
                        left: left - length,
                    };
                }
                Ok(length)
            }
            FrameState::Collect {
                head,
                raw_head,
                mut payload,
            } => {
                let length = (head.length - payload.len()).min(input.len());
                payload.extend_from_slice(&input[..length]);
                if payload.len() == head.length {
                    self.end_frame(head, raw_head, &payload)?;
                } else {
                    self.frame = FrameState::Collect {
                        head,
                        raw_head,
                        payload,
                    };
                }
                Ok(length)
            }
        }
    }

    /// A frame header arrived: decide what to do with its payload.
    fn begin_frame(&mut self, raw_head: [u8; FRAME_HEAD_BYTES]) -> Result<(), Malformed> {
        let head = FrameHead::parse(&raw_head);
        let header_block_frame = matches!(head.kind, FRAME_HEADERS | FRAME_CONTINUATION);
        if let Some(block) = &self.block {
            // RFC 7540 §6.10: nothing but CONTINUATIONs of the same stream until
            // END_HEADERS.
            if head.kind != FRAME_CONTINUATION || head.stream != block.stream {
                return self.malformed(&[&raw_head], "a frame inside a header block");
            }
        } else if head.kind == FRAME_CONTINUATION {
            return self.malformed(&[&raw_head], "CONTINUATION without HEADERS");
        }
        if head.kind == FRAME_PUSH_PROMISE {
            // It carries a header block, and clients must never send it.
            return self.malformed(&[&raw_head], "PUSH_PROMISE from a client");
        }
        if !header_block_frame {
            self.output.extend_from_slice(&raw_head);
            if head.length > 0 {
                self.frame = FrameState::Forward { left: head.length };
            }
            return Ok(());
        }
        if head.kind == FRAME_HEADERS && head.stream == 0 {
            return self.malformed(&[&raw_head], "HEADERS on stream 0");
        }
        let received_bytes = self.block.as_ref().map_or(0, |block| block.received_bytes);
        if received_bytes + FRAME_HEAD_BYTES + head.length > HEADER_BLOCK_BYTES_MAX {
            return self.malformed(&[&raw_head], "a header block over the limit");
        }
        if head.length == 0 {
            return self.end_frame(head, raw_head, &[]);
        }
        // Checked against the limit just above.
        let payload = Vec::with_capacity(head.length);
        self.frame = FrameState::Collect {
            head,
            raw_head,
            payload,
        };
        Ok(())
    }

    /// A whole HEADERS or CONTINUATION frame arrived.
    fn end_frame(
        &mut self,
        head: FrameHead,
        raw_head: [u8; FRAME_HEAD_BYTES],
        payload: &[u8],
    ) -> Result<(), Malformed> {
        let inspecting = self.mode == Mode::Inspect;
        let fragment = if head.kind == FRAME_HEADERS {
            let Some((fragment, priority)) = headers_fragment(head.flags, payload) else {
                return self.malformed(
                    &[&raw_head, payload],
                    "HEADERS padding or priority past its end",
                );
            };
            self.block = Some(HeaderBlock {
                stream: head.stream,
                end_stream: head.flags & FLAG_END_STREAM != 0,
                priority,
                fragment: Vec::new(),
                raw: Vec::new(),
                received_bytes: 0,
            });
            fragment
        } else {
            payload
        };
        let block = self
            .block
            .as_mut()
            .expect("begin_frame saw HEADERS before any CONTINUATION");
        block.fragment.extend_from_slice(fragment);
        block.received_bytes += FRAME_HEAD_BYTES + payload.len();
        if inspecting {
            block.raw.extend_from_slice(&raw_head);
            block.raw.extend_from_slice(payload);
        }
        if head.flags & FLAG_END_HEADERS != 0 {
            let block = self.block.take().expect("assembled just above");
            self.end_block(block)?;
        }
        Ok(())
    }

    /// A whole header block arrived: decide (when inspecting), then fix and re-encode.
    fn end_block(&mut self, block: HeaderBlock) -> Result<(), Malformed> {
        let fields = match self.decoder.decode(&block.fragment, HEADER_LIST_BYTES_MAX) {
            Ok(fields) => fields,
            Err(_) if self.mode == Mode::Inspect => {
                // h2 decodes the same bytes and answers with its own error.
                self.output.extend_from_slice(&block.raw);
                self.mode = Mode::PassThrough;
                return Ok(());
            }
            Err(error) => return Err(error.into()),
        };
        if self.mode == Mode::Inspect {
            let fix = fields.iter().any(|field| {
                field.name == b":authority" && authority_host_port(&field.value).is_some()
            });
            if !fix {
                self.output.extend_from_slice(&block.raw);
                self.mode = Mode::PassThrough;
                return Ok(());
            }
            self.mode = Mode::Rewrite;
        }
        let mut encoded = Vec::with_capacity(block.fragment.len() + 16);
        for mut field in fields {
            if field.name == b":authority" {
                if let Some(fixed) = authority_host_port(&field.value) {
                    if fixed.is_empty() {
                        // `unix:///path` has no host: h2 accepts no authority, not "".
                        continue;
                    }
                    field.value = fixed.to_vec();
                }
            }
            hpack::encode_literal(&mut encoded, &field);
        }
        self.write_header_frames(&block, &encoded);
        Ok(())
    }

    /// Writes `encoded` as HEADERS plus CONTINUATIONs of at most
    /// [`FRAME_PAYLOAD_BYTES_MAX`] each, with the block's stream, END_STREAM and
    /// priority, and END_HEADERS on the last.
    fn write_header_frames(&mut self, block: &HeaderBlock, encoded: &[u8]) {
        let priority_bytes = block.priority.map_or(0, |_| PRIORITY_BYTES);
        let first_length = encoded.len().min(FRAME_PAYLOAD_BYTES_MAX - priority_bytes);
        let (first, mut rest) = encoded.split_at(first_length);
        let mut flags = 0;
        if block.end_stream {
            flags |= FLAG_END_STREAM;
        }
        if block.priority.is_some() {
            flags |= FLAG_PRIORITY;
        }
        if rest.is_empty() {
            flags |= FLAG_END_HEADERS;
        }
        let head = FrameHead {
            length: priority_bytes + first.len(),
            kind: FRAME_HEADERS,
            flags,
            stream: block.stream,
        };
        head.write(&mut self.output);
        if let Some(priority) = &block.priority {
            self.output.extend_from_slice(priority);
        }
        self.output.extend_from_slice(first);
        while !rest.is_empty() {
            let (chunk, after) = rest.split_at(rest.len().min(FRAME_PAYLOAD_BYTES_MAX));
            let head = FrameHead {
                length: chunk.len(),
                kind: FRAME_CONTINUATION,
                flags: if after.is_empty() {
                    FLAG_END_HEADERS
                } else {
                    0
                },
                stream: block.stream,
            };
            head.write(&mut self.output);
            self.output.extend_from_slice(chunk);
            rest = after;
        }
    }

    /// Input HTTP/2 does not allow. While inspecting, the connection turns to
    /// pass-through: the held block and `current` (the bytes of the frame in hand)
    /// go on as they came and h2 answers them. While rewriting it is an error.
    fn malformed(&mut self, current: &[&[u8]], reason: &'static str) -> Result<(), Malformed> {
        if self.mode != Mode::Inspect {
            return Err(Malformed::Framing(reason));
        }
        self.pass_through(current);
        Ok(())
    }

    /// Turns an inspected connection to pass-through, releasing what it held.
    fn pass_through(&mut self, current: &[&[u8]]) {
        if let Some(block) = self.block.take() {
            self.output.extend_from_slice(&block.raw);
        }
        match std::mem::replace(&mut self.frame, FrameState::head()) {
            FrameState::Head { bytes, filled } => self.output.extend_from_slice(&bytes[..filled]),
            FrameState::Collect {
                raw_head, payload, ..
            } => {
                self.output.extend_from_slice(&raw_head);
                self.output.extend_from_slice(&payload);
            }
            FrameState::Forward { .. } => {}
        }
        for bytes in current {
            self.output.extend_from_slice(bytes);
        }
        self.mode = Mode::PassThrough;
    }
}

/// The header block fragment of a HEADERS payload and its priority fields, without
/// padding; `None` if the padding or priority would run past the payload.
fn headers_fragment(flags: u8, payload: &[u8]) -> Option<(&[u8], Option<[u8; PRIORITY_BYTES]>)> {
    let mut start = 0;
    let mut end = payload.len();
    if flags & FLAG_PADDED != 0 {
        let padding = usize::from(*payload.first()?);
        start = 1;
        end = end.checked_sub(padding)?;
    }
    let priority = if flags & FLAG_PRIORITY != 0 {
        let priority = payload
            .get(start..start + PRIORITY_BYTES)?
            .try_into()
            .ok()?;
        start += PRIORITY_BYTES;
        Some(priority)
    } else {
        None
    };
    (start <= end).then(|| (&payload[start..end], priority))
}

/// `host:port` from an authority written as a URL (`scheme://host:port[/...]`), or
/// `None` if it has no scheme.
fn authority_host_port(authority: &[u8]) -> Option<&[u8]> {
    let scheme_end = authority.windows(3).position(|window| window == b"://")?;
    let rest = &authority[scheme_end + 3..];
    let end = rest
        .iter()
        .position(|&byte| matches!(byte, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    Some(&rest[..end])
}
