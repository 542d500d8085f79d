//! The content-addressed store (see docs/store.md).
//!
//! Layout under the store root (MUST be kept by every version using the same layout number):
//! - `<32 hex>-<name>-<version>/`: an output, read-only. The hex is the first 32 hex digits of
//!   the derivation hash. A path is valid only when its metadata file exists too.
//! - `.pybake/meta/<store name>.json`: [`Meta`] of that output.
//! - `.pybake/logs/<store name>.log`: the build log (kept for failed builds as well).
//! - `.pybake/sources/<64 hex>`: fetched and imported source files, named by their sha256.
//! - `.pybake/tmp/`: build directories and downloads in progress (same filesystem, for rename).
//! - `.pybake/locks/<store name>.lock`: one lock per output, held while it is built.
//!
//! Invariants: nothing is written under an output or source name except by `rename` of a
//! completed temporary; metadata is renamed into place before its output, so an output without
//! metadata is left over from a crash between the two and is deleted and rebuilt.

mod meta;
mod name;

use std::fs::File;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub use meta::Meta;
pub use name::{StoreName, MAX_NAME_VERSION_LEN, MAX_STORE_NAME_LEN};

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
    _file: File,
}

impl Store {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open {
            path: root.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(root).map_err(open_err)?;
        let root = std::fs::canonicalize(root).map_err(open_err)?;
        for sub in ["meta", "logs", "sources", "tmp", "locks"] {
            std::fs::create_dir_all(root.join(".pybake").join(sub)).map_err(open_err)?;
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
        let bytes = std::fs::read(&path).map_err(io_at(&path))?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::BadMeta { path, source })
    }

    /// Blocks until this process is the only one building `name`.
    pub fn lock(&self, name: &StoreName) -> Result<OutputLock, StoreError> {
        let path = self.internal("locks").join(format!("{name}.lock"));
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_at(&path))?;
        file.lock().map_err(io_at(&path))?;
        Ok(OutputLock { _file: file })
    }

    /// A fresh temporary directory for building `name`, after removing any left behind by a
    /// killed build of the same output. Call with the output's lock held.
    pub fn fresh_tmp(&self, name: &StoreName) -> Result<tempfile::TempDir, StoreError> {
        let tmp = self.tmp_dir();
        let prefix = format!("{name}.");
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    remove_tree(&e.path())?;
                }
            }
        }
        tempfile::Builder::new()
            .prefix(&prefix)
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
        if dest.symlink_metadata().is_ok() {
            remove_tree(&dest)?;
        }
        let meta_path = self.meta_path(name);
        write_atomic(&meta_path, &meta.to_json())?;
        std::fs::rename(built, &dest).map_err(io_at(&dest))?;
        Ok(dest)
    }

    /// Deletes an output and its metadata (used by `realize --check` and gc).
    pub fn remove(&self, name: &StoreName) -> Result<(), StoreError> {
        let meta = self.meta_path(name);
        if meta.exists() {
            std::fs::remove_file(&meta).map_err(io_at(&meta))?;
        }
        let p = self.path(name);
        if p.symlink_metadata().is_ok() {
            remove_tree(&p)?;
        }
        Ok(())
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
/// Readers never see a partial file. There is no fsync: after a power loss the file may be
/// empty, which readers treat as absent (see [`Store::is_valid`]); an fsync per output cost a
/// third of the time of a graph of small builds.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_at(dir))?;
    tmp.write_all(bytes).map_err(io_at(path))?;
    tmp.persist(path).map_err(|e| StoreError::Io {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
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

fn set_modes(root: &Path, mode_for: impl Fn(bool, u32) -> u32) -> Result<(), StoreError> {
    // Children first, so a directory is made read-only only after its contents.
    for e in walkdir::WalkDir::new(root).contents_first(true) {
        let e = e.map_err(|e| StoreError::Io {
            path: e.path().unwrap_or(root).to_path_buf(),
            source: e
                .into_io_error()
                .unwrap_or_else(|| io::Error::other("walk failed")),
        })?;
        let ft = e.file_type();
        if ft.is_symlink() {
            continue;
        }
        let meta = e.metadata().map_err(|err| StoreError::Io {
            path: e.path().to_path_buf(),
            source: err.into(),
        })?;
        let mode = mode_for(ft.is_dir(), meta.permissions().mode());
        std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(mode))
            .map_err(io_at(e.path()))?;
    }
    Ok(())
}

/// Removes a tree that may contain read-only directories.
pub fn remove_tree(path: &Path) -> Result<(), StoreError> {
    let meta = match path.symlink_metadata() {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_at(path)(e)),
    };
    if meta.is_dir() {
        for e in walkdir::WalkDir::new(path).into_iter().flatten() {
            if e.file_type().is_dir() {
                let _ = std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o755));
            }
        }
        std::fs::remove_dir_all(path).map_err(io_at(path))
    } else {
        std::fs::remove_file(path).map_err(io_at(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::{DrvHash, OutputHash};

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
