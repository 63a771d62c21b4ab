//! Fuzzes every decoder of untrusted protocol bytes: `read_frame` over the input as a
//! byte stream (length prefixes included), then `decode_request` and `decode_response`
//! on each frame body it yields, and on the raw input as one body. Decoding must never
//! panic; whatever decodes must re-encode to the same bytes (one meaning per body).
#![no_main]

use corekv_net::protocol::codec;
use libfuzzer_sys::fuzz_target;

/// A small limit so that the fuzzer explores the limit check as well as bodies.
const FRAME_BYTES_MAX: usize = 64 * 1024;

fn check(body: &[u8]) {
    if let Ok((id, request)) = codec::decode_request(body) {
        let mut frame = Vec::new();
        codec::encode_request(id, &request, &mut frame);
        assert_eq!(&frame[4..], body, "a decoded request re-encodes to its bytes");
    }
    if let Ok((id, response)) = codec::decode_response(body) {
        let mut frame = Vec::new();
        codec::encode_response(id, &response, &mut frame);
        assert_eq!(&frame[4..], body, "a decoded response re-encodes to its bytes");
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut reader = futures_lite::io::Cursor::new(data);
    let mut buf = Vec::new();
    while let Ok(true) =
        futures_lite::future::block_on(codec::read_frame(&mut reader, &mut buf, FRAME_BYTES_MAX))
    {
        assert!(buf.len() <= FRAME_BYTES_MAX);
        check(&buf);
    }
});
