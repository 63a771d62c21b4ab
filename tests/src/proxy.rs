//! A fault-injecting TCP proxy for the peer links of a test cluster: it cuts and heals
//! the links between members, one direction at a time.
//!
//! Each member advertises a peer URL on one of the proxy's listeners and listens for
//! real on another port (`--initial-advertise-peer-urls` vs `--listen-peer-urls`); the
//! listener forwards to that port. Peer connections are one-way and open with the
//! dialer's 32-byte hello (docs/peer-protocol.md: magic, version, lane, reserved,
//! cluster id, the dialing member's id, the id of the member it expects), so the proxy
//! reads the hello, learns the directed link (from, to) and applies that link's rule:
//! pass, or cut. Cutting a link closes its open connections at once and closes every new
//! connection on it right after its hello, until the link is healed: the dialer sees its
//! connection end, as if the far side had crashed, and keeps redialling with its
//! backoff. The replies flowing back on a connection (the acceptor's handshake reply)
//! belong to the same link. A hello that names no member it expects (id 0: a member
//! that is joining asks for the member list) is taken to expect the member behind its
//! listener, as learnt from earlier hellos.
//!
//! Invariants: a connection is registered under its link before any byte of it is
//! forwarded, and rule changes and registrations happen under one lock, so once
//! [`Proxy::cut`] (or [`Proxy::isolate`]) returns no connection of that link forwards
//! another byte. Never: delay, reorder or alter bytes (only whole connections are
//! faulted), read past the hello, or forward a connection whose hello is not a corekv
//! peer's (it is closed).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// Bytes of a dialer's hello (docs/peer-protocol.md, "Handshake").
pub const HELLO_BYTES: usize = 32;
/// The magic that opens a hello.
const HELLO_MAGIC: [u8; 4] = *b"CKVP";
/// How long a new connection may take to send its hello (the members wait 5 s for the
/// handshake, so a proxy that waited longer would only hold dead connections).
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the proxy waits to reach the member behind a listener.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A directed peer link: messages from member `from` to member `to` (member ids).
pub type Link = (u64, u64);

/// The proxy; dropping it closes its listeners and every connection.
#[derive(Debug)]
pub struct Proxy {
    shared: Arc<Shared>,
    listeners: Vec<(SocketAddr, JoinHandle<()>)>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    stopping: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    /// Links cut one by one.
    cut: BTreeSet<Link>,
    /// Members cut off from every other member, in both directions.
    isolated: BTreeSet<u64>,
    /// Open forwarded connections by proxy-local id.
    connections: BTreeMap<u64, Connection>,
    next_connection: u64,
    /// Connections closed after their hello because their link was cut, by link.
    refused: BTreeMap<Link, u64>,
}

#[derive(Debug)]
struct Connection {
    link: Link,
    /// The dialer's side and the member's side.
    streams: [TcpStream; 2],
}

impl State {
    fn is_cut(&self, (from, to): Link) -> bool {
        self.cut.contains(&(from, to))
            || self.isolated.contains(&from)
            || self.isolated.contains(&to)
    }

    /// Closes every open connection whose link is now cut.
    fn enforce(&mut self) {
        let doomed: Vec<u64> = self
            .connections
            .iter()
            .filter(|(_, connection)| self.is_cut(connection.link))
            .map(|(id, _)| *id)
            .collect();
        for id in doomed {
            let connection = self.connections.remove(&id).expect("listed above");
            for stream in &connection.streams {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking forwarding thread cannot leave the rules half-changed: every change
        // is a single insert or remove.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Proxy {
    /// Listens on each `(listen, upstream)` route's `listen` address (loopback ports)
    /// and forwards what arrives there to `upstream`. Every link passes until cut.
    pub fn start(routes: &[(SocketAddr, SocketAddr)]) -> std::io::Result<Proxy> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            stopping: AtomicBool::new(false),
        });
        let mut listeners = Vec::new();
        for &(listen, upstream) in routes {
            let listener = TcpListener::bind(listen)?;
            let address = listener.local_addr()?;
            let shared = shared.clone();
            let route = Arc::new(Route {
                upstream,
                member: AtomicU64::new(0),
            });
            let thread = std::thread::Builder::new()
                .name(format!("proxy-{}", address.port()))
                .spawn(move || accept_loop(listener, route, shared))?;
            listeners.push((address, thread));
        }
        Ok(Proxy { shared, listeners })
    }

    /// Cuts the link from member `from` to member `to` (one direction).
    pub fn cut(&self, from: u64, to: u64) {
        let mut state = self.shared.state();
        state.cut.insert((from, to));
        state.enforce();
    }

    /// Heals a link cut with [`Proxy::cut`] (an isolation stays until
    /// [`Proxy::heal_member`]).
    pub fn heal(&self, from: u64, to: u64) {
        self.shared.state().cut.remove(&(from, to));
    }

    /// Cuts every link from and to `member`: a partition of that member alone.
    pub fn isolate(&self, member: u64) {
        let mut state = self.shared.state();
        state.isolated.insert(member);
        state.enforce();
    }

    /// Ends the isolation of `member`.
    pub fn heal_member(&self, member: u64) {
        self.shared.state().isolated.remove(&member);
    }

    /// Heals every cut link and every isolation.
    pub fn heal_all(&self) {
        let mut state = self.shared.state();
        state.cut.clear();
        state.isolated.clear();
    }

    /// Open forwarded connections on the link from `from` to `to`.
    pub fn open_connections(&self, from: u64, to: u64) -> usize {
        self.shared
            .state()
            .connections
            .values()
            .filter(|connection| connection.link == (from, to))
            .count()
    }

    /// Connections on the link from `from` to `to` closed because it was cut.
    pub fn refused_connections(&self, from: u64, to: u64) -> u64 {
        self.shared
            .state()
            .refused
            .get(&(from, to))
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        for (address, _) in &self.listeners {
            // Wakes the accept loop, which sees `stopping` and returns.
            let _ = TcpStream::connect(address);
        }
        for (_, thread) in self.listeners.drain(..) {
            let _ = thread.join();
        }
        let mut state = self.shared.state();
        for connection in state.connections.values() {
            for stream in &connection.streams {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
        state.connections.clear();
    }
}

/// One listener's destination.
#[derive(Debug)]
struct Route {
    /// The member's real peer address.
    upstream: SocketAddr,
    /// The member's id, once a hello named it (0 before).
    member: AtomicU64,
}

fn accept_loop(listener: TcpListener, route: Arc<Route>, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let (shared, route) = (shared.clone(), route.clone());
        // One thread per connection: a slow hello must not hold up the others.
        let spawned = std::thread::Builder::new()
            .name("proxy-connection".to_string())
            .spawn(move || forward(stream, &route, shared));
        if let Err(error) = spawned {
            eprintln!("proxy: cannot start a connection thread: {error}");
        }
    }
}

/// Reads the hello, applies the link's rule, and forwards both directions until either
/// side ends or the link is cut.
fn forward(mut dialer: TcpStream, route: &Route, shared: Arc<Shared>) {
    let mut hello = [0u8; HELLO_BYTES];
    let _ = dialer.set_read_timeout(Some(HELLO_TIMEOUT));
    if dialer.read_exact(&mut hello).is_err() {
        return;
    }
    let Some((from, to)) = link_of(&hello) else {
        eprintln!("proxy: closed a connection whose hello is not a corekv peer's");
        return;
    };
    let link = if to == 0 {
        (from, route.member.load(Ordering::SeqCst))
    } else {
        route.member.store(to, Ordering::SeqCst);
        (from, to)
    };
    if refuse_if_cut(&shared, link) {
        return;
    }
    let Ok(mut member) = TcpStream::connect_timeout(&route.upstream, UPSTREAM_CONNECT_TIMEOUT)
    else {
        // The member is down: the dialer sees its connection end, as it would directly.
        return;
    };
    let _ = dialer.set_read_timeout(None);
    let _ = dialer.set_nodelay(true);
    let _ = member.set_nodelay(true);
    let (Ok(dialer_clone), Ok(member_clone)) = (dialer.try_clone(), member.try_clone()) else {
        return;
    };
    let id = {
        let mut state = shared.state();
        if state.is_cut(link) {
            *state.refused.entry(link).or_default() += 1;
            return;
        }
        let id = state.next_connection;
        state.next_connection += 1;
        state.connections.insert(
            id,
            Connection {
                link,
                streams: [dialer_clone, member_clone],
            },
        );
        id
    };
    if member.write_all(&hello).is_ok() {
        if let (Ok(from_member), Ok(to_dialer)) = (member.try_clone(), dialer.try_clone()) {
            let shared_back = shared.clone();
            let back = std::thread::Builder::new()
                .name("proxy-reply".to_string())
                .spawn(move || pump(from_member, to_dialer, &shared_back, id));
            pump(dialer, member, &shared, id);
            if let Ok(back) = back {
                let _ = back.join();
            }
            return;
        }
    }
    close(&shared, id);
}

/// Whether `link` is cut; if so the connection is counted as refused (and dropped by
/// the caller, which closes it).
fn refuse_if_cut(shared: &Shared, link: Link) -> bool {
    let mut state = shared.state();
    if state.is_cut(link) {
        *state.refused.entry(link).or_default() += 1;
        return true;
    }
    false
}

/// Copies `from` to `to` until either ends, then closes the connection (both sides).
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared, id: u64) {
    let _ = std::io::copy(&mut from, &mut to);
    close(shared, id);
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

fn close(shared: &Shared, id: u64) {
    if let Some(connection) = shared.state().connections.remove(&id) {
        for stream in &connection.streams {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// The link a hello opens: (dialer's member id, expected member's id); None if it is not
/// a corekv peer hello.
pub fn link_of(hello: &[u8; HELLO_BYTES]) -> Option<Link> {
    if hello[0..4] != HELLO_MAGIC {
        return None;
    }
    let word = |at: usize| u64::from_le_bytes(hello[at..at + 8].try_into().expect("8 bytes"));
    Some((word(16), word(24)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn hello(from: u64, to: u64) -> [u8; HELLO_BYTES] {
        let mut hello = [0u8; HELLO_BYTES];
        hello[0..4].copy_from_slice(&HELLO_MAGIC);
        hello[4..6].copy_from_slice(&1u16.to_le_bytes());
        hello[6] = 1;
        hello[8..16].copy_from_slice(&7u64.to_le_bytes());
        hello[16..24].copy_from_slice(&from.to_le_bytes());
        hello[24..32].copy_from_slice(&to.to_le_bytes());
        hello
    }

    /// A member stand-in: it takes the hello, then echoes everything back.
    fn echo_member() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                std::thread::spawn(move || {
                    let mut hello = [0u8; HELLO_BYTES];
                    if stream.read_exact(&mut hello).is_err() {
                        return;
                    }
                    let mut back = stream.try_clone().expect("clone");
                    let _ = std::io::copy(&mut stream, &mut back);
                });
            }
        });
        address
    }

    fn dial(proxy: SocketAddr, from: u64, to: u64) -> TcpStream {
        let mut stream = TcpStream::connect(proxy).expect("connect to the proxy");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream.write_all(&hello(from, to)).expect("hello");
        stream
    }

    /// Whether the connection still carries bytes both ways (the echo answers).
    fn passes(stream: &mut TcpStream) -> bool {
        let mut echoed = [0u8; 3];
        if stream.write_all(b"abc").is_err() {
            return false;
        }
        stream.read_exact(&mut echoed).is_ok() && echoed == *b"abc"
    }

    fn wait_for(mut condition: impl FnMut() -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::yield_now();
        }
    }

    // A cut closes the link's open connection and refuses new ones; the reverse
    // direction and other links keep passing; healing lets new connections through.
    #[test]
    fn cut_closes_one_direction_until_healed() {
        let member = echo_member();
        let listen: SocketAddr = format!("127.0.0.1:{}", crate::free_port())
            .parse()
            .expect("address");
        let proxy = Proxy::start(&[(listen, member)]).expect("start the proxy");
        let mut one_to_two = dial(listen, 1, 2);
        assert!(passes(&mut one_to_two), "an uncut link forwards");
        let mut two_to_one = dial(listen, 2, 1);
        assert!(passes(&mut two_to_one));
        wait_for(|| proxy.open_connections(1, 2) == 1, "the registration");

        proxy.cut(1, 2);
        assert_eq!(proxy.open_connections(1, 2), 0);
        let mut byte = [0u8; 1];
        assert!(
            matches!(one_to_two.read(&mut byte), Ok(0) | Err(_)),
            "the cut closed the open connection"
        );
        assert!(passes(&mut two_to_one), "the other direction still passes");
        let mut again = dial(listen, 1, 2);
        assert!(
            !passes(&mut again),
            "a new connection on a cut link is closed"
        );
        assert_eq!(proxy.refused_connections(1, 2), 1);

        proxy.heal(1, 2);
        let mut healed = dial(listen, 1, 2);
        assert!(passes(&mut healed), "a healed link forwards again");

        proxy.isolate(2);
        assert!(
            !passes(&mut two_to_one),
            "isolation cuts the member's links"
        );
        assert!(!passes(&mut dial(listen, 3, 2)));
        assert!(passes(&mut dial(listen, 1, 3)), "other links pass");
        proxy.heal_all();
        assert!(passes(&mut dial(listen, 3, 2)));
    }
}
