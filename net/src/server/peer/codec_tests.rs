//! The peer codec: round trips of random messages, exact bytes of a known frame, limits
//! at and past their edge, and decoding of random and damaged bytes without panics.

use proptest::collection::{btree_set, vec};
use proptest::prelude::*;

use super::*;
use crate::server::peer::handshake::*;

fn entry() -> impl Strategy<Value = Entry> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
        vec(any::<u8>(), 0..48),
    )
        .prop_map(|(term, index, conf, data)| Entry {
            term: Term(term),
            index: LogIndex(index),
            kind: if conf {
                EntryKind::ConfChange
            } else {
                EntryKind::Normal
            },
            data,
        })
}

/// A membership as Raft keeps it: sorted, no duplicates, voters and learners disjoint.
fn conf_state() -> impl Strategy<Value = ConfState> {
    (btree_set(1u64..64, 0..8), any::<u64>()).prop_map(|(ids, split)| {
        let mut conf = ConfState::default();
        for (position, id) in ids.into_iter().enumerate() {
            if split >> (position % 64) & 1 == 1 {
                conf.learners.push(MemberId(id));
            } else {
                conf.voters.push(MemberId(id));
            }
        }
        conf
    })
}

fn body() -> impl Strategy<Value = MessageBody> {
    prop_oneof![
        (any::<u64>(), any::<u64>(), vec(entry(), 0..4), any::<u64>()).prop_map(
            |(prev_index, prev_term, entries, commit)| {
                MessageBody::Append {
                    prev_index: LogIndex(prev_index),
                    prev_term: Term(prev_term),
                    entries,
                    commit: LogIndex(commit),
                }
            }
        ),
        (
            any::<u64>(),
            proptest::option::of((any::<u64>(), proptest::option::of(any::<u64>())))
        )
            .prop_map(|(index, reject)| MessageBody::AppendResponse {
                index: LogIndex(index),
                reject: reject.map(|(conflict_index, conflict_term)| RejectHint {
                    conflict_index: LogIndex(conflict_index),
                    conflict_term: conflict_term.map(Term),
                }),
            }),
        (any::<u64>(), any::<u64>()).prop_map(|(commit, read_round)| MessageBody::Heartbeat {
            commit: LogIndex(commit),
            read_round
        }),
        any::<u64>().prop_map(|read_round| MessageBody::HeartbeatResponse { read_round }),
        (any::<bool>(), any::<u64>(), any::<u64>(), any::<bool>()).prop_map(
            |(pre_vote, last_index, last_term, transfer)| MessageBody::RequestVote {
                pre_vote,
                last_index: LogIndex(last_index),
                last_term: Term(last_term),
                transfer,
            }
        ),
        (any::<bool>(), any::<bool>())
            .prop_map(|(pre_vote, granted)| MessageBody::VoteResponse { pre_vote, granted }),
        (
            any::<u64>(),
            any::<u64>(),
            conf_state(),
            vec(any::<u8>(), 0..200)
        )
            .prop_map(
                |(index, term, conf_state, data)| MessageBody::InstallSnapshot {
                    snapshot: Snapshot {
                        meta: SnapshotMeta {
                            index: LogIndex(index),
                            term: Term(term),
                            conf_state,
                        },
                        data,
                    },
                }
            ),
        vec(entry(), 0..4).prop_map(|entries| MessageBody::Propose { entries }),
        any::<u64>().prop_map(|request| MessageBody::ReadIndex { request }),
        (any::<u64>(), any::<u64>()).prop_map(|(request, index)| {
            MessageBody::ReadIndexResponse {
                request,
                index: LogIndex(index),
            }
        }),
        Just(MessageBody::TimeoutNow),
        vec(any::<u8>(), 0..64).prop_map(|data| MessageBody::Node { data }),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (any::<u64>(), any::<u64>(), any::<u64>(), body()).prop_map(|(from, to, term, body)| Message {
        from: MemberId(from),
        to: MemberId(to),
        term: Term(term),
        body,
    })
}

fn heartbeat(from: u64, to: u64) -> Message {
    Message {
        from: MemberId(from),
        to: MemberId(to),
        term: Term(3),
        body: MessageBody::Heartbeat {
            commit: LogIndex(4),
            read_round: 5,
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any batch of messages decodes to itself, its length is what `frame_bytes`
    /// predicts, and encoding it twice gives the same bytes.
    #[test]
    fn frames_round_trip(shard in any::<u64>(), messages in vec(message(), 0..6)) {
        let bytes = encode_frame(shard, &messages).expect("encodes");
        prop_assert_eq!(bytes.len() as u64, frame_bytes(&messages));
        prop_assert_eq!(&bytes, &encode_frame(shard, &messages).expect("encodes"));
        let (decoded_shard, decoded) = decode_frame(&bytes, bytes.len()).expect("decodes");
        prop_assert_eq!(decoded_shard, shard);
        prop_assert_eq!(decoded, messages);
    }

    /// Random bytes, as a frame or a handshake, give an error or a frame, never a panic.
    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..400)) {
        let _ = decode_frame(&bytes, 1 << 20);
        if let Ok(prefix) = <[u8; FRAME_PREFIX_BYTES]>::try_from(&bytes[..bytes.len().min(FRAME_PREFIX_BYTES)]) {
            let _ = decode_frame_prefix(&prefix, 1 << 20);
        }
        let _ = decode_frame_head(&bytes, 0);
        let _ = decode_frame_head(&bytes, u64::MAX);
        let mut hello = [0u8; HELLO_BYTES];
        let n = bytes.len().min(HELLO_BYTES);
        hello[..n].copy_from_slice(&bytes[..n]);
        let _ = decode_hello(&hello);
        let mut reply = [0u8; REPLY_BYTES];
        let n = bytes.len().min(REPLY_BYTES);
        reply[..n].copy_from_slice(&bytes[..n]);
        let _ = decode_reply(&reply);
    }

    /// A valid frame cut short is refused; one with bytes overwritten decodes to an error
    /// or to some frame, never a panic, and its messages go through the checks safely.
    #[test]
    fn damaged_frames_never_panic(
        messages in vec(message(), 1..4),
        damage in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let good = encode_frame(0, &messages).expect("encodes");
        let cut = cut.index(good.len());
        prop_assert!(decode_frame(&good[..cut], 1 << 20).is_err());
        let mut bytes = good;
        for (at, byte) in damage {
            let at = at.index(bytes.len());
            bytes[at] = byte;
        }
        if let Ok((_, decoded)) = decode_frame(&bytes, 1 << 20) {
            for message in &decoded {
                let _ = check_incoming(message, message.from.0, message.to.0);
            }
        }
    }
}

/// A heartbeat frame is exactly the documented bytes (docs/peer-protocol.md).
#[test]
fn heartbeat_frame_bytes() {
    let bytes = encode_frame(0, &[heartbeat(1, 2)]).expect("encodes");
    let mut expected = Vec::new();
    expected.extend_from_slice(&54u32.to_le_bytes()); // head: 13 fixed + 25 + 16
    expected.extend_from_slice(&0u64.to_le_bytes()); // no blobs
    expected.push(CODEC_VERSION);
    expected.extend_from_slice(&0u64.to_le_bytes()); // shard
    expected.extend_from_slice(&1u32.to_le_bytes()); // one message
    expected.push(3); // Heartbeat
    for field in [1u64, 2, 3, 4, 5] {
        expected.extend_from_slice(&field.to_le_bytes()); // from, to, term, commit, round
    }
    assert_eq!(bytes, expected);
}

/// A snapshot's data follows the head as a blob, and the head carries only its length.
#[test]
fn snapshot_data_is_a_blob() {
    let data = vec![7u8; 1000];
    let message = Message {
        from: MemberId(1),
        to: MemberId(2),
        term: Term(4),
        body: MessageBody::InstallSnapshot {
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    index: LogIndex(10),
                    term: Term(3),
                    conf_state: ConfState {
                        voters: vec![MemberId(1), MemberId(2)],
                        learners: vec![MemberId(3)],
                    },
                },
                data: data.clone(),
            },
        },
    };
    let messages = [heartbeat(1, 2), message];
    let mut head = Vec::new();
    let total = encode_frame_head(0, &messages, &mut head).expect("encodes");
    assert_eq!(total as usize, head.len() + data.len());
    let blobs: Vec<&[u8]> = frame_blobs(&messages).collect();
    assert_eq!(blobs, vec![data.as_slice()]);
    let (_, decoded) =
        decode_frame(&encode_frame(0, &messages).expect("encodes"), 1 << 20).expect("decodes");
    assert_eq!(decoded, messages);
}

/// A frame of exactly `frame_bytes_max` bytes decodes; one byte more is refused from its
/// prefix alone, before the rest is read or anything allocated.
#[test]
fn frame_limit_at_and_past_the_edge() {
    let bytes = encode_frame(0, &[heartbeat(1, 2), heartbeat(1, 2)]).expect("encodes");
    assert!(decode_frame(&bytes, bytes.len()).is_ok());
    let error = decode_frame(&bytes, bytes.len() - 1).expect_err("over the limit");
    assert!(matches!(
        error,
        PeerError::FrameTooLarge { length, max } if length == bytes.len() as u64 && max == length - 1
    ));
    let prefix: [u8; FRAME_PREFIX_BYTES] = bytes[..FRAME_PREFIX_BYTES].try_into().expect("12");
    assert!(decode_frame_prefix(&prefix, bytes.len() - 1).is_err());
    // Lengths that would overflow are refused too.
    let mut huge = [0xffu8; FRAME_PREFIX_BYTES];
    huge[0..4].copy_from_slice(&100u32.to_le_bytes());
    assert!(matches!(
        decode_frame_prefix(&huge, usize::MAX),
        Err(PeerError::FrameTooLarge { .. })
    ));
}

/// Counts the remaining bytes cannot hold are refused before anything is allocated.
#[test]
fn impossible_counts_are_refused() {
    let mut head = vec![CODEC_VERSION];
    head.extend_from_slice(&0u64.to_le_bytes());
    head.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        decode_frame_head(&head, 0),
        Err(PeerError::Truncated { .. })
    ));
    // One Append claiming u32::MAX entries.
    let mut frame = encode_frame(
        0,
        &[Message {
            from: MemberId(1),
            to: MemberId(2),
            term: Term(1),
            body: MessageBody::Propose { entries: vec![] },
        }],
    )
    .expect("encodes");
    let count_at = frame.len() - 4;
    frame[count_at..].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        decode_frame(&frame, 1 << 20),
        Err(PeerError::Truncated { .. })
    ));
}

/// Every byte is checked: unknown versions, kinds, flags and non-0/1 booleans are refused.
#[test]
fn unknown_bytes_are_refused() {
    let good = encode_frame(0, &[heartbeat(1, 2)]).expect("encodes");
    let mut version = good.clone();
    version[FRAME_PREFIX_BYTES] = 9;
    assert!(matches!(
        decode_frame(&version, 1 << 20),
        Err(PeerError::UnknownVersion(9))
    ));
    let mut kind = good.clone();
    kind[FRAME_PREFIX_BYTES + HEAD_FIXED_BYTES] = 99;
    assert!(matches!(
        decode_frame(&kind, 1 << 20),
        Err(PeerError::UnknownMessageKind(99))
    ));
    let vote = Message {
        from: MemberId(1),
        to: MemberId(2),
        term: Term(1),
        body: MessageBody::VoteResponse {
            pre_vote: true,
            granted: true,
        },
    };
    let mut flags = encode_frame(0, &[vote]).expect("encodes");
    *flags.last_mut().expect("a flags byte") = 0x80;
    assert!(decode_frame(&flags, 1 << 20).is_err());
    let response = Message {
        from: MemberId(1),
        to: MemberId(2),
        term: Term(1),
        body: MessageBody::AppendResponse {
            index: LogIndex(1),
            reject: None,
        },
    };
    let mut tag = encode_frame(0, &[response]).expect("encodes");
    *tag.last_mut().expect("a tag byte") = 2;
    assert!(decode_frame(&tag, 1 << 20).is_err());
    let mut trailing = good.clone();
    trailing[0] += 1;
    trailing.push(0);
    assert!(decode_frame(&trailing, 1 << 20).is_err());
}

/// The handshake round trips, and a bad magic is not a corekv peer.
#[test]
fn handshake_round_trip() {
    let hello = encode_hello(Lane::Snapshot, 0xc1, 0xa, 0xb);
    assert_eq!(
        decode_hello(&hello).expect("decodes"),
        Hello {
            version: PROTOCOL_VERSION,
            lane: Some(Lane::Snapshot),
            cluster_id: 0xc1,
            from: 0xa,
            to: 0xb,
        }
    );
    let reply = encode_reply(HandshakeStatus::ClusterMismatch, 0xc2, 0xb);
    assert_eq!(
        decode_reply(&reply).expect("decodes"),
        Reply {
            version: PROTOCOL_VERSION,
            status: HandshakeStatus::ClusterMismatch,
            cluster_id: 0xc2,
            member: 0xb,
        }
    );
    let mut http = [0u8; HELLO_BYTES];
    http[..16].copy_from_slice(b"GET / HTTP/1.1\r\n");
    assert!(decode_hello(&http).is_err());
}

/// What Raft assumes of a peer's message is checked: sender, target, contiguous entries,
/// a well-formed membership.
#[test]
fn incoming_messages_are_checked() {
    assert!(check_incoming(&heartbeat(1, 2), 1, 2).is_ok());
    assert!(check_incoming(&heartbeat(1, 2), 3, 2).is_err());
    assert!(check_incoming(&heartbeat(1, 2), 1, 3).is_err());
    let append = |indexes: &[u64]| Message {
        from: MemberId(1),
        to: MemberId(2),
        term: Term(2),
        body: MessageBody::Append {
            prev_index: LogIndex(4),
            prev_term: Term(1),
            entries: indexes
                .iter()
                .map(|&index| Entry {
                    term: Term(2),
                    index: LogIndex(index),
                    kind: EntryKind::Normal,
                    data: vec![],
                })
                .collect(),
            commit: LogIndex(4),
        },
    };
    assert!(check_incoming(&append(&[5, 6, 7]), 1, 2).is_ok());
    assert!(check_incoming(&append(&[5, 7]), 1, 2).is_err());
    assert!(check_incoming(&append(&[4]), 1, 2).is_err());
    let snapshot = |voters: Vec<u64>, learners: Vec<u64>| Message {
        from: MemberId(1),
        to: MemberId(2),
        term: Term(2),
        body: MessageBody::InstallSnapshot {
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    index: LogIndex(9),
                    term: Term(2),
                    conf_state: ConfState {
                        voters: voters.into_iter().map(MemberId).collect(),
                        learners: learners.into_iter().map(MemberId).collect(),
                    },
                },
                data: vec![],
            },
        },
    };
    assert!(check_incoming(&snapshot(vec![1, 2], vec![3]), 1, 2).is_ok());
    assert!(check_incoming(&snapshot(vec![2, 1], vec![]), 1, 2).is_err());
    assert!(check_incoming(&snapshot(vec![1, 1], vec![]), 1, 2).is_err());
    assert!(check_incoming(&snapshot(vec![1, 2], vec![2]), 1, 2).is_err());
}
