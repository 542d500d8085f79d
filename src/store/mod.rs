//! The content-addressed store (see docs/store.md).
//!
//! Layout under the store root (MUST be kept by every version using the same layout number):
//! - `<32 hex>-<name>-<version>/`: an output, read-only. The hex is the first 32 hex digits of
//!   the derivation hash. A path is valid only when its metadata file exists too.
//! - `.pybake/meta/<store name>.json`: [`Meta`] of that output.
//! - `.pybake/logs/<store name>.log`: the build log (kept for failed builds as well).
//! - `.pybake/sources/<64 hex>`: fetched and imported source files, named by their sha256.
//! - `.pybake/tmp/`: build directories and downloads in progress (same filesystem, for rename).
//! - `.pybake/logs/<store name>.log` is also the output's lock (`flock`), held while it is
//!   built.
//! - `.pybake/gcroots/<project key>-<recipe>`: GC roots (`gc_roots.rs`).
//! - `.pybake/gc.lock`: held shared by each realize, exclusively by gc (`gc.rs`).
//! - `.pybake/drv/<store name>.json`: the inputs an output was built from, as versions before
//!   they moved into the metadata (`inputs`) wrote them; read by `explain`, removed by gc with
//!   their output (`records.rs`).
//! - `.pybake/built.log`: a line per output inserted, `<recipe> <store name>` (`records.rs`).
//! - `.pybake/evals/<key>`: evaluation cache entries (`crate::eval_cache`); gc removes them.
//!
//! Invariants: nothing is written under an output or source name except by `rename` of a
//! completed temporary; metadata is renamed into place before its output, so an output without
//! metadata is left over from a crash between the two and is deleted and rebuilt. Every
//! temporary is covered by a lock its user holds, so one left by a killed process is known
//! stale and removed (`orphans.rs`). Modes do not depend on the umask (`files.rs`).

mod files;
mod gc;
mod gc_roots;
mod meta;
mod name;
mod orphans;
mod records;
mod slots;
mod why;

use std::io;
use std::path::{Path, PathBuf};

use fs_err::File;

pub use files::{create_readable, make_read_only, remove_tree, unshare_hard_links, write_atomic};
pub use gc::{Garbage, GarbageKind, GcError, GcGuard, GcPlan, GcReport, RealizeGuard};
pub use gc_roots::{project_key, GcRoot};
pub use meta::Meta;
pub use name::{BadStoreName, StoreName, MAX_NAME_VERSION_LEN, MAX_STORE_NAME_LEN};
pub use orphans::{ShellDir, Sweep};
pub use slots::BuildSlot;
pub use why::{Edge, Hop};

/// The path builds see the store at inside the sandbox, on every machine.
pub const CANONICAL_STORE: &str = "/pybake/store";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create or use the store at {path}: {source}\n  hint: pass --store DIR or set PYBAKE_STORE to a writable directory")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("store I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("metadata {path} is corrupt: {source}\n  hint: delete {path} and the output beside it, then realize again")]
    BadMeta {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} has a line that does not name an output: {source}\n  hint: delete {path}; the next build of each recipe adds its line again")]
    BadLast {
        path: PathBuf,
        #[source]
        source: BadStoreName,
    },
}

pub(crate) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// Held while an output is built; dropping it releases the lock.
pub struct OutputLock {
    /// The output's build log (see `Store::lock_path`).
    file: File,
}

impl OutputLock {
    /// Replaces the output's build log with `text` (for an output that was not built here).
    pub fn write_log(&self, text: &str) -> io::Result<()> {
        use std::io::Write;
        self.file.set_len(0)?;
        (&self.file).write_all(text.as_bytes())
    }
}

impl Store {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open {
            path: root.to_path_buf(),
            source,
        };
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs_err::create_dir_all(parent).map_err(open_err)?;
        }
        files::create_dir(root).map_err(open_err)?;
        let root = fs_err::canonicalize(root).map_err(open_err)?;
        files::create_dir(&root.join(".pybake")).map_err(open_err)?;
        for sub in ["meta", "logs", "sources", "tmp"] {
            files::create_dir(&root.join(".pybake").join(sub)).map_err(open_err)?;
        }
        Ok(Store { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn internal(&self, sub: &str) -> PathBuf {
        self.root.join(".pybake").join(sub)
    }

    pub fn sources_dir(&self) -> PathBuf {
        self.internal("sources")
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.internal("tmp")
    }

    /// The evaluation cache's entries (`crate::eval_cache`), made by the first one written.
    pub fn evals_dir(&self) -> PathBuf {
        self.internal("evals")
    }

    pub fn path(&self, name: &StoreName) -> PathBuf {
        self.root.join(name.as_str())
    }

    pub fn meta_path(&self, name: &StoreName) -> PathBuf {
        self.internal("meta").join(format!("{name}.json"))
    }

    pub fn log_path(&self, name: &StoreName) -> PathBuf {
        self.internal("logs").join(format!("{name}.log"))
    }

    /// Whether the output exists and is complete. Metadata that does not parse (a crash
    /// right after its rename, before the data reached the disk) makes the output invalid, so
    /// it is rebuilt rather than trusted.
    pub fn is_valid(&self, name: &StoreName) -> bool {
        self.path(name).exists() && self.read_meta(name).is_ok()
    }

    pub fn read_meta(&self, name: &StoreName) -> Result<Meta, StoreError> {
        let path = self.meta_path(name);
        let bytes = fs_err::read(&path).map_err(io_at(&path))?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::BadMeta { path, source })
    }

    /// The file whose `flock` is the output's lock: its build log. A build writes the log
    /// anyway, so the lock costs no file of its own (a file created per output, and deleted
    /// with it, showed in graphs of small builds); earlier versions locked
    /// `.pybake/locks/<store name>.lock`, which `pybake gc` removes.
    fn lock_path(&self, name: &StoreName) -> PathBuf {
        self.log_path(name)
    }

    /// Blocks until this process is the only one building `name`.
    pub fn lock(&self, name: &StoreName) -> Result<OutputLock, StoreError> {
        let path = self.lock_path(name);
        let file = files::open_lock_file(&path).map_err(io_at(&path))?;
        file.lock().map_err(io_at(&path))?;
        Ok(OutputLock { file })
    }

    /// A fresh temporary directory for `name` (an output being substituted), after removing
    /// any left behind by a killed process for the same output. Call with the output's lock
    /// held.
    pub fn fresh_tmp(&self, name: &StoreName) -> Result<tempfile::TempDir, StoreError> {
        self.remove_build_dirs_of(name)?;
        let tmp = self.tmp_dir();
        tempfile::Builder::new()
            .prefix(&format!("{name}."))
            .tempdir_in(&tmp)
            .map_err(io_at(&tmp))
    }

    /// Moves a finished output into the store: makes it read-only, writes its metadata, renames.
    /// Any stale output of the same name (from a crash before its metadata) is replaced.
    pub fn insert(
        &self,
        built: &Path,
        name: &StoreName,
        meta: &Meta,
    ) -> Result<PathBuf, StoreError> {
        make_read_only(built)?;
        let dest = self.path(name);
        if fs_err::symlink_metadata(&dest).is_ok() {
            remove_tree(&dest)?;
        }
        let meta_path = self.meta_path(name);
        self.write_internal(&meta_path, &meta.to_json())?;
        fs_err::rename(built, &dest).map_err(io_at(&dest))?;
        Ok(dest)
    }

    /// Deletes an output and its metadata (used by `realize --check` and gc).
    pub fn remove(&self, name: &StoreName) -> Result<(), StoreError> {
        let meta = self.meta_path(name);
        if meta.exists() {
            fs_err::remove_file(&meta).map_err(io_at(&meta))?;
        }
        let p = self.path(name);
        if fs_err::symlink_metadata(&p).is_ok() {
            remove_tree(&p)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use super::*;
    use crate::hash::{DrvHash, OutputHash};
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn insert_makes_valid_read_only_output() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path()).unwrap();
        let name = StoreName::new(&DrvHash::of(b"x"), "hello", "1.0");
        assert!(!store.is_valid(&name));
        let tmp = store.fresh_tmp(&name).unwrap();
        let built = tmp.path().join("out");
        std::fs::create_dir_all(built.join("bin")).unwrap();
        std::fs::write(built.join("bin/hello"), "x").unwrap();
        let meta = Meta::new(&name, DrvHash::of(b"x"), OutputHash::of(b"o"));
        let p = store.insert(&built, &name, &meta).unwrap();
        assert!(store.is_valid(&name));
        assert_eq!(store.read_meta(&name).unwrap(), meta);
        let mode = std::fs::metadata(p.join("bin/hello"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o444);
        store.remove(&name).unwrap();
        assert!(!store.is_valid(&name));
        assert!(!p.exists());
    }
}
