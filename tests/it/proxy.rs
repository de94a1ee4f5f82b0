//! Fault-injecting proxies on loopback, started by the fault tests.
//!
//! [`TcpProxy`] forwards a database's wire protocol and can drop connections mid-stream (after a
//! random byte budget), drop every live connection at once, and refuse new ones for a while (a
//! database restart as the client sees it). [`S3Proxy`] understands just enough HTTP/1.1 to answer
//! a share of requests with `503 SlowDown`, `500 InternalError`, a connection reset before the
//! request reaches the server, or a reset after the server did the work (the response is lost);
//! the rest is forwarded to the real server. Every injected fault is counted, so a test can
//! assert that faults were injected even when the client's retries hide them.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::crash::Rng;

// Deprecated because a non-zero linger blocks the thread on drop; a zero linger never blocks.
#[allow(deprecated)]
fn reset(s: &TcpStream) {
    // SO_LINGER 0: closing sends RST instead of FIN.
    let _ = s.set_linger(Some(Duration::ZERO));
}

// ----------------------------------------------------------------------------- TCP proxy ---

#[derive(Default)]
pub struct TcpCounters {
    pub connections: AtomicUsize,
    /// Connections cut after their byte budget.
    pub dropped_mid_stream: AtomicUsize,
    /// Live connections cut by [`TcpProxy::kill_all`].
    pub killed: AtomicUsize,
    /// Connections refused while the "server" was down.
    pub refused: AtomicUsize,
    /// Connections cut just after a `COMMIT` went to the server (its acknowledgement lost).
    pub commits_cut: AtomicUsize,
    /// `COMMIT`s seen going to the server.
    pub commits: AtomicUsize,
    pub bytes: AtomicU64,
}

struct TcpState {
    target: SocketAddr,
    refuse: AtomicBool,
    /// Probability that a new connection gets a byte budget, and the budget's range.
    drop: Mutex<(f64, u64, u64)>,
    rng: Mutex<Rng>,
    kill: tokio::sync::watch::Sender<u64>,
    /// `COMMIT`s still to let through before the next one is cut (`usize::MAX`: none is).
    commits_before_cut: AtomicUsize,
    /// The cut `COMMIT` is not sent on: the server rolls the batch back.
    cut_before_commit: AtomicBool,
    /// While set, nothing is passed on either way, and nothing is closed: a silent network.
    freeze: AtomicBool,
    counters: TcpCounters,
}

pub struct TcpProxy {
    pub addr: SocketAddr,
    state: Arc<TcpState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.kill_all();
    }
}

impl TcpProxy {
    pub async fn start(target: SocketAddr, seed: u64) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(TcpState {
            target,
            refuse: AtomicBool::new(false),
            drop: Mutex::new((0.0, 0, 0)),
            rng: Mutex::new(Rng::new(seed)),
            kill: tokio::sync::watch::channel(0).0,
            commits_before_cut: AtomicUsize::new(usize::MAX),
            cut_before_commit: AtomicBool::new(false),
            freeze: AtomicBool::new(false),
            counters: TcpCounters::default(),
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                if st.refuse.load(Ordering::SeqCst) {
                    st.counters.refused.fetch_add(1, Ordering::SeqCst);
                    reset(&client);
                    drop(client);
                    continue;
                }
                st.counters.connections.fetch_add(1, Ordering::SeqCst);
                let budget = {
                    let (p, lo, hi) = *st.drop.lock().unwrap();
                    let mut rng = st.rng.lock().unwrap();
                    if p > 0.0 && rng.chance(p) {
                        Some(lo + rng.below(hi.saturating_sub(lo).max(1)))
                    } else {
                        None
                    }
                };
                tokio::spawn(pipe(client, st.clone(), budget));
            }
        });
        TcpProxy { addr, state, task }
    }

    /// From now on, each new connection is cut after a budget of `lo..hi` bytes with probability `p`.
    pub fn drop_connections(&self, p: f64, lo: u64, hi: u64) {
        *self.state.drop.lock().unwrap() = (p, lo, hi);
    }

    /// Lets `n` batches' `COMMIT`s through (a `COMMIT` after an `INSERT INTO lapse_journal` on
    /// its connection), then cuts the connection that sends the next one once the server had
    /// time to commit it: the client never sees the acknowledgement. Once.
    pub fn cut_after_commit(&self, n: usize) {
        self.state.commits_before_cut.store(n, Ordering::SeqCst);
    }

    /// As [`TcpProxy::cut_after_commit`], but the `COMMIT` never reaches the server: the batch is
    /// rolled back, and the client sees its connection lost as in the other case.
    pub fn cut_instead_of_commit(&self, n: usize) {
        self.state.cut_before_commit.store(true, Ordering::SeqCst);
        self.state.commits_before_cut.store(n, Ordering::SeqCst);
    }

    /// Cuts every live connection.
    pub fn kill_all(&self) {
        self.state.kill.send_modify(|g| *g += 1);
    }

    /// While set, live connections pass nothing on and stay open (a network partition, a
    /// failover behind a stale address): a statement sent meanwhile waits for its answer.
    pub fn freeze(&self, on: bool) {
        self.state.freeze.store(on, Ordering::SeqCst);
    }

    /// While set, new connections are reset at once (the server is down).
    pub fn refuse(&self, on: bool) {
        self.state.refuse.store(on, Ordering::SeqCst);
    }

    pub fn counters(&self) -> &TcpCounters {
        &self.state.counters
    }
}

async fn pipe(client: TcpStream, st: Arc<TcpState>, budget: Option<u64>) {
    let Ok(upstream) = TcpStream::connect(st.target).await else {
        reset(&client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let mut kill = st.kill.subscribe();
    let mut left = budget.unwrap_or(u64::MAX);
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    // Whether a journal row was inserted on this connection since its last `COMMIT` (the next
    // one ends a batch), followed through the wire protocol's prepared statements.
    let mut watch = JournalWatch::default();
    let mut a = vec![0u8; 16 * 1024];
    let mut b = vec![0u8; 16 * 1024];
    let cut = loop {
        let (data, to_server) = tokio::select! {
            r = cr.read(&mut a) => match r { Ok(0) | Err(_) => break false, Ok(n) => (&a[..n], true) },
            r = ur.read(&mut b) => match r { Ok(0) | Err(_) => break false, Ok(n) => (&b[..n], false) },
            _ = kill.changed() => {
                st.counters.killed.fetch_add(1, Ordering::SeqCst);
                break true;
            }
        };
        // Frozen: what was read is held until the thaw (or the connection is cut).
        let mut killed = false;
        while st.freeze.load(Ordering::SeqCst) && !killed {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = kill.changed() => killed = true,
            }
        }
        if killed {
            st.counters.killed.fetch_add(1, Ordering::SeqCst);
            break true;
        }
        let n = (data.len() as u64).min(left) as usize;
        let chunk = &data[..n];
        let mut cut_now = false;
        watch.saw(chunk, to_server);
        if to_server && chunk.windows(6).any(|w| w == b"COMMIT") {
            st.counters.commits.fetch_add(1, Ordering::SeqCst);
            let batch = std::mem::take(&mut watch.journaled);
            cut_now = batch
                && st
                    .commits_before_cut
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| match c {
                        usize::MAX => None,
                        0 => Some(usize::MAX),
                        c => Some(c - 1),
                    })
                    .is_ok_and(|c| c == 0);
        }
        if cut_now && st.cut_before_commit.load(Ordering::SeqCst) {
            // The COMMIT is not sent: the server rolls the transaction back when the connection goes.
            st.counters.commits_cut.fetch_add(1, Ordering::SeqCst);
            break true;
        }
        let w = if to_server { uw.write_all(chunk).await } else { cw.write_all(chunk).await };
        st.counters.bytes.fetch_add(n as u64, Ordering::SeqCst);
        left -= n as u64;
        if w.is_err() {
            break false;
        }
        if cut_now {
            tokio::time::sleep(Duration::from_millis(300)).await;
            st.counters.commits_cut.fetch_add(1, Ordering::SeqCst);
            break true;
        }
        if left == 0 {
            st.counters.dropped_mid_stream.fetch_add(1, Ordering::SeqCst);
            break true;
        }
    };
    if cut {
        // Abortive close on both sides, like a crashed server or a broken network.
        if let (Ok(c), Ok(u)) = (cr.reunite(cw), ur.reunite(uw)) {
            reset(&c);
            reset(&u);
        }
    }
}

/// Follows a connection's statements far enough to tell when the journal's `INSERT` runs. sqlx
/// caches a prepared statement per connection: its text goes to the server once (PostgreSQL's
/// `Parse`, MySQL's `COM_STMT_PREPARE`), and later runs name it only (a `Bind` of the statement's
/// name, a `COM_STMT_EXECUTE` of the id the server gave it). A search of each chunk for the
/// text missed a batch whose connection had run the journal's `INSERT` before, and the proxy
/// then cut a later batch than the test asked for (seen under load). The wire is told by who
/// speaks first: the MySQL server greets, a PostgreSQL client starts.
#[derive(Default)]
struct JournalWatch {
    /// A journal row was inserted since the last `COMMIT`.
    journaled: bool,
    /// `Some(true)`: MySQL; `Some(false)`: PostgreSQL.
    mysql: Option<bool>,
    /// Bytes of an incomplete message, from the server (`[0]`) and from the client (`[1]`).
    partial: [Vec<u8>; 2],
    /// PostgreSQL: the untyped startup messages are done.
    started: bool,
    /// The prepared statements that are the journal's `INSERT`: PostgreSQL's names, MySQL's ids.
    names: std::collections::HashSet<Vec<u8>>,
    ids: std::collections::HashSet<u32>,
    /// MySQL: the server's answer to a `COM_STMT_PREPARE` of the journal's `INSERT` is awaited.
    preparing: bool,
}

impl JournalWatch {
    fn saw(&mut self, chunk: &[u8], to_server: bool) {
        let mysql = *self.mysql.get_or_insert(!to_server);
        let mut buf = std::mem::take(&mut self.partial[usize::from(to_server)]);
        buf.extend_from_slice(chunk);
        let mut at = 0;
        while let Some(len) = self.message(&buf[at..], mysql, to_server) {
            at += len;
        }
        buf.drain(..at);
        self.partial[usize::from(to_server)] = buf;
    }

    /// Handles the complete message at the start of `b`, if there is one, and returns its length.
    fn message(&mut self, b: &[u8], mysql: bool, to_server: bool) -> Option<usize> {
        fn journal(sql: &[u8]) -> bool {
            sql.windows(13).any(|w| w == b"lapse_journal") && sql.windows(6).any(|w| w == b"INSERT")
        }
        fn cstr(b: &[u8]) -> (&[u8], &[u8]) {
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            (&b[..end], b.get(end + 1..).unwrap_or_default())
        }
        if mysql {
            // A packet: length (3 bytes, little-endian), sequence number, payload.
            let len = u32::from_le_bytes([*b.first()?, *b.get(1)?, *b.get(2)?, 0]) as usize;
            let p = b.get(4..4 + len)?;
            let id = |p: &[u8]| p.get(1..5).map(|i| u32::from_le_bytes(i.try_into().unwrap()));
            match (to_server, p.first()) {
                (true, Some(0x03)) if journal(p) => self.journaled = true, // COM_QUERY
                (true, Some(0x16)) => self.preparing = journal(p),         // COM_STMT_PREPARE
                (true, Some(0x17)) if id(p).is_some_and(|i| self.ids.contains(&i)) => self.journaled = true,
                (false, Some(0x00)) if self.preparing && len >= 12 => {
                    self.ids.extend(id(p));
                    self.preparing = false;
                }
                (false, Some(0xff)) => self.preparing = false,
                _ => {}
            }
            return Some(4 + len);
        }
        if !to_server {
            return (!b.is_empty()).then_some(b.len()); // only the client's side is read
        }
        if !self.started {
            // SSLRequest / GSSENCRequest, then StartupMessage: length (4 bytes) and a code.
            let len = u32::from_be_bytes(b.get(..4)?.try_into().unwrap()) as usize;
            let code = u32::from_be_bytes(b.get(4..8)?.try_into().unwrap());
            b.get(..len)?;
            self.started = !matches!(code, 80877103 | 80877104);
            return Some(len.max(8));
        }
        // A message: type, length (4 bytes, itself included), body.
        let len = u32::from_be_bytes(b.get(1..5)?.try_into().unwrap()) as usize;
        let body = b.get(5..1 + len)?;
        match b[0] {
            b'Q' if journal(body) => self.journaled = true,
            b'P' => {
                let (name, rest) = cstr(body);
                if journal(cstr(rest).0) {
                    self.names.insert(name.to_vec());
                } else {
                    self.names.remove(name);
                }
            }
            b'B' => {
                let (_portal, rest) = cstr(body);
                if self.names.contains(cstr(rest).0) {
                    self.journaled = true;
                }
            }
            _ => {}
        }
        Some(1 + len)
    }
}

// ------------------------------------------------------------------------------ S3 proxy ---

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    SlowDown,
    InternalError,
    /// Reset before the request reaches the server.
    ResetBefore,
    /// The server does the work; the response is lost (reset).
    ResetAfter,
}

#[derive(Default, Debug)]
pub struct HttpCounters {
    pub requests: AtomicUsize,
    pub forwarded: AtomicUsize,
    pub slowdown: AtomicUsize,
    pub internal: AtomicUsize,
    pub reset_before: AtomicUsize,
    pub reset_after: AtomicUsize,
}

impl HttpCounters {
    pub fn injected(&self) -> usize {
        self.slowdown.load(Ordering::SeqCst)
            + self.internal.load(Ordering::SeqCst)
            + self.reset_before.load(Ordering::SeqCst)
            + self.reset_after.load(Ordering::SeqCst)
    }

    pub fn line(&self) -> String {
        format!(
            "requests={} forwarded={} slowdown_503={} internal_500={} reset_before={} reset_after={}",
            self.requests.load(Ordering::SeqCst),
            self.forwarded.load(Ordering::SeqCst),
            self.slowdown.load(Ordering::SeqCst),
            self.internal.load(Ordering::SeqCst),
            self.reset_before.load(Ordering::SeqCst),
            self.reset_after.load(Ordering::SeqCst)
        )
    }
}

struct HttpState {
    target: SocketAddr,
    /// Share of requests that get a fault, the kinds to pick from, and (if set) a text the request
    /// line must contain for a fault to apply (e.g. `?delete` for DeleteObjects).
    plan: Mutex<(f64, Vec<Fault>, Option<String>)>,
    rng: Mutex<Rng>,
    counters: HttpCounters,
}

pub struct S3Proxy {
    pub addr: SocketAddr,
    state: Arc<HttpState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for S3Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl S3Proxy {
    /// A proxy in front of `endpoint` (`http://127.0.0.1:PORT`).
    pub async fn start(endpoint: &str, seed: u64) -> S3Proxy {
        let target: SocketAddr = endpoint.trim_start_matches("http://").trim_end_matches('/').parse().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(HttpState {
            target,
            plan: Mutex::new((0.0, vec![], None)),
            rng: Mutex::new(Rng::new(seed)),
            counters: HttpCounters::default(),
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                tokio::spawn(serve(client, st.clone()));
            }
        });
        S3Proxy { addr, state, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers `share` of the requests (whose request line contains `only`, if given) with a fault
    /// drawn from `kinds`.
    pub fn faults(&self, share: f64, kinds: &[Fault], only: Option<&str>) {
        *self.state.plan.lock().unwrap() = (share, kinds.to_vec(), only.map(str::to_string));
    }

    pub fn counters(&self) -> &HttpCounters {
        &self.state.counters
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads one request: (head without the final blank line, body). `None` at EOF.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let mut chunk = [0u8; 8192];
    let end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    buf.drain(..end + 4);
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    if header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.ok()?;
    }
    let body = if header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        // Kept raw (still chunked): forwarded as is.
        loop {
            if let Some(i) = find(buf, b"0\r\n\r\n") {
                if i == 0 || buf[..i].ends_with(b"\r\n") {
                    break buf.drain(..i + 5).collect();
                }
            }
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    } else {
        let len: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        while buf.len() < len {
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.drain(..len).collect()
    };
    Some((head, body))
}

/// The head with `Connection: close` instead of any `Connection`/`Expect` header.
fn close_head(head: &str) -> String {
    let mut out: Vec<&str> = head
        .lines()
        .filter(|l| {
            let k = l.split(':').next().unwrap_or("").trim();
            !k.eq_ignore_ascii_case("connection") && !k.eq_ignore_ascii_case("expect")
        })
        .collect();
    out.push("Connection: close");
    out.join("\r\n") + "\r\n\r\n"
}

fn error_response(status: &str, code: &str, message: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>lapse-fault-proxy</RequestId></Error>"
    );
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn serve(mut client: TcpStream, st: Arc<HttpState>) {
    let _ = client.set_nodelay(true);
    let mut buf = Vec::new();
    // One request per connection: every response says `Connection: close`.
    let Some((head, body)) = read_request(&mut client, &mut buf).await else { return };
    st.counters.requests.fetch_add(1, Ordering::SeqCst);
    let fault = {
        let (share, kinds, only) = &*st.plan.lock().unwrap();
        let line = head.lines().next().unwrap_or("");
        let applies = only.as_deref().is_none_or(|o| line.contains(o)) && !kinds.is_empty();
        let mut rng = st.rng.lock().unwrap();
        if applies && rng.chance(*share) {
            Some(kinds[rng.below(kinds.len() as u64) as usize])
        } else {
            None
        }
    };
    let c = &st.counters;
    match fault {
        Some(Fault::SlowDown) => {
            c.slowdown.fetch_add(1, Ordering::SeqCst);
            let _ = client
                .write_all(&error_response("503 Slow Down", "SlowDown", "Please reduce your request rate."))
                .await;
            return;
        }
        Some(Fault::InternalError) => {
            c.internal.fetch_add(1, Ordering::SeqCst);
            let _ = client
                .write_all(&error_response(
                    "500 Internal Server Error",
                    "InternalError",
                    "We encountered an internal error. Please try again.",
                ))
                .await;
            return;
        }
        Some(Fault::ResetBefore) => {
            c.reset_before.fetch_add(1, Ordering::SeqCst);
            reset(&client);
            return;
        }
        _ => {}
    }
    let Ok(mut up) = TcpStream::connect(st.target).await else {
        reset(&client);
        return;
    };
    let mut req = close_head(&head).into_bytes();
    req.extend_from_slice(&body);
    if up.write_all(&req).await.is_err() {
        reset(&client);
        return;
    }
    let mut resp = Vec::new();
    if up.read_to_end(&mut resp).await.is_err() {
        reset(&client);
        return;
    }
    if fault == Some(Fault::ResetAfter) {
        c.reset_after.fetch_add(1, Ordering::SeqCst);
        reset(&client);
        return;
    }
    c.forwarded.fetch_add(1, Ordering::SeqCst);
    let out = match find(&resp, b"\r\n\r\n") {
        Some(i) => {
            let mut o = close_head(&String::from_utf8_lossy(&resp[..i])).into_bytes();
            o.extend_from_slice(&resp[i + 4..]);
            o
        }
        None => resp,
    };
    let _ = client.write_all(&out).await;
    let _ = client.shutdown().await;
}
