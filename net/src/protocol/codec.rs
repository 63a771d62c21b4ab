//! Encoding and decoding of protocol frames (in progress).
