//! Temporaries left behind by killed processes, and how a live one is told from a dead one.
//!
//! Every temporary pybake makes in the store is covered by a lock (`flock`) that its user holds
//! for as long as it uses it:
//! - `.pybake/tmp/<store name>.XXXXXX/`, an output being substituted, or a build directory kept
//!   by `--keep-failed`: the output lock (a `flock` on its build log
//!   `.pybake/logs/<store name>.log`), held while it is used;
//! - `.pybake/tmp/fetch-*`, `.pybake/tmp/import-*`, `.pybake/tmp/push-*` (downloads, imports and
//!   archives being pushed) and
//!   `.pybake/tmp/.tmp*` (metadata, a derivation record or a GC root being written,
//!   [`Store::write_internal`]): a lock on the file itself, taken right after creating it
//!   ([`crate::atomic::locked_temp_file`], which every atomic write uses);
//! - `.pybake/tmp/shell-XXXXXX/`, the build directory of a `pybake shell` ([`ShellDir`]), and
//!   `.pybake/tmp/slot-XXXXXX/`, a build directory a realize reuses ([`super::BuildSlot`]): a
//!   lock on the directory itself, held while the shell or the realize runs.
//!
//! The kernel drops a process's locks when it dies, however it dies. So a temporary whose lock
//! can be taken belongs to nobody alive, and [`Store::remove_orphans`] removes it, holding the
//! lock meanwhile so nobody can start using it. A build directory kept on request
//! (`--keep-failed`, marked by [`KEPT_MARKER`]) is not an orphan; the next build of the same
//! output removes it, as it removes any directory of an earlier build of that output. Entries
//! that none of these patterns name are left alone.

use std::fs::TryLockError;
use std::io;
use std::path::{Path, PathBuf};

use fs_err::File;

use super::slots::SLOT_PREFIX;
use super::{files, io_at, remove_tree, Store, StoreError, StoreName};
use crate::atomic::{names, TEMP_PREFIX};

/// Name prefixes of download and import temporaries in `.pybake/tmp` (see `fetch/store.rs`).
const WRITER_PREFIXES: [&str; 3] = ["fetch-", "import-", "push-"];
/// A file in a build directory that `--keep-failed` kept for the user.
pub(super) const KEPT_MARKER: &str = "KEPT-BY-PYBAKE";
/// Name prefix of `pybake shell`'s build directories in `.pybake/tmp`.
const SHELL_PREFIX: &str = "shell-";
/// Directories under `.pybake` where earlier builds of pybake left the temporaries of atomic
/// writes (now in `.pybake/tmp`, see [`Store::write_internal`]); only `pybake gc` lists them,
/// so that a realize does not list a directory with an entry per output.
const OLD_ATOMIC_DIRS: [&str; 4] = ["meta", "gcroots", "drv", "last"];

/// What [`Store::remove_orphans`] did.
#[derive(Debug, Default)]
pub struct Sweep {
    /// The temporaries removed.
    pub removed: Vec<PathBuf>,
    /// Temporaries that could not be examined or removed; the sweep went on past them.
    pub errors: Vec<StoreError>,
}

impl Store {
    /// Removes the temporaries that no live process holds: build directories of builds that
    /// were killed, partial downloads and imports, metadata and GC root temporaries (see the
    /// module docs). Costs one directory listing of `.pybake/tmp` when there is nothing to
    /// remove. Never fails as a whole: what cannot be removed is reported in [`Sweep::errors`].
    pub fn remove_orphans(&self) -> Sweep {
        let mut sweep = Sweep::default();
        for (name, path, is_dir) in list(&self.tmp_dir(), &mut sweep) {
            let removed = match build_dir_owner(&name) {
                _ if is_dir
                    && (name.starts_with(SHELL_PREFIX) || name.starts_with(SLOT_PREFIX)) =>
                {
                    remove_dir_unless_locked(&path)
                }
                Some(owner) if is_dir => self.remove_build_dir(&owner, &path),
                _ if !is_dir
                    && (WRITER_PREFIXES.iter().any(|p| name.starts_with(p))
                        || name.starts_with(TEMP_PREFIX)) =>
                {
                    remove_unless_locked(&path)
                }
                _ => Ok(false),
            };
            sweep.record(removed, path);
        }
        sweep
    }

    /// [`Store::remove_orphans`], and the temporaries of atomic writes that older versions
    /// left beside their files (`pybake gc`).
    pub fn remove_orphans_thoroughly(&self) -> Sweep {
        let mut sweep = self.remove_orphans();
        for dir in OLD_ATOMIC_DIRS {
            for (name, path, is_dir) in list(&self.internal(dir), &mut sweep) {
                if !is_dir && name.starts_with(TEMP_PREFIX) {
                    let removed = remove_unless_locked(&path);
                    sweep.record(removed, path);
                }
            }
        }
        sweep
    }

    /// A fresh build directory for `pybake shell`, locked until dropped.
    pub fn shell_dir(&self) -> Result<ShellDir, StoreError> {
        let (path, lock) = self.locked_temp_dir(SHELL_PREFIX)?;
        Ok(ShellDir {
            path,
            _lock: lock,
            keep: false,
        })
    }

    /// A new directory `.pybake/tmp/<prefix>XXXXXX` and an exclusive lock on it, which tells
    /// [`Store::remove_orphans`] it is in use. The caller removes it (`TempDir` could not
    /// remove the read-only trees builds leave).
    pub(super) fn locked_temp_dir(&self, prefix: &str) -> Result<(PathBuf, File), StoreError> {
        let tmp = self.tmp_dir();
        loop {
            let path = tempfile::Builder::new()
                .prefix(prefix)
                .tempdir_in(&tmp)
                .map_err(io_at(&tmp))?
                .keep();
            let lock = match File::open(&path) {
                Ok(f) => f,
                // Taken for an orphan before we could lock it: start over under a new name.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_at(&path)(e)),
            };
            lock.lock().map_err(io_at(&path))?;
            if names(&path, lock.file()).map_err(io_at(&path))? {
                return Ok((path, lock));
            }
        }
    }

    /// If `dir` is a build directory of this store kept by `--keep-failed`: its path, resolved,
    /// and the output it was building.
    pub fn kept_build_dir(&self, dir: &Path) -> Option<(PathBuf, StoreName)> {
        let dir = fs_err::canonicalize(dir).ok()?;
        if dir.parent()? != self.tmp_dir() || !dir.join(KEPT_MARKER).is_file() {
            return None;
        }
        let owner = build_dir_owner(dir.file_name()?.to_str()?)?;
        Some((dir, owner))
    }

    /// Removes the build directory `path` of `owner` if nobody holds the output's lock and it
    /// was not kept on request. Whether it was removed.
    fn remove_build_dir(&self, owner: &StoreName, path: &Path) -> Result<bool, StoreError> {
        if path.join(KEPT_MARKER).exists() {
            return Ok(false);
        }
        let lock_path = self.lock_path(owner);
        let lock = match File::open(&lock_path) {
            Ok(f) => f,
            // No lock file: nothing was ever built under this name by this store's pybake,
            // or the lock file was deleted; create it so that we can hold it while removing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                files::open_lock_file(&lock_path).map_err(io_at(&lock_path))?
            }
            Err(e) => return Err(io_at(&lock_path)(e)),
        };
        if !try_lock(&lock).map_err(io_at(&lock_path))? {
            return Ok(false);
        }
        remove_tree(path)?;
        Ok(true)
    }

    /// Marks a directory as a build directory kept for the user, as [`Store::keep_slot`]
    /// does (for tests of the sweep).
    #[cfg(test)]
    pub(crate) fn keep_tmp(&self, tmp: tempfile::TempDir) -> PathBuf {
        let path = tmp.keep();
        let _ = fs_err::write(path.join(KEPT_MARKER), "kept by pybake --keep-failed\n");
        path
    }
}

impl Sweep {
    fn record(&mut self, result: Result<bool, StoreError>, path: PathBuf) {
        match result {
            Ok(true) => self.removed.push(path),
            Ok(false) => {}
            Err(e) => self.errors.push(e),
        }
    }
}

/// `(file name, path, is a directory)` of each entry of `dir`; a missing directory is empty.
fn list(dir: &Path, sweep: &mut Sweep) -> Vec<(String, PathBuf, bool)> {
    let entries = match fs_err::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            sweep.errors.push(io_at(dir)(e));
            return Vec::new();
        }
    };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            let is_dir = e.file_type().ok()?.is_dir();
            Some((name, e.path(), is_dir))
        })
        .collect()
}

/// The build directory of a `pybake shell`, removed when dropped unless kept. While it exists,
/// the directory's own lock tells [`Store::remove_orphans`] that it is in use.
pub struct ShellDir {
    path: PathBuf,
    _lock: File,
    keep: bool,
}

impl ShellDir {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the directory after the shell, as `--keep-failed` keeps a failed build's.
    pub fn keep(&mut self) {
        self.keep = true;
        let _ = fs_err::write(self.path.join(KEPT_MARKER), "kept by pybake shell --keep\n");
    }
}

impl Drop for ShellDir {
    fn drop(&mut self) {
        if !self.keep {
            // Removed while the lock is still held (fields drop after this).
            let _ = remove_tree(&self.path);
        }
    }
}

/// Removes the directory `path` if nobody holds its lock and it was not kept. Whether it was
/// removed.
fn remove_dir_unless_locked(path: &Path) -> Result<bool, StoreError> {
    if path.join(KEPT_MARKER).exists() {
        return Ok(false);
    }
    let dir = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_at(path)(e)),
    };
    if !try_lock(&dir).map_err(io_at(path))? || !names(path, dir.file()).map_err(io_at(path))? {
        return Ok(false);
    }
    remove_tree(path)?;
    Ok(true)
}

/// The output a build directory named `<store name>.XXXXXX` belongs to.
fn build_dir_owner(name: &str) -> Option<StoreName> {
    let (store_name, suffix) = name.rsplit_once('.')?;
    if suffix.is_empty() {
        return None;
    }
    StoreName::parse(store_name).ok()
}

/// Removes the temporary file `path` if its lock is free (its writer is gone). Whether it
/// was removed.
fn remove_unless_locked(path: &Path) -> Result<bool, StoreError> {
    let file = match File::open(path) {
        Ok(f) => f,
        // Renamed into place or removed by its writer meanwhile.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_at(path)(e)),
    };
    if !try_lock(&file).map_err(io_at(path))? || !names(path, file.file()).map_err(io_at(path))? {
        return Ok(false);
    }
    match fs_err::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_at(path)(e)),
    }
}

/// Takes an exclusive lock without waiting: `false` if someone else holds it.
pub(super) fn try_lock(file: &File) -> io::Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use super::*;
    use crate::atomic::locked_temp_file;
    use crate::hash::DrvHash;

    #[test]
    fn build_dir_names_are_recognised() {
        let name = StoreName::new(&DrvHash::of(b"x"), "python", "3.13.1");
        assert_eq!(build_dir_owner(&format!("{name}.Ab12Cd")), Some(name));
        assert_eq!(build_dir_owner("fetch-Ab12Cd"), None);
        assert_eq!(build_dir_owner("notes.txt"), None);
    }

    #[test]
    fn sweep_removes_what_nobody_holds_and_keeps_the_rest() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path()).unwrap();
        let (tmp, meta) = (store.tmp_dir(), store.internal("meta"));
        let dead = StoreName::new(&DrvHash::of(b"dead"), "dead", "1");
        let live = StoreName::new(&DrvHash::of(b"live"), "live", "1");
        let kept = StoreName::new(&DrvHash::of(b"kept"), "kept", "1");

        let dead_dir = store.fresh_tmp(&dead).unwrap().keep();
        std::fs::create_dir_all(dead_dir.join("build/ro")).unwrap();
        crate::store::make_read_only(&dead_dir.join("build")).unwrap();
        let _live_lock = store.lock(&live).unwrap();
        let live_dir = store.fresh_tmp(&live).unwrap();
        let kept_dir = store.keep_tmp(store.fresh_tmp(&kept).unwrap());
        let stale_fetch = tmp.join("fetch-dead00");
        std::fs::write(&stale_fetch, "partial").unwrap();
        let live_fetch = locked_temp_file(&tmp, "fetch-").unwrap();
        let stale_meta = meta.join(".tmpdead00");
        std::fs::write(&stale_meta, "{").unwrap();
        let live_meta = locked_temp_file(&meta, TEMP_PREFIX).unwrap();
        let other = tmp.join("something-else");
        std::fs::write(&other, "").unwrap();
        // Where versions before records moved into the metadata wrote them.
        std::fs::create_dir_all(store.internal("drv")).unwrap();
        let stale_drv = store.internal("drv").join(".tmpdead01");
        std::fs::write(&stale_drv, "{").unwrap();
        let stale_atomic = tmp.join(".tmpdead02");
        std::fs::write(&stale_atomic, "{").unwrap();
        let live_atomic = locked_temp_file(&tmp, TEMP_PREFIX).unwrap();
        let dead_slot = tmp.join("slot-dead04");
        std::fs::create_dir_all(dead_slot.join("build/src")).unwrap();
        let live_slot = store.build_slot().unwrap();
        let dead_shell = tmp.join("shell-dead03");
        std::fs::create_dir_all(dead_shell.join("build/ro")).unwrap();
        crate::store::make_read_only(&dead_shell.join("build")).unwrap();
        let live_shell = store.shell_dir().unwrap();
        let mut kept_shell = store.shell_dir().unwrap();
        kept_shell.keep();
        let kept_shell = kept_shell.path().to_path_buf();

        // A realize lists .pybake/tmp only; gc also where older versions left temporaries.
        let sweep = store.remove_orphans();
        assert!(sweep.errors.is_empty(), "{:?}", sweep.errors);
        let mut removed = sweep.removed;
        removed.sort();
        let mut expected = vec![dead_dir, stale_fetch, stale_atomic, dead_slot, dead_shell];
        expected.sort();
        assert_eq!(removed, expected);
        let mut removed = store.remove_orphans_thoroughly().removed;
        removed.sort();
        assert_eq!(removed, vec![stale_drv, stale_meta]);
        for p in [
            live_shell.path(),
            &kept_shell,
            live_dir.path(),
            &kept_dir,
            live_fetch.path(),
            live_meta.path(),
            live_atomic.path(),
            live_slot.path(),
            &other,
        ] {
            assert!(p.exists(), "{p:?}");
        }
        assert!(store.remove_orphans_thoroughly().removed.is_empty());
        let live_shell_path = live_shell.path().to_path_buf();
        drop(live_shell);
        assert!(
            !live_shell_path.exists(),
            "a shell's directory goes with it"
        );
    }

    #[test]
    fn only_kept_build_directories_of_this_store_are_recognised() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path()).unwrap();
        let name = StoreName::new(&DrvHash::of(b"x"), "bad", "1");
        let kept = store.keep_tmp(store.fresh_tmp(&name).unwrap());
        assert_eq!(
            store.kept_build_dir(&kept),
            Some((kept.clone(), name.clone()))
        );
        let not_kept = store.fresh_tmp(&name).unwrap();
        assert_eq!(store.kept_build_dir(not_kept.path()), None);
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(elsewhere.path().join(KEPT_MARKER), "").unwrap();
        assert_eq!(store.kept_build_dir(elsewhere.path()), None);
        assert_eq!(store.kept_build_dir(&store.tmp_dir()), None);
    }
}
