//! Files and directories of the store: their modes, atomic writes, read-only outputs.
//!
//! Modes are set explicitly, never left to the umask or to `tempfile` (which creates 0600
//! files), so that a store written by one user is readable by every other:
//! - the store's own directories (the root when pybake creates it, `.pybake/*`): 0755;
//! - metadata, logs and files written with [`write_atomic`]: 0644;
//! - outputs: files 0444, executables 0555, directories 0555 ([`make_read_only`]).

use std::collections::BTreeMap;
use std::fs::{File, Permissions};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{io_at, StoreError};
use crate::atomic::{self, Publish};

/// Mode of metadata, logs and other files pybake writes that are not outputs.
const FILE_MODE: u32 = Publish::READABLE.mode;
/// Mode of the store's own directories.
const DIR_MODE: u32 = 0o755;

/// Creates the directory `path` with mode 0755 unless it exists (its parent must exist). The
/// mode of an existing directory is left as its owner set it.
pub(super) fn create_dir(path: &Path) -> io::Result<()> {
    match fs_err::create_dir(path) {
        Ok(()) => fs_err::set_permissions(path, Permissions::from_mode(DIR_MODE)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Opens the lock file `path` for writing, creating it (empty, readable by everyone: an
/// output's lock is its build log) if missing, never truncating it.
pub(super) fn open_lock_file(path: &Path) -> io::Result<fs_err::File> {
    let file = fs_err::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    if file.metadata()?.permissions().mode() & 0o777 != FILE_MODE {
        file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    }
    Ok(file)
}

/// Creates (or truncates) `path` for writing, readable by everyone (0644) whatever the umask.
/// A std `File`, as a build's log becomes its steps' stdout and stderr.
pub fn create_readable(path: &Path) -> io::Result<File> {
    let file = fs_err::File::create(path)?;
    file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    Ok(file.into_file())
}

/// Writes `bytes` to `path` (mode 0644) through a temporary file in the same directory and a
/// rename ([`crate::atomic::write`]): readers never see a partial file, and a temporary left by a
/// killed process is known stale (see [`super::Store::remove_orphans`]). There is no fsync:
/// after a power loss the file may be empty, which readers treat as absent (see
/// [`super::Store::is_valid`]); an fsync per output cost a third of the time of a graph of small
/// builds.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    atomic::write(path, bytes, Publish::READABLE).map_err(io_at(path))
}

impl super::Store {
    /// [`write_atomic`] for a file of the store's own (metadata, records, GC roots), with the
    /// temporary in `.pybake/tmp`: a realize then looks for leftovers there only, not in
    /// directories with an entry per output.
    pub(crate) fn write_internal(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let tmp = self.tmp_dir();
        let mut file = atomic::locked_temp_file(&tmp, atomic::TEMP_PREFIX).map_err(io_at(&tmp))?;
        std::io::Write::write_all(&mut file, bytes).map_err(io_at(&tmp))?;
        atomic::commit(file, path, Publish::READABLE).map_err(io_at(path))
    }

    /// Writes the evaluation cache entry `key` (see `crate::eval_cache`).
    pub(crate) fn write_eval_entry(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let dir = self.evals_dir();
        create_dir(&dir).map_err(io_at(&dir))?;
        self.write_internal(&dir.join(key), bytes)
    }
}

/// Files become 0444 (0555 if executable), directories 0555. Symlinks are left alone.
pub fn make_read_only(root: &Path) -> Result<(), StoreError> {
    set_modes(root, |is_dir, mode| {
        if is_dir || mode & 0o100 != 0 {
            0o555
        } else {
            0o444
        }
    })
}

fn walk_err(root: &Path) -> impl FnOnce(walkdir::Error) -> StoreError + '_ {
    move |e| StoreError::Io {
        path: e.path().unwrap_or(root).to_path_buf(),
        source: e
            .into_io_error()
            .unwrap_or_else(|| io::Error::other("walk failed")),
    }
}

fn set_modes(root: &Path, mode_for: impl Fn(bool, u32) -> u32) -> Result<(), StoreError> {
    // Children first, so a directory is made read-only only after its contents.
    for e in walkdir::WalkDir::new(root).contents_first(true) {
        let e = e.map_err(walk_err(root))?;
        let ft = e.file_type();
        if ft.is_symlink() {
            continue;
        }
        let meta = e.metadata().map_err(|err| StoreError::Io {
            path: e.path().to_path_buf(),
            source: err.into(),
        })?;
        let mode = mode_for(ft.is_dir(), meta.permissions().mode());
        fs_err::set_permissions(e.path(), Permissions::from_mode(mode)).map_err(io_at(e.path()))?;
    }
    Ok(())
}

/// Replaces each regular file below `root` that is also linked from outside `root` by a copy
/// with the same contents and mode, so that the output shares no inode with the host: making it
/// read-only must not change a host file's mode, and editing a host file must not change the
/// store. Files linked only to each other inside `root` stay linked (to the copy, when one of
/// them is also linked from outside). Returns the paths replaced.
pub fn unshare_hard_links(root: &Path) -> Result<Vec<PathBuf>, StoreError> {
    // (device, inode) -> (link count, paths inside root); sorted walk for a deterministic order.
    let mut linked: BTreeMap<(u64, u64), (u64, Vec<PathBuf>)> = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.map_err(walk_err(root))?;
        if !e.file_type().is_file() {
            continue;
        }
        let meta = e.metadata().map_err(|err| StoreError::Io {
            path: e.path().to_path_buf(),
            source: err.into(),
        })?;
        if meta.nlink() > 1 {
            linked
                .entry((meta.dev(), meta.ino()))
                .or_insert_with(|| (meta.nlink(), Vec::new()))
                .1
                .push(e.into_path());
        }
    }
    let mut replaced = Vec::new();
    for (nlink, paths) in linked.into_values() {
        if nlink <= paths.len() as u64 {
            continue;
        }
        let (first, rest) = paths.split_first().expect("a group has at least one path");
        replace_with_copy(first)?;
        for other in rest {
            replace_with_link(first, other)?;
        }
        replaced.extend(paths);
    }
    Ok(replaced)
}

/// Name prefix of the temporaries that replace a hard-linked file.
const UNLINK_PREFIX: &str = ".pybake-unlink-";

fn replace_with_copy(path: &Path) -> Result<(), StoreError> {
    let mode = fs_err::symlink_metadata(path)
        .map_err(io_at(path))?
        .permissions()
        .mode();
    let how = Publish::READABLE.with_mode(mode & 0o777);
    with_writable_dir(parent(path), || {
        atomic::write_with(path, UNLINK_PREFIX, how, |to| {
            let mut from = fs_err::File::open(path)?;
            // std's files, for which io::copy copies in the kernel (copy_file_range).
            io::copy(from.file_mut(), to.file_mut()).map(drop)
        })
    })
    .map_err(io_at(path))
}

/// Links `path` to `original` in its place: a new link under a temporary name, renamed over it.
fn replace_with_link(original: &Path, path: &Path) -> Result<(), StoreError> {
    let dir = parent(path);
    with_writable_dir(dir, || {
        let tmp = tempfile::Builder::new()
            .prefix(UNLINK_PREFIX)
            .make_in(dir, |tmp| fs_err::hard_link(original, tmp))?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    })
    .map_err(io_at(path))
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// Runs `f` with `dir` writable by its owner, restoring its mode afterwards (a step may have
/// made its output's directories read-only already).
fn with_writable_dir<T>(dir: &Path, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let mode = fs_err::metadata(dir)?.permissions().mode();
    if mode & 0o200 != 0 {
        return f();
    }
    fs_err::set_permissions(dir, Permissions::from_mode(mode | 0o200))?;
    let result = f();
    fs_err::set_permissions(dir, Permissions::from_mode(mode))?;
    result
}

/// Removes a tree that may contain read-only directories.
pub fn remove_tree(path: &Path) -> Result<(), StoreError> {
    let meta = match fs_err::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_at(path)(e)),
    };
    if meta.is_dir() {
        for e in walkdir::WalkDir::new(path).into_iter().flatten() {
            if e.file_type().is_dir() {
                let _ = fs_err::set_permissions(e.path(), Permissions::from_mode(0o755));
            }
        }
        fs_err::remove_dir_all(path).map_err(io_at(path))
    } else {
        fs_err::remove_file(path).map_err(io_at(path))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn write_atomic_makes_a_0644_file_whatever_tempfile_does() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("x.json");
        write_atomic(&p, b"{}").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"{}");
        assert_eq!(mode(&p), 0o644);
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
    }

    #[test]
    fn hard_links_from_outside_are_copied_links_inside_kept() {
        let t = tempfile::tempdir().unwrap();
        let host = t.path().join("host");
        std::fs::write(&host, "host\n").unwrap();
        std::fs::set_permissions(&host, Permissions::from_mode(0o751)).unwrap();
        let out = t.path().join("out");
        std::fs::create_dir_all(out.join("ro")).unwrap();
        std::fs::hard_link(&host, out.join("a")).unwrap();
        std::fs::hard_link(&host, out.join("ro/b")).unwrap();
        std::fs::write(out.join("own"), "own\n").unwrap();
        std::fs::hard_link(out.join("own"), out.join("ro/own")).unwrap();
        std::fs::set_permissions(out.join("ro"), Permissions::from_mode(0o555)).unwrap();

        let replaced = unshare_hard_links(&out).unwrap();
        assert_eq!(replaced, [out.join("a"), out.join("ro/b")]);
        let meta = |p: &Path| std::fs::metadata(p).unwrap();
        assert_eq!(meta(&host).nlink(), 1);
        assert_eq!(mode(&host), 0o751);
        assert_eq!(meta(&out.join("a")).ino(), meta(&out.join("ro/b")).ino());
        assert_eq!(meta(&out.join("a")).nlink(), 2);
        assert_eq!(mode(&out.join("a")), 0o751);
        assert_eq!(std::fs::read_to_string(out.join("ro/b")).unwrap(), "host\n");
        assert_eq!(
            meta(&out.join("own")).ino(),
            meta(&out.join("ro/own")).ino()
        );
        assert_eq!(
            mode(&out.join("ro")),
            0o555,
            "the directory's mode is restored"
        );
        assert!(unshare_hard_links(&out).unwrap().is_empty());
    }
}
