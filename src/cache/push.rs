//! Pushing outputs, sources and logs to a binary cache (docs/binary-cache.md, "Push").
//!
//! Order matters to readers that may look at the cache while it is written: an output's
//! archive is uploaded before its narinfo, and its narinfo only after the narinfos of its
//! references, so a narinfo a substituter can see always has everything it points at. What
//! the cache already has is skipped (archives are content-addressed). Every failure is
//! collected, and the push reports each item that was not pushed.

use std::path::Path;

use super::compress::Compressor;
use super::keys::SecretKey;
use super::narinfo::{narinfo_key, NarInfo};
use super::substitute::CACHE_INFO;
use super::{Body, CacheBackend, CacheError};
use crate::hash::nar::write_nar;
use crate::hash::SourceHash;
use crate::progress::{Event, Reporter};
use crate::store::{Store, StoreName};

/// How to push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// zstd level (docs/binary-cache.md has the measurements behind the default).
    pub level: i32,
    /// zstd threads for large archives.
    pub threads: u32,
    /// Push outputs built on the host's `/usr` (no root) too; their bytes depend on the host.
    pub allow_host_builds: bool,
}

/// What a push did.
#[derive(Debug, Default)]
pub struct PushReport {
    /// Outputs uploaded, and outputs the cache already had.
    pub pushed: Vec<StoreName>,
    pub present: Vec<StoreName>,
    pub sources_pushed: usize,
    pub sources_present: usize,
    /// Bytes uploaded (compressed archives, sources, logs, narinfos).
    pub bytes: u64,
    /// Everything that was not pushed, and why.
    pub failed: Vec<(String, PushError)>,
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("{name} is a host build (built on the host's /usr, so its bytes depend on the host); push it with --allow-host-builds if that is what you want")]
    HostBuild { name: StoreName },
    #[error("{name} is not in the store (realize it first)")]
    Missing { name: StoreName },
    #[error("a reference of {name} was not pushed, so its narinfo is not either")]
    ReferenceMissing { name: StoreName },
    #[error("cannot archive {name}: {reason}")]
    Archive { name: StoreName, reason: String },
    #[error("not attempted: the cache refused its {CACHE_INFO}")]
    NotAttempted,
    #[error("cannot read the store: {0}")]
    Store(#[from] crate::store::StoreError),
}

impl PushError {
    pub fn class(&self) -> crate::exit::Class {
        match self {
            PushError::HostBuild { .. } | PushError::Missing { .. } => crate::exit::Class::User,
            _ => crate::exit::Class::Environment,
        }
    }

    /// Whether this failure only follows from another one in the same report (a reference
    /// that was not pushed, a cache that refused its description): the exit code is that
    /// other one's.
    pub fn is_consequence(&self) -> bool {
        matches!(
            self,
            PushError::ReferenceMissing { .. } | PushError::NotAttempted
        )
    }
}

/// Pushes `outputs` (a runtime closure, references before the outputs that mention them),
/// `sources`, and the outputs' build logs to `cache`, signing each narinfo with `key`.
pub fn push(
    store: &Store,
    cache: &dyn CacheBackend,
    key: Option<&SecretKey>,
    outputs: &[StoreName],
    sources: &[SourceHash],
    opts: &PushOptions,
    reporter: &dyn Reporter,
) -> PushReport {
    let mut report = PushReport::default();
    if let Err(e) = ensure_cache_info(cache) {
        // A cache that cannot take its description takes nothing else: say what was not
        // pushed, as for any other failure, rather than only the file that failed first.
        report.failed.push((CACHE_INFO.to_string(), e.into()));
        for name in outputs {
            report
                .failed
                .push((name.to_string(), PushError::NotAttempted));
        }
        for s in sources {
            if crate::fetch::stored(&store.sources_dir(), s).is_some() {
                report
                    .failed
                    .push((format!("sources/{}", s.to_hex()), PushError::NotAttempted));
            }
        }
        return report;
    }
    for name in outputs {
        let refs_ok = store
            .read_meta(name)
            .map(|m| {
                m.references
                    .iter()
                    .filter(|r| *r != name)
                    .all(|r| !report.failed.iter().any(|(what, _)| what == r.as_str()))
            })
            .unwrap_or(true);
        let result = if refs_ok {
            push_output(store, cache, key, name, opts, &mut report.bytes, reporter)
        } else {
            Err(PushError::ReferenceMissing { name: name.clone() })
        };
        match result {
            Ok(true) => report.pushed.push(name.clone()),
            Ok(false) => report.present.push(name.clone()),
            Err(e) => report.failed.push((name.to_string(), e)),
        }
    }
    for s in sources {
        let Some(path) = crate::fetch::stored(&store.sources_dir(), s) else {
            continue; // not fetched here (an alternative that is not used)
        };
        let key = format!("sources/{}", s.to_hex());
        match upload_unless_present(cache, &key, Body::File(&path), &path, &mut report.bytes) {
            Ok(true) => report.sources_pushed += 1,
            Ok(false) => report.sources_present += 1,
            Err(e) => report.failed.push((key, e.into())),
        }
    }
    report
}

/// Writes the cache's description unless it has one. A cache that cannot answer yet (a
/// directory not made yet) gets one too: the put says whether it can really be written.
fn ensure_cache_info(cache: &dyn CacheBackend) -> Result<(), CacheError> {
    if let Ok(true) = cache.exists(CACHE_INFO) {
        return Ok(());
    }
    let text = format!(
        "StoreDir: {}\nFormat: 1\nPriority: {}\n",
        crate::store::CANONICAL_STORE,
        super::substitute::DEFAULT_PRIORITY
    );
    cache.put(CACHE_INFO, Body::Bytes(text.as_bytes()))
}

fn upload_unless_present(
    cache: &dyn CacheBackend,
    key: &str,
    body: Body,
    path: &Path,
    bytes: &mut u64,
) -> Result<bool, CacheError> {
    if cache.exists(key)? {
        return Ok(false);
    }
    cache.put(key, body)?;
    *bytes += fs_err::metadata(path).map(|m| m.len()).unwrap_or(0);
    Ok(true)
}

/// Pushes one output; `false` when the cache already had its narinfo.
fn push_output(
    store: &Store,
    cache: &dyn CacheBackend,
    key: Option<&SecretKey>,
    name: &StoreName,
    opts: &PushOptions,
    bytes: &mut u64,
    reporter: &dyn Reporter,
) -> Result<bool, PushError> {
    if !store.is_valid(name) {
        return Err(PushError::Missing { name: name.clone() });
    }
    let meta = store.read_meta(name)?;
    if meta.host_build && !opts.allow_host_builds {
        return Err(PushError::HostBuild { name: name.clone() });
    }
    let info_key = narinfo_key(name);
    if complete_entry(cache, &info_key, name)? {
        return Ok(false);
    }
    reporter.report(Event::Note(&format!("pushing {name} to {}", cache.url())));
    // The archive's key is the hash of its compressed bytes, known only once it is written:
    // stage it in a temporary file (never in memory).
    let archive_err = |reason: String| PushError::Archive {
        name: name.clone(),
        reason,
    };
    let tmp = crate::atomic::locked_temp_file(&store.tmp_dir(), "push-")
        .map_err(|e| archive_err(format!("cannot make a temporary file: {e}")))?;
    let file = tmp.reopen().map_err(|e| archive_err(e.to_string()))?;
    let mut z = Compressor::new(std::io::BufWriter::new(file), opts.level, opts.threads)
        .map_err(|e| archive_err(e.to_string()))?;
    let nar = write_nar(&store.path(name), &mut z).map_err(|e| archive_err(e.to_string()))?;
    let (file_hash, file_size, _) = z.finish().map_err(|e| archive_err(e.to_string()))?;
    let mut info = NarInfo::new(&meta, (file_hash, file_size), nar);
    upload_unless_present(
        cache,
        &info.url(),
        Body::File(tmp.path()),
        tmp.path(),
        bytes,
    )?;
    push_log(store, cache, name, opts, bytes);
    if let Some(k) = key {
        info.sign(k);
    }
    let text = info.render();
    cache.put(&info_key, Body::Bytes(text.as_bytes()))?;
    *bytes += text.len() as u64;
    Ok(true)
}

/// Whether the cache has a usable entry for `name`: a narinfo that parses and the archive it
/// names. A damaged entry (an archive deleted, a narinfo garbled) is pushed again.
fn complete_entry(
    cache: &dyn CacheBackend,
    info_key: &str,
    name: &StoreName,
) -> Result<bool, CacheError> {
    let Some(bytes) = cache.get(info_key, super::narinfo::MAX_NARINFO_SIZE as u64)? else {
        return Ok(false);
    };
    match NarInfo::parse(&bytes, name.hash_part()) {
        Ok(info) if &info.store_name == name => cache.exists(&info.url()),
        _ => Ok(false),
    }
}

/// The build log, compressed; a log that cannot be pushed is no reason to fail the output.
fn push_log(
    store: &Store,
    cache: &dyn CacheBackend,
    name: &StoreName,
    opts: &PushOptions,
    bytes: &mut u64,
) {
    let log = store.log_path(name);
    let Ok(mut input) = fs_err::File::open(&log) else {
        return;
    };
    let Ok(tmp) = crate::atomic::locked_temp_file(&store.tmp_dir(), "push-log-") else {
        return;
    };
    let Ok(out) = tmp.reopen() else { return };
    if super::compress::compress_stream(&mut input, out, opts.level, 1).is_ok() {
        let key = format!("log/{name}.zst");
        let _ = upload_unless_present(cache, &key, Body::File(tmp.path()), tmp.path(), bytes);
    }
}
