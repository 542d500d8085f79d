//! Garbage collection: removing what no GC root needs (docs/store.md, "Roots and garbage
//! collection").
//!
//! Live, in the default mode: each root's output; the runtime references of every live output,
//! transitively; the build closure of every live output (its metadata's `deps` and `root`,
//! transitively, with their references); and the sources (`.pybake/sources/<hex>`) of every
//! live output. With `runtime_only`, only the first two: build-time dependencies and sources go.
//! Everything else under a store name goes, with its metadata, logs and lock: outputs no root
//! needs, outputs without valid metadata (left by a crash), metadata and logs without an
//! output. Entries the store does not name are left alone.
//!
//! Exclusion: `.pybake/gc.lock`. A realize holds it shared for its whole run
//! ([`Store::lock_for_realize`]), so everything its plan found valid stays until it has recorded
//! its roots; gc holds it exclusively ([`Store::lock_for_gc`]), so it never runs beside a
//! realize. On top of that, gc removes an output only while holding the output's own lock, and
//! leaves one whose lock someone holds (a build, an upload).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::TryLockError;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use fs_err::File;

use super::gc_roots::{remove_root_file, GcRoot};
use super::{files, io_at, orphans, Store, StoreError, StoreName};
use crate::hash::SourceHash;

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("a realize is running on the store {store} (it holds {lock} shared); gc never runs beside one\n  hint: run `pybake gc` again when it has finished, or without --no-wait to wait for it")]
    Busy { store: PathBuf, lock: PathBuf },
    #[error("{path} is not a GC root ({why}); gc stops rather than guess what it was meant to keep\n  hint: delete it, then realize again the recipe it was the root of")]
    BadRoot { path: PathBuf, why: String },
    #[error("{name:?} is not a recipe name (letters, digits and `-_.+`, not starting with `.`)")]
    BadRecipeName { name: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Held by a realize for its whole run: gc waits until it is dropped.
pub struct RealizeGuard {
    _file: File,
}

/// Held by gc: no realize runs meanwhile.
pub struct GcGuard {
    _file: File,
}

/// What a collection would remove.
#[derive(Debug, Default)]
pub struct GcPlan {
    /// The roots that hold, sorted.
    pub roots: Vec<GcRoot>,
    /// Roots whose project directory is gone: removed, and not counted as roots.
    pub stale_roots: Vec<GcRoot>,
    /// Dead outputs (complete or not), sorted by store name.
    pub outputs: Vec<Garbage>,
    /// Sources no live output was built from, sorted.
    pub sources: Vec<Garbage>,
    /// Metadata and logs of store names that have no output, sorted.
    pub other_files: Vec<Garbage>,
    /// Lock files of dead store names (empty; removed, not listed).
    pub locks: Vec<(StoreName, PathBuf)>,
    /// How many outputs and sources stay.
    pub live_outputs: usize,
    pub live_sources: usize,
}

/// One thing gc removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Garbage {
    /// What to show: an output's or source's path, or the file.
    pub path: PathBuf,
    /// Bytes freed: the apparent size of its files and symlinks (each inode once), with, for an
    /// output, its metadata and logs.
    pub size: u64,
    pub kind: GarbageKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GarbageKind {
    /// An output; `complete` is false for one without valid metadata.
    Output {
        name: StoreName,
        complete: bool,
    },
    Source(SourceHash),
    /// Metadata or a log of a store name without an output.
    File(StoreName),
}

impl GcPlan {
    /// Bytes the plan frees.
    pub fn size(&self) -> u64 {
        self.outputs
            .iter()
            .chain(&self.sources)
            .chain(&self.other_files)
            .map(|g| g.size)
            .sum()
    }
}

/// What a collection did.
#[derive(Debug, Default)]
pub struct GcReport {
    pub removed: Vec<Garbage>,
    /// Outputs left because someone holds their lock.
    pub in_use: Vec<StoreName>,
    /// Leftover temporaries removed ([`Store::remove_orphans`]).
    pub temporaries: usize,
    /// What could not be removed; the collection went on past it.
    pub errors: Vec<StoreError>,
}

impl GcReport {
    pub fn size(&self) -> u64 {
        self.removed.iter().map(|g| g.size).sum()
    }
}

/// Opens (creating) a lock file; read-only where the store is not writable, as flock works on
/// any open file and a realize of cached outputs needs no write access.
fn open_lock(path: &Path) -> Result<File, StoreError> {
    match files::open_lock_file(path) {
        Ok(f) => Ok(f),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            File::open(path).map_err(io_at(path))
        }
        Err(e) => Err(io_at(path)(e)),
    }
}

impl Store {
    fn gc_lock_path(&self) -> PathBuf {
        self.root.join(".pybake").join("gc.lock")
    }

    /// Takes `.pybake/gc.lock` shared, for a realize: blocks while a gc runs, calling `on_wait`
    /// first when it has to wait.
    pub fn lock_for_realize(&self, on_wait: impl FnOnce()) -> Result<RealizeGuard, StoreError> {
        let path = self.gc_lock_path();
        let file = open_lock(&path)?;
        match file.try_lock_shared() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                on_wait();
                file.lock_shared().map_err(io_at(&path))?;
            }
            Err(TryLockError::Error(e)) => return Err(io_at(&path)(e)),
        }
        Ok(RealizeGuard { _file: file })
    }

    /// Takes `.pybake/gc.lock` exclusively, for gc: while realizes run, waits for them (calling
    /// `on_wait` first), or with `wait` false fails with [`GcError::Busy`].
    pub fn lock_for_gc(&self, wait: bool, on_wait: impl FnOnce()) -> Result<GcGuard, GcError> {
        let path = self.gc_lock_path();
        let file = open_lock(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) if !wait => {
                return Err(GcError::Busy {
                    store: self.root.clone(),
                    lock: path,
                })
            }
            Err(TryLockError::WouldBlock) => {
                on_wait();
                file.lock().map_err(io_at(&path))?;
            }
            Err(TryLockError::Error(e)) => return Err(io_at(&path)(e).into()),
        }
        Ok(GcGuard { _file: file })
    }

    /// What a collection would remove now (see the module docs). Reads the store only.
    pub fn plan_gc(&self, _held: &GcGuard, runtime_only: bool) -> Result<GcPlan, GcError> {
        let mut plan = GcPlan::default();
        for root in self.gc_roots()? {
            if root.project_gone() {
                plan.stale_roots.push(root);
            } else {
                plan.roots.push(root);
            }
        }
        let (live, live_sources) = self.live(&plan.roots, runtime_only)?;

        let mut dead: BTreeSet<StoreName> = BTreeSet::new();
        for (name, path) in list_names(&self.root, |n| StoreName::parse(n).ok())? {
            let complete = self.is_valid(&name);
            if complete && live.contains(&name) {
                plan.live_outputs += 1;
                continue;
            }
            let mut size = tree_size(&path)?;
            for f in self.files_of(&name) {
                size += file_size(&f)?;
            }
            dead.insert(name.clone());
            plan.outputs.push(Garbage {
                path,
                size,
                kind: GarbageKind::Output { name, complete },
            });
        }
        // Metadata and logs whose output is gone (a failed build's log, a removed directory).
        for (sub, suffixes) in [
            ("meta", &[".json"][..]),
            ("logs", &[".log", ".log.check"][..]),
        ] {
            let by_name = |n: &str| {
                let stem = suffixes.iter().find_map(|s| n.strip_suffix(s))?;
                StoreName::parse(stem).ok()
            };
            for (name, path) in list_names(&self.internal(sub), by_name)? {
                if dead.contains(&name) || (live.contains(&name) && self.path(&name).exists()) {
                    continue;
                }
                plan.other_files.push(Garbage {
                    size: file_size(&path)?,
                    path,
                    kind: GarbageKind::File(name),
                });
            }
        }
        // Lock files of earlier versions (an output's lock is now its log).
        let lock_name = |n: &str| StoreName::parse(n.strip_suffix(".lock")?).ok();
        for (name, path) in list_names(&self.internal("locks"), lock_name)? {
            if !live.contains(&name) || !self.path(&name).exists() {
                plan.locks.push((name, path));
            }
        }
        let source_hash = |n: &str| {
            let h: SourceHash = n.parse().ok()?;
            (h.to_hex() == n).then_some(h)
        };
        for (hash, path) in list_names(&self.sources_dir(), source_hash)? {
            if live_sources.contains(&hash) {
                plan.live_sources += 1;
                continue;
            }
            plan.sources.push(Garbage {
                size: file_size(&path)?,
                path,
                kind: GarbageKind::Source(hash),
            });
        }
        Ok(plan)
    }

    /// Store names and sources the roots keep.
    fn live(
        &self,
        roots: &[GcRoot],
        runtime_only: bool,
    ) -> Result<(BTreeSet<StoreName>, BTreeSet<SourceHash>), GcError> {
        let mut live = BTreeSet::new();
        let mut sources = BTreeSet::new();
        let mut queue: VecDeque<StoreName> = roots.iter().map(|r| r.store_name.clone()).collect();
        while let Some(name) = queue.pop_front() {
            if !live.insert(name.clone()) {
                continue;
            }
            let meta = match self.read_meta(&name) {
                Ok(m) => m,
                // Not in the store, or without valid metadata (then removed as incomplete):
                // nothing to follow.
                Err(StoreError::BadMeta { .. }) => continue,
                Err(StoreError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                    continue
                }
                // Unreadable for another reason: what it needs is unknown, so stop.
                Err(e) => return Err(e.into()),
            };
            queue.extend(meta.references);
            if !runtime_only {
                queue.extend(meta.deps);
                queue.extend(meta.root);
                sources.extend(meta.sources);
            }
        }
        Ok((live, sources))
    }

    /// Metadata and logs of an output (and the derivation record older versions wrote
    /// beside the metadata).
    fn files_of(&self, name: &StoreName) -> [PathBuf; 4] {
        let log = self.log_path(name);
        let mut check = log.clone().into_os_string();
        check.push(".check");
        [self.meta_path(name), log, check.into(), self.drv_path(name)]
    }

    /// Removes what `plan` lists (made by [`Store::plan_gc`] under the same guard), then the
    /// leftover temporaries of killed processes. Calls `removed` after each removal. Never
    /// fails as a whole: what cannot be removed is in [`GcReport::errors`].
    pub fn collect_garbage(
        &self,
        _held: &GcGuard,
        plan: &GcPlan,
        mut removed: impl FnMut(&Garbage),
    ) -> GcReport {
        let mut report = GcReport::default();
        for root in &plan.stale_roots {
            if let Err(GcError::Store(e)) = remove_root_file(&root.file) {
                report.errors.push(e);
            }
        }
        for g in &plan.outputs {
            let GarbageKind::Output { name, .. } = &g.kind else {
                continue;
            };
            match self.remove_unless_locked(name) {
                Ok(true) => {
                    removed(g);
                    report.removed.push(g.clone());
                }
                Ok(false) => report.in_use.push(name.clone()),
                Err(e) => report.errors.push(e),
            }
        }
        for g in plan.sources.iter().chain(&plan.other_files) {
            // A log is also its output's lock: one someone holds (a `pybake shell` in a kept
            // build directory) stays.
            if g.path.extension().is_some_and(|e| e == "log") {
                match File::open(&g.path) {
                    Ok(f) if !orphans::try_lock(&f).unwrap_or(false) => continue,
                    _ => {}
                }
            }
            match fs_err::remove_file(&g.path) {
                Ok(()) => {
                    removed(g);
                    report.removed.push(g.clone());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => report.errors.push(io_at(&g.path)(e)),
            }
        }
        for (_, path) in &plan.locks {
            // A held lock is someone's: it stays. An output's removal above took its lock file.
            if let Err(e) = remove_lock_unless_held(path) {
                report.errors.push(e);
            }
        }
        if let Err(e) = self.compact_built_log() {
            report.errors.push(e);
        }
        // Entries name outputs that may be gone now; each is cheap to make again.
        let evals = self.evals_dir();
        match fs_err::remove_dir_all(&evals) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => report.errors.push(io_at(&evals)(e)),
        }
        let sweep = self.remove_orphans_thoroughly();
        report.temporaries = sweep.removed.len();
        report.errors.extend(sweep.errors);
        report
    }

    /// Removes an output, its metadata, logs and lock file while holding its lock. `false` if
    /// someone else holds the lock.
    fn remove_unless_locked(&self, name: &StoreName) -> Result<bool, StoreError> {
        let lock_path = self.lock_path(name);
        let lock = files::open_lock_file(&lock_path).map_err(io_at(&lock_path))?;
        if !orphans::try_lock(&lock).map_err(io_at(&lock_path))? {
            return Ok(false);
        }
        // Metadata first: an interrupted removal leaves an output without metadata, which is
        // invalid and removed by the next gc.
        self.remove(name)?;
        for f in self.files_of(name) {
            remove_file_if_exists(&f)?;
        }
        remove_file_if_exists(&lock_path)?;
        Ok(true)
    }
}

fn remove_file_if_exists(path: &Path) -> Result<(), StoreError> {
    match fs_err::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_at(path)(e)),
    }
}

/// Removes a lock file unless someone holds it (then it stays).
fn remove_lock_unless_held(path: &Path) -> Result<(), StoreError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_at(path)(e)),
    };
    if orphans::try_lock(&file).map_err(io_at(path))? {
        remove_file_if_exists(path)?;
    }
    Ok(())
}

/// The entries of `dir` whose names `key` recognises, sorted by key; a missing directory is
/// empty. Names that are not UTF-8 are never the store's.
fn list_names<K: Ord>(
    dir: &Path,
    key: impl Fn(&str) -> Option<K>,
) -> Result<Vec<(K, PathBuf)>, StoreError> {
    let entries = match fs_err::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_at(dir)(e)),
    };
    let mut out = BTreeMap::new();
    for e in entries {
        let e = e.map_err(io_at(dir))?;
        if let Some(k) = e.file_name().to_str().and_then(&key) {
            out.insert(k, e.path());
        }
    }
    Ok(out.into_iter().collect())
}

/// Apparent size of a file, or 0 if it does not exist.
fn file_size(path: &Path) -> Result<u64, StoreError> {
    match fs_err::symlink_metadata(path) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_at(path)(e)),
    }
}

/// Apparent size of the files and symlinks below `root` (itself included), each inode once.
fn tree_size(root: &Path) -> Result<u64, StoreError> {
    let mut seen = BTreeSet::new();
    let mut size = 0;
    for e in walkdir::WalkDir::new(root).follow_links(false) {
        let e = e.map_err(|e| StoreError::Io {
            path: e.path().unwrap_or(root).to_path_buf(),
            source: e
                .into_io_error()
                .unwrap_or_else(|| io::Error::other("walk failed")),
        })?;
        if e.file_type().is_dir() {
            continue;
        }
        let m = e.metadata().map_err(|err| StoreError::Io {
            path: e.path().to_path_buf(),
            source: err.into(),
        })?;
        if seen.insert((m.dev(), m.ino())) {
            size += m.len();
        }
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use super::*;
    use crate::hash::{DrvHash, OutputHash};
    use crate::store::Meta;

    /// Inserts an output `name` with a 10-byte file, and the given metadata fields.
    fn output(store: &Store, name: &str, edit: impl FnOnce(&mut Meta)) -> StoreName {
        let n = StoreName::new(&DrvHash::of(name.as_bytes()), name, "1");
        let tmp = store.fresh_tmp(&n).unwrap();
        let built = tmp.path().join("out");
        std::fs::create_dir_all(&built).unwrap();
        std::fs::write(built.join("f"), "0123456789").unwrap();
        let mut meta = Meta::new(&n, DrvHash::of(name.as_bytes()), OutputHash::of(b"o"));
        edit(&mut meta);
        store.insert(&built, &n, &meta).unwrap();
        std::fs::write(store.log_path(&n), "log\n").unwrap();
        n
    }

    fn source(store: &Store, text: &str) -> SourceHash {
        let h = SourceHash::of(text.as_bytes());
        std::fs::write(store.sources_dir().join(h.to_hex()), text).unwrap();
        h
    }

    fn names(g: &[Garbage]) -> Vec<String> {
        g.iter()
            .map(|g| g.path.file_name().unwrap().to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn keeps_the_build_closure_or_only_the_runtime_closure() {
        let t = tempfile::tempdir().unwrap();
        let project = t.path().join("recipes");
        std::fs::create_dir_all(&project).unwrap();
        let store = Store::open(&t.path().join("store")).unwrap();
        let src = source(&store, "src");
        let dead_src = source(&store, "dead");
        let base = output(&store, "base", |_| {});
        let run = output(&store, "run", |_| {});
        let tool = output(&store, "tool", |m| m.references = vec![]);
        let app = output(&store, "app", |m| {
            m.references = vec![run.clone()];
            m.deps = vec![run.clone(), tool.clone()];
            m.root = Some(base.clone());
            m.sources = vec![src];
        });
        let old = output(&store, "old", |m| m.sources = vec![dead_src]);
        store.add_gc_root(&project, "app", &app).unwrap();

        let guard = store.lock_for_gc(false, || {}).unwrap();
        let plan = store.plan_gc(&guard, false).unwrap();
        assert_eq!(names(&plan.outputs), [old.to_string()]);
        assert_eq!(names(&plan.sources), [dead_src.to_hex()]);
        assert_eq!((plan.live_outputs, plan.live_sources), (4, 1));
        // 10 bytes of file, plus metadata and the 4-byte log.
        let meta_len = std::fs::metadata(store.meta_path(&old)).unwrap().len();
        assert_eq!(plan.outputs[0].size, 10 + meta_len + 4);

        let plan = store.plan_gc(&guard, true).unwrap();
        let mut expected = vec![base.to_string(), old.to_string(), tool.to_string()];
        expected.sort();
        assert_eq!(names(&plan.outputs), expected);
        assert_eq!(plan.sources.len(), 2);

        let report = store.collect_garbage(&guard, &plan, |_| {});
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(report.removed.len(), 5);
        assert!(store.is_valid(&app) && store.is_valid(&run));
        for gone in [&base, &tool, &old] {
            assert!(!store.path(gone).exists());
            assert!(!store.meta_path(gone).exists() && !store.log_path(gone).exists());
            assert!(!store.lock_path(gone).exists());
        }
    }

    #[test]
    fn incomplete_outputs_and_stray_files_go_locked_outputs_stay() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path()).unwrap();
        let held = output(&store, "held", |_| {});
        let _lock = store.lock(&held).unwrap();
        let crashed = StoreName::new(&DrvHash::of(b"c"), "crashed", "1");
        std::fs::create_dir(store.path(&crashed)).unwrap();
        let failed = StoreName::new(&DrvHash::of(b"f"), "failed", "1");
        std::fs::write(store.log_path(&failed), "failed build\n").unwrap();
        std::fs::write(t.path().join("README"), "not the store's").unwrap();

        let guard = store.lock_for_gc(false, || {}).unwrap();
        let plan = store.plan_gc(&guard, false).unwrap();
        assert!(plan.outputs.iter().any(|g| g.kind
            == GarbageKind::Output {
                name: crashed.clone(),
                complete: false
            }));
        assert_eq!(names(&plan.other_files), [format!("{failed}.log")]);
        let report = store.collect_garbage(&guard, &plan, |_| {});
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(report.in_use, std::slice::from_ref(&held));
        assert!(store.is_valid(&held), "its lock is held");
        assert!(!store.path(&crashed).exists());
        assert!(!store.log_path(&failed).exists());
        assert!(t.path().join("README").exists());
    }

    #[test]
    fn gc_and_realize_exclude_each_other() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path()).unwrap();
        let realize = store.lock_for_realize(|| panic!("no gc runs")).unwrap();
        let other = store.lock_for_realize(|| panic!("realizes share")).unwrap();
        assert!(matches!(
            store.lock_for_gc(false, || {}),
            Err(GcError::Busy { .. })
        ));
        drop((realize, other));
        let gc = store.lock_for_gc(false, || {}).unwrap();
        let waited = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let h = s.spawn(|| {
                store
                    .lock_for_realize(|| waited.store(true, std::sync::atomic::Ordering::SeqCst))
                    .unwrap()
            });
            while !waited.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::yield_now();
            }
            drop(gc);
            h.join().unwrap();
        });
    }
}
