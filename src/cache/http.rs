//! `http(s)://host[:port]/prefix`: a cache served over HTTP, read with GET and HEAD, written with
//! PUT (a stock nginx with `dav_methods PUT; create_full_put_path on;` is enough, see
//! docs/binary-cache.md, "Backends").
//!
//! Answers: 2xx is success; 404 and 410 mean absent; 401 and 403 are
//! [`CacheError::Unauthorized`] at once; 5xx, 408, 429, timeouts and broken connections are
//! retried [`TRIES`] times in all with doubling backoff, then [`CacheError::Transient`]; a refused
//! connection, an unknown host or a TLS failure is [`CacheError::Unreachable`] at once (nothing
//! listens there; waiting will not help). Any other status is [`CacheError::Protocol`].
//!
//! Credentials: `https://user:password@host/prefix` sends HTTP basic auth (the password is masked
//! in messages).

use std::io::{self, Read};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::{Method, StatusCode, Url};

use super::{check_key, entry_url, Body, BoxError, CacheBackend, CacheError, HttpStatus};

/// Requests made for one operation before a transient failure is reported.
pub const TRIES: u32 = 4;
const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The wait for a response's headers and for each read of its body.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The slowest upload tolerated: a PUT of `n` bytes may take `TIMEOUT + n / MIN_UPLOAD_RATE`
/// seconds (the blocking client's timeout covers sending the whole body).
const MIN_UPLOAD_RATE: u64 = 1024 * 1024;

/// A cache at an HTTP(S) prefix.
#[derive(Debug)]
pub struct HttpCache {
    /// The prefix requests go to, credentials included, without a trailing `/`.
    base: String,
    /// `base` with the password masked.
    url: String,
    client: Client,
}

/// The outcome of one request.
enum Once<T> {
    Done(T),
    /// Worth another try: the cause.
    Retry(BoxError),
    Fail(CacheError),
}

impl HttpCache {
    pub fn new(url: &str) -> Result<Self, CacheError> {
        let bad = |reason: &str| CacheError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let parsed = Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        // Url accepts `http:/p` as `http://p/`: insist on the plain form.
        if !(url.starts_with("http://") || url.starts_with("https://")) || parsed.cannot_be_a_base()
        {
            return Err(bad("expected http(s)://HOST[:PORT]/PREFIX"));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(bad("it names no host"));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad("a cache URL takes no query or fragment"));
        }
        let mut masked = parsed.clone();
        if masked.password().is_some() {
            // Cannot fail: the URL has a host.
            let _ = masked.set_password(Some("***"));
        }
        let client = Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(TIMEOUT)
            .pool_max_idle_per_host(super::GET_MANY_CONCURRENCY)
            .user_agent(concat!("pybake/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CacheError::Setup {
                url: masked.to_string(),
                source: Box::new(e),
            })?;
        Ok(Self {
            base: parsed.as_str().trim_end_matches('/').to_string(),
            url: masked.as_str().trim_end_matches('/').to_string(),
            client,
        })
    }

    fn target(&self, key: &str) -> String {
        // Keys hold only unreserved URL characters: nothing to escape.
        format!("{}/{key}", self.base)
    }

    /// Runs `once` until it is done, fails for good, or has been tried [`TRIES`] times.
    fn retrying<T>(&self, key: &str, mut once: impl FnMut() -> Once<T>) -> Result<T, CacheError> {
        let mut tries = 0;
        loop {
            tries += 1;
            match once() {
                Once::Done(value) => return Ok(value),
                Once::Fail(err) => return Err(err),
                Once::Retry(_) if tries < TRIES => sleep(backoff(tries)),
                Once::Retry(source) => {
                    return Err(CacheError::Transient {
                        url: entry_url(&self.url, key),
                        tries,
                        source,
                    })
                }
            }
        }
    }

    /// Sends one request; `Done(None)` for 404/410.
    fn send(&self, key: &str, method: &Method, req: RequestBuilder) -> Once<Option<Response>> {
        let resp = match req.send() {
            Ok(resp) => resp,
            Err(e) => return self.transport(key, e),
        };
        let status = resp.status();
        if status.is_success() {
            return Once::Done(Some(resp));
        }
        let url = entry_url(&self.url, key);
        let cause = Box::new(HttpStatus(status.as_u16()));
        match status {
            StatusCode::NOT_FOUND | StatusCode::GONE => Once::Done(None),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Once::Fail(CacheError::Unauthorized { url, source: cause })
            }
            StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => Once::Retry(cause),
            s if s.is_server_error() => Once::Retry(cause),
            s => Once::Fail(CacheError::Protocol {
                url,
                reason: match (method, s) {
                    (&Method::PUT, StatusCode::METHOD_NOT_ALLOWED | StatusCode::CONFLICT) => {
                        "the server does not accept uploads there (nginx needs `dav_methods \
                         PUT; create_full_put_path on;` in that location)"
                            .to_string()
                    }
                    _ => format!("{method} answered with status {}", s.as_u16()),
                },
                source: Some(cause),
            }),
        }
    }

    fn transport<T>(&self, key: &str, e: reqwest::Error) -> Once<T> {
        let url = entry_url(&self.url, key);
        if e.is_builder() {
            Once::Fail(CacheError::BadUrl {
                url,
                reason: e.to_string(),
            })
        } else if e.is_connect() && !e.is_timeout() {
            // Refused, unknown host, TLS handshake: nothing will change in a few seconds.
            Once::Fail(CacheError::Unreachable {
                url,
                source: Box::new(e.without_url()),
            })
        } else if e.is_redirect() {
            Once::Fail(CacheError::Protocol {
                url,
                reason: "too many redirects".into(),
                source: Some(Box::new(e.without_url())),
            })
        } else {
            // Timeouts, resets, connections closed before the answer.
            Once::Retry(Box::new(e.without_url()))
        }
    }
}

impl CacheBackend for HttpCache {
    fn url(&self) -> &str {
        &self.url
    }

    fn get(&self, key: &str, limit: u64) -> Result<Option<Vec<u8>>, CacheError> {
        check_key(key)?;
        let too_large = || CacheError::TooLarge {
            url: entry_url(&self.url, key),
            limit,
        };
        self.retrying(key, || {
            let req = self.client.get(self.target(key));
            let resp = match self.send(key, &Method::GET, req) {
                Once::Done(Some(resp)) => resp,
                Once::Done(None) => return Once::Done(None),
                Once::Retry(e) => return Once::Retry(e),
                Once::Fail(e) => return Once::Fail(e),
            };
            if resp.content_length().is_some_and(|n| n > limit) {
                return Once::Fail(too_large());
            }
            let mut bytes = Vec::new();
            // Without a Content-Length, one byte past the limit tells a body that is too large.
            if let Err(e) = resp.take(limit.saturating_add(1)).read_to_end(&mut bytes) {
                return Once::Retry(Box::new(e));
            }
            if bytes.len() as u64 > limit {
                return Once::Fail(too_large());
            }
            Once::Done(Some(bytes))
        })
    }

    fn open(&self, key: &str) -> Result<Option<Box<dyn Read + Send>>, CacheError> {
        check_key(key)?;
        let resp = self.retrying(key, || {
            self.send(key, &Method::GET, self.client.get(self.target(key)))
        })?;
        Ok(resp.map(|r| Box::new(r) as Box<dyn Read + Send>))
    }

    fn exists(&self, key: &str) -> Result<bool, CacheError> {
        check_key(key)?;
        let resp = self.retrying(key, || {
            self.send(key, &Method::HEAD, self.client.head(self.target(key)))
        })?;
        Ok(resp.is_some())
    }

    fn put(&self, key: &str, body: Body<'_>) -> Result<(), CacheError> {
        check_key(key)?;
        self.retrying(key, || {
            let (reader, len) = match body.open() {
                Ok(opened) => opened,
                Err(e) => return Once::Fail(e),
            };
            let failed = Arc::new(Mutex::new(None));
            let watched = Watched {
                inner: reader,
                left: len,
                failed: failed.clone(),
            };
            let req = self
                .client
                .put(self.target(key))
                .timeout(TIMEOUT + Duration::from_secs(len / MIN_UPLOAD_RATE))
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(reqwest::blocking::Body::sized(watched, len));
            let sent = self.send(key, &Method::PUT, req);
            // Our own file failing is not the server's fault: no retry.
            if let Some(e) = failed.lock().unwrap_or_else(|e| e.into_inner()).take() {
                return Once::Fail(CacheError::local(&body.path(), e));
            }
            match sent {
                Once::Done(Some(_)) => Once::Done(()),
                Once::Done(None) => Once::Fail(CacheError::Protocol {
                    url: entry_url(&self.url, key),
                    reason: "PUT answered 404: the server does not accept uploads there".into(),
                    source: Some(Box::new(HttpStatus(404))),
                }),
                Once::Retry(e) => Once::Retry(e),
                Once::Fail(e) => Once::Fail(e),
            }
        })
    }
}

/// The reader of an upload's body: records its own failures (and a body shorter than announced)
/// so that they are told apart from the network's.
struct Watched {
    inner: Box<dyn Read + Send>,
    left: u64,
    failed: Arc<Mutex<Option<io::Error>>>,
}

impl Read for Watched {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let result = match self.inner.read(buf) {
            Ok(0) if self.left > 0 && !buf.is_empty() => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the file ended {} bytes early while it was uploaded",
                    self.left
                ),
            )),
            other => other,
        };
        match result {
            Ok(n) => {
                self.left = self.left.saturating_sub(n as u64);
                Ok(n)
            }
            Err(e) => {
                let kind = e.kind();
                let message = e.to_string();
                *self.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                Err(io::Error::new(kind, message))
            }
        }
    }
}

fn backoff(tries: u32) -> Duration {
    BACKOFF_BASE
        .saturating_mul(1 << tries.saturating_sub(1).min(16))
        .min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked_and_slashes_trimmed() {
        let cache = HttpCache::new("https://ci:s3cret@cache.example/pybake/").unwrap();
        assert_eq!(cache.url(), "https://ci:***@cache.example/pybake");
        assert_eq!(
            cache.target("x.narinfo"),
            "https://ci:s3cret@cache.example/pybake/x.narinfo"
        );
        let bare = HttpCache::new("http://127.0.0.1:8080").unwrap();
        assert_eq!(bare.target("nar/a"), "http://127.0.0.1:8080/nar/a");
    }

    #[test]
    fn urls_with_queries_or_without_hosts_are_refused() {
        for url in [
            "http://h/p?x=1",
            "http://h/p#f",
            "https://",
            "http:/p",
            "mailto:a@b",
        ] {
            assert!(
                matches!(HttpCache::new(url), Err(CacheError::BadUrl { .. })),
                "{url} accepted"
            );
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let ms: Vec<u128> = (1..=7).map(|t| backoff(t).as_millis()).collect();
        assert_eq!(ms, [200, 400, 800, 1600, 3200, 5000, 5000]);
    }
}
