//! Laying out a recipe's sources under `$src`.
//!
//! Each source goes to `$src/<dest>` (`dest` defaults to `.`, `$src` itself): a directory's
//! contents are copied there, an archive with `unpack = true` is unpacked there (a tarball's
//! single top-level directory stripped, a .deb laid out as merged /usr: see `crate::archive`),
//! any other file is copied there under its own file name. Two sources may share a `dest` as
//! long as they do not write the same file.
//!
//! Nothing is ever written through a symlink under `$src`, although sources put links there
//! (a `path` directory's links are copied as links, archives hold links): `$src` is on the host
//! and pybake runs with its privileges, so a link to `/etc` followed here would write on the host.
//! Every component of `dest` and of each copied directory is checked with `lstat` to be a real
//! directory (or absent, then made with `mkdir`, which does not follow links); files and links are
//! created with `O_EXCL` / `symlink(2)`, which fail on anything already there. A `dest` through a
//! link is a recipe error ([`BuildError::ThroughSymlink`], exit code 2). Archives are unpacked into
//! the checked `dest` only; [`crate::archive`] keeps its own entries from writing through links.
//!
//! Afterwards every entry under `$src` gets the mtime `SOURCE_DATE_EPOCH`, as Nix gives store
//! paths a fixed mtime: tools that record a source's mtime (Python's timestamp-based .pyc files,
//! for one) then write the same bytes in every build, whenever the sources were unpacked.

use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use fs_err::os::unix::fs::OpenOptionsExt;

use super::BuildError;
use crate::fetch::FetchConfig;
use crate::hash::tree::Kind;
use crate::hash::SourceHash;
use crate::progress::Reporter;
use crate::recipe::{Origin, Recipe, Source};
use crate::store::Store;

pub fn prepare(
    recipe: &Recipe,
    hashes: &[SourceHash],
    store: &Store,
    fetch: &FetchConfig,
    reporter: &dyn Reporter,
    src_dir: &Path,
) -> Result<(), BuildError> {
    for (source, hash) in recipe.sources.iter().zip(hashes) {
        let layout = Layout {
            recipe,
            source,
            src: src_dir,
        };
        layout.lay_out(hash, store, fetch, reporter)?;
    }
    set_mtimes(src_dir)
}

/// One source being laid out under `$src`.
struct Layout<'a> {
    recipe: &'a Recipe,
    source: &'a Source,
    src: &'a Path,
}

impl Layout<'_> {
    fn lay_out(
        &self,
        hash: &SourceHash,
        store: &Store,
        fetch: &FetchConfig,
        reporter: &dyn Reporter,
    ) -> Result<(), BuildError> {
        let recipe = self.recipe;
        let (dest, shown) = self.make_dest()?;
        let file = match &self.source.origin {
            Origin::Local { path } if path.is_dir() => return self.copy_tree(path, &dest, &shown),
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
                reporter,
            )
            .map_err(|e| BuildError::Fetch {
                recipe: recipe.name.clone(),
                source: Box::new(e),
            })?,
        };
        if self.source.unpack {
            // `dest` is a real directory with no link on the way from `$src`, as `unpack`
            // requires: it creates `dest` with `create_dir_all`, which would follow one.
            crate::archive::unpack(&file, &dest).map_err(|e| BuildError::Unpack {
                recipe: recipe.name.clone(),
                source: Box::new(e),
            })
        } else {
            copy_file(&file, &dest.join(self.source.origin.file_name()))
        }
    }

    /// Creates `$src/<dest>` one component at a time and returns it, with `dest` as shown in
    /// messages. Each component must be a real directory or absent: a symlink there (left by an
    /// earlier source) is an error, never followed.
    fn make_dest(&self) -> Result<(PathBuf, PathBuf), BuildError> {
        let (mut path, mut shown) = (self.src.to_path_buf(), PathBuf::new());
        for c in Path::new(&self.source.dest).components() {
            match c {
                Component::CurDir => continue,
                Component::Normal(name) => {
                    path.push(name);
                    shown.push(name);
                }
                // The recipe loader refuses these; never climb out of `$src` regardless.
                Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                    return Err(io(&path)(std::io::Error::new(
                        ErrorKind::InvalidInput,
                        format!("dest {:?} leaves $src", self.source.dest),
                    )))
                }
            }
            self.real_dir(&path, &shown)?;
        }
        Ok((path, shown))
    }

    /// Makes sure `path` (`$src/<shown>`) is a real directory, creating it if absent. Its parent
    /// was checked already. Nothing else writes to `$src` while sources are laid out (the steps
    /// have not started), so what `lstat` sees stays true.
    fn real_dir(&self, path: &Path, shown: &Path) -> Result<(), BuildError> {
        match fs_err::symlink_metadata(path) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(m) => Err(self.blocked(shown, m.file_type())),
            // mkdir(2) does not follow a symlink in the last component: it fails on one.
            Err(e) if e.kind() == ErrorKind::NotFound => fs_err::create_dir(path).map_err(io(path)),
            Err(e) => Err(io(path)(e)),
        }
    }

    fn blocked(&self, shown: &Path, found: std::fs::FileType) -> BuildError {
        let (recipe, at, path) = (
            self.recipe.name.clone(),
            self.source.at.clone(),
            shown.to_path_buf(),
        );
        if found.is_symlink() {
            BuildError::ThroughSymlink { recipe, at, path }
        } else {
            BuildError::NotADirectory { recipe, at, path }
        }
    }

    /// Copies the contents of directory `from` into `to` (`$src/<shown>`, already checked).
    /// Entries come parents first, so each one's parent is a directory checked or made here.
    fn copy_tree(&self, from: &Path, to: &Path, shown: &Path) -> Result<(), BuildError> {
        let entries = crate::hash::tree::entries(from).map_err(|e| BuildError::Tree {
            path: from.to_path_buf(),
            source: e,
        })?;
        for e in entries {
            let target = to.join(&e.rel);
            match &e.kind {
                Kind::Dir => self.real_dir(&target, &shown.join(&e.rel))?,
                Kind::File { .. } => copy_file(&e.path, &target)?,
                // symlink(2) never follows an existing link at `target`: it fails.
                Kind::Symlink { target: link } => {
                    fs_err::os::unix::fs::symlink(link, &target).map_err(clash_or_io(&target))?
                }
            }
        }
        Ok(())
    }
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

fn clash_or_io(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| match source.kind() {
        ErrorKind::AlreadyExists => BuildError::SourceClash {
            path: path.to_path_buf(),
        },
        _ => io(path)(source),
    }
}

/// Copies a file with a normalised mode (0644, or 0755 when executable). `to` is created with
/// `O_EXCL`, so an existing file or link there is a clash, never overwritten or followed.
fn copy_file(from: &Path, to: &Path) -> Result<(), BuildError> {
    let mut input = fs_err::File::open(from).map_err(io(from))?;
    let exec = input.metadata().map_err(io(from))?.permissions().mode() & 0o100 != 0;
    let mode = if exec { 0o755 } else { 0o644 };
    let mut output = fs_err::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(to)
        .map_err(clash_or_io(to))?;
    // std's files, for which io::copy copies in the kernel (copy_file_range).
    std::io::copy(input.file_mut(), output.file_mut()).map_err(io(to))?;
    // The umask may have taken bits off the mode given to open(2).
    output
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io(to))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use super::*;
    use crate::recipe::Location;
    use std::os::unix::fs::symlink;

    /// A temp dir with `src/` (`$src`), `in/` (the sources), `host/` (outside both) and `store/`.
    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            for d in ["src", "host", "in"] {
                std::fs::create_dir(dir.path().join(d)).unwrap();
            }
            Fixture { dir }
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        /// Lays out local sources `(path under in/, dest)`, in order.
        fn prepare(&self, sources: &[(&str, &str)]) -> Result<(), BuildError> {
            let sources: Vec<Source> = sources
                .iter()
                .enumerate()
                .map(|(i, (path, dest))| Source {
                    origin: Origin::Local {
                        path: self.path("in").join(path),
                    },
                    unpack: false,
                    dest: dest.to_string(),
                    at: Location::at_line(Path::new("r.toml"), Some(i + 1)),
                })
                .collect();
            let recipe = Recipe {
                name: "r".into(),
                version: "1".into(),
                description: String::new(),
                run: None,
                file: "r.toml".into(),
                deps: vec![],
                root: None,
                remove_references_to: vec![],
                steps: vec![],
                env: Default::default(),
                provides: Default::default(),
                requires: Default::default(),
                sources,
            };
            let hashes = vec![SourceHash::of(b""); recipe.sources.len()];
            let store = Store::open(&self.path("store")).unwrap();
            prepare(
                &recipe,
                &hashes,
                &store,
                &FetchConfig::default(),
                &crate::progress::Silent,
                &self.path("src"),
            )
        }

        fn host_is_empty(&self) -> bool {
            std::fs::read_dir(self.path("host"))
                .unwrap()
                .next()
                .is_none()
        }
    }

    /// `in/links/<name> -> host`, and `in/payload/sub/f`.
    fn with_link(name: &str) -> Fixture {
        let f = Fixture::new();
        std::fs::create_dir_all(f.path("in/links")).unwrap();
        symlink(f.path("host"), f.path("in/links").join(name)).unwrap();
        std::fs::create_dir_all(f.path("in/payload/sub")).unwrap();
        std::fs::write(f.path("in/payload/sub/f"), "x").unwrap();
        f
    }

    #[test]
    fn a_dest_through_a_link_is_refused() {
        for dest in ["lnk", "lnk/deeper", "./lnk/deeper/"] {
            let f = with_link("lnk");
            let e = f.prepare(&[("links", "."), ("payload", dest)]).unwrap_err();
            assert!(
                matches!(&e, BuildError::ThroughSymlink { path, at, .. }
                    if path == Path::new("lnk") && at.line == Some(2)),
                "{dest}: {e}"
            );
            assert!(e.is_user_error());
            assert!(f.host_is_empty());
        }
    }

    #[test]
    fn a_directory_is_not_merged_through_a_link() {
        let f = with_link("sub");
        let e = f.prepare(&[("links", "."), ("payload", ".")]).unwrap_err();
        assert!(
            matches!(&e, BuildError::ThroughSymlink { path, .. } if path == Path::new("sub")),
            "{e}"
        );
        assert!(f.host_is_empty());
    }

    #[test]
    fn a_file_is_not_copied_onto_a_link() {
        let f = with_link("f");
        std::fs::remove_file(f.path("in/links/f")).unwrap();
        symlink(f.path("host/f"), f.path("in/links/f")).unwrap();
        let e = f
            .prepare(&[("links", "."), ("payload/sub/f", ".")])
            .unwrap_err();
        assert!(matches!(&e, BuildError::SourceClash { .. }), "{e}");
        assert!(f.host_is_empty());
    }

    #[test]
    fn a_dest_through_a_file_is_refused() {
        let f = with_link("lnk");
        let e = f
            .prepare(&[("payload", "."), ("payload", "sub/f/x")])
            .unwrap_err();
        assert!(
            matches!(&e, BuildError::NotADirectory { path, .. } if path == Path::new("sub/f")),
            "{e}"
        );
        assert!(e.is_user_error());
    }

    #[test]
    fn sources_merge_into_real_directories_and_keep_their_links() {
        let f = with_link("lnk");
        std::fs::create_dir_all(f.path("in/more/sub")).unwrap();
        std::fs::write(f.path("in/more/sub/g"), "y").unwrap();
        f.prepare(&[("links", "."), ("payload", "a/b"), ("more", "a/b")])
            .unwrap();
        assert_eq!(
            std::fs::read_link(f.path("src/lnk")).unwrap(),
            f.path("host")
        );
        assert_eq!(std::fs::read(f.path("src/a/b/sub/f")).unwrap(), b"x");
        assert_eq!(std::fs::read(f.path("src/a/b/sub/g")).unwrap(), b"y");
        let mode = std::fs::metadata(f.path("src/a/b/sub/g"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    }
}
