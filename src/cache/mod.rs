//! Binary caches: where built outputs, their metadata, sources and logs are shared between
//! machines (docs/binary-cache.md, "Backends").
//!
//! The formats stored in a cache are in the `formats` modules below; this file defines the
//! storage they are kept in: one [`CacheBackend`] trait with a backend per URL scheme, chosen by
//! [`open_cache`]:
//!
//! | URL                                          | backend            |
//! |----------------------------------------------|--------------------|
//! | `file:///abs/dir`                            | [`file::FileCache`] |
//! | `http://host[:port]/prefix`, `https://...`   | [`http::HttpCache`] |
//! | `s3://BUCKET/PREFIX?endpoint=URL&region=R`   | [`s3::S3Cache`]     |
//!
//! # Contract of a backend
//!
//! - Keys are relative paths made of [`check_key`]'s characters. Every method MUST validate its
//!   key before any I/O and refuse a bad one with [`CacheError::BadKey`]; a backend MUST NOT
//!   read or write anything outside its root/prefix, whatever it finds there (symlinks in a
//!   cache directory are not followed).
//! - `None` from [`CacheBackend::get`]/[`CacheBackend::open`] and `false` from
//!   [`CacheBackend::exists`] mean one thing only: the cache answered, and it does not have the
//!   key. Every other outcome is an error whose variant says what to do about it: a denied
//!   request ([`CacheError::Unauthorized`]) or a cache that cannot be reached is never a miss.
//! - [`CacheBackend::put`] MUST be atomic: a reader sees the old object, no object, or the whole
//!   new one, never a prefix. The directory backend renames a complete temp file into place;
//!   nginx's WebDAV PUT writes to its temp path and renames; S3 makes an object visible only when
//!   its (multipart) upload completes. Concurrent puts of one key leave one of the bodies.
//! - Bodies MUST be streamed: `open` and `put` hold a bounded amount of memory (at most a few
//!   upload parts) whatever the size; `get` is for small files and refuses more than its limit.
//! - Transient failures (HTTP 5xx, 408, 429, timeouts, resets) SHOULD be retried inside the
//!   backend with backoff, a few times, before [`CacheError::Transient`] is returned; a denied
//!   request MUST NOT be retried. A body already handed to the caller by `open` is not retried:
//!   the caller verifies what it read and retries the whole download if it wants.
//! - Backends are `Send + Sync`; [`CacheBackend::get_many`] asks many keys at once.
//!
//! Nothing read from a cache is trusted here: callers check sizes, hashes and signatures.

use std::error::Error as StdError;
use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

// formats
pub mod compress;
pub mod keys;
pub mod narinfo;

// operations
pub mod push;
pub mod substitute;

// backends
pub mod file;
pub mod http;
#[cfg(feature = "s3")]
pub mod s3;

/// A boxed cause, as the network libraries give them.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Requests [`CacheBackend::get_many`] has in flight at once: enough to hide a round trip of
/// latency per key (Nix asking one narinfo at a time per core is nix#5118), few enough not to
/// look like a flood to a small server.
pub const GET_MANY_CONCURRENCY: usize = 16;

/// Longest key accepted; real keys are under 200 bytes.
pub const MAX_KEY_LEN: usize = 512;

/// What a put uploads. A source that can be read again from the start, so that a failed upload
/// can be retried.
#[derive(Clone, Copy, Debug)]
pub enum Body<'a> {
    /// Small contents held in memory (narinfo, cache info).
    Bytes(&'a [u8]),
    /// A file, streamed; it MUST NOT change while the put runs (a temp file or a store file).
    File(&'a Path),
}

impl Body<'_> {
    /// Opens the body for one attempt: a reader and its exact length.
    pub(crate) fn open(&self) -> Result<(Box<dyn Read + Send + 'static>, u64), CacheError> {
        match *self {
            Body::Bytes(bytes) => Ok((
                Box::new(io::Cursor::new(bytes.to_vec())),
                bytes.len() as u64,
            )),
            Body::File(path) => {
                let file = fs_err::File::open(path).map_err(|e| CacheError::local(path, e))?;
                let len = file
                    .metadata()
                    .map_err(|e| CacheError::local(path, e))?
                    .len();
                Ok((Box::new(file.take(len)), len))
            }
        }
    }

    /// The file to name in an error about reading the body.
    pub(crate) fn path(&self) -> PathBuf {
        match *self {
            Body::Bytes(_) => PathBuf::from("<memory>"),
            Body::File(path) => path.to_path_buf(),
        }
    }
}

/// Storage of a binary cache: keys to immutable byte strings. See the module docs for the
/// contract every implementation keeps.
pub trait CacheBackend: Send + Sync {
    /// The cache's URL, passwords masked, for messages.
    fn url(&self) -> &str;

    /// The whole object at `key` if it has at most `limit` bytes; `None` if absent; a larger one
    /// is [`CacheError::TooLarge`]. For small files (narinfo, cache info).
    fn get(&self, key: &str, limit: u64) -> Result<Option<Vec<u8>>, CacheError>;

    /// A reader streaming the object at `key`; `None` if absent. Read errors come as
    /// `io::Error`s wrapping the cause.
    fn open(&self, key: &str) -> Result<Option<Box<dyn Read + Send>>, CacheError>;

    /// Whether the cache has `key`.
    fn exists(&self, key: &str) -> Result<bool, CacheError>;

    /// Stores `body` at `key`, replacing what is there, atomically.
    fn put(&self, key: &str, body: Body<'_>) -> Result<(), CacheError>;

    /// `get` of every key, in the order given, up to [`GET_MANY_CONCURRENCY`] at a time.
    ///
    /// After one key fails as [`CacheError::Unreachable`] or [`CacheError::Transient`] (already
    /// retried), the keys not yet asked are not asked: each gets the same kind of error, so a
    /// cache that is down costs one timeout rather than one per key.
    fn get_many(&self, keys: &[&str], limit: u64) -> Vec<Result<Option<Vec<u8>>, CacheError>> {
        let next = AtomicUsize::new(0);
        let down: Mutex<Option<Down>> = Mutex::new(None);
        let work = || {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(key) = keys.get(i) else { break };
                let already = *down.lock().unwrap_or_else(|e| e.into_inner());
                let result = match already {
                    Some(kind) => Err(kind.error(self.url(), key)),
                    None => self.get(key, limit),
                };
                if let Some(kind) = result.as_ref().err().and_then(Down::of) {
                    down.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert(kind);
                }
                mine.push((i, result));
            }
            mine
        };
        let workers = GET_MANY_CONCURRENCY.min(keys.len());
        let mut all: Vec<(usize, Got)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers).map(|_| scope.spawn(work)).collect();
            handles
                .into_iter()
                // A panic in a backend is a bug: pass it on.
                .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        all.sort_unstable_by_key(|(i, _)| *i);
        all.into_iter().map(|(_, result)| result).collect()
    }
}

/// One answer of [`CacheBackend::get_many`].
type Got = Result<Option<Vec<u8>>, CacheError>;

/// Why [`CacheBackend::get_many`] stopped asking.
#[derive(Clone, Copy, Debug)]
enum Down {
    Unreachable,
    Transient,
}

impl Down {
    fn of(e: &CacheError) -> Option<Self> {
        match e {
            CacheError::Unreachable { .. } => Some(Down::Unreachable),
            CacheError::Transient { .. } => Some(Down::Transient),
            _ => None,
        }
    }

    fn error(self, cache: &str, key: &str) -> CacheError {
        let url = entry_url(cache, key);
        match self {
            Down::Unreachable => CacheError::Unreachable {
                url,
                source: Box::new(NotAsked),
            },
            Down::Transient => CacheError::Transient {
                url,
                tries: 0,
                source: Box::new(NotAsked),
            },
        }
    }
}

/// The cause of an error for a key [`CacheBackend::get_many`] did not ask about.
#[derive(Debug)]
pub struct NotAsked;

impl fmt::Display for NotAsked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not asked: an earlier request to this cache failed the same way")
    }
}

impl StdError for NotAsked {}

/// What went wrong with a cache. Decide on the variant, never on the message.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{url:?} is not a cache URL pybake can use: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("{key:?} is not a valid cache key: {reason}")]
    BadKey { key: String, reason: &'static str },
    #[error("cannot set up the client for cache {url}")]
    Setup {
        url: String,
        #[source]
        source: BoxError,
    },
    /// HTTP 401/403 or S3's equivalent: the credentials are missing, wrong, or not allowed this
    /// operation. Not a miss, and not retried.
    #[error("access to {url} was denied: check the cache's credentials and permissions")]
    Unauthorized {
        url: String,
        #[source]
        source: BoxError,
    },
    /// The cache failed in a way that may pass (5xx, timeout, reset).
    #[error("{url} failed{}; the cache may be overloaded or restarting", tries_note(*.tries))]
    Transient {
        url: String,
        /// Requests made; 0 when not counted (S3: object_store retried) or not asked at all
        /// (the rest of a [`CacheBackend::get_many`] after a failure).
        tries: u32,
        #[source]
        source: BoxError,
    },
    /// Nothing answers at the cache's address (connection refused, unknown host, TLS failure,
    /// missing cache directory).
    #[error("cannot reach {url}: is the cache up and its URL right?")]
    Unreachable {
        url: String,
        #[source]
        source: BoxError,
    },
    /// The cache answered something no valid cache answers.
    #[error("unexpected answer from {url}: {reason}")]
    Protocol {
        url: String,
        reason: String,
        #[source]
        source: Option<BoxError>,
    },
    #[error("{url} is larger than the {limit} bytes allowed for it")]
    TooLarge { url: String, limit: u64 },
    /// This machine's side: reading a body to upload, or the cache directory's disk.
    #[error("cannot access {path}")]
    Local {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn tries_note(tries: u32) -> String {
    match tries {
        0 => String::new(),
        1 => " (1 try)".into(),
        n => format!(" after {n} tries"),
    }
}

impl CacheError {
    pub(crate) fn local(path: &Path, source: io::Error) -> Self {
        CacheError::Local {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Opens the backend `url` names. Nothing is sent to the cache until the first call.
///
/// S3 credentials come from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
/// `AWS_SESSION_TOKEN` (other `AWS_*` variables as object_store reads them).
pub fn open_cache(url: &str) -> Result<Box<dyn CacheBackend>, CacheError> {
    let scheme = url.split_once("://").map(|(s, _)| s);
    match scheme {
        Some("file") => Ok(Box::new(file::FileCache::new(url)?)),
        Some("http" | "https") => Ok(Box::new(http::HttpCache::new(url)?)),
        #[cfg(feature = "s3")]
        Some("s3") => Ok(Box::new(s3::S3Cache::new(url, std::env::vars())?)),
        #[cfg(not(feature = "s3"))]
        Some("s3") => Err(CacheError::BadUrl {
            url: url.to_string(),
            reason: "this pybake was built without S3 support (cargo feature `s3`)".into(),
        }),
        _ => Err(CacheError::BadUrl {
            url: url.to_string(),
            reason: "expected file:///DIR, http(s)://HOST/PREFIX or s3://BUCKET/PREFIX".into(),
        }),
    }
}

/// Checks that `key` is a relative path of non-empty components made of `A-Z a-z 0-9 . _ - +`
/// (`+`: store names have it, as in `libstdc++`, and logs are named after them), none starting
/// with `.` (so no `.`, `..` or hidden name: backends keep their temp files there), at most
/// [`MAX_KEY_LEN`] bytes. Such keys need no escaping in a URL path or an S3 key.
pub fn check_key(key: &str) -> Result<(), CacheError> {
    let bad = |reason| {
        Err(CacheError::BadKey {
            key: key.to_string(),
            reason,
        })
    };
    if key.is_empty() {
        return bad("it is empty");
    }
    if key.len() > MAX_KEY_LEN {
        return bad("it is longer than 512 bytes");
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+' | b'/'))
    {
        return bad("only A-Z a-z 0-9 . _ - + and / are allowed");
    }
    for component in key.split('/') {
        if component.is_empty() {
            return bad("it must be relative, without empty components (// or a trailing /)");
        }
        if component.starts_with('.') {
            return bad("no component may start with '.' (no . or .. or hidden names)");
        }
    }
    Ok(())
}

/// The URL of `key` in the cache at `cache`, for messages (before the query of an s3 URL).
pub(crate) fn entry_url(cache: &str, key: &str) -> String {
    match cache.split_once('?') {
        Some((base, query)) => format!("{}/{key}?{query}", base.trim_end_matches('/')),
        None => format!("{}/{key}", cache.trim_end_matches('/')),
    }
}

/// An HTTP status as an error cause.
#[derive(Debug)]
pub struct HttpStatus(pub u16);

impl fmt::Display for HttpStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason = reqwest::StatusCode::from_u16(self.0)
            .ok()
            .and_then(|s| s.canonical_reason());
        match reason {
            Some(reason) => write!(f, "HTTP status {} {reason}", self.0),
            None => write!(f, "HTTP status {}", self.0),
        }
    }
}

impl StdError for HttpStatus {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_the_cache_layout_are_accepted() {
        for key in [
            "pybake-cache-info",
            "5d1e0123456789abcdef0123456789ab.narinfo",
            "nar/0123abcd.nar.zst",
            "sources/0123abcd",
            "log/5d1e0123456789abcdef0123456789ab-zlib-1.2.13.zst",
            "log/5d1e0123456789abcdef0123456789ab-libstdc++-12.zst",
        ] {
            check_key(key).unwrap();
        }
    }

    #[test]
    fn keys_that_could_escape_or_hide_are_refused() {
        for key in [
            "", "/abs", "a/", "a//b", ".", "..", "../x", "a/../b", "a/./b", ".hidden", "a/.tmp-1",
            "a b", "a\\b", "a\0b", "é", "a?b", "a%2e", "a:b",
        ] {
            assert!(
                matches!(check_key(key), Err(CacheError::BadKey { .. })),
                "{key:?} accepted"
            );
        }
        assert!(check_key(&"a".repeat(MAX_KEY_LEN)).is_ok());
        assert!(check_key(&"a".repeat(MAX_KEY_LEN + 1)).is_err());
    }

    #[test]
    fn entry_urls_put_the_key_before_a_query() {
        assert_eq!(entry_url("http://h/p/", "k"), "http://h/p/k");
        assert_eq!(
            entry_url("s3://b/p?endpoint=http://e:1&region=r", "nar/k"),
            "s3://b/p/nar/k?endpoint=http://e:1&region=r"
        );
    }

    #[test]
    fn unknown_schemes_are_refused() {
        for url in ["ftp://x/y", "/abs/dir", "x", "File:///x"] {
            assert!(
                matches!(open_cache(url), Err(CacheError::BadUrl { .. })),
                "{url} accepted"
            );
        }
    }
}
