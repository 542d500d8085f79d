//! Substitution: an output downloaded from a binary cache instead of built, verified at every
//! step before anything reaches the store (docs/binary-cache.md, "Substitution"):
//!
//! 1. every configured cache is asked for every output a realize needs, all at once
//!    ([`Substituters::query`]); an entry that does not parse, is unsigned (unless the cache is
//!    allowed to be), signed by no trusted key, or badly signed, is a warning naming the cache,
//!    the output and why, and the next cache is asked;
//! 2. the chosen archive is streamed: its compressed bytes are hashed and counted against the
//!    narinfo's FileHash and FileSize (a longer body is cut off at FileSize), decompressed, and
//!    unpacked into a temporary directory with its NarHash and NarSize checked;
//! 3. the unpacked tree's content hash must equal the narinfo's OutputHash;
//! 4. only then is it made read-only, given metadata and renamed into the store.
//!
//! Any failure removes the temporary directory and is reported; the caller tries the next cache
//! or builds locally.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::mpsc;

use super::compress::Decompressor;
use super::keys::{SigError, TrustedKeys};
use super::narinfo::{narinfo_key, NarInfo, MAX_NARINFO_SIZE};
use super::{open_cache, CacheBackend, CacheError};
use crate::config::Substituter;
use crate::hash::nar::{unpack_nar, NarLimits};
use crate::hash::{tree, OutputHash};
use crate::progress::{self, Event, Reporter, TransferReader};
use crate::store::{Meta, Store, StoreError, StoreName};

/// The cache's description file: `StoreDir`, `Format`, `Priority`.
pub const CACHE_INFO: &str = "pybake-cache-info";

/// The most a source from a cache may be when the lockfile does not say its size.
const MAX_SOURCE: u64 = 64 << 30;

/// A cache's priority when neither it nor the configuration gives one (lower goes first).
pub const DEFAULT_PRIORITY: u32 = 50;

/// One cache to substitute from.
pub struct Cache {
    pub backend: Box<dyn CacheBackend>,
    pub priority: u32,
    pub allow_unsigned: bool,
}

impl Cache {
    pub fn url(&self) -> &str {
        self.backend.url()
    }
}

/// An entry some cache has for an output, verified as far as a narinfo can be.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Index into [`Substituters::caches`].
    pub cache: usize,
    pub info: NarInfo,
}

/// The configured caches, in the order they are asked (priority, then configuration order).
pub struct Substituters {
    pub caches: Vec<Cache>,
    trusted: TrustedKeys,
}

#[derive(Debug, thiserror::Error)]
pub enum SubstituteError {
    #[error("cache {cache}: cannot download the archive of {name}: {source}")]
    Cache {
        cache: String,
        name: StoreName,
        #[source]
        source: CacheError,
    },
    #[error("cache {cache} no longer has the archive {key} of {name}")]
    Gone {
        cache: String,
        key: String,
        name: StoreName,
    },
    #[error(
        "cache {cache}: the archive of {name} is corrupt or does not match its narinfo: {reason}"
    )]
    Corrupt {
        cache: String,
        name: StoreName,
        reason: String,
    },
    #[error("cache {cache}: {name} unpacks to {actual}, but its narinfo says {expected}")]
    OutputHash {
        cache: String,
        name: StoreName,
        expected: OutputHash,
        actual: OutputHash,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot hash the unpacked {name}: {source}")]
    Tree {
        name: StoreName,
        #[source]
        source: tree::TreeError,
    },
}

impl SubstituteError {
    /// What kind of failure this is: the cache's fault or the network's is the environment's.
    pub fn class(&self) -> crate::exit::Class {
        crate::exit::Class::Environment
    }
}

impl Substituters {
    /// Opens the configured caches; one whose URL is not usable is a warning, not an error.
    /// `trusted` are the public keys whose signatures make an entry trusted.
    pub fn open(configured: &[Substituter], trusted: TrustedKeys, reporter: &dyn Reporter) -> Self {
        let mut caches: Vec<(u32, usize, Cache)> = Vec::new();
        for (i, s) in configured.iter().enumerate() {
            match open_cache(&s.url) {
                Ok(backend) => {
                    let priority = s
                        .priority
                        .or_else(|| cache_priority(&*backend, reporter))
                        .unwrap_or(DEFAULT_PRIORITY);
                    caches.push((
                        priority,
                        i,
                        Cache {
                            backend,
                            priority,
                            allow_unsigned: s.allow_unsigned,
                        },
                    ));
                }
                Err(e) => reporter.report(Event::Warning(&format!(
                    "substituter {} is not used: {e}",
                    s.url
                ))),
            }
        }
        caches.sort_by_key(|(p, i, _)| (*p, *i));
        Substituters {
            caches: caches.into_iter().map(|(_, _, c)| c).collect(),
            trusted,
        }
    }

    /// No caches: nothing is ever substituted.
    pub fn none() -> Self {
        Substituters {
            caches: Vec::new(),
            trusted: TrustedKeys::new(Vec::new()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.caches.is_empty()
    }

    /// [`Self::query`] for `names`, then for the references the answers name that are neither
    /// valid nor asked yet, until there are none (a runtime closure is a few levels deep).
    pub fn query_closure(
        &self,
        names: &[StoreName],
        valid: &dyn Fn(&StoreName) -> bool,
        reporter: &dyn Reporter,
    ) -> BTreeMap<StoreName, Vec<Candidate>> {
        let mut asked: BTreeSet<StoreName> = names.iter().cloned().collect();
        let mut found = self.query(names, reporter);
        let mut round = 0;
        loop {
            let more: Vec<StoreName> = found
                .values()
                .flatten()
                .flat_map(|c| c.info.references.iter())
                .filter(|r| !asked.contains(*r) && !valid(r))
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            // A hostile cache could name references forever; real closures are shallow.
            if more.is_empty() || round == 32 {
                return found;
            }
            asked.extend(more.iter().cloned());
            found.extend(self.query(&more, reporter));
            round += 1;
        }
    }

    /// Asks every cache for every name (concurrently within a cache) and returns, for each name
    /// that some cache has, its trusted entries in the order the caches are tried. Each entry
    /// refused is a warning naming the cache, the output and the reason.
    pub fn query(
        &self,
        names: &[StoreName],
        reporter: &dyn Reporter,
    ) -> BTreeMap<StoreName, Vec<Candidate>> {
        let mut found: BTreeMap<StoreName, Vec<Candidate>> = BTreeMap::new();
        let keys: Vec<String> = names.iter().map(narinfo_key).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        for (ci, cache) in self.caches.iter().enumerate() {
            let answers = cache.backend.get_many(&keys, MAX_NARINFO_SIZE as u64);
            // A cache that is down or denies access fails every name the same way: one warning
            // naming the outputs, rather than one per output (or none naming any).
            let mut down: Option<(CacheError, Vec<&StoreName>)> = None;
            let mut denied: Option<(CacheError, Vec<&StoreName>)> = None;
            for (name, answer) in names.iter().zip(answers) {
                let warn = |why: &str| {
                    reporter.report(Event::Warning(&format!(
                        "substituter {}: not using its {name}: {why}",
                        cache.url()
                    )))
                };
                let bytes = match answer {
                    Ok(Some(b)) => b,
                    Ok(None) => continue,
                    Err(e) => {
                        let group = match e {
                            CacheError::Unreachable { .. } | CacheError::Transient { .. } => {
                                &mut down
                            }
                            CacheError::Unauthorized { .. } => &mut denied,
                            e => {
                                warn(&error_chain(&e));
                                continue;
                            }
                        };
                        group.get_or_insert_with(|| (e, Vec::new())).1.push(name);
                        continue;
                    }
                };
                let info = match NarInfo::parse(&bytes, name.hash_part()) {
                    Ok(i) if &i.store_name == name => i,
                    Ok(i) => {
                        warn(&format!("its narinfo describes {}", i.store_name));
                        continue;
                    }
                    Err(e) => {
                        warn(&format!("its narinfo is invalid: {e}"));
                        continue;
                    }
                };
                match info.verify(&self.trusted) {
                    Ok(_) => {}
                    // allow-unsigned means "without a signature by a trusted key" (docs/config.md):
                    // a signature by a key nobody trusts vouches for no more than none. One by a
                    // trusted key's name that does not verify is an altered entry: never taken.
                    Err(SigError::NoSignature | SigError::Untrusted { .. })
                        if cache.allow_unsigned => {}
                    Err(e) => {
                        let hint = match e {
                            SigError::NoSignature => {
                                " (push with --secret-key, or set allow-unsigned for this cache)"
                            }
                            SigError::Untrusted { .. } => {
                                " (trust its key with --trusted-public-key, or set allow-unsigned for this cache)"
                            }
                            SigError::Bad { .. } => "",
                        };
                        warn(&format!("{e}{hint}"));
                        continue;
                    }
                }
                found
                    .entry(name.clone())
                    .or_default()
                    .push(Candidate { cache: ci, info });
            }
            if let Some((e, names)) = down {
                reporter.report(Event::Warning(&format!(
                    "substituter {} is not answering ({}); {} will come from another cache or be built",
                    cache.url(),
                    error_chain(&e),
                    names_shown(&names)
                )));
            }
            if let Some((e, names)) = denied {
                reporter.report(Event::Warning(&format!(
                    "substituter {}: {}; this is an authorisation problem, not a missing entry: {} will come from another cache or be built",
                    cache.url(),
                    error_chain(&e),
                    names_shown(&names)
                )));
            }
        }
        found
    }

    /// Puts the source `sha256` into the store from the first cache whose `sources/` has it with
    /// exactly those bytes (at most `limit` bytes, the lockfile's size, when known). Whether it
    /// is in the store now. A cache that has other bytes under that name is a warning.
    pub fn fetch_source(
        &self,
        store: &Store,
        sha256: &crate::hash::SourceHash,
        limit: Option<u64>,
        reporter: &dyn Reporter,
    ) -> bool {
        use crate::fetch::{import_stream, Imported};
        let key = format!("sources/{}", sha256.to_hex());
        for cache in &self.caches {
            let body = match cache.backend.open(&key) {
                Ok(Some(b)) => b,
                Ok(None) => continue,
                Err(e) => {
                    reporter.report(Event::Warning(&format!(
                        "substituter {}: cannot get the source {sha256}: {e}",
                        cache.url()
                    )));
                    continue;
                }
            };
            let id = progress::transfer_id();
            let what = format!("source {sha256} from {}", cache.url());
            reporter.report(Event::TransferStarted {
                id,
                what: &what,
                total: limit,
            });
            let mut body = TransferReader::new(body, reporter, id);
            let got = import_stream(
                &store.sources_dir(),
                &store.tmp_dir(),
                &mut body,
                sha256,
                limit.unwrap_or(MAX_SOURCE),
            );
            reporter.report(Event::TransferFinished { id });
            match got {
                Ok(Imported::Stored(_)) => return true,
                Ok(Imported::Mismatch { actual, bytes }) => {
                    reporter.report(Event::Warning(&format!(
                        "substituter {}: its {key} is not that source ({bytes} bytes with {actual}); not used",
                        cache.url()
                    )))
                }
                Err(e) => reporter.report(Event::Warning(&format!(
                    "substituter {}: cannot get the source {sha256}: {e}",
                    cache.url()
                ))),
            }
        }
        false
    }

    /// Downloads, verifies and stores one output from the cache of `c`, with `inputs` (its
    /// derivation record, when it is a derivation of the closure) in its metadata. The caller
    /// holds no lock; this takes the output's lock, so concurrent realizes substitute it once.
    pub fn fetch(
        &self,
        store: &Store,
        c: &Candidate,
        inputs: Option<serde_json::Value>,
        reporter: &dyn Reporter,
    ) -> Result<Meta, SubstituteError> {
        let name = &c.info.store_name;
        let lock = store.lock(name)?;
        if store.is_valid(name) {
            return Ok(store.read_meta(name)?);
        }
        let tmp = store.fresh_tmp(name)?;
        let out: PathBuf = tmp.path().join("out");
        let result = self.download(c, &out, reporter).and_then(|output_hash| {
            let mut meta = Meta::new(name, c.info.drv_hash, output_hash);
            meta.references = c.info.references.clone();
            meta.root = c.info.root.clone();
            meta.sandboxed = c.info.root.is_some();
            if let Some(host) = &c.info.host_build {
                meta.host_build = true;
                meta.host = host.clone();
            }
            meta.inputs = inputs;
            store.insert(&out, name, &meta)?;
            // The lock is the output's log (see Store::lock): say where the output came from.
            let _ = lock.write_log(&format!(
                "=== pybake: substituted from {}: built elsewhere, so its build log is not here\n",
                self.caches[c.cache].url()
            ));
            Ok(meta)
        });
        if result.is_err() {
            let _ = crate::store::remove_tree(tmp.path());
        }
        result
    }

    /// Streams `c`'s archive into `dest` (which must not exist), checking its file hash and
    /// size, its archive hash and size, and the unpacked tree's output hash against the
    /// narinfo; returns the output hash. On error `dest` may hold a partial tree: the caller
    /// removes it.
    pub fn download(
        &self,
        c: &Candidate,
        dest: &std::path::Path,
        reporter: &dyn Reporter,
    ) -> Result<OutputHash, SubstituteError> {
        let name = &c.info.store_name;
        let cache = &self.caches[c.cache];
        let url = cache.url().to_string();
        let corrupt = |reason: String| SubstituteError::Corrupt {
            cache: url.clone(),
            name: name.clone(),
            reason,
        };
        let key = c.info.url();
        let body = cache
            .backend
            .open(&key)
            .map_err(|source| SubstituteError::Cache {
                cache: url.clone(),
                name: name.clone(),
                source,
            })?
            .ok_or_else(|| SubstituteError::Gone {
                cache: url.clone(),
                key: key.clone(),
                name: name.clone(),
            })?;
        let id = progress::transfer_id();
        let what = format!("{name} from {url}");
        reporter.report(Event::TransferStarted {
            id,
            what: &what,
            total: Some(c.info.file_size),
        });
        let result = (|| {
            let body = TransferReader::new(body, reporter, id);
            let z =
                Decompressor::new(body, c.info.file_size).map_err(|e| corrupt(error_chain(&e)))?;
            let (finished, unpacked) = unpack_in_parallel(z, dest, c.info.nar_size);
            // The file is checked before what the archive reader says: a file longer, shorter
            // or other than the narinfo's shows as such, rather than as whatever the archive
            // reader tripped on.
            let (file_hash, file_size) = finished.map_err(|e| corrupt(error_chain(&e)))?;
            if (file_hash, file_size) != (c.info.file_hash, c.info.file_size) {
                return Err(corrupt(format!(
                    "the archive is {file_size} bytes with {file_hash}, the narinfo says {} bytes with {}",
                    c.info.file_size, c.info.file_hash
                )));
            }
            let (nar_hash, nar_size) = unpacked.map_err(|e| corrupt(error_chain(&e)))?;
            if (nar_hash, nar_size) != (c.info.nar_hash, c.info.nar_size) {
                return Err(corrupt(format!(
                    "the unpacked archive is {nar_size} bytes with {nar_hash}, the narinfo says {} bytes with {}",
                    c.info.nar_size, c.info.nar_hash
                )));
            }
            let actual = OutputHash::from_bytes(tree::hash_path(dest).map_err(|source| {
                SubstituteError::Tree {
                    name: name.clone(),
                    source,
                }
            })?);
            if actual != c.info.output_hash {
                return Err(SubstituteError::OutputHash {
                    cache: url.clone(),
                    name: name.clone(),
                    expected: c.info.output_hash,
                    actual,
                });
            }
            Ok(actual)
        })();
        reporter.report(Event::TransferFinished { id });
        result
    }
}

/// Chunks of decompressed archive in flight between the two threads of
/// [`unpack_in_parallel`]: 8 of 256 KiB, so memory stays bounded whatever the size.
const PIPE_CHUNK: usize = 256 * 1024;
const PIPE_DEPTH: usize = 8;

/// Unpacks the archive `z` decompresses into `dest`, with the download, its file hash and the
/// decompression on a thread of their own: creating the files is most of a pull's time, and
/// overlapping the two is what makes `curl | zstd -d | tar -x` fast (bench/substitute). After
/// the unpacker stops, for whatever reason, the rest of the compressed file is read, so that
/// its hash and length cover all of it. Returns (file hash and size, unpack result).
#[allow(clippy::type_complexity)]
fn unpack_in_parallel<R: Read + Send>(
    mut z: Decompressor<R>,
    dest: &std::path::Path,
    nar_size: u64,
) -> (
    Result<(crate::hash::FileHash, u64), super::compress::CompressError>,
    Result<(crate::hash::NarHash, u64), crate::hash::nar::NarError>,
) {
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(PIPE_DEPTH);
        // Chunks come back to be filled again: a fresh 256 KiB allocation per chunk is a fresh
        // mapping, zeroed page by page.
        let (give_back, take_back) = mpsc::channel::<Vec<u8>>();
        let producer = scope.spawn(move || {
            loop {
                let mut buf = take_back.try_recv().unwrap_or_default();
                buf.resize(PIPE_CHUNK, 0);
                match z.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.send(Ok(buf)).is_err() {
                            break; // the unpacker stopped
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        break;
                    }
                }
            }
            drop(tx);
            z.finish()
        });
        let mut pipe = PipeReader {
            rx,
            give_back,
            chunk: Vec::new(),
            at: 0,
        };
        let unpacked = unpack_nar(&mut pipe, dest, &NarLimits::new(nar_size));
        // Hang up, so that a producer blocked on a full pipe goes on to finish().
        drop(pipe);
        let finished = producer
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (finished, unpacked)
    })
}

/// The receiving end of [`unpack_in_parallel`]'s pipe; a closed pipe is the end of the stream.
struct PipeReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    give_back: mpsc::Sender<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    let used = std::mem::replace(&mut self.chunk, chunk);
                    // The producer may be gone (it is done): then the chunk is just dropped.
                    let _ = self.give_back.send(used);
                    self.at = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(mpsc::RecvError) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// An error's message followed by those of its causes that it does not already include: a
/// reason such as "cannot read the archive stream" is of no use without what went wrong below.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// Up to five store names, then how many more.
fn names_shown(names: &[&StoreName]) -> String {
    const SHOWN: usize = 5;
    let mut text = names
        .iter()
        .take(SHOWN)
        .map(|n| n.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

/// The `Priority` of a cache's `pybake-cache-info`, if it has one that parses; a missing file
/// is normal for a new cache, one with another `StoreDir` is a warning (its outputs were built
/// for another store path and would not run here).
fn cache_priority(backend: &dyn CacheBackend, reporter: &dyn Reporter) -> Option<u32> {
    let bytes = backend.get(CACHE_INFO, 4096).ok().flatten()?;
    let text = String::from_utf8_lossy(&bytes);
    let mut priority = None;
    for line in text.lines() {
        match line.split_once(": ") {
            Some(("StoreDir", dir)) if dir != crate::store::CANONICAL_STORE => {
                reporter.report(Event::Warning(&format!(
                    "substituter {} holds outputs for the store {dir}, not {}",
                    backend.url(),
                    crate::store::CANONICAL_STORE
                )));
            }
            Some(("Priority", p)) => priority = p.trim().parse().ok(),
            _ => {}
        }
    }
    priority
}

/// Which outputs to substitute: walking from `targets`, an output that is not valid and has a
/// candidate whose references are all valid or substitutable in turn is substituted (and needs
/// nothing below it but those references); any other is built, and the walk continues into
/// what it needs. `needs(name)` gives a derivation's build inputs (empty for a name that is
/// only a reference).
pub fn choose(
    targets: &[StoreName],
    valid: &dyn Fn(&StoreName) -> bool,
    candidates: &BTreeMap<StoreName, Vec<Candidate>>,
    needs: &dyn Fn(&StoreName) -> Vec<StoreName>,
) -> BTreeMap<StoreName, Candidate> {
    // Whether `n` can be had without building, memoised; cycles (which valid references never
    // form) count as not obtainable.
    fn obtainable(
        n: &StoreName,
        valid: &dyn Fn(&StoreName) -> bool,
        candidates: &BTreeMap<StoreName, Vec<Candidate>>,
        memo: &mut BTreeMap<StoreName, Option<Candidate>>,
        visiting: &mut BTreeSet<StoreName>,
    ) -> bool {
        if valid(n) {
            return true;
        }
        if let Some(m) = memo.get(n) {
            return m.is_some();
        }
        if !visiting.insert(n.clone()) {
            return false;
        }
        let mut chosen = None;
        for c in candidates.get(n).into_iter().flatten() {
            let ok = c
                .info
                .references
                .iter()
                .filter(|r| *r != n)
                .all(|r| obtainable(r, valid, candidates, memo, visiting));
            if ok {
                chosen = Some(c.clone());
                break;
            }
        }
        visiting.remove(n);
        let ok = chosen.is_some();
        memo.insert(n.clone(), chosen);
        ok
    }

    let mut memo: BTreeMap<StoreName, Option<Candidate>> = BTreeMap::new();
    let mut out: BTreeMap<StoreName, Candidate> = BTreeMap::new();
    let mut seen: BTreeSet<StoreName> = BTreeSet::new();
    let mut queue: Vec<StoreName> = targets.to_vec();
    while let Some(n) = queue.pop() {
        if !seen.insert(n.clone()) || valid(&n) {
            continue;
        }
        if obtainable(&n, valid, candidates, &mut memo, &mut BTreeSet::new()) {
            add_with_references(&n, valid, &memo, &mut out);
        } else {
            queue.extend(needs(&n));
        }
    }
    out
}

fn add_with_references(
    n: &StoreName,
    valid: &dyn Fn(&StoreName) -> bool,
    memo: &BTreeMap<StoreName, Option<Candidate>>,
    out: &mut BTreeMap<StoreName, Candidate>,
) {
    if valid(n) || out.contains_key(n) {
        return;
    }
    let Some(Some(c)) = memo.get(n) else { return };
    out.insert(n.clone(), c.clone());
    for r in &c.info.references {
        if r != n {
            add_with_references(r, valid, memo, out);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use super::*;
    use crate::cache::compress::compress_stream;
    use crate::hash::nar::write_nar;
    use crate::hash::{FileHash, NarHash};

    /// A tree of several pipe chunks, its archive, and the archive compressed.
    fn sample() -> (tempfile::TempDir, Vec<u8>, Vec<u8>) {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        // Incompressible enough that the compressed file spans several chunks too.
        let mut big = Vec::new();
        let mut x: u64 = 1;
        while big.len() < 3 * PIPE_CHUNK * PIPE_DEPTH / 2 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            big.extend_from_slice(&x.to_le_bytes()[..5]);
        }
        std::fs::write(src.join("sub/big"), &big).unwrap();
        std::fs::write(src.join("small"), b"small\n").unwrap();
        let mut nar = Vec::new();
        write_nar(&src, &mut nar).unwrap();
        let mut zst = Vec::new();
        compress_stream(&mut &nar[..], &mut zst, 3, 1).unwrap();
        (t, nar, zst)
    }

    #[test]
    fn unpacks_through_the_pipe_with_the_hashes_of_both_streams() {
        let (t, nar, zst) = sample();
        let dest = t.path().join("out");
        let z = Decompressor::new(&zst[..], zst.len() as u64).unwrap();
        let (file, unpacked) = unpack_in_parallel(z, &dest, nar.len() as u64);
        assert_eq!(
            file.unwrap(),
            (FileHash::of(&zst), zst.len() as u64),
            "the compressed file"
        );
        assert_eq!(unpacked.unwrap(), (NarHash::of(&nar), nar.len() as u64));
        assert_eq!(
            std::fs::read(dest.join("sub/big")).unwrap(),
            std::fs::read(t.path().join("src/sub/big")).unwrap()
        );
    }

    #[test]
    fn a_failed_unpack_still_hashes_the_whole_file() {
        let (t, nar, zst) = sample();
        // The destination exists: the unpacker fails before reading anything, with the pipe
        // full; the whole compressed file is read and hashed all the same.
        let dest = t.path().join("src");
        let z = Decompressor::new(&zst[..], zst.len() as u64).unwrap();
        let (file, unpacked) = unpack_in_parallel(z, &dest, nar.len() as u64);
        assert!(unpacked.is_err());
        assert_eq!(file.unwrap(), (FileHash::of(&zst), zst.len() as u64));

        // A file longer than announced is told apart, whatever the unpacker did.
        let z = Decompressor::new(&zst[..], zst.len() as u64 - 1).unwrap();
        let (file, _) = unpack_in_parallel(z, &t.path().join("out"), nar.len() as u64);
        assert!(matches!(
            file,
            Err(crate::cache::compress::CompressError::TooLong { .. })
        ));
    }
}
