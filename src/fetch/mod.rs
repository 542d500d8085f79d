//! Pinned downloads into the source store.
//!
//! # Store layout
//! Every source lives at `sources_dir/<64 lowercase hex of its sha256>`, read-only (0444), shared
//! by every recipe naming that hash. Invariants:
//! - A file under `sources_dir` MUST have the sha256 of its name. Downloads and imports are
//!   streamed into a temp file in `tmp_dir` (same filesystem) while hashing, fsynced, and renamed
//!   into place only after the hash matched; then `sources_dir` is fsynced. A process killed at
//!   any point leaves at most an orphan temp file (`fetch-*`, `import-*`) in `tmp_dir`, never a
//!   partial file under `sources_dir`.
//! - A source already present is returned without any network access (and is not re-hashed).
//! - Two processes fetching the same hash at once both download; the second rename replaces
//!   the first file with identical bytes, so readers always see a complete file.
//!
//! # Where a source is looked for
//! Candidates, in order, without duplicates (see `mirrors.rs`):
//! 1. each user mirror prefix `P` (`PYBAKE_MIRRORS`): `P/<file name>` for the file name of each
//!    of the source's URLs, then the content-addressed `P/sha256/<hex>`. A prefix may be an
//!    `http(s)://` or `file://` URL, or an absolute directory path (read as `file://`).
//! 2. each URL of the source (the recipe's `url`, then its mirrors). `mirror://NAME/PATH` expands
//!    to `BASE/PATH` for each base configured for NAME (`PYBAKE_MIRROR_NAME`); without a base
//!    it is skipped with a note saying how to configure one.
//!
//! Transient failures (connection errors, timeouts, HTTP 5xx, a body shorter than its
//! Content-Length) are retried with exponential backoff (200 ms doubling, at most 5 s) up to
//! [`FetchConfig::retries`] times; then the next candidate is tried. A 4xx answer, a hash
//! mismatch or a body larger than the lockfile's size moves to the next candidate at once. When
//! every candidate fails, one error lists each of them and why. Offline, `http(s)` candidates
//! are not tried; `file://` ones are.
//!
//! # Limits on a download
//! - Time: connecting may take [`FetchConfig::connect_timeout`]; after that, no wait for the
//!   response or for a byte of the body may last longer than [`FetchConfig::read_timeout`] or
//!   the low-speed window, whichever is shorter; and over any window of
//!   [`FetchConfig::low_speed_time`] the body MUST bring at least
//!   [`FetchConfig::low_speed_limit`] bytes per second (`guard.rs`). Each is reported as
//!   "timed out" with the URL, and retried.
//! - Size: for a source whose size the lockfile records ([`FetchConfig::expected_sizes`]), a
//!   larger Content-Length (or `file://` size) is refused before the body is read, and a body
//!   that grows past the size is cut off there, so the temp file never holds more than the
//!   lockfile's size. Not retried: the next candidate is tried.
//! - A source with the pinned sha256 but another size than the lockfile's is kept (its content
//!   is verified) and a warning ([`LockedSizeWrong`]) says the lockfile is wrong.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::hash::SourceHash;
use crate::progress::{Event, Reporter};

mod error;
mod guard;
mod http;
mod mirrors;
mod store;

pub use error::{Attempt, ConfigError, Failure, FetchError, LockedSizeWrong, Timeout};
pub use http::percent_decode;
pub use store::{import, import_stream, stored, Imported, StreamError};

/// How to fetch: mirrors, network policy, timeouts and size limits.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// URL prefixes tried before any upstream URL (`PYBAKE_MIRRORS`).
    pub user_mirrors: Vec<String>,
    /// Base URLs for `mirror://NAME/...`, keyed by NAME in lowercase (`PYBAKE_MIRROR_NAME`).
    pub named_mirrors: BTreeMap<String, Vec<String>>,
    /// Never touch the network; `file://` candidates are still read (`PYBAKE_OFFLINE=1`).
    pub offline: bool,
    /// Retries of one candidate after a transient failure (so at most `retries + 1` tries).
    pub retries: u32,
    pub connect_timeout: Duration,
    /// Longest wait for the response headers or for any single read of the body.
    pub read_timeout: Duration,
    /// A download fails as timed out when fewer than this many bytes per second arrive,
    /// averaged over [`Self::low_speed_time`] (curl's `--speed-limit`); 0 turns the check off
    /// (`PYBAKE_LOW_SPEED_LIMIT`).
    pub low_speed_limit: u64,
    /// The window of [`Self::low_speed_limit`] (curl's `--speed-time`), also the longest wait
    /// for any byte when shorter than `read_timeout` (`PYBAKE_LOW_SPEED_TIME`, in seconds).
    pub low_speed_time: Duration,
    /// The size the lockfile records for each source, by sha256: a source that turns out larger
    /// is refused or cut off. Empty without a lockfile.
    pub expected_sizes: BTreeMap<SourceHash, u64>,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            user_mirrors: Vec::new(),
            named_mirrors: BTreeMap::new(),
            offline: false,
            retries: 3,
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(60),
            // What curl users commonly pick (`--speed-limit 1024 --speed-time 30`, git's
            // http.lowSpeedLimit/Time): far below any working link, and a dead one is given
            // up after half a minute instead of never.
            low_speed_limit: 1024,
            low_speed_time: Duration::from_secs(30),
            expected_sizes: BTreeMap::new(),
        }
    }
}

impl FetchConfig {
    /// The defaults, with mirrors and offline mode from the environment:
    /// - `PYBAKE_MIRRORS`: URL prefixes separated by whitespace or commas;
    /// - `PYBAKE_MIRROR_<NAME>`: base URL(s) for `mirror://<name>/` (NAME is matched without
    ///   case, and `_` in it matches `-` in the mirror name);
    /// - `PYBAKE_OFFLINE`: set and not `0`/`false`/`no`/`off`;
    /// - `PYBAKE_LOW_SPEED_LIMIT`: bytes per second (an integer, 0 turns the check off);
    /// - `PYBAKE_LOW_SPEED_TIME`: seconds (a positive number, fractions allowed).
    ///
    /// Variables whose name or value is not UTF-8 are ignored; a number that does not parse is
    /// an error naming the variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        mirrors::config_from_vars(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// The low-speed rule, unless turned off.
    fn low_speed(&self) -> Option<guard::LowSpeed> {
        (self.low_speed_limit > 0 && !self.low_speed_time.is_zero()).then_some(guard::LowSpeed {
            limit: self.low_speed_limit,
            window: self.low_speed_time,
        })
    }

    /// The longest wait for the response or for any byte of the body: a whole low-speed window
    /// without a byte fails the rule whatever the limit, so there is no point waiting longer.
    fn idle_timeout(&self) -> Duration {
        match self.low_speed() {
            Some(rule) => self.read_timeout.min(rule.window),
            None => self.read_timeout,
        }
    }
}

/// One source to fetch, as a recipe declares it.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// The recipe asking for it, for messages.
    pub recipe: &'a str,
    /// The recipe's `url` first, then its mirrors.
    pub urls: &'a [String],
    pub sha256: SourceHash,
}

/// Returns `sources_dir/<hex>` for the source, downloading it first unless already stored.
/// `tmp_dir` MUST be on the same filesystem as `sources_dir`.
pub fn fetch(
    cfg: &FetchConfig,
    sources_dir: &Path,
    tmp_dir: &Path,
    src: &Source,
    reporter: &dyn Reporter,
) -> Result<PathBuf, FetchError> {
    if let Some(path) = stored(sources_dir, &src.sha256) {
        if let Ok(meta) = fs_err::metadata(&path) {
            warn_locked_size(cfg, src, meta.len(), reporter);
        }
        return Ok(path);
    }
    let mut downloader = http::Downloader::new(cfg, tmp_dir, reporter);
    let mut attempts = Vec::new();
    for step in mirrors::plan(cfg, src.urls, &src.sha256) {
        let url = match step {
            mirrors::Step::Try(url) => url,
            mirrors::Step::Skip(attempt) => {
                reporter.report(Event::Note(&format!("note: {attempt}")));
                attempts.push(attempt);
                continue;
            }
        };
        if cfg.offline && !mirrors::is_file_url(&url) {
            attempts.push(Attempt {
                url,
                tries: 0,
                failure: Failure::Offline,
            });
            continue;
        }
        match downloader.get(&url, &src.sha256) {
            Ok((temp, size)) => {
                warn_locked_size(cfg, src, size, reporter);
                return store::commit(temp, sources_dir, &src.sha256);
            }
            Err(http::GetError::Failed(attempt)) => attempts.push(attempt),
            Err(http::GetError::Local(err)) => return Err(err),
        }
    }
    let name = src
        .urls
        .iter()
        .find_map(|u| mirrors::file_name(u))
        .unwrap_or("source")
        .to_string();
    let (recipe, sha256) = (src.recipe.to_string(), src.sha256);
    Err(if cfg.offline {
        FetchError::Offline {
            recipe,
            name,
            sha256,
            attempts,
        }
    } else {
        FetchError::AllFailed {
            recipe,
            name,
            sha256,
            attempts,
        }
    })
}

/// The lockfile's size for `src`, if it records one that differs from `actual`.
pub fn locked_size_wrong(
    expected_sizes: &BTreeMap<SourceHash, u64>,
    recipe: &str,
    sha256: &SourceHash,
    actual: u64,
) -> Option<LockedSizeWrong> {
    let locked = *expected_sizes.get(sha256)?;
    (locked != actual).then(|| LockedSizeWrong {
        recipe: recipe.to_string(),
        sha256: *sha256,
        locked,
        actual,
    })
}

fn warn_locked_size(cfg: &FetchConfig, src: &Source, actual: u64, reporter: &dyn Reporter) {
    if let Some(w) = locked_size_wrong(&cfg.expected_sizes, src.recipe, &src.sha256, actual) {
        reporter.report(Event::Warning(&w.to_string()));
    }
}
