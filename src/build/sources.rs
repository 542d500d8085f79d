//! Laying out a recipe's sources under `$src`.
//!
//! Each source goes to `$src/<dest>` (`dest` defaults to `.`, `$src` itself): a directory's
//! contents are copied there, an archive with `unpack = true` is unpacked there (its single
//! top-level directory stripped), any other file is copied there under its own file name.
//! Two sources may share a `dest` as long as they do not write the same file.

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
