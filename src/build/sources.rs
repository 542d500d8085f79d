//! Laying out a recipe's sources under `$src`.
//!
//! Each source goes to `$src/<dest>` (`dest` defaults to `.`, `$src` itself): a directory's
//! contents are copied there, an archive with `unpack = true` is unpacked there (a tarball's
//! single top-level directory stripped, a .deb laid out as merged /usr: see `crate::archive`),
//! any other file is copied there under its own file name. Two sources may share a `dest` as
//! long as they do not write the same file.
//!
//! Afterwards every entry under `$src` gets the mtime `SOURCE_DATE_EPOCH`, as Nix gives store
//! paths a fixed mtime: tools that record a source's mtime (Python's timestamp-based .pyc files,
//! for one) then write the same bytes in every build, whenever the sources were unpacked.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::BuildError;
use crate::fetch::FetchConfig;
use crate::hash::SourceHash;
use crate::recipe::{Origin, Recipe};
use crate::store::Store;

pub fn prepare(
    recipe: &Recipe,
    hashes: &[SourceHash],
    store: &Store,
    fetch: &FetchConfig,
    src_dir: &Path,
) -> Result<(), BuildError> {
    lay_out(recipe, hashes, store, fetch, src_dir)?;
    set_mtimes(src_dir)
}

fn lay_out(
    recipe: &Recipe,
    hashes: &[SourceHash],
    store: &Store,
    fetch: &FetchConfig,
    src_dir: &Path,
) -> Result<(), BuildError> {
    for (source, hash) in recipe.sources.iter().zip(hashes) {
        let dest = src_dir.join(&source.dest);
        mkdir(&dest)?;
        let file = match &source.origin {
            Origin::Local { path } if path.is_dir() => {
                copy_tree(path, &dest)?;
                continue;
            }
            Origin::Local { path } => path.clone(),
            Origin::Url { urls, .. } => crate::fetch::fetch(
                fetch,
                &store.sources_dir(),
                &store.tmp_dir(),
                &crate::fetch::Source {
                    recipe: &recipe.name,
                    urls,
                    sha256: *hash,
                },
            )
            .map_err(|e| BuildError::Fetch {
                recipe: recipe.name.clone(),
                source: Box::new(e),
            })?,
        };
        if source.unpack {
            crate::archive::unpack(&file, &dest).map_err(|e| BuildError::Unpack {
                recipe: recipe.name.clone(),
                source: Box::new(e),
            })?;
        } else {
            let target = dest.join(source.origin.file_name());
            copy_file(&file, &target)?;
        }
    }
    Ok(())
}

/// Sets the mtime (and atime) of everything under `root`, links themselves included, to
/// `SOURCE_DATE_EPOCH`; directories after their contents.
fn set_mtimes(root: &Path) -> Result<(), BuildError> {
    use std::os::unix::ffi::OsStrExt;
    let epoch: libc::time_t = super::SOURCE_DATE_EPOCH.parse().unwrap_or(0);
    let times = [libc::timespec {
        tv_sec: epoch,
        tv_nsec: 0,
    }; 2];
    for e in walkdir::WalkDir::new(root).contents_first(true) {
        let e = e.map_err(|e| BuildError::Io {
            path: e.path().unwrap_or(root).to_path_buf(),
            source: e
                .into_io_error()
                .unwrap_or_else(|| std::io::Error::other("walk failed")),
        })?;
        let c = std::ffi::CString::new(e.path().as_os_str().as_bytes())
            .map_err(|_| io(e.path())(std::io::Error::other("path contains NUL")))?;
        // SAFETY: a valid C string and two timespecs, as utimensat(2) expects.
        let rc = unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc != 0 {
            return Err(io(e.path())(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn mkdir(p: &Path) -> Result<(), BuildError> {
    std::fs::create_dir_all(p).map_err(io(p))
}

/// Copies a file with a normalised mode (0644, or 0755 when executable), refusing to overwrite.
fn copy_file(from: &Path, to: &Path) -> Result<(), BuildError> {
    if to.symlink_metadata().is_ok() {
        return Err(BuildError::SourceClash {
            path: to.to_path_buf(),
        });
    }
    std::fs::copy(from, to).map_err(io(from))?;
    let exec = std::fs::metadata(from)
        .map_err(io(from))?
        .permissions()
        .mode()
        & 0o100
        != 0;
    std::fs::set_permissions(
        to,
        std::fs::Permissions::from_mode(if exec { 0o755 } else { 0o644 }),
    )
    .map_err(io(to))
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), BuildError> {
    let entries = crate::hash::tree::entries(from).map_err(|e| BuildError::Tree {
        path: from.to_path_buf(),
        source: e,
    })?;
    for e in entries {
        let target: PathBuf = to.join(&e.rel);
        match &e.kind {
            crate::hash::tree::Kind::Dir => mkdir(&target)?,
            crate::hash::tree::Kind::File { .. } => copy_file(&e.path, &target)?,
            crate::hash::tree::Kind::Symlink { target: link } => {
                std::os::unix::fs::symlink(link, &target).map_err(io(&target))?
            }
        }
    }
    Ok(())
}
