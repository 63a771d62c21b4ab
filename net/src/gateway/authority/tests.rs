//! Hand-built HTTP/2 client byte streams through the rewriter and the IO wrapper.

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use super::hpack::{self, Field};
use super::*;

const SETTINGS: u8 = 0x4;
const DATA: u8 = 0x0;
const PING: u8 = 0x6;
const WINDOW_UPDATE: u8 = 0x8;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    FrameHead {
        length: payload.len(),
        kind,
        flags,
        stream,
    }
    .write(&mut out);
    out.extend_from_slice(payload);
    out
}

/// What grpc-go sends before its first request: the preface, SETTINGS, and a
/// connection WINDOW_UPDATE.
fn connection_start() -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[0x00, 0x04, 0x00, 0x40, 0x00, 0x00]));
    out.extend(frame(WINDOW_UPDATE, 0, 0, &[0x00, 0x0f, 0x00, 0x01]));
    out
}

fn indexed(out: &mut Vec<u8>, index: usize) {
    hpack::encode_integer(out, index, 7, 0x80);
}

fn huffman_string(out: &mut Vec<u8>, text: &[u8]) {
    let mut coded = Vec::new();
    hpack::huffman_encode(&mut coded, text);
    hpack::encode_integer(out, coded.len(), 7, 0x80);
    out.extend(coded);
}

/// A literal with incremental indexing and a Huffman-coded value, the name from the
/// table at `name_index`, as Go's encoder writes most request fields.
fn incremental(out: &mut Vec<u8>, name_index: usize, value: &str) {
    hpack::encode_integer(out, name_index, 6, 0x40);
    huffman_string(out, value.as_bytes());
}

/// The same with a Huffman-coded literal name.
fn incremental_named(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0x40);
    huffman_string(out, name.as_bytes());
    huffman_string(out, value.as_bytes());
}

/// etcdctl 3.4's first request: `:authority` is `authority`, every non-static field
/// is added to the client's table. After it the table holds, newest first (index
/// 62 on): te, user-agent, content-type, :authority, :path.
fn first_request(authority: &str) -> Vec<u8> {
    let mut block = Vec::new();
    indexed(&mut block, 3); // :method POST
    indexed(&mut block, 6); // :scheme http
    incremental(&mut block, 4, "/etcdserverpb.Maintenance/Status");
    incremental(&mut block, 1, authority);
    incremental(&mut block, 31, "application/grpc");
    incremental(&mut block, 58, "grpc-go/1.26.0");
    incremental_named(&mut block, "te", "trailers");
    block
}

/// The next request on the connection: every field from the tables.
fn second_request() -> Vec<u8> {
    let mut block = Vec::new();
    for index in [3, 6, 66, 65, 64, 63, 62] {
        indexed(&mut block, index);
    }
    block
}

/// A connection with two requests and their bodies, then a PING.
fn two_requests(authority: &str) -> Vec<u8> {
    let mut input = connection_start();
    input.extend(frame(
        FRAME_HEADERS,
        FLAG_END_HEADERS,
        1,
        &first_request(authority),
    ));
    input.extend(frame(DATA, FLAG_END_STREAM, 1, &[0, 0, 0, 0, 0]));
    input.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 3, &second_request()));
    input.extend(frame(
        DATA,
        FLAG_END_STREAM,
        3,
        &[0, 0, 0, 0, 2, 0x08, 0x01],
    ));
    input.extend(frame(PING, 0, 0, &[7; 8]));
    input
}

/// Feeds `input` `chunk` bytes at a time, reading all output after each, then ends
/// the input. Stops at the first error.
fn run(input: &[u8], chunk: usize) -> (Result<(), Malformed>, Vec<u8>, Mode) {
    let mut rewriter = Rewriter::default();
    let mut out = Vec::new();
    for piece in input.chunks(chunk) {
        let result = rewriter.feed(piece);
        out.extend_from_slice(&rewriter.output[rewriter.output_read..]);
        rewriter.output.clear();
        rewriter.output_read = 0;
        if result.is_err() {
            return (result, out, rewriter.mode);
        }
    }
    rewriter.end_of_input();
    out.extend_from_slice(&rewriter.output[rewriter.output_read..]);
    (Ok(()), out, rewriter.mode)
}

/// Runs `input` whole and in several chunkings; all must give the same outcome.
fn run_all_chunkings(input: &[u8]) -> (Result<(), String>, Vec<u8>, Mode) {
    let whole = run(input, input.len().max(1));
    let whole = (whole.0.map_err(|e| e.to_string()), whole.1, whole.2);
    for chunk in [1, 2, 7, 9, 24, 100, 4096] {
        let (result, out, mode) = run(input, chunk);
        assert_eq!(result.map_err(|e| e.to_string()), whole.0, "chunk {chunk}");
        assert_eq!(out, whole.1, "chunk {chunk}");
        assert_eq!(mode, whole.2, "chunk {chunk}");
    }
    whole
}

/// A header block as a server would see it.
#[derive(Debug, PartialEq, Eq)]
struct Block {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; PRIORITY_BYTES]>,
    fields: Vec<(String, String)>,
}

/// An HTTP/2 client stream split as a server reads it, decoded by a decoder that
/// starts empty as h2's does.
#[derive(Debug)]
struct Parsed {
    blocks: Vec<Block>,
    /// Every frame that is not HEADERS or CONTINUATION, as bytes.
    other_frames: Vec<Vec<u8>>,
    /// Payload sizes of the HEADERS and CONTINUATION frames.
    header_frame_lengths: Vec<usize>,
    /// Entries left in the server's dynamic table.
    table_entries: usize,
}

fn parse(stream: &[u8]) -> Parsed {
    assert!(stream.starts_with(PREFACE));
    let mut rest = &stream[PREFACE.len()..];
    let mut decoder = hpack::Decoder::new(HEADER_TABLE_BYTES_MAX);
    let mut parsed = Parsed {
        blocks: Vec::new(),
        other_frames: Vec::new(),
        header_frame_lengths: Vec::new(),
        table_entries: 0,
    };
    let mut open: Option<(Block, Vec<u8>)> = None;
    while !rest.is_empty() {
        let head = FrameHead::parse(rest[..FRAME_HEAD_BYTES].try_into().unwrap());
        let (raw, after) = rest.split_at(FRAME_HEAD_BYTES + head.length);
        rest = after;
        let payload = &raw[FRAME_HEAD_BYTES..];
        match head.kind {
            FRAME_HEADERS => {
                assert!(open.is_none());
                let (fragment, priority) = headers_fragment(head.flags, payload).unwrap();
                let block = Block {
                    stream: head.stream,
                    end_stream: head.flags & FLAG_END_STREAM != 0,
                    priority,
                    fields: Vec::new(),
                };
                open = Some((block, fragment.to_vec()));
            }
            FRAME_CONTINUATION => open.as_mut().unwrap().1.extend_from_slice(payload),
            _ => {
                assert!(open.is_none());
                parsed.other_frames.push(raw.to_vec());
                continue;
            }
        }
        parsed.header_frame_lengths.push(head.length);
        if head.flags & FLAG_END_HEADERS != 0 {
            let (mut block, fragment) = open.take().unwrap();
            let fields = decoder.decode(&fragment, HEADER_LIST_BYTES_MAX).unwrap();
            block.fields = fields
                .into_iter()
                .map(|Field { name, value, .. }| {
                    (
                        String::from_utf8(name).unwrap(),
                        String::from_utf8(value).unwrap(),
                    )
                })
                .collect();
            parsed.blocks.push(block);
        }
    }
    assert!(open.is_none());
    parsed.table_entries = decoder.entries_len();
    parsed
}

/// The blocks with `:authority` fixed as the rewriter should.
fn fixed(blocks: Vec<Block>) -> Vec<Block> {
    blocks
        .into_iter()
        .map(|mut block| {
            for (name, value) in &mut block.fields {
                if name == ":authority" {
                    *value = value
                        .split("://")
                        .nth(1)
                        .unwrap()
                        .split('/')
                        .next()
                        .unwrap()
                        .to_string();
                }
            }
            block
        })
        .collect()
}

#[test]
fn url_authority_is_rewritten_through_the_clients_table() {
    // etcdctl 3.4's connection (Huffman literals with incremental indexing, then a
    // request made of table references) comes out with `host:port` in both
    // requests, encoded without the table, and every other frame byte for byte.
    let input = two_requests("http://127.0.0.1:24379");
    let (result, output, mode) = run_all_chunkings(&input);
    result.unwrap();
    assert_eq!(mode, Mode::Rewrite);
    let sent = parse(&input);
    let received = parse(&output);
    assert_eq!(sent.table_entries, 5);
    assert_eq!(sent.blocks[1].fields, sent.blocks[0].fields);
    assert_eq!(received.blocks, fixed(sent.blocks));
    assert_eq!(
        received.blocks[1].fields[3],
        (":authority".to_string(), "127.0.0.1:24379".to_string())
    );
    assert_eq!(received.other_frames, sent.other_frames);
    assert_eq!(received.table_entries, 0);
    assert!(output.starts_with(&connection_start()));
}

#[test]
fn url_authority_with_path_and_other_schemes() {
    // The scheme goes, so does any path; an authority without a host goes whole.
    assert_eq!(
        authority_host_port(b"http://127.0.0.1:2379"),
        Some(&b"127.0.0.1:2379"[..])
    );
    assert_eq!(authority_host_port(b"https://h:1/a/b?c"), Some(&b"h:1"[..]));
    assert_eq!(authority_host_port(b"unix:///tmp/sock"), Some(&b""[..]));
    assert_eq!(authority_host_port(b"127.0.0.1:2379"), None);
    assert_eq!(authority_host_port(b"localhost"), None);
    let mut block = Vec::new();
    indexed(&mut block, 2);
    indexed(&mut block, 6);
    indexed(&mut block, 4);
    incremental(&mut block, 1, "unix:///tmp/corekv.sock");
    let mut input = connection_start();
    input.extend(frame(
        FRAME_HEADERS,
        FLAG_END_HEADERS | FLAG_END_STREAM,
        1,
        &block,
    ));
    let (result, output, _) = run_all_chunkings(&input);
    result.unwrap();
    let fields = &parse(&output).blocks[0].fields;
    assert!(
        fields.iter().all(|(name, _)| name != ":authority"),
        "{fields:?}"
    );
    assert_eq!(fields.len(), 3);
}

#[test]
fn normal_authority_passes_through_untouched() {
    // A client with a plain `host:port` authority gets every byte through as sent,
    // and the connection stops being parsed after its first header block.
    let input = two_requests("127.0.0.1:24379");
    let (result, output, mode) = run_all_chunkings(&input);
    result.unwrap();
    assert_eq!(output, input);
    assert_eq!(mode, Mode::PassThrough);
    let mut first = connection_start();
    first.extend(frame(
        FRAME_HEADERS,
        FLAG_END_HEADERS,
        1,
        &first_request("127.0.0.1:24379"),
    ));
    let (_, _, mode) = run(&first, first.len());
    assert_eq!(mode, Mode::PassThrough);
}

#[test]
fn http1_passes_through_untouched() {
    // HTTP/1.1, including a request that starts like the preface, is not touched.
    for input in [
        &b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:2379\r\n\r\n"[..],
        b"PRI * HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /v3/kv/range HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
        b"P",
    ] {
        let (result, output, mode) = run_all_chunkings(input);
        result.unwrap();
        assert_eq!(output, input);
        assert_eq!(
            mode,
            if input.len() > 1 {
                Mode::PassThrough
            } else {
                Mode::Preface { matched: 1 }
            }
        );
    }
}

#[test]
fn padding_priority_and_continuations_are_reassembled() {
    // A PADDED, PRIORITY HEADERS split over two CONTINUATIONs becomes one HEADERS
    // with the same priority and END_STREAM, without padding.
    let block = first_request("http://localhost:2379");
    let (a, rest) = block.split_at(10);
    let (b, c) = rest.split_at(20);
    let priority = [0x80, 0x00, 0x00, 0x01, 0xff];
    let mut payload = vec![4];
    payload.extend(priority);
    payload.extend(a);
    payload.extend([0; 4]);
    let mut input = connection_start();
    input.extend(frame(
        FRAME_HEADERS,
        FLAG_PADDED | FLAG_PRIORITY | FLAG_END_STREAM,
        1,
        &payload,
    ));
    input.extend(frame(FRAME_CONTINUATION, 0, 1, b));
    input.extend(frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, c));
    input.extend(frame(
        FRAME_HEADERS,
        FLAG_END_HEADERS | FLAG_END_STREAM,
        3,
        &second_request(),
    ));
    let (result, output, mode) = run_all_chunkings(&input);
    result.unwrap();
    assert_eq!(mode, Mode::Rewrite);
    let sent = parse(&input);
    let received = parse(&output);
    assert_eq!(received.blocks, fixed(sent.blocks));
    assert_eq!(received.blocks[0].priority, Some(priority));
    assert!(received.blocks[0].end_stream);
    assert_eq!(received.header_frame_lengths.len(), 2);
}

/// A block of one literal field whose value makes the block, framed in HEADERS and
/// CONTINUATIONs of at most 16,384 bytes, take exactly `received_bytes` bytes.
fn framed_block_of(received_bytes: usize, stream: u32) -> Vec<u8> {
    let mut value_bytes = received_bytes;
    loop {
        let mut block = Vec::new();
        hpack::encode_literal(
            &mut block,
            &Field {
                name: b"x-big".to_vec(),
                value: vec![b'v'; value_bytes],
                never_indexed: false,
            },
        );
        let frames = block.len().div_ceil(FRAME_PAYLOAD_BYTES_MAX);
        if block.len() + frames * FRAME_HEAD_BYTES == received_bytes {
            let mut out = Vec::new();
            let chunks: Vec<&[u8]> = block.chunks(FRAME_PAYLOAD_BYTES_MAX).collect();
            for (i, chunk) in chunks.iter().enumerate() {
                let kind = if i == 0 {
                    FRAME_HEADERS
                } else {
                    FRAME_CONTINUATION
                };
                let flags = if i + 1 == chunks.len() {
                    FLAG_END_HEADERS
                } else {
                    0
                };
                out.extend(frame(kind, flags, stream, chunk));
            }
            return out;
        }
        value_bytes -= 1;
    }
}

#[test]
fn large_blocks_are_split_into_continuations() {
    // A block at the limit is rewritten into frames of at most 16,384 bytes.
    let mut input = connection_start();
    input.extend(frame(
        FRAME_HEADERS,
        FLAG_END_HEADERS,
        1,
        &first_request("http://a:1"),
    ));
    input.extend(framed_block_of(HEADER_BLOCK_BYTES_MAX, 3));
    let (result, output, _) = run_all_chunkings(&input);
    result.unwrap();
    let received = parse(&output);
    assert_eq!(received.blocks, fixed(parse(&input).blocks));
    assert_eq!(
        received.header_frame_lengths[1..],
        [16_384, 16_384, 16_384, 16_348]
    );
}

/// A rewriting connection followed by `tail`.
fn rewriting_then(tail: &[u8]) -> Vec<u8> {
    let mut input = connection_start();
    input.extend(frame(
        FRAME_HEADERS,
        FLAG_END_HEADERS,
        1,
        &first_request("http://a:1"),
    ));
    input.extend(tail);
    input
}

/// A normal connection whose first header-block frames are `tail`.
fn inspecting_then(tail: &[u8]) -> Vec<u8> {
    let mut input = connection_start();
    input.extend(tail);
    input
}

/// Inputs HTTP/2 does not allow, each as the frames after a first request.
fn malformed_tails() -> Vec<(&'static str, Vec<u8>)> {
    let mut size_update_too_large = Vec::new();
    hpack::encode_integer(
        &mut size_update_too_large,
        HEADER_TABLE_BYTES_MAX + 1,
        5,
        0x20,
    );
    let mut bomb = Vec::new();
    incremental_named(&mut bomb, "x", &"v".repeat(4000));
    bomb.extend(std::iter::repeat_n(0xbe, HEADER_LIST_BYTES_MAX / 4000));
    let mut interleaved = frame(FRAME_HEADERS, 0, 3, &second_request()[..2]);
    interleaved.extend(frame(DATA, 0, 3, b"x"));
    let mut other_stream = frame(FRAME_HEADERS, 0, 3, &second_request()[..2]);
    other_stream.extend(frame(
        FRAME_CONTINUATION,
        FLAG_END_HEADERS,
        5,
        &second_request()[2..],
    ));
    let mut over_limit = framed_block_of(HEADER_BLOCK_BYTES_MAX + 1, 3);
    over_limit.truncate(over_limit.len() - 100);
    vec![
        (
            "continuation without headers",
            frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 3, &[0x82]),
        ),
        (
            "index 0",
            frame(FRAME_HEADERS, FLAG_END_HEADERS, 3, &[0x80]),
        ),
        (
            "index past the table",
            frame(FRAME_HEADERS, FLAG_END_HEADERS, 3, &[0xff, 0x00]),
        ),
        (
            "truncated field",
            frame(FRAME_HEADERS, FLAG_END_HEADERS, 3, &[0x40, 0x85, 0xff]),
        ),
        (
            "size update too large",
            frame(FRAME_HEADERS, FLAG_END_HEADERS, 3, &size_update_too_large),
        ),
        (
            "list over the limit",
            frame(FRAME_HEADERS, FLAG_END_HEADERS, 3, &bomb),
        ),
        ("frame inside a block", interleaved),
        ("continuation of another stream", other_stream),
        ("block over the limit", over_limit),
        (
            "padding past the end",
            frame(FRAME_HEADERS, FLAG_PADDED | FLAG_END_HEADERS, 3, &[9, 0x82]),
        ),
        (
            "priority past the end",
            frame(FRAME_HEADERS, FLAG_PRIORITY | FLAG_END_HEADERS, 3, &[0x82]),
        ),
        (
            "headers on stream 0",
            frame(FRAME_HEADERS, FLAG_END_HEADERS, 0, &[0x82]),
        ),
        (
            "push promise",
            frame(FRAME_PUSH_PROMISE, FLAG_END_HEADERS, 3, &[0, 0, 0, 2, 0x82]),
        ),
    ]
}

#[test]
fn malformed_input_closes_a_rewritten_connection() {
    // Once rewriting, input HTTP/2 does not allow is an error (the connection
    // closes), never a panic; what came before it went out.
    for (what, tail) in malformed_tails() {
        let input = rewriting_then(&tail);
        let (result, output, mode) = run_all_chunkings(&input);
        assert!(result.is_err(), "{what}: {output:?}");
        assert_eq!(mode, Mode::Rewrite, "{what}");
        assert!(output.starts_with(&connection_start()), "{what}");
    }
}

#[test]
fn malformed_first_block_passes_through_for_h2_to_answer() {
    // The same inputs as the first header block of a connection reach h2 byte for
    // byte: it answers them as it would without the wrapper.
    for (what, tail) in malformed_tails() {
        let input = inspecting_then(&tail);
        let (result, output, mode) = run_all_chunkings(&input);
        result.unwrap_or_else(|error| panic!("{what}: {error}"));
        assert_eq!(output, input, "{what}");
        assert_eq!(mode, Mode::PassThrough, "{what}");
    }
}

#[test]
fn first_block_over_the_limit_passes_through() {
    // A normal client's first block one byte over the limit is not held: it goes on
    // to h2 as sent, and so does the rest of the connection.
    let mut input = inspecting_then(&framed_block_of(HEADER_BLOCK_BYTES_MAX + 1, 1));
    input.extend(frame(DATA, FLAG_END_STREAM, 1, b"body"));
    let (result, output, mode) = run_all_chunkings(&input);
    result.unwrap();
    assert_eq!(output, input);
    assert_eq!(mode, Mode::PassThrough);
}

#[test]
fn end_of_input_releases_a_held_block() {
    // A client that closes in the middle of its first block has its bytes passed on
    // (h2 then sees the truncated frame), even a partial frame header.
    let full = inspecting_then(&frame(FRAME_HEADERS, 0, 1, &first_request("http://a:1")));
    for cut in [full.len(), full.len() - 3, connection_start().len() + 4] {
        let (result, output, _) = run_all_chunkings(&full[..cut]);
        result.unwrap();
        assert_eq!(output, full[..cut]);
    }
}

/// Client bytes handed out `chunk` at a time, then end of stream; writes go nowhere.
struct Scripted {
    input: Vec<u8>,
    position: usize,
    chunk: usize,
}

impl AsyncRead for Scripted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let end = (self.position + self.chunk).min(self.input.len());
        let length = (end - self.position).min(buf.remaining());
        buf.put_slice(&self.input[self.position..self.position + length]);
        self.position += length;
        Poll::Ready(Ok(()))
    }
}

/// Reads `io` to its end with buffers of `buffer_bytes` (hyper's version check
/// reads 24 bytes first), or to its first error.
fn read_all(
    io: &mut FixAuthority<Scripted>,
    buffer_bytes: usize,
) -> (Vec<u8>, Option<std::io::Error>) {
    let mut context = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    let mut first = true;
    loop {
        let mut storage = vec![0; if first { 24 } else { buffer_bytes }];
        first = false;
        let mut buf = ReadBuf::new(&mut storage);
        match Pin::new(&mut *io).poll_read(&mut context, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => return (out, None),
            Poll::Ready(Ok(())) => out.extend_from_slice(buf.filled()),
            Poll::Ready(Err(error)) => return (out, Some(error)),
            Poll::Pending => unreachable!("the scripted stream is always ready"),
        }
    }
}

#[test]
fn io_wrapper_reads_what_the_rewriter_writes() {
    // Through the AsyncRead wrapper, with any read and buffer sizes: a rewritten
    // connection reads as the rewriter's output, a normal one as its input (and
    // drops the rewriter), a malformed rewritten one ends in InvalidData.
    let rewritten = two_requests("http://127.0.0.1:24379");
    let normal = two_requests("127.0.0.1:24379");
    let malformed = rewriting_then(&frame(FRAME_HEADERS, FLAG_END_HEADERS, 3, &[0x80]));
    for chunk in [1, 10, 1000] {
        for buffer_bytes in [1, 5, 8192] {
            let scripted = |input: &Vec<u8>| Scripted {
                input: input.clone(),
                position: 0,
                chunk,
            };
            let mut io = FixAuthority::new(scripted(&rewritten));
            let (out, error) = read_all(&mut io, buffer_bytes);
            assert!(error.is_none());
            assert_eq!(out, run(&rewritten, rewritten.len()).1);
            let mut io = FixAuthority::new(scripted(&normal));
            let (out, error) = read_all(&mut io, buffer_bytes);
            assert!(error.is_none());
            assert_eq!(out, normal);
            assert!(io.rewriter.is_none());
            let mut io = FixAuthority::new(scripted(&malformed));
            let (out, error) = read_all(&mut io, buffer_bytes);
            assert_eq!(error.unwrap().kind(), std::io::ErrorKind::InvalidData);
            assert!(out.starts_with(&connection_start()));
        }
    }
}
