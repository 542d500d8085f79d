//! Downloading one candidate URL (`http(s)://` or `file://`) into a verified temp file, with
//! retries of transient failures.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::Duration;

use crate::progress::{self, Event, Reporter, TransferReader};
use reqwest::blocking::Client;
use tempfile::NamedTempFile;

use super::guard::{Guard, Tripped};
use super::store::{self, CopyError};
use super::{Attempt, Failure, FetchConfig, FetchError, Timeout};
use crate::hash::{HashingReader, SourceHash};

const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub(super) enum GetError {
    /// This URL did not give the source; try the next one.
    Failed(Attempt),
    /// A problem on this machine (disk, TLS setup) that no other URL would avoid.
    Local(FetchError),
}

enum Once {
    Transient(Failure),
    Permanent(Failure),
    Local(FetchError),
}

pub(super) struct Downloader<'a> {
    cfg: &'a FetchConfig,
    tmp_dir: &'a Path,
    reporter: &'a dyn Reporter,
    /// Built on first use, so that a fetch served from `file://` never sets up TLS.
    client: Option<Client>,
}

impl<'a> Downloader<'a> {
    pub(super) fn new(cfg: &'a FetchConfig, tmp_dir: &'a Path, reporter: &'a dyn Reporter) -> Self {
        Self {
            cfg,
            tmp_dir,
            reporter,
            client: None,
        }
    }

    /// Downloads `url`, retrying transient failures, into a temp file whose sha256 is
    /// `expected`; returns it with its size.
    pub(super) fn get(
        &mut self,
        url: &str,
        expected: &SourceHash,
    ) -> Result<(NamedTempFile, u64), GetError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let failure = match self.once(url, expected) {
                Ok(got) => return Ok(got),
                Err(Once::Local(err)) => return Err(GetError::Local(err)),
                Err(Once::Transient(failure)) if tries <= self.cfg.retries => {
                    let delay = backoff(tries);
                    let attempt = Attempt {
                        url: url.to_string(),
                        tries: 1,
                        failure,
                    };
                    self.reporter
                        .report(Event::Note(&format!("{attempt}; retrying in {delay:?}")));
                    sleep(delay);
                    continue;
                }
                Err(Once::Transient(failure) | Once::Permanent(failure)) => failure,
            };
            return Err(GetError::Failed(Attempt {
                url: url.to_string(),
                tries,
                failure,
            }));
        }
    }

    fn client(&mut self) -> Result<&Client, FetchError> {
        if let Some(ref client) = self.client {
            return Ok(client);
        }
        let client = Client::builder()
            .connect_timeout(self.cfg.connect_timeout)
            // The blocking client applies this to the wait for headers and to each body read
            // (not to the whole body: the low-speed rule in `Guard` bounds that).
            .timeout(self.cfg.idle_timeout())
            .user_agent(concat!("pybake/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| FetchError::Client { source })?;
        Ok(self.client.insert(client))
    }

    fn once(&mut self, url: &str, expected: &SourceHash) -> Result<(NamedTempFile, u64), Once> {
        let idle = self.cfg.idle_timeout();
        let connect = self.cfg.connect_timeout;
        let (body, len, network): (Box<dyn Read>, Option<u64>, bool) = match file_path(url) {
            Some(Ok(path)) => {
                let file =
                    fs_err::File::open(path).map_err(|e| Once::Permanent(Failure::File(e)))?;
                let len = file.metadata().ok().map(|m| m.len());
                (Box::new(file), len, false)
            }
            Some(Err(reason)) => return Err(Once::Permanent(Failure::BadUrl { reason })),
            None => {
                let client = self.client().map_err(Once::Local)?;
                let resp = client.get(url).send().map_err(|e| {
                    if e.is_builder() {
                        Once::Permanent(Failure::Transport(e))
                    } else if e.is_timeout() && e.is_connect() {
                        Once::Transient(Failure::TimedOut(Timeout::Connect(connect)))
                    } else if e.is_timeout() {
                        Once::Transient(Failure::TimedOut(Timeout::Response(idle)))
                    } else {
                        Once::Transient(Failure::Transport(e))
                    }
                })?;
                let status = resp.status();
                if !status.is_success() {
                    let failure = Failure::Status {
                        status: status.as_u16(),
                    };
                    return Err(if status.is_server_error() {
                        Once::Transient(failure)
                    } else {
                        Once::Permanent(failure)
                    });
                }
                let len = resp.content_length();
                (Box::new(resp), len, true)
            }
        };

        let locked = self.cfg.expected_sizes.get(expected).copied();
        if let (Some(locked), Some(len)) = (locked, len) {
            if len > locked {
                return Err(Once::Permanent(Failure::TooLarge {
                    locked,
                    announced: Some(len),
                }));
            }
        }
        let mut temp = store::temp_file(self.tmp_dir, "fetch-").map_err(Once::Local)?;
        let id = progress::transfer_id();
        self.reporter.report(Event::TransferStarted {
            id,
            what: url,
            total: len,
        });
        // A local file is as fast as the disk: the low-speed rule is for networks.
        let speed = self.cfg.low_speed().filter(|_| network);
        let body = TransferReader::new(body, self.reporter, id);
        let mut reader = Guard::new(HashingReader::new(body), locked, speed);
        let copied = store::copy(&mut reader, temp.as_file_mut());
        self.reporter.report(Event::TransferFinished { id });
        match (copied, reader.tripped()) {
            (Ok(_), _) => {}
            (Err(CopyError::Read(_)), Some(Tripped::TooLarge { max })) => {
                return Err(Once::Permanent(Failure::TooLarge {
                    locked: max,
                    announced: None,
                }))
            }
            (Err(CopyError::Read(_)), Some(Tripped::LowSpeed(rule))) => {
                return Err(Once::Transient(Failure::TimedOut(Timeout::LowSpeed {
                    limit: rule.limit,
                    window: rule.window,
                })))
            }
            (Err(CopyError::Read(e)), None) if network && is_timeout(&e) => {
                return Err(Once::Transient(Failure::TimedOut(Timeout::Stalled(idle))))
            }
            (Err(CopyError::Read(e)), None) if network => {
                return Err(Once::Transient(Failure::Read(e)))
            }
            (Err(CopyError::Read(e)), None) => return Err(Once::Permanent(Failure::File(e))),
            (Err(CopyError::Write(e)), _) => {
                return Err(Once::Local(store::store_err(temp.path(), e)))
            }
        }
        let (actual, bytes) = reader.into_inner().finish();
        if let Some(expected_len) = len.filter(|&l| network && l != bytes) {
            return Err(Once::Transient(Failure::Short {
                got: bytes,
                expected: expected_len,
            }));
        }
        if actual != *expected {
            return Err(Once::Permanent(Failure::Mismatch {
                expected: *expected,
                actual,
                bytes,
                locked_size: locked,
            }));
        }
        Ok((temp, bytes))
    }
}

/// `%XX` to the byte it names; a `%` not followed by two hex digits stays as it is. For `file://`
/// URLs, here and in the directory cache.
pub fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Whether a body read ran out of time. reqwest's blocking reader reports its own read timeout
/// as an `Other` error wrapping a `reqwest::Error` (a "decode" error whose cause is the timeout),
/// so the kind alone is not enough.
fn is_timeout(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::TimedOut
        || e.get_ref()
            .and_then(|inner| inner.downcast_ref::<reqwest::Error>())
            .is_some_and(reqwest::Error::is_timeout)
}

fn backoff(tries: u32) -> Duration {
    BACKOFF_BASE
        .saturating_mul(1 << tries.saturating_sub(1).min(16))
        .min(BACKOFF_MAX)
}

/// For a `file://` URL, the local path it names (percent-decoded), or why it is not usable.
fn file_path(url: &str) -> Option<Result<PathBuf, &'static str>> {
    let rest = url.strip_prefix("file://")?;
    if !rest.starts_with('/') {
        return Some(Err(
            "a file URL must name an absolute path: file:///dir/file",
        ));
    }
    let out = percent_decode(rest);
    use std::os::unix::ffi::OsStringExt;
    Some(Ok(PathBuf::from(std::ffi::OsString::from_vec(out))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let ms: Vec<u128> = (1..=7).map(|t| backoff(t).as_millis()).collect();
        assert_eq!(ms, [200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn file_urls_are_percent_decoded() {
        assert_eq!(
            file_path("file:///srv/a%20b/c%2"),
            Some(Ok(PathBuf::from("/srv/a b/c%2")))
        );
        assert!(matches!(file_path("file://host/x"), Some(Err(_))));
        assert_eq!(file_path("https://x/y"), None);
    }
}
