//! A loopback HTTP/1.1 server that misbehaves on request, for hermetic download tests.
//!
//! ```ignore
//! let server = TestServer::start([
//!     ("/ok.tar.gz", Route::body(b"bytes".to_vec())),
//!     ("/flaky", Route::fail_first(2, Reply::Status(500), Reply::Body(b"bytes".to_vec()))),
//! ]);
//! let url = server.url("/flaky");
//! // ... fetch ...
//! assert_eq!(server.hits("/flaky"), 3);
//! ```
//! Every connection gets one answer and is closed (`Connection: close`). Unknown paths get 404.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// One way of answering a request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with these bytes (use other bytes than pinned to serve "wrong bytes").
    Body(Vec<u8>),
    /// This status with an empty body.
    Status(u16),
    /// Read the request, then close the connection without answering.
    Close,
    /// Announce `body.len()` bytes in Content-Length, send only the first `sent`, then close.
    Short { body: Vec<u8>, sent: usize },
    /// 200 with `body`, sent `chunk` bytes at a time with a pause of `every` before each chunk.
    Drip {
        body: Vec<u8>,
        chunk: usize,
        every: Duration,
    },
    /// Read the request, then send nothing for this long before closing.
    Stall(Duration),
    /// 200 with `prefix` followed by filler bytes, `total` bytes in all, as fast as the client
    /// reads; with Content-Length `total` when `announce`, else delimited by the close (so the
    /// client cannot know the size before reading). `bytes_sent` tells how far it got.
    Flood {
        prefix: Vec<u8>,
        total: u64,
        announce: bool,
    },
}

/// The replies of one path: the n-th request gets the n-th reply; the last one repeats.
#[derive(Clone, Debug)]
pub struct Route(pub Vec<Reply>);

impl Route {
    pub fn body(bytes: impl Into<Vec<u8>>) -> Self {
        Self(vec![Reply::Body(bytes.into())])
    }

    pub fn status(code: u16) -> Self {
        Self(vec![Reply::Status(code)])
    }

    pub fn always(reply: Reply) -> Self {
        Self(vec![reply])
    }

    /// `n` times `failure`, then `then` forever.
    pub fn fail_first(n: usize, failure: Reply, then: Reply) -> Self {
        let mut replies = vec![failure; n];
        replies.push(then);
        Self(replies)
    }
}

#[derive(Default)]
struct Counters {
    hits: HashMap<String, usize>,
    body_bytes_sent: HashMap<String, u64>,
}

pub struct TestServer {
    addr: SocketAddr,
    base: String,
    counters: Arc<Mutex<Counters>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Listens on 127.0.0.1 on a free port and serves `routes` (path -> replies) until dropped.
    pub fn start<'a>(routes: impl IntoIterator<Item = (&'a str, Route)>) -> Self {
        let routes: Arc<HashMap<String, Route>> = Arc::new(
            routes
                .into_iter()
                .map(|(path, route)| {
                    assert!(!route.0.is_empty(), "route {path} has no reply");
                    (path.to_string(), route)
                })
                .collect(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let counters = Arc::new(Mutex::new(Counters::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (counters, stop) = (counters.clone(), stop.clone());
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (routes, counters) = (routes.clone(), counters.clone());
                    thread::spawn(move || serve(stream, &routes, &counters));
                }
            })
        };
        Self {
            addr,
            base: format!("http://{addr}"),
            counters,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The full URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Requests received for `path` (query excluded), whatever the answer.
    pub fn hits(&self, path: &str) -> usize {
        self.lock().hits.get(path).copied().unwrap_or(0)
    }

    /// Requests received for any path.
    pub fn total_hits(&self) -> usize {
        self.lock().hits.values().sum()
    }

    /// Body bytes written so far for `path`, over all requests.
    pub fn bytes_sent(&self, path: &str) -> u64 {
        self.lock().body_bytes_sent.get(path).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// A URL on loopback where nothing listens: connecting to it is refused.
pub fn refused_url(path: &str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    drop(listener);
    format!("http://{addr}{path}")
}

fn serve(mut stream: TcpStream, routes: &HashMap<String, Route>, counters: &Mutex<Counters>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Some(path) = read_request_path(&mut stream) else {
        return;
    };
    let reply = {
        let mut c = counters.lock().unwrap_or_else(|e| e.into_inner());
        let hit = c.hits.entry(path.clone()).or_insert(0);
        *hit += 1;
        match routes.get(&path) {
            Some(Route(replies)) => replies[(*hit - 1).min(replies.len() - 1)].clone(),
            None => Reply::Status(404),
        }
    };
    let sent = |n: usize| {
        let mut c = counters.lock().unwrap_or_else(|e| e.into_inner());
        *c.body_bytes_sent.entry(path.clone()).or_insert(0) += n as u64;
    };
    let _ = match reply {
        Reply::Body(body) => write_head(&mut stream, 200, body.len())
            .and_then(|()| stream.write_all(&body))
            .map(|()| sent(body.len())),
        Reply::Status(code) => write_head(&mut stream, code, 0),
        Reply::Close => Ok(()),
        Reply::Short { body, sent: n } => write_head(&mut stream, 200, body.len())
            .and_then(|()| stream.write_all(&body[..n]))
            .map(|()| sent(n)),
        Reply::Drip { body, chunk, every } => {
            write_head(&mut stream, 200, body.len()).and_then(|()| {
                for piece in body.chunks(chunk.max(1)) {
                    thread::sleep(every);
                    stream.write_all(piece)?;
                    stream.flush()?;
                    sent(piece.len());
                }
                Ok(())
            })
        }
        Reply::Stall(d) => {
            thread::sleep(d);
            Ok(())
        }
        Reply::Flood {
            prefix,
            total,
            announce,
        } => write_head_len(&mut stream, 200, announce.then_some(total)).and_then(|()| {
            let mut left = total;
            let mut chunk = prefix;
            chunk.resize(chunk.len().max(64 * 1024), b'x');
            while left > 0 {
                let piece = &chunk[..chunk.len().min(left as usize)];
                stream.write_all(piece)?;
                sent(piece.len());
                left -= piece.len() as u64;
                chunk.fill(b'x');
            }
            Ok(())
        }),
    };
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
}

/// Reads the request head and returns its path without the query; `None` if unreadable. A body
/// announced by Content-Length (a PUT's) is read and dropped, so the answer is not a reset.
fn read_request_path(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let end = loop {
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut buf).ok()?;
        if n == 0 || head.len() > 64 * 1024 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    };
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let length: u64 = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0);
    let already = (head.len() - end) as u64;
    std::io::copy(
        &mut Read::by_ref(stream).take(length.saturating_sub(already)),
        &mut std::io::sink(),
    )
    .ok()?;
    let target = text.lines().next()?.split_whitespace().nth(1)?;
    Some(target.split(['?', '#']).next()?.to_string())
}

fn write_head(stream: &mut TcpStream, code: u16, len: usize) -> std::io::Result<()> {
    write_head_len(stream, code, Some(len as u64))
}

/// Without a length, the body ends when the connection closes.
fn write_head_len(stream: &mut TcpStream, code: u16, len: Option<u64>) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let length = len.map_or(String::new(), |n| format!("Content-Length: {n}\r\n"));
    write!(
        stream,
        "HTTP/1.1 {code} {reason}\r\n{length}Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
    )
}
