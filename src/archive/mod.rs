//! Safe unpacking of source archives: tar, optionally compressed with gzip, xz, bzip2 or zstd,
//! and Debian binary packages (`.deb`).
//!
//! Invariants (MUST hold for every archive, however crafted):
//! - Nothing is ever written outside `dest`. Entries are unpacked into a fresh staging
//!   directory inside `dest`, and no entry is ever written through a symlink: each parent
//!   component of an entry is checked with `lstat` to be a real directory, and files are created
//!   with `O_EXCL`, which does not follow a symlink in the last component.
//! - `dest` itself is the caller's to vouch for: it is created with `create_dir_all`, which
//!   follows symlinks, so a caller MUST NOT pass a `dest` that is, or passes through, a symlink
//!   someone else could have placed (`action::sources` checks each component below `$src` first).
//! - An entry is refused (the whole unpack fails, naming the archive and the entry) if its path is
//!   absolute or has a `..` component, if it is a device or fifo node or a (GNU) sparse file
//!   (whose declared size, unbounded, need not match the bytes it stores), if it is a hard link to
//!   anything but a regular file unpacked earlier from the same archive, or if it is a symlink
//!   whose target might resolve outside `dest`.
//! - Symlink targets MUST be relative, and `..` may appear only as leading components, no more of
//!   them than the link's depth below `dest` (after stripping, below). Every directory on the way
//!   is then real, so `..` means what it says, and the normal components that follow descend into
//!   `dest` or through other links that obey the same rule. (A lexical check of `x/link/..` alone
//!   is not enough: the kernel applies `..` to the link's target, not to `x`.)
//! - When every entry lies under one top-level directory (the usual `Python-3.11.2/`), that
//!   directory is stripped; otherwise the archive is unpacked as is. (Not for a .deb, below.)
//! - Owners, mtimes and most mode bits are not restored: directories are 0755, files 0755 when
//!   the archive gives them any executable bit, else 0644.
//! - On error nothing of the archive is left in `dest` (the staging directory is removed).
//!   Entries land in `dest` only at the end, by renaming staged entries into place. `dest` may
//!   already hold files (several sources may share it): directories are merged into (never
//!   through a symlink), and an entry whose path already exists as a file or link is an error,
//!   detected before anything moves.
//!
//! The compression is detected from the first bytes, not the file name: files in the source store
//! are named by their hash.
//!
//! A Debian package (`.deb`, detected by the `ar` magic `!<arch>\n`; deb(5)) is unpacked under
//! the same invariants, with these differences (see `deb.rs`):
//! - Only its `data.tar` member is unpacked (compressed with anything above); `debian-binary`
//!   MUST come first and say `2.x`, and `control.tar` MUST be there (its `Package` and `Version`
//!   name the package in messages). Maintainer scripts are never run.
//! - No top-level directory is stripped.
//! - Merged /usr, as on Debian 12: an entry under a top-level `bin/`, `sbin/`, `lib/`,
//!   `lib32/`, `lib64/` or `libx32/` is placed under `usr/` instead, and `dest` gets the
//!   compatibility link `NAME -> usr/NAME` for each of these whose `usr/NAME` is a directory in
//!   `dest` (a package's own such link is skipped; one already in `dest` is kept). Two paths of
//!   one package that land on the same place are refused.
//! - Link targets are resolved as the package means them, on its own unmerged layout: an
//!   absolute target from the root of `dest`, a relative one from the link's place in the
//!   archive. The resulting path is placed like an entry (above) and written as a relative target
//!   from the link's final place (`lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/...`
//!   becomes `usr/lib64/ld-linux-x86-64.so.2 -> ../lib/x86_64-linux-gnu/...`); a relative target
//!   that already resolves to that path is kept verbatim. A target that climbs above `dest`, or
//!   has a `..` after a name, is refused: after rewriting every link obeys the rule above.
//! - Hard link targets are placed like entries.
//! - Several packages unpacked into one `dest` compose as dpkg would: directories merge, and a
//!   path that an earlier source already put there (a file, or a link, two packages shipping it)
//!   is refused, naming the path and the package, before anything of the package moves.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::Permissions;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

mod deb;

/// Why an archive could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot open archive {archive}")]
    Open {
        archive: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "cannot unpack {archive}: it is {format}, which pybake does not unpack (use a .tar.gz, \
         .tar.xz, .tar.bz2, .tar.zst or .deb source, or set `unpack = false` in the recipe)"
    )]
    Unsupported {
        archive: PathBuf,
        format: &'static str,
    },
    #[error("cannot read archive {archive}: it is corrupt, truncated or not a tar archive")]
    Read {
        archive: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("refusing to unpack {archive}: entry {entry:?} {reason}")]
    Unsafe {
        archive: PathBuf,
        entry: String,
        reason: UnsafeReason,
    },
    #[error("cannot unpack entry {entry:?} of {archive} to {path}")]
    Write {
        archive: PathBuf,
        entry: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot unpack {archive}: writing {path} failed")]
    Dest {
        archive: PathBuf,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot unpack {archive} into {dest}: {path} already exists there")]
    Exists {
        archive: PathBuf,
        dest: PathBuf,
        /// Relative to `dest`.
        path: PathBuf,
    },
    #[error("cannot unpack the Debian package {archive}: {problem}")]
    Deb {
        archive: PathBuf,
        problem: DebProblem,
    },
    #[error(
        "cannot unpack Debian package {package} ({archive}) into {dest}: {path} is already there, \
         from an earlier source (two packages ship it; drop one of them, or give it another `dest`)"
    )]
    PackageConflict {
        archive: PathBuf,
        /// `NAME VERSION` from the package's control file.
        package: String,
        dest: PathBuf,
        /// Relative to `dest`.
        path: PathBuf,
    },
}

/// What is wrong with the container of a .deb.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DebProblem {
    #[error("it is truncated: {0} runs past the end of the file")]
    Truncated(String),
    #[error("the ar member header at byte {offset} is corrupt")]
    Header { offset: u64 },
    #[error("its format version is {0:?}; pybake unpacks version 2.x")]
    Version(String),
    #[error("it has an unknown member {0:?}")]
    UnknownMember(String),
    #[error("it has two {0:?} members")]
    Duplicate(String),
    #[error("it has no {0}")]
    Missing(&'static str),
}

/// What makes an entry unsafe to unpack.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnsafeReason {
    #[error("has a `..` component")]
    ParentDir,
    #[error("is an absolute path")]
    Absolute,
    #[error(
        "is a symlink to {target:?}, which may resolve outside the destination (a target must be \
         relative, with `..` only as leading components that stay inside the archive; only a \
         .deb's absolute targets are made relative)"
    )]
    SymlinkEscapes { target: String },
    #[error("is a hard link to {target:?}, which is outside the destination")]
    HardlinkOutside { target: String },
    #[error("is a hard link to {target:?}, which is not a regular file unpacked before it")]
    HardlinkNotFile { target: String },
    #[error("is a {kind}; source archives may hold only files, directories and links")]
    Special { kind: &'static str },
    #[error("would be written through the symlink {link:?}")]
    ThroughSymlink { link: String },
    #[error("conflicts with {other:?}, which is not a directory, unpacked before it")]
    NotADirectory { other: String },
    #[error("is a file, but a directory of that name was unpacked before it")]
    IsADirectory,
    #[error(
        "lands on {path:?}, where an earlier entry of the package was unpacked (merged /usr \
         places bin/, sbin/ and lib*/ under usr/)"
    )]
    Duplicate { path: String },
}

/// True when a file name has the extension of an archive [`unpack`] handles; used to default
/// a source's `unpack` flag from its URL.
pub fn looks_like_archive(file_name: &str) -> bool {
    const EXTS: &[&str] = &[
        ".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2", ".tbz", ".tar.zst",
        ".tzst", ".deb",
    ];
    let lower = file_name.to_ascii_lowercase();
    EXTS.iter().any(|ext| lower.ends_with(ext))
}

/// Unpacks `archive` into `dest` (created if missing), enforcing the module's invariants.
/// `dest` MUST NOT be or pass through an untrusted symlink (see the module doc).
pub fn unpack(archive: &Path, dest: &Path) -> Result<(), ArchiveError> {
    let open_err = |source| ArchiveError::Open {
        archive: archive.to_path_buf(),
        source,
    };
    let mut file = fs_err::File::open(archive).map_err(open_err)?;
    let mut magic = [0u8; deb::AR_MAGIC.len()];
    let n = crate::hash::read_up_to(&mut file, &mut magic).map_err(open_err)?;
    if magic[..n] == deb::AR_MAGIC[..] {
        let package = deb::read(archive, &mut file)?;
        let (offset, len) = package.data;
        file.seek(io::SeekFrom::Start(offset)).map_err(open_err)?;
        let reader = decompress(archive, Box::new(file.take(len)))?;
        return unpack_tar(archive, reader, dest, Some(&package.package));
    }
    file.rewind().map_err(open_err)?;
    let reader = decompress(archive, Box::new(file))?;
    unpack_tar(archive, reader, dest, None)
}

/// The tar stream of `reader`, decompressed as its first bytes say.
fn decompress<'a>(
    archive: &Path,
    mut reader: Box<dyn Read + 'a>,
) -> Result<Box<dyn Read + 'a>, ArchiveError> {
    let read_err = |source| ArchiveError::Read {
        archive: archive.to_path_buf(),
        source,
    };
    let mut magic = [0u8; 6];
    let n = crate::hash::read_up_to(&mut reader, &mut magic).map_err(read_err)?;
    let reader = io::Cursor::new(magic[..n].to_vec()).chain(reader);
    Ok(match &magic[..n] {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        [0xfd, b'7', b'z', b'X', b'Z', 0] => {
            Box::new(xz2::read::XzDecoder::new_multi_decoder(reader))
        }
        [b'B', b'Z', b'h', ..] => Box::new(bzip2::read::MultiBzDecoder::new(reader)),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => {
            Box::new(zstd::stream::read::Decoder::new(reader).map_err(read_err)?)
        }
        [b'P', b'K', 3, 4, ..] => return Err(unsupported(archive, "a zip archive")),
        _ => Box::new(io::BufReader::new(reader)),
    })
}

/// Unpacks the tar stream `reader` of `archive` into `dest`; `package` names a .deb's package
/// and selects its rules.
fn unpack_tar(
    archive: &Path,
    reader: Box<dyn Read + '_>,
    dest: &Path,
    package: Option<&str>,
) -> Result<(), ArchiveError> {
    let dest_err = |source| ArchiveError::Dest {
        archive: archive.to_path_buf(),
        path: dest.to_path_buf(),
        source,
    };
    fs_err::create_dir_all(dest).map_err(dest_err)?;
    let staging = tempfile::Builder::new()
        .prefix(".pybake-unpack-")
        .tempdir_in(dest)
        .map_err(dest_err)?;
    let mut unpacker = Unpacker {
        archive,
        root: staging.path(),
        deb: package.is_some(),
        top: Top::Empty,
        symlinks: BTreeMap::new(),
    };
    unpacker.unpack_all(reader)?;
    let strip = match &unpacker.top {
        Top::Dir(name) if !unpacker.deb => Some(name.clone()),
        _ => None,
    };
    for (comps, (entry, target)) in &unpacker.symlinks {
        let depth = comps.len() - 1 - usize::from(strip.is_some());
        if !symlink_stays_inside(target, depth) {
            return Err(unpacker.unsafe_entry(
                entry,
                UnsafeReason::SymlinkEscapes {
                    target: target.to_string_lossy().into_owned(),
                },
            ));
        }
    }
    let root = match &strip {
        Some(name) => staging.path().join(name),
        None => staging.path().to_path_buf(),
    };
    let Some(package) = package else {
        return move_children(archive, &root, dest);
    };
    let links = deb::compat_links(archive, package, &root, dest)?;
    move_children(archive, &root, dest).map_err(|e| match e {
        ArchiveError::Exists {
            archive,
            dest,
            path,
        } => ArchiveError::PackageConflict {
            archive,
            package: package.to_string(),
            dest,
            path,
        },
        e => e,
    })?;
    deb::make_compat_links(archive, dest, &links)
    // `staging` (now empty, or holding only the stripped directory) is removed on drop.
}

fn unsupported(archive: &Path, format: &'static str) -> ArchiveError {
    ArchiveError::Unsupported {
        archive: archive.to_path_buf(),
        format,
    }
}

/// What the top level of the archive looks like so far.
enum Top {
    Empty,
    /// Every entry so far is this directory or lies under it.
    Dir(OsString),
    Mixed,
}

struct Unpacker<'a> {
    archive: &'a Path,
    root: &'a Path,
    /// A .deb's data: placed into merged /usr, links rewritten, never stripped.
    deb: bool,
    top: Top,
    /// Path components -> (entry name, target) of the symlinks in the tree, checked once
    /// stripping is decided. A link replaced by a later entry is no longer in the tree.
    symlinks: BTreeMap<Vec<OsString>, (String, PathBuf)>,
}

impl Unpacker<'_> {
    fn unsafe_entry(&self, entry: &str, reason: UnsafeReason) -> ArchiveError {
        ArchiveError::Unsafe {
            archive: self.archive.to_path_buf(),
            entry: entry.to_string(),
            reason,
        }
    }

    fn read_err(&self, source: io::Error) -> ArchiveError {
        ArchiveError::Read {
            archive: self.archive.to_path_buf(),
            source,
        }
    }

    fn write_err(&self, entry: &str, path: &Path, source: io::Error) -> ArchiveError {
        ArchiveError::Write {
            archive: self.archive.to_path_buf(),
            entry: entry.to_string(),
            path: path.to_path_buf(),
            source,
        }
    }

    fn unpack_all(&mut self, reader: Box<dyn Read + '_>) -> Result<(), ArchiveError> {
        let mut tar = tar::Archive::new(reader);
        for entry in tar.entries().map_err(|e| self.read_err(e))? {
            let mut entry = entry.map_err(|e| self.read_err(e))?;
            let kind = entry.header().entry_type();
            if kind.is_pax_global_extensions() {
                continue;
            }
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let comps =
                self.checked_components(&name, &entry.path().map_err(|e| self.read_err(e))?)?;
            let Some(comps) = comps else { continue }; // the archive root itself, `./`
            let symlink = match kind {
                EntryType::Symlink => match self.symlink_target(&name, &comps, &entry)? {
                    Some(target) => Some(target),
                    None => continue, // a package's `bin -> usr/bin`: made after unpacking
                },
                _ => None,
            };
            let comps = if self.deb {
                deb::merged(comps)
            } else {
                self.note_top(&comps, kind);
                comps
            };
            self.symlinks.remove(&comps);
            match (kind, symlink) {
                (EntryType::Directory, _) => self.make_dir(&name, &comps)?,
                (EntryType::Regular | EntryType::Continuous, _) => {
                    let mode = entry.header().mode().map_err(|e| self.read_err(e))?;
                    self.make_file(&name, &comps, mode, &mut entry)?;
                }
                (EntryType::Symlink, Some(target)) => {
                    let path = self.prepare_leaf(&name, &comps)?;
                    fs_err::os::unix::fs::symlink(&target, &path)
                        .map_err(|e| self.write_err(&name, &path, e))?;
                    self.symlinks.insert(comps, (name, target));
                }
                (EntryType::Link, _) => self.make_hardlink(&name, &comps, &entry)?,
                (EntryType::Char, _) => return Err(self.special(&name, "character device")),
                (EntryType::Block, _) => return Err(self.special(&name, "block device")),
                (EntryType::Fifo, _) => return Err(self.special(&name, "fifo")),
                // Its declared size is independent of the bytes stored: a few hundred bytes
                // could make us write a terabyte of zeros.
                (EntryType::GNUSparse, _) => return Err(self.special(&name, "sparse file")),
                _ => return Err(self.special(&name, "entry of an unknown type")),
            }
        }
        Ok(())
    }

    /// The target to give the symlink entry at `comps` (as in the archive); `None` to skip it.
    fn symlink_target(
        &self,
        name: &str,
        comps: &[OsString],
        entry: &tar::Entry<impl Read>,
    ) -> Result<Option<PathBuf>, ArchiveError> {
        let target = self.link_target(name, entry)?;
        if !self.deb {
            return Ok(Some(target));
        }
        match deb::link(comps, &target) {
            deb::Link::Target(t) => Ok(Some(t)),
            deb::Link::Compat => Ok(None),
            deb::Link::Escapes => Err(self.unsafe_entry(
                name,
                UnsafeReason::SymlinkEscapes {
                    target: target.to_string_lossy().into_owned(),
                },
            )),
        }
    }

    fn special(&self, entry: &str, kind: &'static str) -> ArchiveError {
        self.unsafe_entry(entry, UnsafeReason::Special { kind })
    }

    /// The normal components of an entry path; `None` for the archive root (`.` or `./`).
    fn checked_components(
        &self,
        name: &str,
        path: &Path,
    ) -> Result<Option<Vec<OsString>>, ArchiveError> {
        let mut comps = Vec::new();
        for c in path.components() {
            match c {
                Component::Normal(s) => comps.push(s.to_os_string()),
                Component::CurDir => {}
                Component::ParentDir => {
                    return Err(self.unsafe_entry(name, UnsafeReason::ParentDir))
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(self.unsafe_entry(name, UnsafeReason::Absolute))
                }
            }
        }
        Ok((!comps.is_empty()).then_some(comps))
    }

    fn note_top(&mut self, comps: &[OsString], kind: EntryType) {
        let is_dir_itself = comps.len() == 1 && kind == EntryType::Directory;
        self.top = match std::mem::replace(&mut self.top, Top::Mixed) {
            _ if comps.len() == 1 && !is_dir_itself => Top::Mixed,
            Top::Empty => Top::Dir(comps[0].clone()),
            Top::Dir(name) if name == comps[0] => Top::Dir(name),
            _ => Top::Mixed,
        };
    }

    /// Ensures every parent of `comps` is a real directory inside the root (creating missing
    /// ones when `create`), never following a symlink, and returns the path of `comps` itself.
    fn ensure_parents(
        &self,
        name: &str,
        comps: &[OsString],
        create: bool,
    ) -> Result<PathBuf, ArchiveError> {
        let mut path = self.root.to_path_buf();
        for (i, c) in comps[..comps.len() - 1].iter().enumerate() {
            path.push(c);
            match fs_err::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(m) => {
                    let other = shown(&comps[..=i]);
                    return Err(self.unsafe_entry(
                        name,
                        if m.file_type().is_symlink() {
                            UnsafeReason::ThroughSymlink { link: other }
                        } else {
                            UnsafeReason::NotADirectory { other }
                        },
                    ));
                }
                Err(e) if create && e.kind() == io::ErrorKind::NotFound => {
                    fs_err::create_dir(&path).map_err(|e| self.write_err(name, &path, e))?;
                    set_mode(&path, 0o755).map_err(|e| self.write_err(name, &path, e))?;
                }
                Err(e) => return Err(self.write_err(name, &path, e)),
            }
        }
        path.push(&comps[comps.len() - 1]);
        Ok(path)
    }

    /// Like [`Self::ensure_parents`], and removes an earlier non-directory entry of the same
    /// name (later entries win, as with `tar -x`).
    fn prepare_leaf(&self, name: &str, comps: &[OsString]) -> Result<PathBuf, ArchiveError> {
        let path = self.ensure_parents(name, comps, true)?;
        match fs_err::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_dir() => {
                Err(self.unsafe_entry(name, UnsafeReason::IsADirectory))
            }
            Ok(_) if self.deb => {
                Err(self.unsafe_entry(name, UnsafeReason::Duplicate { path: shown(comps) }))
            }
            Ok(_) => fs_err::remove_file(&path)
                .map(|()| path.clone())
                .map_err(|e| self.write_err(name, &path, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(path),
            Err(e) => Err(self.write_err(name, &path, e)),
        }
    }

    fn make_dir(&self, name: &str, comps: &[OsString]) -> Result<(), ArchiveError> {
        let path = self.ensure_parents(name, comps, true)?;
        match fs_err::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => {
                let other = shown(comps);
                return Err(self.unsafe_entry(name, UnsafeReason::NotADirectory { other }));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs_err::create_dir(&path).map_err(|e| self.write_err(name, &path, e))?;
            }
            Err(e) => return Err(self.write_err(name, &path, e)),
        }
        set_mode(&path, 0o755).map_err(|e| self.write_err(name, &path, e))
    }

    fn make_file(
        &self,
        name: &str,
        comps: &[OsString],
        mode: u32,
        content: &mut impl Read,
    ) -> Result<(), ArchiveError> {
        let path = self.prepare_leaf(name, comps)?;
        let werr = |e| self.write_err(name, &path, e);
        let mut file = fs_err::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(werr)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match content.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.read_err(e)),
            };
            file.write_all(&buf[..n]).map_err(werr)?;
        }
        let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
        file.file()
            .set_permissions(Permissions::from_mode(mode))
            .map_err(werr)
    }

    fn link_target(
        &self,
        name: &str,
        entry: &tar::Entry<impl Read>,
    ) -> Result<PathBuf, ArchiveError> {
        match entry.link_name().map_err(|e| self.read_err(e))? {
            Some(target) => Ok(target.into_owned()),
            None => Err(self.read_err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("link entry {name:?} has no target"),
            ))),
        }
    }

    fn make_hardlink(
        &self,
        name: &str,
        comps: &[OsString],
        entry: &tar::Entry<impl Read>,
    ) -> Result<(), ArchiveError> {
        let target = self.link_target(name, entry)?;
        let shown_target = target.to_string_lossy().into_owned();
        let outside = || {
            self.unsafe_entry(
                name,
                UnsafeReason::HardlinkOutside {
                    target: shown_target.clone(),
                },
            )
        };
        let mut target_comps = Vec::new();
        for c in target.components() {
            match c {
                Component::Normal(s) => target_comps.push(s.to_os_string()),
                Component::CurDir => {}
                _ => return Err(outside()),
            }
        }
        if target_comps.is_empty() {
            return Err(outside());
        }
        if self.deb {
            target_comps = deb::merged(target_comps);
        }
        let not_file = || {
            self.unsafe_entry(
                name,
                UnsafeReason::HardlinkNotFile {
                    target: shown_target.clone(),
                },
            )
        };
        let target_path = match self.ensure_parents(name, &target_comps, false) {
            Ok(p) => p,
            Err(ArchiveError::Write { .. }) => return Err(not_file()),
            Err(e) => return Err(e),
        };
        match fs_err::symlink_metadata(&target_path) {
            Ok(m) if m.file_type().is_file() => {}
            _ => return Err(not_file()),
        }
        if target_comps == comps {
            return Ok(()); // a link to itself: the file is already there
        }
        let path = self.prepare_leaf(name, comps)?;
        fs_err::hard_link(&target_path, &path).map_err(|e| self.write_err(name, &path, e))
    }
}

fn shown(comps: &[OsString]) -> String {
    comps
        .iter()
        .map(|c| c.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    fs_err::set_permissions(path, Permissions::from_mode(mode))
}

/// The symlink rule of the module docs, for a link whose parent directory is `depth` levels
/// below the destination.
fn symlink_stays_inside(target: &Path, depth: usize) -> bool {
    let mut ups = 0;
    let mut seen_name = false;
    for c in target.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if !seen_name => ups += 1,
            Component::Normal(_) => seen_name = true,
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    ups <= depth
}

/// Moves the staged tree `from` into `dest`: an entry missing from `dest` is renamed there, a
/// directory already in `dest` (a real one, not a symlink) is merged into, anything else that
/// already exists is an error. Everything is checked before anything moves.
fn move_children(archive: &Path, from: &Path, dest: &Path) -> Result<(), ArchiveError> {
    let werr = |path: &Path, source| ArchiveError::Dest {
        archive: archive.to_path_buf(),
        path: path.to_path_buf(),
        source,
    };
    // (staged path, its place in dest, whether to merge rather than rename)
    let mut moves = Vec::new();
    let mut dirs = vec![(from.to_path_buf(), dest.to_path_buf())];
    while let Some((from_dir, to_dir)) = dirs.pop() {
        for child in fs_err::read_dir(&from_dir).map_err(|e| werr(&from_dir, e))? {
            let child = child.map_err(|e| werr(&from_dir, e))?;
            let (staged, to) = (child.path(), to_dir.join(child.file_name()));
            match fs_err::symlink_metadata(&to) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => moves.push((staged, to)),
                Err(e) => return Err(werr(&to, e)),
                Ok(existing) => {
                    let staged_is_dir = child.file_type().is_ok_and(|t| t.is_dir());
                    if !(existing.file_type().is_dir() && staged_is_dir) {
                        return Err(ArchiveError::Exists {
                            archive: archive.to_path_buf(),
                            dest: dest.to_path_buf(),
                            path: to.strip_prefix(dest).unwrap_or(&to).to_path_buf(),
                        });
                    }
                    dirs.push((staged, to));
                }
            }
        }
    }
    for (staged, to) in moves {
        fs_err::rename(&staged, &to).map_err(|e| werr(&to, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
