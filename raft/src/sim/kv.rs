//! The simulator's application: a tiny key-value state machine with put, get and
//! compare-and-set on a few keys, the encoding of its commands in log entries, and the
//! client history the linearizability checker reads.

use std::collections::{BTreeMap, BTreeSet};

use crate::LogIndex;

/// One client operation on one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Put { value: u64 },
    Get,
    Cas { expected: u64, new: u64 },
}

/// What an operation returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Put,
    Get { value: u64 },
    Cas { swapped: bool },
}

/// Applies `kind` to a register holding `value`: (new value, output). This is the
/// sequential specification the checker uses, and the state machine's own logic.
pub fn apply_to_register(value: u64, kind: OpKind) -> (u64, Output) {
    match kind {
        OpKind::Put { value: v } => (v, Output::Put),
        OpKind::Get => (value, Output::Get { value }),
        OpKind::Cas { expected, new } => {
            if value == expected {
                (new, Output::Cas { swapped: true })
            } else {
                (value, Output::Cas { swapped: false })
            }
        }
    }
}

/// A write command as stored in an entry: `[op id: u64][key: u8][tag: u8][a: u64][b: u64]`.
pub fn encode_command(op_id: u64, key: u8, kind: OpKind) -> Vec<u8> {
    let (tag, a, b) = match kind {
        OpKind::Put { value } => (1u8, value, 0),
        OpKind::Cas { expected, new } => (2u8, expected, new),
        OpKind::Get => unreachable!("reads never go through the log"),
    };
    let mut out = Vec::with_capacity(26);
    out.extend_from_slice(&op_id.to_le_bytes());
    out.push(key);
    out.push(tag);
    out.extend_from_slice(&a.to_le_bytes());
    out.extend_from_slice(&b.to_le_bytes());
    out
}

pub fn decode_command(data: &[u8]) -> (u64, u8, OpKind) {
    assert_eq!(data.len(), 26, "simulator command has a fixed size");
    let word = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"));
    let kind = match data[9] {
        1 => OpKind::Put { value: word(10) },
        2 => OpKind::Cas {
            expected: word(10),
            new: word(18),
        },
        tag => panic!("unknown command tag {tag}"),
    };
    (word(0), data[8], kind)
}

/// The replicated state machine: registers by key, all starting at 0, plus the ids of
/// the commands already applied. A forwarded proposal can reach the log twice (the
/// network duplicates the forward), so, like etcd's request ids, a command applies once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvState {
    pub registers: BTreeMap<u8, u64>,
    pub applied_ops: BTreeSet<u64>,
    pub applied: LogIndex,
}

impl KvState {
    /// Applies command `op_id`; None if it was applied before (a duplicate entry).
    pub fn apply(&mut self, op_id: u64, key: u8, kind: OpKind) -> Option<Output> {
        if !self.applied_ops.insert(op_id) {
            return None;
        }
        let value = self.registers.get(&key).copied().unwrap_or(0);
        let (new, output) = apply_to_register(value, kind);
        self.registers.insert(key, new);
        Some(output)
    }

    pub fn get(&self, key: u8) -> u64 {
        self.registers.get(&key).copied().unwrap_or(0)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.applied.0.to_le_bytes());
        out.extend_from_slice(&(self.applied_ops.len() as u64).to_le_bytes());
        for op in &self.applied_ops {
            out.extend_from_slice(&op.to_le_bytes());
        }
        for (k, v) in &self.registers {
            out.push(*k);
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    pub fn decode(data: &[u8]) -> KvState {
        let word = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"));
        let applied = LogIndex(word(0));
        let count = word(8) as usize;
        let applied_ops = (0..count).map(|k| word(16 + 8 * k)).collect();
        let mut registers = BTreeMap::new();
        for chunk in data[16 + 8 * count..].chunks(9) {
            registers.insert(
                chunk[0],
                u64::from_le_bytes(chunk[1..9].try_into().expect("8")),
            );
        }
        KvState {
            registers,
            applied_ops,
            applied,
        }
    }

    /// FNV-1a over the encoding: two members at the same applied index must agree.
    pub fn digest(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.encode() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        h
    }
}

/// One operation in a client history. Times are a global event counter, so call and
/// return order is exact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryOp {
    pub client: u32,
    pub key: u8,
    pub kind: OpKind,
    pub call: u64,
    /// None: the outcome is unknown (it may or may not have taken effect).
    pub ret: Option<u64>,
    /// The observed output, if the client saw one. An operation known to have taken
    /// effect by `ret` but whose output was not seen has `ret` set and no output.
    pub output: Option<Output>,
}
