//! corekv's binary protocol (docs/protocol.md): messages and their encoding.

pub mod codec;
pub mod messages;

pub use codec::{
    client_handshake, decode_request, decode_response, encode_request, encode_response,
    peek_request_id, read_frame, server_handshake, ProtocolError, FRAME_BYTES_MAX_DEFAULT, MAGIC,
    PROTOCOL_VERSION, RESPONSE_FRAME_BYTES_MAX_DEFAULT,
};
pub use messages::{
    AlarmAction, AlarmMember, AlarmType, Header, Member, MemberChange, MemberChangeKind, Request,
    Response, StatusResponse,
};
