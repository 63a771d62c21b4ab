//! Client load that records what it saw, for the fault tests: a [`Workload`] of client
//! threads doing puts, linearizable gets and compare-and-sets on a few registers through
//! chosen members, whose history goes to the project's linearizability checker
//! (`corekv_raft::sim::linearizability`); and a [`Writer`] that writes keys that are
//! never overwritten and lists those acknowledged, so a test can look for every one.
//!
//! The mapping onto the checker's model (registers per `u8` key holding `u64` values,
//! every register 0 at first): register `k` is the key `lin/<k>`, a value is its decimal
//! text and a missing key is 0. Every value a client writes is unique and non-zero, so a
//! read names the write it saw. Compare-and-set is a txn whose compare is the value
//! (`version == 0` when the expected value is 0, the key missing) and whose success
//! branch puts the new value; the txn's `succeeded` is the swap. Call and return are
//! stamps of one global counter taken before the request leaves and after the answer
//! arrives, so their order is the real-time order. A write that failed or timed out has
//! an unknown outcome (it may still take effect: `ret` None); a read that failed has no
//! effect and is left out. [`history_op`] is that mapping, shared by the workload and the
//! unit tests that show the checker rejecting a fabricated history.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use corekv_engine::{Compare, CompareResult, CompareTarget, PutRequest, RequestOp, TxnRequest};
use corekv_net::client::Client;
use corekv_raft::sim::kv::{HistoryOp, OpKind, Output};
use corekv_raft::sim::linearizability::{check_history, Verdict};

use crate::cluster::{within, Failure};
use crate::run_client;

/// The key of register `key`.
pub fn register_key(key: u8) -> Vec<u8> {
    format!("lin/{key}").into_bytes()
}

/// The bytes stored for register value `value` (never 0: 0 is a missing key).
pub fn encode_value(value: u64) -> Vec<u8> {
    assert_ne!(value, 0, "0 stands for a missing key; writes are non-zero");
    value.to_string().into_bytes()
}

/// The register value a read saw: 0 for a missing key. Panics on bytes no client wrote.
pub fn decode_value(value: Option<&[u8]>) -> u64 {
    match value {
        None => 0,
        Some(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| text.parse().ok())
            .filter(|value| *value != 0)
            .unwrap_or_else(|| panic!("a register holds bytes no client wrote: {bytes:?}")),
    }
}

/// The txn that swaps register `key` from `expected` to `new`.
pub fn cas_request(key: u8, expected: u64, new: u64) -> TxnRequest {
    let compare = if expected == 0 {
        Compare {
            result: CompareResult::Equal,
            target: CompareTarget::Version(0),
            key: register_key(key),
            range_end: Vec::new(),
        }
    } else {
        Compare {
            result: CompareResult::Equal,
            target: CompareTarget::Value(encode_value(expected)),
            key: register_key(key),
            range_end: Vec::new(),
        }
    };
    TxnRequest {
        compare: vec![compare],
        success: vec![RequestOp::Put(PutRequest {
            key: register_key(key),
            value: encode_value(new),
            ..PutRequest::default()
        })],
        failure: Vec::new(),
    }
}

/// What a successful call came back with, before mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// The put was acknowledged.
    Put,
    /// The read's value (None: no such key).
    Get(Option<Vec<u8>>),
    /// The txn ran; whether its compare held.
    Txn { succeeded: bool },
}

/// One call as the checker sees it; None for a failed read (it had no effect).
pub fn history_op(
    client: u32,
    key: u8,
    kind: OpKind,
    call: u64,
    returned: u64,
    result: &Result<Observed, Failure>,
) -> Option<HistoryOp> {
    let output = match (kind, result) {
        (OpKind::Get, Err(_)) => return None,
        (_, Err(_)) => None,
        (OpKind::Put { .. }, Ok(Observed::Put)) => Some(Output::Put),
        (OpKind::Get, Ok(Observed::Get(value))) => Some(Output::Get {
            value: decode_value(value.as_deref()),
        }),
        (OpKind::Cas { .. }, Ok(Observed::Txn { succeeded })) => Some(Output::Cas {
            swapped: *succeeded,
        }),
        (kind, Ok(observed)) => panic!("a {kind:?} call observed {observed:?}"),
    };
    Some(HistoryOp {
        client,
        key,
        kind,
        call,
        ret: output.map(|_| returned),
        output,
    })
}

/// Runs one call of `kind` on register `key`.
pub async fn perform(client: &Client, key: u8, kind: OpKind) -> Result<Observed, Failure> {
    match kind {
        OpKind::Put { value } => {
            let put = PutRequest {
                key: register_key(key),
                value: encode_value(value),
                ..PutRequest::default()
            };
            client.put(put).await.map_err(Failure::of)?;
            Ok(Observed::Put)
        }
        OpKind::Get => {
            let kv = client.get(&register_key(key)).await.map_err(Failure::of)?;
            Ok(Observed::Get(kv.map(|kv| kv.value)))
        }
        OpKind::Cas { expected, new } => {
            let (_, txn) = client
                .txn(cas_request(key, expected, new))
                .await
                .map_err(Failure::of)?;
            Ok(Observed::Txn {
                succeeded: txn.succeeded,
            })
        }
    }
}

/// One call a workload client made.
#[derive(Clone, Debug)]
pub struct Record {
    /// The member it went to.
    pub member: usize,
    /// The call and the kind of operation.
    pub kind: OpKind,
    /// Stamps of the shared clock before the call and after its answer (or failure).
    pub call: u64,
    pub returned: u64,
    /// What came back.
    pub result: Result<Observed, Failure>,
    /// The call as the checker sees it (None: a failed read).
    pub op: Option<HistoryOp>,
}

/// How a [`Workload`] behaves.
#[derive(Clone, Debug)]
pub struct WorkloadOptions {
    /// Registers `0..keys`.
    pub keys: u8,
    /// Longest wait for a connection or an answer; then the outcome is unknown.
    pub op_timeout: Duration,
    /// Pause after a successful call, which bounds the history's length (the checker's
    /// search grows with it).
    pub pace: Duration,
    /// Pause after a failed call before the next (a member refusing at once would
    /// otherwise fill the history with failures).
    pub pause_after_failure: Duration,
}

impl Default for WorkloadOptions {
    fn default() -> WorkloadOptions {
        WorkloadOptions {
            keys: 8,
            op_timeout: Duration::from_secs(1),
            pace: Duration::from_millis(5),
            pause_after_failure: Duration::from_millis(100),
        }
    }
}

/// Client threads, one per target member, each doing one call at a time: 40% linearizable
/// gets, 30% puts, 30% compare-and-sets (expecting the value it last saw on that
/// register), on random registers.
#[derive(Debug)]
pub struct Workload {
    clock: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<Vec<Record>>>,
    seed: u64,
}

impl Workload {
    /// Starts one client per `(member index, binary address)` in `targets`.
    pub fn start(targets: &[(usize, String)], options: WorkloadOptions) -> Workload {
        let clock = Arc::new(AtomicU64::new(1));
        let stop = Arc::new(AtomicBool::new(false));
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_nanos() as u64;
        let clients = targets
            .iter()
            .enumerate()
            .map(|(client, (member, address))| {
                let client = WorkloadClient {
                    id: client as u32,
                    member: *member,
                    address: address.clone(),
                    options: options.clone(),
                    clock: clock.clone(),
                    stop: stop.clone(),
                    rng: Rng::new(seed ^ (client as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                };
                std::thread::Builder::new()
                    .name(format!("workload-{client_id}", client_id = client.id))
                    .spawn(move || run_client(move || client.run()))
                    .expect("start a workload client")
            })
            .collect();
        Workload {
            clock,
            stop,
            clients,
            seed,
        }
    }

    /// A stamp of the workload's clock: every call made after this returns has a larger
    /// `call`, every call answered before it was taken a smaller `returned`.
    pub fn mark(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    /// Stops the clients (each finishes its call, at most one op timeout) and returns
    /// what they recorded.
    pub fn stop(self) -> History {
        self.stop.store(true, Ordering::SeqCst);
        let mut records = Vec::new();
        for client in self.clients {
            records.extend(client.join().expect("a workload client panicked"));
        }
        History {
            records,
            seed: self.seed,
        }
    }
}

/// What a workload recorded.
#[derive(Debug)]
pub struct History {
    /// Every call, by client and then in order.
    pub records: Vec<Record>,
    /// The seed of the clients' choices.
    pub seed: u64,
}

impl History {
    /// Runs the checker over the history (on a thread with room for its deep search).
    pub fn check(&self) -> Verdict {
        let ops: Vec<HistoryOp> = self.records.iter().filter_map(|r| r.op.clone()).collect();
        check_ops(ops)
    }

    /// Panics with the offending register's calls unless the history is linearizable.
    pub fn assert_linearizable(&self) {
        let verdict = self.check();
        if verdict == Verdict::Linearizable {
            return;
        }
        let key = match verdict {
            Verdict::NotLinearizable { key } | Verdict::TooLarge { key } => key,
            Verdict::Linearizable => unreachable!("returned above"),
        };
        let calls: Vec<String> = self
            .records
            .iter()
            .filter(|r| r.op.as_ref().is_some_and(|op| op.key == key))
            .map(|r| format!("{r:?}"))
            .collect();
        panic!(
            "{verdict:?} (workload seed {}); the calls on register {key}:\n{}",
            self.seed,
            calls.join("\n")
        );
    }

    /// Calls to `member` made after stamp `after` and answered before stamp `before`.
    pub fn calls_between(&self, member: usize, after: u64, before: u64) -> Vec<&Record> {
        self.records
            .iter()
            .filter(|r| r.member == member && r.call > after && r.returned < before)
            .collect()
    }

    /// (successful calls, failed calls) to `member`, or to every member when None.
    pub fn outcomes(&self, member: Option<usize>) -> (usize, usize) {
        let calls = self
            .records
            .iter()
            .filter(|r| member.is_none_or(|m| r.member == m));
        let (ok, failed): (Vec<&Record>, Vec<&Record>) = calls.partition(|r| r.result.is_ok());
        (ok.len(), failed.len())
    }
}

/// The checker, on a thread whose stack fits a search as deep as the history is long.
pub fn check_ops(ops: Vec<HistoryOp>) -> Verdict {
    std::thread::Builder::new()
        .name("linearizability".to_string())
        .stack_size(512 << 20)
        .spawn(move || check_history(&ops))
        .expect("start the checker")
        .join()
        .expect("the checker panicked")
}

/// One client thread of a [`Workload`].
struct WorkloadClient {
    id: u32,
    member: usize,
    address: String,
    options: WorkloadOptions,
    clock: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    rng: Rng,
}

impl WorkloadClient {
    async fn run(mut self) -> Vec<Record> {
        let mut records = Vec::new();
        let mut connection: Option<Client> = None;
        let mut last_seen = vec![0u64; usize::from(self.options.keys)];
        let mut sequence: u64 = 0;
        while !self.stop.load(Ordering::SeqCst) {
            let client = match &connection {
                Some(client) if !client.is_closed() => client.clone(),
                _ => match within(self.options.op_timeout, Client::connect(&self.address)).await {
                    Some(Ok(client)) => {
                        connection = Some(client.clone());
                        client
                    }
                    _ => {
                        // Nothing was sent: nothing to record.
                        connection = None;
                        glommio::timer::sleep(self.options.pause_after_failure).await;
                        continue;
                    }
                },
            };
            let key = self.rng.below(u64::from(self.options.keys)) as u8;
            sequence += 1;
            let value = (u64::from(self.id) + 1) << 32 | sequence;
            let kind = match self.rng.below(10) {
                0..=3 => OpKind::Get,
                4..=6 => OpKind::Put { value },
                _ => OpKind::Cas {
                    expected: last_seen[usize::from(key)],
                    new: value,
                },
            };
            let call = self.clock.fetch_add(1, Ordering::SeqCst);
            let result = within(self.options.op_timeout, perform(&client, key, kind))
                .await
                .unwrap_or(Err(Failure::TimedOut));
            let returned = self.clock.fetch_add(1, Ordering::SeqCst);
            match (&result, kind) {
                (Ok(Observed::Get(seen)), _) => {
                    last_seen[usize::from(key)] = decode_value(seen.as_deref());
                }
                (Ok(Observed::Put), OpKind::Put { value }) => last_seen[usize::from(key)] = value,
                (Ok(Observed::Txn { succeeded: true }), OpKind::Cas { new, .. }) => {
                    last_seen[usize::from(key)] = new;
                }
                _ => {}
            }
            let op = history_op(self.id, key, kind, call, returned, &result);
            let failed = result.is_err();
            records.push(Record {
                member: self.member,
                kind,
                call,
                returned,
                result,
                op,
            });
            if failed {
                // The connection may hold a late answer; start afresh.
                connection = None;
                glommio::timer::sleep(self.options.pause_after_failure).await;
            } else {
                glommio::timer::sleep(self.options.pace).await;
            }
        }
        records
    }
}

/// xorshift64*: the workload's choices need no quality beyond variety.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
    }
}

/// Writes keys `<prefix><n>` that nothing overwrites, through the members in turn, one
/// at a time, and lists those acknowledged: each must be on every member afterwards.
#[derive(Debug)]
pub struct Writer {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<AtomicUsize>,
    thread: JoinHandle<Vec<String>>,
}

impl Writer {
    /// Starts writing through `addresses` (binary protocol), waiting at most `timeout`
    /// for each put.
    pub fn start(addresses: Vec<String>, prefix: &str, timeout: Duration) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(AtomicUsize::new(0));
        let prefix = prefix.to_string();
        let (stop_flag, count) = (stop.clone(), acknowledged.clone());
        let thread = std::thread::Builder::new()
            .name("writer".to_string())
            .spawn(move || {
                run_client(move || {
                    write_until_stopped(addresses, prefix, timeout, stop_flag, count)
                })
            })
            .expect("start the writer");
        Writer {
            stop,
            acknowledged,
            thread,
        }
    }

    /// Writes acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.acknowledged.load(Ordering::SeqCst)
    }

    /// Waits until `more` writes beyond `since` are acknowledged; false after `within`.
    pub fn wait_for(&self, since: usize, more: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.acknowledged() < since + more {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Stops and returns the keys acknowledged.
    pub fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("the writer panicked")
    }
}

async fn write_until_stopped(
    addresses: Vec<String>,
    prefix: String,
    timeout: Duration,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicUsize>,
) -> Vec<String> {
    let mut acknowledged = Vec::new();
    let mut connections: Vec<Option<Client>> = vec![None; addresses.len()];
    let mut n: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        let target = (n as usize) % addresses.len();
        let key = format!("{prefix}{n}");
        n += 1;
        let slot = &mut connections[target];
        let attempt = async {
            let client = match slot.take() {
                Some(client) if !client.is_closed() => client,
                _ => Client::connect(&addresses[target]).await.ok()?,
            };
            let put = PutRequest {
                key: key.clone().into_bytes(),
                value: b"acknowledged".to_vec(),
                ..PutRequest::default()
            };
            client.put(put).await.ok()?;
            Some(client)
        };
        match within(timeout, attempt).await.flatten() {
            Some(client) => {
                *slot = Some(client);
                acknowledged.push(key);
                count.fetch_add(1, Ordering::SeqCst);
            }
            None => glommio::timer::sleep(Duration::from_millis(20)).await,
        }
    }
    acknowledged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(
        key: u8,
        kind: OpKind,
        call: u64,
        returned: u64,
        result: Result<Observed, Failure>,
    ) -> Option<HistoryOp> {
        history_op(0, key, kind, call, returned, &result)
    }

    fn stored(value: u64) -> Observed {
        Observed::Get(Some(encode_value(value)))
    }

    // The mapping keeps what the checker needs: a history that obeys the registers is
    // accepted, with a missing key read as 0 and a failed write optional.
    #[test]
    fn mapped_linearizable_history_is_accepted() {
        let timed_out = Err(Failure::TimedOut);
        let history: Vec<HistoryOp> = [
            op(0, OpKind::Get, 1, 2, Ok(Observed::Get(None))),
            op(0, OpKind::Put { value: 5 }, 3, 4, Ok(Observed::Put)),
            op(
                0,
                OpKind::Cas {
                    expected: 5,
                    new: 6,
                },
                5,
                6,
                Ok(Observed::Txn { succeeded: true }),
            ),
            op(0, OpKind::Put { value: 9 }, 7, 8, timed_out.clone()),
            op(0, OpKind::Get, 9, 10, Ok(stored(6))),
            op(1, OpKind::Put { value: 7 }, 11, 12, timed_out.clone()),
            op(1, OpKind::Get, 13, 14, Ok(stored(7))),
            op(1, OpKind::Get, 15, 16, timed_out),
        ]
        .into_iter()
        .flatten()
        .collect();
        assert_eq!(history.len(), 7, "the failed read is left out");
        assert_eq!(check_ops(history), Verdict::Linearizable);
    }

    // A read that returns a value overwritten before it was called (what a deposed
    // leader answering from its own state would return) is rejected.
    #[test]
    fn mapped_stale_read_is_rejected() {
        let history: Vec<HistoryOp> = [
            op(3, OpKind::Put { value: 1 }, 1, 2, Ok(Observed::Put)),
            op(3, OpKind::Put { value: 2 }, 3, 4, Ok(Observed::Put)),
            op(3, OpKind::Get, 5, 6, Ok(stored(1))),
        ]
        .into_iter()
        .flatten()
        .collect();
        assert_eq!(check_ops(history), Verdict::NotLinearizable { key: 3 });
    }

    // A compare-and-set that claims to swap a value that was already replaced, and a
    // read of a missing key after an acknowledged write (a lost write), are rejected.
    #[test]
    fn mapped_lost_write_and_bad_swap_are_rejected() {
        let swap: Vec<HistoryOp> = [
            op(0, OpKind::Put { value: 1 }, 1, 2, Ok(Observed::Put)),
            op(0, OpKind::Put { value: 2 }, 3, 4, Ok(Observed::Put)),
            op(
                0,
                OpKind::Cas {
                    expected: 1,
                    new: 3,
                },
                5,
                6,
                Ok(Observed::Txn { succeeded: true }),
            ),
        ]
        .into_iter()
        .flatten()
        .collect();
        assert_eq!(check_ops(swap), Verdict::NotLinearizable { key: 0 });
        let lost: Vec<HistoryOp> = [
            op(4, OpKind::Put { value: 8 }, 1, 2, Ok(Observed::Put)),
            op(4, OpKind::Get, 3, 4, Ok(Observed::Get(None))),
        ]
        .into_iter()
        .flatten()
        .collect();
        assert_eq!(check_ops(lost), Verdict::NotLinearizable { key: 4 });
    }

    // The bytes a client writes read back as the same register value; a missing key is 0.
    #[test]
    fn values_round_trip() {
        for value in [1, 42, u64::MAX] {
            assert_eq!(decode_value(Some(&encode_value(value))), value);
        }
        assert_eq!(decode_value(None), 0);
        let cas = cas_request(2, 0, 7);
        assert_eq!(cas.compare[0].target, CompareTarget::Version(0));
        assert_eq!(cas.compare[0].key, b"lin/2".to_vec());
    }
}
