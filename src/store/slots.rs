//! Build directories that outlive one build: a `realize` keeps the directories of its finished
//! builds and gives them to its next ones, as Bazel's `--reuse_sandbox_directories` does.
//!
//! A build directory is seven directories (`build/{src,work,home,tmp}`, `store/` and their
//! parents); making and removing them was a third of pybake's own time in a graph of small
//! builds: on ext4, creating an inode soon after others were deleted costs a scan of the inode
//! table. A slot is only given to another build when it is exactly as a fresh one would be
//! (see [`BuildSlot::is_pristine`]); anything a step left behind makes pybake remove it instead.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use fs_err::File;

use super::{remove_tree, Store, StoreError, StoreName};

/// Name prefix of build slots in `.pybake/tmp`.
pub(super) const SLOT_PREFIX: &str = "slot-";

/// A build directory in `.pybake/tmp/slot-XXXXXX`, locked while this value lives; removed when
/// dropped unless it was kept or given back clean.
pub struct BuildSlot {
    path: PathBuf,
    _lock: File,
    /// The mode, owner and group of each directory of the skeleton when it was made, to tell
    /// whether a step changed them.
    made: Vec<(PathBuf, u32)>,
    removed: bool,
}

impl Store {
    /// A new, empty build slot.
    pub fn build_slot(&self) -> Result<BuildSlot, StoreError> {
        let (path, lock) = self.locked_temp_dir(SLOT_PREFIX)?;
        Ok(BuildSlot {
            path,
            _lock: lock,
            made: Vec::new(),
            removed: false,
        })
    }

    /// Removes the build directories of earlier builds of `name` that nobody uses: one kept by
    /// `--keep-failed`, or one of a killed build. Call with the output's lock held.
    pub fn remove_build_dirs_of(&self, name: &StoreName) -> Result<(), StoreError> {
        let prefix = format!("{name}.");
        if let Ok(entries) = fs_err::read_dir(self.tmp_dir()) {
            for e in entries.flatten() {
                if e.file_name().as_bytes().starts_with(prefix.as_bytes()) {
                    remove_tree(&e.path())?;
                }
            }
        }
        Ok(())
    }

    /// Keeps `slot` for the user as the build directory of `name` (`--keep-failed`): renamed to
    /// `.pybake/tmp/<store name>.XXXXXX` and marked, as a build directory of `name` is.
    pub fn keep_slot(&self, mut slot: BuildSlot, name: &StoreName) -> PathBuf {
        let kept = tempfile::Builder::new()
            .prefix(&format!("{name}."))
            .tempdir_in(self.tmp_dir())
            .map(|d| d.keep());
        // Renaming onto the empty directory just made replaces it.
        let path = match kept {
            Ok(kept) if fs_err::rename(&slot.path, &kept).is_ok() => kept,
            _ => slot.path.clone(),
        };
        slot.removed = true;
        // Without the marker the directory is only at risk of an early removal, which is no
        // reason to fail the command that reports the build's own failure.
        let _ = fs_err::write(
            path.join(super::orphans::KEPT_MARKER),
            "kept by pybake --keep-failed\n",
        );
        path
    }
}

impl BuildSlot {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records the directories a fresh slot is made of, as they are now, so that
    /// [`BuildSlot::is_pristine`] can tell a slot a step changed. `dirs`: every directory of
    /// the skeleton, parents before children.
    pub fn made(&mut self, dirs: &[PathBuf]) -> io::Result<()> {
        self.made = dirs
            .iter()
            .map(|d| Ok((d.clone(), fs_err::symlink_metadata(d)?.mode())))
            .collect::<io::Result<_>>()?;
        Ok(())
    }

    /// Whether the slot holds its skeleton and nothing else: each directory as made (same
    /// type, mode and no extended attributes, so no ACL a step set), with exactly the entries
    /// of the skeleton in it. `extra`: files under the slot's top that pybake rewrites for
    /// every build (the sandbox's `/etc`), allowed as they are.
    pub fn is_pristine(&self, extra: &[&str]) -> bool {
        if self.made.is_empty() {
            return false;
        }
        let children = |dir: &Path| -> Vec<&std::ffi::OsStr> {
            let mut c: Vec<_> = self
                .made
                .iter()
                .filter(|(d, _)| d.parent() == Some(dir))
                .filter_map(|(d, _)| d.file_name())
                .collect();
            c.sort();
            c
        };
        let top_ok = self.entries(&self.path).is_some_and(|mut e| {
            e.retain(|n| !extra.iter().any(|x| n.as_os_str() == *x));
            e.iter().map(|n| n.as_os_str()).eq(children(&self.path))
        });
        top_ok
            && self.made.iter().all(|(d, mode)| {
                fs_err::symlink_metadata(d)
                    .is_ok_and(|m| m.file_type().is_dir() && m.mode() == *mode)
                    && no_xattrs(d)
                    && self
                        .entries(d)
                        .is_some_and(|e| e.iter().map(|n| n.as_os_str()).eq(children(d)))
            })
    }

    /// The sorted names in `dir`, or `None` if it cannot be read.
    fn entries(&self, dir: &Path) -> Option<Vec<std::ffi::OsString>> {
        let mut names: Vec<_> = fs_err::read_dir(dir)
            .ok()?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .ok()?;
        names.sort();
        Some(names)
    }
}

impl Drop for BuildSlot {
    fn drop(&mut self) {
        if !self.removed {
            // Removed while the lock is still held (fields drop after this).
            let _ = remove_tree(&self.path);
        }
    }
}

/// Whether `path` has no extended attributes (ACLs are some); `false` when that cannot be told.
fn no_xattrs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid C string; a null buffer of size 0 asks only for the list's length.
    unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) == 0 }
}
