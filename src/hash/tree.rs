//! The canonical content hash of a file tree (scheme `pybake-tree-v1`).
//!
//! The hash MUST depend only on what a build can observe: relative paths, entry types, the
//! executable bit, symlink targets and file contents. It MUST NOT depend on mtimes, owners,
//! other permission bits, the order a directory lists its entries in, or where the tree lives.
//!
//! Serialisation: the entries below the root (the root itself excluded), sorted by their
//! `/`-separated relative path compared as bytes, each as `path`, a type tag and a payload:
//! `d` directory (no payload), `f` file / `x` executable file (sha256 of the contents),
//! `l` symlink (the target, verbatim). These go through [`Canon`] after the scheme name. File
//! contents are hashed first, in parallel, which is what makes large trees fast; the result is a
//! Merkle-style hash, not a hash of one long stream.
//!
//! A root that is a single regular file hashes to the plain sha256 of its bytes, so a file source
//! pinned by `sha256sum` matches.

use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use fs_err::File;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::Canon;

const SCHEME: &str = "pybake-tree-v1";

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is neither a file, a directory nor a symlink (sockets, fifos and devices cannot be hashed or stored)")]
    SpecialFile { path: PathBuf },
    #[error("{path} is not valid UTF-8; pybake stores only UTF-8 file names")]
    NonUtf8 { path: PathBuf },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> TreeError + '_ {
    move |source| TreeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File { executable: bool },
    Symlink { target: String },
}

/// One entry of a tree, relative to its root.
#[derive(Debug, Clone)]
pub struct Entry {
    pub rel: String,
    pub path: PathBuf,
    pub kind: Kind,
}

/// Every entry below `root`, sorted by relative path bytes. Symlinks are not followed.
pub fn entries(root: &Path) -> Result<Vec<Entry>, TreeError> {
    let mut out = Vec::new();
    for item in walkdir::WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .sort_by(|a, b| a.file_name().cmp(b.file_name()))
    {
        let item = item.map_err(|e| {
            let path = e.path().unwrap_or(root).to_path_buf();
            TreeError::Io {
                source: e
                    .into_io_error()
                    .unwrap_or_else(|| io::Error::other("directory loop")),
                path,
            }
        })?;
        let path = item.path().to_path_buf();
        let rel = path
            .strip_prefix(root)
            .ok()
            .and_then(|p| p.to_str())
            .ok_or_else(|| TreeError::NonUtf8 { path: path.clone() })?
            .to_string();
        let ft = item.file_type();
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            let target = fs_err::read_link(&path).map_err(io_err(&path))?;
            let target = target
                .to_str()
                .ok_or_else(|| TreeError::NonUtf8 { path: path.clone() })?
                .to_string();
            Kind::Symlink { target }
        } else if ft.is_file() {
            let mode = item.metadata().map_err(|e| TreeError::Io {
                path: path.clone(),
                source: e.into(),
            })?;
            Kind::File {
                executable: mode.permissions().mode() & 0o100 != 0,
            }
        } else {
            return Err(TreeError::SpecialFile { path });
        };
        out.push(Entry { rel, path, kind });
    }
    // walkdir sorts siblings by name; a full-path byte sort differs (`a/b` vs `a.b`), and the
    // serialisation is defined over full paths.
    out.sort_by(|a, b| a.rel.as_bytes().cmp(b.rel.as_bytes()));
    Ok(out)
}

/// How much of a file is read at a time; with the parallel walk this bounds the memory used to
/// hash (and scan) a tree, whatever the size of its files.
pub(crate) const CHUNK: usize = 256 * 1024;

/// Sees every file's contents while the tree is hashed, so that one read of each file serves
/// both (reference scanning, see `action/scan.rs`).
pub trait Scanner: Sync {
    /// What the scanner learns about one file.
    type State: Send;
    /// How many bytes at the end of each window are shown again at the start of the next one.
    /// A pattern of up to `overlap() + 1` bytes is thus seen whole in some window, even where it
    /// straddles two reads; a shorter one may be seen twice.
    fn overlap(&self) -> usize;
    fn start(&self, entry: &Entry) -> Self::State;
    /// Called with successive windows of the file, in order; together they cover it.
    fn window(&self, state: &mut Self::State, window: &[u8]);
}

/// The scanner that looks at nothing: plain hashing.
struct NoScan;

impl Scanner for NoScan {
    type State = ();
    fn overlap(&self) -> usize {
        0
    }
    fn start(&self, _: &Entry) {}
    fn window(&self, _: &mut (), _: &[u8]) {}
}

/// A tree's hash, its entries, and what the scanner found in each file (`None` for the others).
pub struct Scanned<T> {
    pub hash: [u8; 32],
    pub entries: Vec<(Entry, Option<T>)>,
}

/// sha256 of a file's contents.
pub fn file_sha256(path: &Path) -> Result<[u8; 32], TreeError> {
    read_file(path, &NoScan, &mut ())
}

/// Reads `path` once, in chunks of [`CHUNK`] bytes: hashes it and shows `scanner` each chunk
/// preceded by the last `overlap()` bytes before it.
fn read_file<S: Scanner>(
    path: &Path,
    scanner: &S,
    state: &mut S::State,
) -> Result<[u8; 32], TreeError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let mut hasher = Sha256::new();
    let keep = scanner.overlap();
    // One buffer per thread, reused: a fresh 256 KiB allocation per file is a fresh mapping,
    // zeroed page by page, which costs more than hashing a small file.
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let mut buf = BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
    buf.resize(keep + CHUNK, 0);
    let result = read_into(&mut f, path, &mut hasher, scanner, state, keep, &mut buf);
    BUF.with(|b| *b.borrow_mut() = buf);
    result?;
    Ok(hasher.finalize().into())
}

fn read_into<S: Scanner>(
    f: &mut File,
    path: &Path,
    hasher: &mut Sha256,
    scanner: &S,
    state: &mut S::State,
    keep: usize,
    buf: &mut [u8],
) -> Result<(), TreeError> {
    let mut carried = 0;
    loop {
        let n = match f.read(&mut buf[carried..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(path)(e)),
        };
        let end = carried + n;
        hasher.update(&buf[carried..end]);
        scanner.window(state, &buf[..end]);
        carried = keep.min(end);
        buf.copy_within(end - carried..end, 0);
    }
    Ok(())
}

/// A file entry's digest and what the scanner found in it; `None` for other entries.
type FileRead<T> = Option<([u8; 32], T)>;

/// The digest and scan state of each file entry. Large trees are read in parallel; small ones
/// on this thread, where waking the thread pool would cost more than it saves.
fn read_files<S: Scanner>(
    entries: &[Entry],
    scanner: &S,
) -> Result<Vec<FileRead<S::State>>, TreeError> {
    let one = |e: &Entry| match e.kind {
        Kind::File { .. } => {
            let mut state = scanner.start(e);
            let digest = read_file(&e.path, scanner, &mut state)?;
            Ok(Some((digest, state)))
        }
        _ => Ok(None),
    };
    if entries.len() < 16 {
        entries.iter().map(one).collect()
    } else {
        entries.par_iter().map(one).collect()
    }
}

/// The sha256 of each file entry (`None` for the others).
fn file_digests(entries: &[Entry]) -> Result<Vec<Option<[u8; 32]>>, TreeError> {
    Ok(read_files(entries, &NoScan)?
        .into_iter()
        .map(|d| d.map(|(digest, ())| digest))
        .collect())
}

/// The canonical hash of the tree (or single file) at `root`.
pub fn hash_path(root: &Path) -> Result<[u8; 32], TreeError> {
    Ok(hash_path_scanning(root, &NoScan)?.hash)
}

/// [`hash_path`], reading each file once and showing its contents to `scanner` on the way. A
/// root that is a single file is one entry with an empty relative path.
pub fn hash_path_scanning<S: Scanner>(
    root: &Path,
    scanner: &S,
) -> Result<Scanned<S::State>, TreeError> {
    let meta = fs_err::symlink_metadata(root).map_err(io_err(root))?;
    if meta.is_file() {
        let entry = Entry {
            rel: String::new(),
            path: root.to_path_buf(),
            kind: Kind::File {
                executable: meta.permissions().mode() & 0o100 != 0,
            },
        };
        let mut state = scanner.start(&entry);
        let hash = read_file(root, scanner, &mut state)?;
        return Ok(Scanned {
            hash,
            entries: vec![(entry, Some(state))],
        });
    }
    if !meta.is_dir() {
        return Err(TreeError::SpecialFile {
            path: root.to_path_buf(),
        });
    }
    let entries = entries(root)?;
    let read = read_files(&entries, scanner)?;
    let mut c = Canon::new();
    c.str(SCHEME).u64(entries.len() as u64);
    let mut out = Vec::with_capacity(entries.len());
    for (e, file) in entries.into_iter().zip(read) {
        c.str(&e.rel);
        let state = match (&e.kind, file) {
            (Kind::Dir, _) => {
                c.str("d");
                None
            }
            (Kind::File { executable }, Some((digest, state))) => {
                c.str(if *executable { "x" } else { "f" }).bytes(&digest);
                Some(state)
            }
            (Kind::Symlink { target }, _) => {
                c.str("l").str(target);
                None
            }
            (Kind::File { .. }, None) => unreachable!("every file entry was read above"),
        };
        out.push((e, state));
    }
    Ok(Scanned {
        hash: c.finish(),
        entries: out,
    })
}

/// Each entry with its file digest, by relative path.
type Summary = std::collections::BTreeMap<String, (Kind, Option<[u8; 32]>)>;

/// Relative paths whose type, executable bit, target or contents differ between two trees,
/// or that exist in only one of them (sorted).
pub fn diff(a: &Path, b: &Path) -> Result<Vec<String>, TreeError> {
    let summarise = |root: &Path| -> Result<Summary, TreeError> {
        let entries = entries(root)?;
        let digests = file_digests(&entries)?;
        Ok(entries
            .into_iter()
            .zip(digests)
            .map(|(e, d)| (e.rel, (e.kind, d)))
            .collect())
    };
    let (x, y) = (summarise(a)?, summarise(b)?);
    let mut out: Vec<String> = x
        .iter()
        .filter(|(k, v)| y.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .chain(y.keys().filter(|k| !x.contains_key(*k)).cloned())
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use super::*;
    use std::os::unix::fs::symlink;

    fn sample(dir: &Path) {
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::write(dir.join("bin/tool"), b"#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(dir.join("bin/tool"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::fs::write(dir.join("a.txt"), b"hello\n").unwrap();
        symlink("a.txt", dir.join("link")).unwrap();
    }

    #[test]
    fn known_answer() {
        let t = tempfile::tempdir().unwrap();
        sample(t.path());
        assert_eq!(
            hex::encode(hash_path(t.path()).unwrap()),
            "39ebbd583942d25747eaa3b81850bff70afadcc581fc306e0ccbf312947a4dc5"
        );
    }

    #[test]
    fn ignores_location_mtime_and_mode_bits_other_than_exec() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        sample(a.path());
        sample(b.path());
        std::fs::set_permissions(
            b.path().join("a.txt"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let f = File::options()
            .append(true)
            .open(b.path().join("a.txt"))
            .unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(hash_path(a.path()).unwrap(), hash_path(b.path()).unwrap());
    }

    #[test]
    fn exec_bit_content_and_symlink_target_matter() {
        let base = tempfile::tempdir().unwrap();
        sample(base.path());
        let h0 = hash_path(base.path()).unwrap();

        std::fs::set_permissions(
            base.path().join("a.txt"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let h1 = hash_path(base.path()).unwrap();
        assert_ne!(h0, h1);

        std::fs::write(base.path().join("a.txt"), b"hello!\n").unwrap();
        let h2 = hash_path(base.path()).unwrap();
        assert_ne!(h1, h2);

        std::fs::remove_file(base.path().join("link")).unwrap();
        symlink("bin", base.path().join("link")).unwrap();
        assert_ne!(h2, hash_path(base.path()).unwrap());
    }

    #[test]
    fn diff_names_changed_added_and_removed_files() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        sample(a.path());
        sample(b.path());
        assert!(diff(a.path(), b.path()).unwrap().is_empty());
        std::fs::write(b.path().join("a.txt"), b"changed\n").unwrap();
        std::fs::write(b.path().join("new"), b"").unwrap();
        std::fs::remove_file(b.path().join("link")).unwrap();
        assert_eq!(diff(a.path(), b.path()).unwrap(), ["a.txt", "link", "new"]);
    }

    /// Records every window it is shown.
    struct Windows(usize);

    impl Scanner for Windows {
        type State = Vec<Vec<u8>>;
        fn overlap(&self) -> usize {
            self.0
        }
        fn start(&self, _: &Entry) -> Self::State {
            Vec::new()
        }
        fn window(&self, state: &mut Self::State, window: &[u8]) {
            state.push(window.to_vec());
        }
    }

    #[test]
    fn scanner_sees_each_chunk_after_the_overlap_and_the_hash_is_unchanged() {
        let t = tempfile::tempdir().unwrap();
        sample(t.path());
        let big: Vec<u8> = (0..2 * CHUNK + 5).map(|i| (i % 251) as u8).collect();
        std::fs::write(t.path().join("big"), &big).unwrap();
        let scanned = hash_path_scanning(t.path(), &Windows(7)).unwrap();
        assert_eq!(scanned.hash, hash_path(t.path()).unwrap());
        let (entry, windows) = &scanned.entries[1];
        assert_eq!(entry.rel, "big");
        let windows = windows.as_ref().unwrap();
        assert!(windows.len() >= 2, "{} windows", windows.len());
        let mut seen = windows[0].clone();
        for pair in windows.windows(2) {
            let (prev, next) = (&pair[0], &pair[1]);
            assert_eq!(next[..7], prev[prev.len() - 7..], "overlap repeated");
            seen.extend_from_slice(&next[7..]);
        }
        assert_eq!(seen, big);
        assert!(windows.iter().all(|w| w.len() <= CHUNK + 7));
        // Symlinks and directories are not read.
        let names: Vec<_> = scanned
            .entries
            .iter()
            .filter(|(_, s)| s.is_none())
            .map(|(e, _)| e.rel.as_str())
            .collect();
        assert_eq!(names, ["bin", "link"]);
    }

    #[test]
    fn single_file_is_plain_sha256() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("x");
        std::fs::write(&f, b"abc").unwrap();
        assert_eq!(
            hex::encode(hash_path(&f).unwrap()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
