//! HTTP/2 frames (RFC 9113 §4, §6): the 9-byte frame head, the kinds, flags, error
//! codes and settings the server uses, and writers for every frame it sends.
//!
//! Writers append to the connection's output buffer; none allocates beyond it.

/// Bytes of a frame head: length (24 bits), type, flags, stream (31 bits).
pub const HEAD_BYTES: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE's initial value: the largest payload either side may
/// send until the other says more (the server never says more).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16_384;
/// The largest SETTINGS_MAX_FRAME_SIZE a peer may announce (§6.5.2).
pub const MAX_FRAME_BYTES_LIMIT: u32 = (1 << 24) - 1;
/// The largest flow-control window (§6.9.1).
pub const WINDOW_MAX: i64 = (1 << 31) - 1;
/// Every window's initial size (§6.9.2).
pub const DEFAULT_WINDOW: i64 = 65_535;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const PRIORITY: u8 = 0x2;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PUSH_PROMISE: u8 = 0x5;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

/// DATA and HEADERS: the sender's last frame on the stream.
pub const FLAG_END_STREAM: u8 = 0x1;
/// SETTINGS and PING: an acknowledgement.
pub const FLAG_ACK: u8 = 0x1;
/// HEADERS and CONTINUATION: the header block ends here.
pub const FLAG_END_HEADERS: u8 = 0x4;
/// DATA and HEADERS: a pad length byte first, padding last.
pub const FLAG_PADDED: u8 = 0x8;
/// HEADERS: a stream dependency and weight (5 bytes) before the block.
pub const FLAG_PRIORITY: u8 = 0x20;

/// Error codes (§7).
pub const NO_ERROR: u32 = 0x0;
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const INTERNAL_ERROR: u32 = 0x2;
pub const FLOW_CONTROL_ERROR: u32 = 0x3;
pub const STREAM_CLOSED: u32 = 0x5;
pub const FRAME_SIZE_ERROR: u32 = 0x6;
pub const COMPRESSION_ERROR: u32 = 0x9;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// Settings identifiers (§6.5.2).
pub const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
pub const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// A frame head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Payload bytes.
    pub length: usize,
    /// The frame type.
    pub kind: u8,
    /// The flags.
    pub flags: u8,
    /// The stream (the reserved bit cleared).
    pub stream: u32,
}

impl Head {
    /// Reads a head from its 9 bytes.
    pub fn parse(bytes: &[u8; HEAD_BYTES]) -> Head {
        Head {
            length: (usize::from(bytes[0]) << 16)
                | (usize::from(bytes[1]) << 8)
                | usize::from(bytes[2]),
            kind: bytes[3],
            flags: bytes[4],
            stream: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff,
        }
    }

    /// Whether `flag` is set.
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// Appends a frame head.
pub fn put_head(out: &mut Vec<u8>, length: usize, kind: u8, flags: u8, stream: u32) {
    debug_assert!(length < 1 << 24);
    out.extend_from_slice(&[
        (length >> 16) as u8,
        (length >> 8) as u8,
        length as u8,
        kind,
        flags,
    ]);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
}

/// The payload of a DATA or HEADERS frame without its padding (and, for HEADERS, its
/// priority fields); `None` if the frame is too short for what its flags say.
pub fn unpad(head: &Head, payload: &[u8]) -> Option<std::ops::Range<usize>> {
    let mut start = 0;
    let mut end = payload.len();
    if head.has(FLAG_PADDED) {
        let pad = usize::from(*payload.first()?);
        start = 1;
        end = end.checked_sub(pad)?;
    }
    if head.kind == HEADERS && head.has(FLAG_PRIORITY) {
        start += 5;
    }
    (start <= end).then_some(start..end)
}

/// SETTINGS with `settings`.
pub fn put_settings(out: &mut Vec<u8>, settings: &[(u16, u32)]) {
    put_head(out, settings.len() * 6, SETTINGS, 0, 0);
    for (id, value) in settings {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&value.to_be_bytes());
    }
}

/// SETTINGS with ACK.
pub fn put_settings_ack(out: &mut Vec<u8>) {
    put_head(out, 0, SETTINGS, FLAG_ACK, 0);
}

/// PING with ACK, echoing `payload`.
pub fn put_ping_ack(out: &mut Vec<u8>, payload: &[u8; 8]) {
    put_head(out, 8, PING, FLAG_ACK, 0);
    out.extend_from_slice(payload);
}

/// WINDOW_UPDATE of `stream` (0: the connection) by `increment` (1 ..= 2^31 - 1).
pub fn put_window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    debug_assert!(increment > 0 && i64::from(increment) <= WINDOW_MAX);
    put_head(out, 4, WINDOW_UPDATE, 0, stream);
    out.extend_from_slice(&increment.to_be_bytes());
}

/// RST_STREAM of `stream` with `code`.
pub fn put_rst_stream(out: &mut Vec<u8>, stream: u32, code: u32) {
    put_head(out, 4, RST_STREAM, 0, stream);
    out.extend_from_slice(&code.to_be_bytes());
}

/// GOAWAY naming `last_stream` as the last stream processed, with `code`.
pub fn put_goaway(out: &mut Vec<u8>, last_stream: u32, code: u32) {
    put_head(out, 8, GOAWAY, 0, 0);
    out.extend_from_slice(&last_stream.to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
}

/// A header block as HEADERS plus as many CONTINUATIONs as `max_frame_bytes` needs.
pub fn put_header_block(
    out: &mut Vec<u8>,
    stream: u32,
    block: &[u8],
    end_stream: bool,
    max_frame_bytes: usize,
) {
    let mut chunks = block.chunks(max_frame_bytes.max(1)).peekable();
    let first = chunks.next().unwrap_or(&[]);
    let mut flags = if end_stream { FLAG_END_STREAM } else { 0 };
    if chunks.peek().is_none() {
        flags |= FLAG_END_HEADERS;
    }
    put_head(out, first.len(), HEADERS, flags, stream);
    out.extend_from_slice(first);
    while let Some(chunk) = chunks.next() {
        let flags = if chunks.peek().is_none() {
            FLAG_END_HEADERS
        } else {
            0
        };
        put_head(out, chunk.len(), CONTINUATION, flags, stream);
        out.extend_from_slice(chunk);
    }
}

/// One DATA frame (the caller keeps it within the peer's frame size and windows).
pub fn put_data(out: &mut Vec<u8>, stream: u32, data: &[u8], end_stream: bool) {
    let flags = if end_stream { FLAG_END_STREAM } else { 0 };
    put_head(out, data.len(), DATA, flags, stream);
    out.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_round_trip_and_ignore_the_reserved_bit() {
        let mut out = Vec::new();
        put_head(&mut out, 0x01_0203, HEADERS, FLAG_END_HEADERS, 0x7fff_fffe);
        let head = Head::parse(out[..HEAD_BYTES].try_into().unwrap());
        assert_eq!(
            head,
            Head {
                length: 0x01_0203,
                kind: HEADERS,
                flags: FLAG_END_HEADERS,
                stream: 0x7fff_fffe
            }
        );
        out[5] |= 0x80;
        assert_eq!(
            Head::parse(out[..HEAD_BYTES].try_into().unwrap()).stream,
            0x7fff_fffe
        );
    }

    #[test]
    fn padding_and_priority_are_stripped_or_rejected() {
        let head = |kind, flags| Head {
            length: 0,
            kind,
            flags,
            stream: 1,
        };
        assert_eq!(unpad(&head(DATA, 0), b"abc"), Some(0..3));
        assert_eq!(unpad(&head(DATA, FLAG_PADDED), b"\x02abcxx"), Some(1..4));
        assert_eq!(unpad(&head(DATA, FLAG_PADDED), b"\x05ab"), None);
        assert_eq!(unpad(&head(DATA, FLAG_PADDED), b""), None);
        assert_eq!(
            unpad(
                &head(HEADERS, FLAG_PRIORITY | FLAG_PADDED),
                b"\x01PPPPPblockx"
            ),
            Some(6..11)
        );
        assert_eq!(unpad(&head(HEADERS, FLAG_PRIORITY), b"PPP"), None);
    }

    #[test]
    fn large_header_blocks_continue() {
        let block: Vec<u8> = (0..25u8).collect();
        let mut out = Vec::new();
        put_header_block(&mut out, 3, &block, true, 10);
        let mut frames = Vec::new();
        let mut rest = &out[..];
        while !rest.is_empty() {
            let head = Head::parse(rest[..HEAD_BYTES].try_into().unwrap());
            frames.push((
                head.kind,
                head.flags,
                rest[HEAD_BYTES..HEAD_BYTES + head.length].to_vec(),
            ));
            rest = &rest[HEAD_BYTES + head.length..];
        }
        assert_eq!(frames.len(), 3);
        assert_eq!((frames[0].0, frames[0].1), (HEADERS, FLAG_END_STREAM));
        assert_eq!((frames[1].0, frames[1].1), (CONTINUATION, 0));
        assert_eq!((frames[2].0, frames[2].1), (CONTINUATION, FLAG_END_HEADERS));
        let joined: Vec<u8> = frames.into_iter().flat_map(|frame| frame.2).collect();
        assert_eq!(joined, block);

        let mut small = Vec::new();
        put_header_block(&mut small, 3, b"ab", false, 10);
        assert_eq!(
            Head::parse(small[..HEAD_BYTES].try_into().unwrap()).flags,
            FLAG_END_HEADERS
        );
    }
}
