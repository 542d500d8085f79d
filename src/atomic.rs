//! Atomic file writes: the one way pybake replaces a file that someone may be reading.
//!
//! A file MUST be written to a temporary file on the same filesystem as its destination and
//! renamed over it only once complete, so that a reader sees the old file or the whole new
//! one, never a part. The temporary:
//! - is created in the destination's directory ([`write()`], [`write_with`]) or in another
//!   directory of the same filesystem ([`commit`] of a [`locked_temp_file`]);
//! - is locked (`flock`, exclusive) from right after its creation until it is renamed or
//!   removed, so that `Store::remove_orphans` tells a live writer's temporary from one a killed
//!   process left behind (see `store/orphans.rs`);
//! - gets its mode explicitly ([`Publish::mode`]), never the umask's or `tempfile`'s (0600), so
//!   that a store written by one user is readable by every other;
//! - is synced before the rename, and the directory after it, only when [`Publish::sync`] says
//!   so: an fsync per small file costs a third of the time of a graph of small builds, so files
//!   that can be written again (metadata, records) are not synced, and readers treat an empty
//!   one, what a power loss can leave, as absent.
//!
//! Every error names the file it is about (through `fs-err`). This module sits at the bottom of
//! the data flow: the store, the lockfile, fetching, the build and the caches use it, and it
//! uses none of them. The one atomic write outside it is a put to a directory cache
//! (`cache/file.rs`): it follows the same steps through directory descriptors (`openat`,
//! `renameat`), because it must follow no symlink anywhere below the cache's root, which a
//! write by path cannot promise.

use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use fs_err::File;
use tempfile::{NamedTempFile, TempPath};

/// Name prefix of the temporaries of [`write()`] (`tempfile`'s default, which earlier versions of
/// pybake used, so that their leftovers are recognised too).
pub const TEMP_PREFIX: &str = ".tmp";

/// How a complete temporary file becomes the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Publish {
    /// Permission bits of the file.
    pub mode: u32,
    /// Whether the file is synced to disk before the rename and its directory after it, so that
    /// the file survives a power loss whole once the write returns.
    pub sync: bool,
}

impl Publish {
    /// Readable by everyone (0644), not synced: metadata, records, the lockfile.
    pub const READABLE: Publish = Publish {
        mode: 0o644,
        sync: false,
    };

    /// Read-only (0444) and synced: a file that is never written again, such as a verified
    /// source.
    pub const FINAL: Publish = Publish {
        mode: 0o444,
        sync: true,
    };

    /// The same, with permission bits `mode`.
    pub fn with_mode(self, mode: u32) -> Publish {
        Publish { mode, ..self }
    }
}

/// Writes `bytes` to `dest` through a temporary in its directory and a rename.
pub fn write(dest: &Path, bytes: &[u8], how: Publish) -> io::Result<()> {
    write_with(dest, TEMP_PREFIX, how, |file| file.write_all(bytes))
}

/// Writes to `dest` what `fill` writes to a temporary (named `<prefix>…`, in `dest`'s
/// directory), then renames it over `dest`. If `fill` fails, the temporary is removed and
/// `dest` is left as it was.
pub fn write_with(
    dest: &Path,
    prefix: &str,
    how: Publish,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let (file, path) = locked_temp_file(dir, prefix)?.into_parts();
    let mut file = File::from_parts(file, &path);
    fill(&mut file)?;
    publish(file, path, dest, how)
}

/// Makes the complete temporary `tmp` (from [`locked_temp_file`], on `dest`'s filesystem) the
/// file `dest`.
pub fn commit(tmp: NamedTempFile, dest: &Path, how: Publish) -> io::Result<()> {
    let (file, path) = tmp.into_parts();
    publish(File::from_parts(file, &path), path, dest, how)
}

fn publish(file: File, mut path: TempPath, dest: &Path, how: Publish) -> io::Result<()> {
    file.set_permissions(std::fs::Permissions::from_mode(how.mode))?;
    if how.sync {
        file.sync_all()?;
    }
    // Renamed while still open, so the lock covers the temporary until it has its final name.
    fs_err::rename(&path, dest)?;
    // The temporary's name is gone; dropping `path` must not remove whatever takes it next.
    path.disable_cleanup(true);
    drop(file);
    if how.sync {
        let dir = match dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// A new temporary file in `dir` whose name starts with `prefix`, locked (`flock`, exclusive)
/// for as long as it is open, so that `Store::remove_orphans` leaves it alone. Dropping it
/// removes it, as [`NamedTempFile`] does.
pub fn locked_temp_file(dir: &Path, prefix: &str) -> io::Result<NamedTempFile> {
    loop {
        let (file, path) = tempfile::Builder::new()
            .prefix(prefix)
            .tempfile_in(dir)?
            .into_parts();
        // Through fs-err for an error that names the file; the lock is on this open file, so
        // it is the one kept.
        let file = File::from_parts(file, &path);
        file.lock()?;
        let tmp = NamedTempFile::from_parts(file.into_file(), path);
        // Until our lock, a cleaner could take the file for an orphan and remove it; the lock
        // would then be on an unlinked inode. Start over under a new name.
        if names(tmp.path(), tmp.as_file())? {
            return Ok(tmp);
        }
        // The name no longer belongs to us: do not let the drop remove whatever it now names.
        let _ = tmp.keep();
    }
}

/// Whether `path` names the same inode as the open `file`.
pub fn names(path: &Path, file: &std::fs::File) -> io::Result<bool> {
    let on_disk = match fs_err::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let open = file.metadata()?;
    Ok((on_disk.dev(), on_disk.ino()) == (open.dev(), open.ino()))
}

#[cfg(test)]
mod tests {
    use std::fs::TryLockError;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs_err::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs_err::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn locked_by_someone_else(path: &Path) -> bool {
        matches!(
            File::open(path).unwrap().file().try_lock(),
            Err(TryLockError::WouldBlock)
        )
    }

    #[test]
    fn write_replaces_the_file_whole_with_the_mode_asked_and_leaves_no_temporary() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("x.json");
        fs_err::write(&p, "old").unwrap();
        write(&p, b"{}", Publish::READABLE).unwrap();
        assert_eq!(fs_err::read(&p).unwrap(), b"{}");
        assert_eq!(mode(&p), 0o644, "not tempfile's 0600");
        write(&p, b"new", Publish::READABLE.with_mode(0o600)).unwrap();
        assert_eq!(mode(&p), 0o600);
        assert_eq!(names_in(t.path()), ["x.json"]);
    }

    #[test]
    fn a_failing_fill_leaves_the_old_file_and_no_temporary() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("data");
        fs_err::write(&p, "old").unwrap();
        let err = write_with(&p, ".tmp", Publish::READABLE, |f| {
            f.write_all(b"half")?;
            Err(io::Error::other("the source broke"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "the source broke");
        assert_eq!(fs_err::read_to_string(&p).unwrap(), "old");
        assert_eq!(names_in(t.path()), ["data"]);
    }

    #[test]
    fn the_temporary_is_locked_while_it_is_written() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("data");
        write_with(&p, "blank-", Publish::READABLE, |f| {
            assert!(f
                .path()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("blank-"));
            assert_eq!(f.path().parent(), Some(t.path()));
            assert!(locked_by_someone_else(f.path()));
            f.write_all(b"x")
        })
        .unwrap();
        assert_eq!(fs_err::read(&p).unwrap(), b"x");
    }

    #[test]
    fn locked_temp_file_is_locked_while_open_and_removed_on_drop() {
        let t = tempfile::tempdir().unwrap();
        let tmp = locked_temp_file(t.path(), "fetch-").unwrap();
        let path = tmp.path().to_path_buf();
        assert!(path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("fetch-"));
        assert!(locked_by_someone_else(&path));
        drop(tmp);
        assert!(!path.exists());
    }

    #[test]
    fn commit_moves_a_temporary_from_another_directory_read_only() {
        let t = tempfile::tempdir().unwrap();
        let (tmp_dir, dest_dir) = (t.path().join("tmp"), t.path().join("sources"));
        fs_err::create_dir(&tmp_dir).unwrap();
        fs_err::create_dir(&dest_dir).unwrap();
        let mut tmp = locked_temp_file(&tmp_dir, "fetch-").unwrap();
        tmp.write_all(b"verified").unwrap();
        let dest = dest_dir.join("abc");
        commit(tmp, &dest, Publish::FINAL).unwrap();
        assert_eq!(fs_err::read(&dest).unwrap(), b"verified");
        assert_eq!(mode(&dest), 0o444);
        assert!(names_in(&tmp_dir).is_empty());
    }

    #[test]
    fn errors_name_the_path_and_keep_their_kind() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("missing-dir/x.json");
        let err = write(&dest, b"{}", Publish::READABLE).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("missing-dir"), "{err}");

        let tmp = locked_temp_file(t.path(), ".tmp").unwrap();
        let err = commit(tmp, &dest, Publish::READABLE).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("missing-dir/x.json"), "{err}");
        assert!(names_in(t.path()).is_empty(), "the temporary is removed");
    }
}
