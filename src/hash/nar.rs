//! The archive of an output tree (`pybake-nar-1`), as stored in a binary cache
//! (docs/binary-cache.md).
//!
//! A canonical, streamed serialisation: the same tree always gives the same bytes, whatever the
//! mtimes, owners, modes other than the executable bit, or the order a directory lists its
//! entries in. All integers are u64 little-endian:
//!
//! ```text
//! archive := "pybake-nar-1\n" node            (the root node MUST be a directory)
//! node    := 'f' size bytes                   regular file
//!          | 'x' size bytes                   executable file (owner x bit, as src/hash/tree.rs)
//!          | 'l' len target                   symlink; target bytes verbatim
//!          | 'd' count (namelen name node)*   directory
//! ```
//!
//! Directory entries MUST be sorted by name bytes, strictly increasing (so no duplicates);
//! a name MUST be non-empty UTF-8 of at most 255 bytes, without `/` or NUL, and not `.` or `..`.
//! A symlink target MUST be non-empty UTF-8 of at most 4095 bytes without NUL. No node is more
//! than [`MAX_DEPTH`] names below the root.
//!
//! The writer reads the tree from disk in chunks (memory does not grow with file sizes). The
//! reader treats its input as hostile: it unpacks into a directory it creates and refuses any
//! stream that breaks a rule above, is truncated, has bytes after the root node or exceeds its
//! size limit; on error it removes everything it created. It never writes through a symlink:
//! every entry is created (`mkdir`, `O_CREAT|O_EXCL`, `symlink`) inside a directory it made
//! itself, and the ordering rule means no name is ever created twice. Both return the archive's
//! sha256 and length ([`NarHash`], NarSize).

use std::fs::Permissions;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use fs_err::os::unix::fs::OpenOptionsExt;
use fs_err::File;
use sha2::{Digest, Sha256};

use super::NarHash;

/// The first bytes of every archive; the version is part of it.
pub const MAGIC: &[u8] = b"pybake-nar-1\n";
/// How many names below the root a node may be.
pub const MAX_DEPTH: usize = 256;
/// Longest entry name (Linux `NAME_MAX`).
const NAME_MAX: u64 = 255;
/// Longest symlink target (Linux `PATH_MAX` less the NUL).
const TARGET_MAX: u64 = 4095;
/// How much of a file is copied at a time, in both directions.
const CHUNK: usize = 256 * 1024;

/// What the reader accepts beyond the format's own rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NarLimits {
    /// The most bytes the archive may have (a substituter passes the narinfo's NarSize).
    pub max_size: u64,
    /// The deepest node, in names below the root; at most [`MAX_DEPTH`] is meaningful.
    pub max_depth: usize,
}

impl NarLimits {
    pub fn new(max_size: u64) -> Self {
        NarLimits {
            max_size,
            max_depth: MAX_DEPTH,
        }
    }
}

/// Why an archive could not be written or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum NarError {
    /// The stream breaks the format: it is corrupt or hostile.
    #[error("invalid archive at byte {offset}{}: {reason}", entry_shown(entry))]
    Invalid {
        offset: u64,
        /// The entry being read, relative to the root (`""` for the root).
        entry: String,
        reason: Invalid,
    },
    #[error("cannot read the archive stream")]
    Read(#[source] io::Error),
    #[error("cannot write the archive stream")]
    Write(#[source] io::Error),
    /// A local file system error: reading the tree, or creating the unpacked one.
    #[error("cannot access {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot unpack into {dest}: it already exists (the destination must be new)")]
    DestExists { dest: PathBuf },
    #[error(
        "cannot archive {path}: it is not a directory (an archive's root is an output directory)"
    )]
    RootNotDirectory { path: PathBuf },
    #[error("cannot archive {path}: it is neither a file, a directory nor a symlink")]
    SpecialFile { path: PathBuf },
    #[error("cannot archive {path}: its name or link target is not valid UTF-8")]
    NonUtf8 { path: PathBuf },
    #[error("cannot archive {path}: it is more than {MAX_DEPTH} levels below the root")]
    TooDeep { path: PathBuf },
    #[error("cannot archive {path}: it changed size while being read")]
    Changed { path: PathBuf },
}

fn entry_shown(entry: &str) -> String {
    if entry.is_empty() {
        String::new()
    } else {
        format!(" (entry {entry:?})")
    }
}

/// What is wrong with an archive stream.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Invalid {
    #[error(
        "it does not start with {:?}: not a pybake archive, or another version",
        String::from_utf8_lossy(MAGIC)
    )]
    BadMagic,
    #[error("unknown node tag {0:#04x}")]
    UnknownTag(u8),
    #[error("the root is not a directory")]
    RootNotDirectory,
    #[error("the stream ends early (truncated)")]
    Truncated,
    #[error("there are bytes after the end of the archive")]
    TrailingData,
    #[error("it is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("it is more than {limit} levels deep")]
    TooDeep { limit: usize },
    #[error("entry name {name:?} {problem}")]
    BadName { name: String, problem: &'static str },
    #[error("entry {name:?} does not sort after {previous:?}")]
    Unsorted { previous: String, name: String },
    #[error("entry {name:?} appears twice")]
    Duplicate { name: String },
    #[error("symlink target {target:?} {problem}")]
    BadTarget {
        target: String,
        problem: &'static str,
    },
}

/// Counts and hashes the bytes written through it.
struct HashWriter<W: Write> {
    inner: BufWriter<W>,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> HashWriter<W> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), NarError> {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        self.inner.write_all(bytes).map_err(NarError::Write)
    }

    fn u64(&mut self, n: u64) -> Result<(), NarError> {
        self.put(&n.to_le_bytes())
    }
}

/// Writes the archive of the directory `root` to `out`; returns its hash and length.
pub fn write_nar(root: &Path, out: &mut impl Write) -> Result<(NarHash, u64), NarError> {
    let meta = fs_err::symlink_metadata(root).map_err(io_err(root))?;
    if !meta.is_dir() {
        return Err(NarError::RootNotDirectory {
            path: root.to_path_buf(),
        });
    }
    let mut w = HashWriter {
        inner: BufWriter::with_capacity(64 * 1024, out),
        hasher: Sha256::new(),
        len: 0,
    };
    w.put(MAGIC)?;
    let mut buf = vec![0u8; CHUNK];
    write_dir(&mut w, root, 0, &mut buf)?;
    w.inner.flush().map_err(NarError::Write)?;
    Ok((NarHash::from_bytes(w.hasher.finalize().into()), w.len))
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> NarError + '_ {
    move |source| NarError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_dir<W: Write>(
    w: &mut HashWriter<W>,
    dir: &Path,
    depth: usize,
    buf: &mut [u8],
) -> Result<(), NarError> {
    let mut names = Vec::new();
    for item in fs_err::read_dir(dir).map_err(io_err(dir))? {
        let item = item.map_err(io_err(dir))?;
        let name = item
            .file_name()
            .into_string()
            .map_err(|_| NarError::NonUtf8 { path: item.path() })?;
        names.push(name);
    }
    // `str`'s order is the order of its bytes, which the format requires.
    names.sort_unstable();
    w.put(b"d")?;
    w.u64(names.len() as u64)?;
    for name in names {
        let path = dir.join(&name);
        if depth + 1 > MAX_DEPTH {
            return Err(NarError::TooDeep { path });
        }
        w.u64(name.len() as u64)?;
        w.put(name.as_bytes())?;
        let meta = fs_err::symlink_metadata(&path).map_err(io_err(&path))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            write_dir(w, &path, depth + 1, buf)?;
        } else if ft.is_symlink() {
            let target = fs_err::read_link(&path).map_err(io_err(&path))?;
            let target = target
                .to_str()
                .ok_or_else(|| NarError::NonUtf8 { path: path.clone() })?;
            w.put(b"l")?;
            w.u64(target.len() as u64)?;
            w.put(target.as_bytes())?;
        } else if ft.is_file() {
            write_file(w, &path, buf)?;
        } else {
            return Err(NarError::SpecialFile { path });
        }
    }
    Ok(())
}

fn write_file<W: Write>(
    w: &mut HashWriter<W>,
    path: &Path,
    buf: &mut [u8],
) -> Result<(), NarError> {
    // O_NOFOLLOW: the entry was a regular file when listed; never read through a link that
    // replaced it since.
    let mut file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_err(path))?;
    let meta = file.metadata().map_err(io_err(path))?;
    if !meta.is_file() {
        return Err(NarError::SpecialFile {
            path: path.to_path_buf(),
        });
    }
    let executable = meta.permissions().mode() & 0o100 != 0;
    w.put(if executable { b"x" } else { b"f" })?;
    w.u64(meta.len())?;
    let mut left = meta.len();
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = read_some(&mut file, &mut buf[..want]).map_err(io_err(path))?;
        if n == 0 {
            return Err(NarError::Changed {
                path: path.to_path_buf(),
            });
        }
        w.put(&buf[..n])?;
        left -= n as u64;
    }
    // The size is already written: a file that grew meanwhile would make a corrupt archive.
    if read_some(&mut file, &mut buf[..1]).map_err(io_err(path))? != 0 {
        return Err(NarError::Changed {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

fn read_some(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Unpacks the archive read from `input` into `dest`, which it creates (its parent must exist,
/// `dest` must not). Directories are made 0755, files 0644 or 0755 (executable), as
/// `crate::archive` does. Returns the archive's hash and length. On error, `dest` is removed.
pub fn unpack_nar(
    input: &mut impl Read,
    dest: &Path,
    limits: &NarLimits,
) -> Result<(NarHash, u64), NarError> {
    match fs_err::create_dir(dest) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(NarError::DestExists {
                dest: dest.to_path_buf(),
            })
        }
        Err(e) => return Err(io_err(dest)(e)),
    }
    let mut u = Unpacker {
        input: BufReader::with_capacity(64 * 1024, input),
        hasher: Sha256::new(),
        offset: 0,
        limits: *limits,
        entry: String::new(),
    };
    let result = u.run(dest);
    if result.is_err() {
        // Only what this call created is removed; `remove_dir_all` does not follow symlinks.
        let _ = fs_err::remove_dir_all(dest);
    }
    result
}

struct Unpacker<R: Read> {
    input: BufReader<R>,
    hasher: Sha256,
    /// Bytes of the archive consumed so far.
    offset: u64,
    limits: NarLimits,
    /// The entry being read, for messages.
    entry: String,
}

impl<R: Read> Unpacker<R> {
    fn invalid(&self, reason: Invalid) -> NarError {
        self.invalid_at(self.offset, reason)
    }

    fn invalid_at(&self, offset: u64, reason: Invalid) -> NarError {
        NarError::Invalid {
            offset,
            entry: self.entry.clone(),
            reason,
        }
    }

    /// Reads exactly `buf.len()` bytes of the archive, within the size limit.
    fn exact(&mut self, buf: &mut [u8]) -> Result<(), NarError> {
        self.reserve(buf.len() as u64)?;
        match self.input.read_exact(buf) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(self.invalid(Invalid::Truncated))
            }
            Err(e) => return Err(NarError::Read(e)),
        }
        self.hasher.update(&*buf);
        self.offset += buf.len() as u64;
        Ok(())
    }

    /// Fails when `n` more bytes would exceed the size limit; checked before anything is
    /// read or written, so a huge declared size costs nothing.
    fn reserve(&self, n: u64) -> Result<(), NarError> {
        let limit = self.limits.max_size;
        if self.offset.checked_add(n).is_none_or(|end| end > limit) {
            return Err(self.invalid(Invalid::TooLarge { limit }));
        }
        Ok(())
    }

    fn u64(&mut self) -> Result<u64, NarError> {
        let mut b = [0u8; 8];
        self.exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn tag(&mut self) -> Result<u8, NarError> {
        let mut b = [0u8; 1];
        self.exact(&mut b)?;
        Ok(b[0])
    }

    fn run(&mut self, dest: &Path) -> Result<(NarHash, u64), NarError> {
        let mut magic = [0u8; MAGIC.len()];
        match self.exact(&mut magic) {
            Ok(()) if magic == MAGIC => {}
            Ok(()) | Err(NarError::Invalid { .. }) => {
                return Err(self.invalid_at(0, Invalid::BadMagic))
            }
            Err(e) => return Err(e),
        }
        let at = self.offset;
        match self.tag()? {
            b'd' => {}
            b'f' | b'x' | b'l' => return Err(self.invalid_at(at, Invalid::RootNotDirectory)),
            t => return Err(self.invalid_at(at, Invalid::UnknownTag(t))),
        }
        set_mode(dest, 0o755)?;
        self.dir(dest, 0)?;
        self.entry.clear();
        let mut one = [0u8; 1];
        match read_some(&mut self.input, &mut one) {
            Ok(0) => {}
            Ok(_) => return Err(self.invalid(Invalid::TrailingData)),
            Err(e) => return Err(NarError::Read(e)),
        }
        let hash = std::mem::take(&mut self.hasher).finalize();
        Ok((NarHash::from_bytes(hash.into()), self.offset))
    }

    /// The entries of a directory node whose tag was read; `path` exists and is empty.
    fn dir(&mut self, path: &Path, depth: usize) -> Result<(), NarError> {
        let count = self.u64()?;
        let parent_entry = self.entry.clone();
        let mut previous: Option<String> = None;
        for _ in 0..count {
            let at = self.offset;
            let name = self.name()?;
            self.entry = if parent_entry.is_empty() {
                name.clone()
            } else {
                format!("{parent_entry}/{name}")
            };
            if let Some(prev) = &previous {
                match prev.as_bytes().cmp(name.as_bytes()) {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Equal => {
                        return Err(self.invalid_at(at, Invalid::Duplicate { name }))
                    }
                    std::cmp::Ordering::Greater => {
                        let previous = prev.clone();
                        return Err(self.invalid_at(at, Invalid::Unsorted { previous, name }));
                    }
                }
            }
            if depth + 1 > self.limits.max_depth {
                let limit = self.limits.max_depth;
                return Err(self.invalid_at(at, Invalid::TooDeep { limit }));
            }
            let child = path.join(&name);
            let at = self.offset;
            match self.tag()? {
                b'd' => {
                    fs_err::create_dir(&child).map_err(io_err(&child))?;
                    set_mode(&child, 0o755)?;
                    self.dir(&child, depth + 1)?;
                }
                t @ (b'f' | b'x') => self.file(&child, t == b'x')?,
                b'l' => self.symlink(&child)?,
                t => return Err(self.invalid_at(at, Invalid::UnknownTag(t))),
            }
            previous = Some(name);
        }
        self.entry = parent_entry;
        Ok(())
    }

    fn name(&mut self) -> Result<String, NarError> {
        let len = self.u64()?;
        let bad = |s: &Self, name: String, problem| s.invalid(Invalid::BadName { name, problem });
        if len == 0 {
            return Err(bad(self, String::new(), "is empty"));
        }
        if len > NAME_MAX {
            return Err(bad(self, String::new(), "is longer than 255 bytes"));
        }
        let mut bytes = vec![0u8; len as usize];
        self.exact(&mut bytes)?;
        let name = match String::from_utf8(bytes) {
            Ok(name) => name,
            Err(e) => {
                let shown = String::from_utf8_lossy(e.as_bytes()).into_owned();
                return Err(bad(self, shown, "is not valid UTF-8"));
            }
        };
        let problem = if name.contains('/') {
            "contains `/`"
        } else if name.contains('\0') {
            "contains NUL"
        } else if name == "." || name == ".." {
            "is `.` or `..`"
        } else {
            return Ok(name);
        };
        Err(bad(self, name, problem))
    }

    fn file(&mut self, path: &Path, executable: bool) -> Result<(), NarError> {
        let size = self.u64()?;
        self.reserve(size)?;
        let mode = if executable { 0o755 } else { 0o644 };
        let mut file = File::options()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .map_err(io_err(path))?;
        let mut buf = vec![0u8; CHUNK.min(usize::try_from(size).unwrap_or(CHUNK))];
        let mut left = size;
        while left > 0 {
            let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            self.exact(&mut buf[..n])?;
            file.write_all(&buf[..n]).map_err(io_err(path))?;
            left -= n as u64;
        }
        // `mode` above is filtered by the umask.
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(io_err(path))
    }

    fn symlink(&mut self, path: &Path) -> Result<(), NarError> {
        let len = self.u64()?;
        let bad =
            |s: &Self, target: String, problem| s.invalid(Invalid::BadTarget { target, problem });
        if len == 0 {
            return Err(bad(self, String::new(), "is empty"));
        }
        if len > TARGET_MAX {
            return Err(bad(self, String::new(), "is longer than 4095 bytes"));
        }
        let mut bytes = vec![0u8; len as usize];
        self.exact(&mut bytes)?;
        let target = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                let shown = String::from_utf8_lossy(e.as_bytes()).into_owned();
                return Err(bad(self, shown, "is not valid UTF-8"));
            }
        };
        if target.contains('\0') {
            return Err(bad(self, target, "contains NUL"));
        }
        fs_err::os::unix::fs::symlink(&target, path).map_err(io_err(path))
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), NarError> {
    fs_err::set_permissions(path, Permissions::from_mode(mode)).map_err(io_err(path))
}

#[cfg(test)]
mod tests;
