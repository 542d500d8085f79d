//! Errors of [`super::fetch`] and [`super::import`]: what failed, where, and what to do.

use std::error::Error as _;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::hash::SourceHash;

/// Why a source could not be fetched or imported.
///
/// `AllFailed` and `Offline` are about the source and its URLs (a wrong pin, a dead link, no
/// network); `Client`, `Store` and `Import` are about this machine.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "cannot fetch {name} ({sha256}) for recipe {recipe}; tried:{}{}",
        render_attempts(.attempts, true),
        hints(.attempts, .recipe)
    )]
    AllFailed {
        recipe: String,
        /// The file name of the source's URL.
        name: String,
        sha256: SourceHash,
        /// Every candidate URL in the order tried, with why it failed or was skipped.
        attempts: Vec<Attempt>,
    },
    #[error(
        "source {name} ({sha256}) for recipe {recipe} is not in the store, and pybake is offline \
         (PYBAKE_OFFLINE){}{}\n\
         To provide it: run `pybake import FILE` with a copy of {name}, run `pybake fetch` while \
         online, or set PYBAKE_MIRRORS=file:///DIR for a directory DIR holding {name}.{}",
        if .attempts.iter().any(|a| !matches!(a.failure, Failure::Offline)) { "; tried:" } else { "" },
        render_attempts(.attempts, false),
        offline_urls(.attempts)
    )]
    Offline {
        recipe: String,
        name: String,
        sha256: SourceHash,
        /// Includes the `http(s)` candidates not tried, marked [`Failure::Offline`].
        attempts: Vec<Attempt>,
    },
    #[error("cannot set up the HTTP client (TLS roots or system configuration)")]
    Client {
        #[source]
        source: reqwest::Error,
    },
    #[error("cannot write {path} while storing a source (is the disk full or read-only?)")]
    Store {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot import {file}: reading it failed")]
    Import {
        file: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl FetchError {
    /// A wrong pin (hash or size) or a stale URL is the recipe's; a network that failed, a full
    /// disk or an offline machine without the file is the environment's.
    pub fn class(&self) -> crate::exit::Class {
        use crate::exit::Class;
        match self {
            FetchError::AllFailed { attempts, .. } => {
                let wrong_pin = attempts.iter().any(|a| {
                    matches!(
                        a.failure,
                        Failure::Mismatch { .. }
                            | Failure::TooLarge { .. }
                            | Failure::NoMirrorBase { .. }
                            | Failure::BadUrl { .. }
                    )
                });
                let network = attempts.iter().all(|a| a.failure.is_network());
                if wrong_pin || !network {
                    Class::User
                } else {
                    Class::Environment
                }
            }
            FetchError::Offline { .. }
            | FetchError::Client { .. }
            | FetchError::Store { .. }
            | FetchError::Import { .. } => Class::Environment,
        }
    }
}

impl Failure {
    /// Whether this is about reaching the server at all (or reading from it).
    fn is_network(&self) -> bool {
        match self {
            Failure::Transport(_)
            | Failure::TimedOut(_)
            | Failure::Read(_)
            | Failure::Short { .. }
            | Failure::Offline => true,
            Failure::Status { status } => *status >= 500,
            _ => false,
        }
    }
}

/// One candidate URL and its outcome.
#[derive(Debug)]
pub struct Attempt {
    pub url: String,
    /// Requests made for this URL (0 when it was skipped).
    pub tries: u32,
    pub failure: Failure,
}

/// Why one candidate URL did not give the source.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(
        "skipped: no base URL is configured for mirror://{name}/ \
         (set {var}=<base URL>, several separated by spaces)"
    )]
    NoMirrorBase { name: String, var: String },
    #[error("skipped: {reason}")]
    BadUrl { reason: &'static str },
    #[error("not tried: offline")]
    Offline,
    #[error("HTTP status {status}{}", reason_phrase(*.status))]
    Status { status: u16 },
    #[error("request failed")]
    Transport(#[source] reqwest::Error),
    /// The server was too slow (transient: retried).
    #[error("timed out: {0}")]
    TimedOut(Timeout),
    #[error("download interrupted")]
    Read(#[source] io::Error),
    #[error("connection closed after {got} of {expected} bytes")]
    Short { got: u64, expected: u64 },
    /// Larger than the lockfile's `size` for the source: refused when the Content-Length (or a
    /// file's size) `announced` it, else cut off one byte past `locked`.
    #[error(
        "{} more than the {locked} bytes the lockfile records for this source ({})",
        match .announced { Some(n) => format!("is {n} bytes,"), None => "sent".to_string() },
        if .announced.is_some() { "not downloaded" } else { "download cut off" }
    )]
    TooLarge { locked: u64, announced: Option<u64> },
    #[error(
        "sha256 mismatch: the {bytes} bytes received have {actual}, but the recipe pins \
         {expected}{}",
        match .locked_size {
            Some(n) if n != bytes => format!(" (the lockfile records {n} bytes for it)"),
            _ => String::new(),
        }
    )]
    Mismatch {
        expected: SourceHash,
        actual: SourceHash,
        bytes: u64,
        /// The lockfile's `size` for the source, if it records one.
        locked_size: Option<u64>,
    },
    #[error("cannot read the local file")]
    File(#[source] io::Error),
}

/// Which wait ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Timeout {
    #[error("no connection within {}", secs(*.0))]
    Connect(Duration),
    /// Waiting for the status line and headers.
    #[error("no response within {}", secs(*.0))]
    Response(Duration),
    /// No byte of the body for this long.
    #[error("nothing received for {}", secs(*.0))]
    Stalled(Duration),
    /// Fewer than `limit` bytes/s on average over `window` ([`super::FetchConfig::low_speed_limit`]).
    #[error("less than {limit} bytes/s over {}", secs(*.window))]
    LowSpeed { limit: u64, window: Duration },
}

/// `30 s`, `0.3 s`.
fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// A source whose sha256 matches its pin but whose size is not the one the lockfile records:
/// the content is right, so the lockfile is wrong. Reported as a warning, not an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the lockfile records {locked} bytes for source {sha256} of recipe {recipe}, but the file \
     with that sha256 has {actual} bytes: the lockfile is wrong; run `pybake lock --update {recipe}`"
)]
pub struct LockedSizeWrong {
    pub recipe: String,
    pub sha256: SourceHash,
    pub locked: u64,
    pub actual: u64,
}

/// A fetch setting from the environment that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {var}={value:?} is not valid: expected {expected}")]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.url, self.failure)?;
        let mut cause = self.failure.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        if self.tries > 1 {
            write!(f, " ({} tries)", self.tries)?;
        }
        Ok(())
    }
}

fn reason_phrase(status: u16) -> String {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .map(|r| format!(" {r}"))
        .unwrap_or_default()
}

/// One indented line per attempt; `Offline` markers only when `with_offline`.
fn render_attempts(attempts: &[Attempt], with_offline: bool) -> String {
    let shown: Vec<String> = attempts
        .iter()
        .filter(|a| with_offline || !matches!(a.failure, Failure::Offline))
        .map(|a| format!("\n  - {a}"))
        .collect();
    if shown.is_empty() && with_offline {
        return " nothing (the recipe gives no URL)".to_string();
    }
    shown.concat()
}

fn offline_urls(attempts: &[Attempt]) -> String {
    let urls: Vec<&str> = attempts
        .iter()
        .filter(|a| matches!(a.failure, Failure::Offline))
        .map(|a| a.url.as_str())
        .collect();
    if urls.is_empty() {
        String::new()
    } else {
        format!("\nIt can be downloaded from: {}", urls.join(" "))
    }
}

fn hints(attempts: &[Attempt], recipe: &str) -> String {
    let mut out = String::new();
    if attempts
        .iter()
        .any(|a| matches!(a.failure, Failure::Mismatch { .. }))
    {
        out.push_str(
            "\nA sha256 mismatch means the file served is not the one the recipe pins. For an \
             upstream URL, check the recipe's sha256 pin (if upstream re-released the file, \
             verify the new one before updating the pin); for a mirror, the mirror holds a \
             different file: fix or drop that mirror.",
        );
    }
    if attempts.iter().any(|a| match a.failure {
        Failure::TooLarge { .. } => true,
        Failure::Mismatch {
            bytes,
            locked_size: Some(n),
            ..
        } => n != bytes,
        _ => false,
    }) {
        out.push_str(&format!(
            "\nThe lockfile records the size of each source, and the sizes above disagree with \
             it: either the file served is not the one pinned, or the lockfile is wrong (run \
             `pybake lock --update {recipe}` to record the size again)."
        ));
    }
    if attempts.iter().any(|a| {
        matches!(
            a.failure,
            Failure::Transport(_) | Failure::TimedOut(_) | Failure::Read(_) | Failure::Short { .. }
        )
    }) {
        out.push_str(
            "\nNetwork errors: check the connection or proxy settings, or set PYBAKE_MIRRORS to \
             a mirror holding the file.",
        );
    }
    if attempts
        .iter()
        .any(|a| matches!(a.failure, Failure::TimedOut(Timeout::LowSpeed { .. })))
    {
        out.push_str(
            "\nOn a link that is slow but working, lower PYBAKE_LOW_SPEED_LIMIT (bytes/s, 0 turns \
             the check off) or raise PYBAKE_LOW_SPEED_TIME (seconds).",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_failed_lists_every_attempt_with_hints() {
        let expected = SourceHash::of(b"good");
        let actual = SourceHash::of(b"bad");
        let err = FetchError::AllFailed {
            recipe: "python".into(),
            name: "Python-3.11.2.tar.xz".into(),
            sha256: expected,
            attempts: vec![
                Attempt {
                    url: "https://a/x".into(),
                    tries: 1,
                    failure: Failure::Status { status: 404 },
                },
                Attempt {
                    url: "https://b/x".into(),
                    tries: 1,
                    failure: Failure::Mismatch {
                        expected,
                        actual,
                        bytes: 3,
                        locked_size: None,
                    },
                },
                Attempt {
                    url: "https://c/x".into(),
                    tries: 4,
                    failure: Failure::Read(io::Error::other("reset")),
                },
            ],
        };
        let msg = err.to_string();
        for needle in [
            "cannot fetch Python-3.11.2.tar.xz",
            "for recipe python",
            "\n  - https://a/x: HTTP status 404 Not Found",
            &format!("\n  - https://b/x: sha256 mismatch: the 3 bytes received have {actual}, but the recipe pins {expected}"),
            "\n  - https://c/x: download interrupted: reset (4 tries)",
            "check the recipe's sha256 pin",
            "Network errors",
        ] {
            assert!(msg.contains(needle), "{needle:?} not in:\n{msg}");
        }
    }

    #[test]
    fn timeouts_and_sizes_say_what_ran_out() {
        let cases = [
            (
                Failure::TimedOut(Timeout::Connect(Duration::from_secs(15))),
                "timed out: no connection within 15 s",
            ),
            (
                Failure::TimedOut(Timeout::Response(Duration::from_millis(300))),
                "timed out: no response within 0.3 s",
            ),
            (
                Failure::TimedOut(Timeout::Stalled(Duration::from_secs(30))),
                "timed out: nothing received for 30 s",
            ),
            (
                Failure::TimedOut(Timeout::LowSpeed {
                    limit: 1024,
                    window: Duration::from_millis(1500),
                }),
                "timed out: less than 1024 bytes/s over 1.5 s",
            ),
            (
                Failure::TooLarge {
                    locked: 10,
                    announced: Some(11),
                },
                "is 11 bytes, more than the 10 bytes the lockfile records for this source \
                 (not downloaded)",
            ),
        ];
        for (failure, text) in cases {
            assert_eq!(failure.to_string(), text);
        }
        let w = LockedSizeWrong {
            recipe: "zlib".into(),
            sha256: SourceHash::of(b"z"),
            locked: 5,
            actual: 1,
        };
        let msg = w.to_string();
        assert!(
            msg.contains("records 5 bytes") && msg.contains("has 1 bytes"),
            "{msg}"
        );
        assert!(msg.contains("pybake lock --update zlib"), "{msg}");
    }

    #[test]
    fn offline_says_how_to_provide_the_source() {
        let sha256 = SourceHash::of(b"x");
        let err = FetchError::Offline {
            recipe: "zlib".into(),
            name: "zlib-1.3.tar.gz".into(),
            sha256,
            attempts: vec![Attempt {
                url: "https://zlib.net/zlib-1.3.tar.gz".into(),
                tries: 0,
                failure: Failure::Offline,
            }],
        };
        let msg = err.to_string();
        for needle in [
            "source zlib-1.3.tar.gz",
            &sha256.to_string(),
            "recipe zlib",
            "pybake import FILE",
            "pybake fetch",
            "PYBAKE_MIRRORS=file:///DIR",
            "https://zlib.net/zlib-1.3.tar.gz",
        ] {
            assert!(msg.contains(needle), "{needle:?} not in:\n{msg}");
        }
        assert!(!msg.contains("not tried"), "{msg}");
    }
}
