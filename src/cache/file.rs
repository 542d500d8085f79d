//! `file:///abs/dir`: a cache in a local directory (a shared disk, a folder a CI cache action
//! restores).
//!
//! A key is a path under the root. Every access walks the key one component at a time with
//! `openat(O_NOFOLLOW)` from a descriptor of the root, so a symlink found in the cache (put there
//! by anyone who can write to it) is refused, never followed out of the root; special files are
//! refused too. The root itself is the user's choice and may be a symlink.
//!
//! A put writes a `.tmp-*` file in the key's directory, syncs it and renames it over the key:
//! readers see the old file or the whole new one. An interrupted put leaves a `.tmp-*` file
//! behind, never served (no key starts with `.`). A missing root is
//! [`CacheError::Unreachable`] for reads (a mistyped path is not a cache without entries); a
//! put creates it.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{check_key, entry_url, Body, CacheBackend, CacheError};

/// A cache directory.
#[derive(Debug)]
pub struct FileCache {
    root: PathBuf,
    url: String,
}

impl FileCache {
    /// The cache at `file:///abs/dir` (percent-encoded bytes are decoded).
    pub fn new(url: &str) -> Result<Self, CacheError> {
        let bad = |reason: &str| CacheError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let rest = url
            .strip_prefix("file://")
            .ok_or_else(|| bad("a directory cache's URL starts with file://"))?;
        if !rest.starts_with('/') {
            return Err(bad("a file URL names an absolute path: file:///dir"));
        }
        if rest.contains(['?', '#']) {
            return Err(bad("a file URL takes no query or fragment"));
        }
        let root = PathBuf::from(OsString::from_vec(crate::fetch::percent_decode(rest)));
        Ok(Self {
            root,
            url: url.trim_end_matches('/').to_string(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The regular file at `key`, opened for reading; `None` if absent.
    fn open_file(&self, key: &str) -> Result<Option<File>, CacheError> {
        check_key(key)?;
        let root = match self.open_root() {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(CacheError::Unreachable {
                    url: entry_url(&self.url, key),
                    source: Box::new(e),
                })
            }
            Err(e) => return Err(CacheError::local(&self.root, e)),
        };
        let Some((dir, name)) = self.walk(root, key, false)? else {
            return Ok(None);
        };
        // O_NONBLOCK: opening a FIFO planted in the cache must not hang.
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
        let fd = match openat(dir.as_fd(), name, flags, 0) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.refused_or_local(key, e)),
        };
        let file = File::from(fd);
        let meta = file
            .metadata()
            .map_err(|e| CacheError::local(&self.root.join(key), e))?;
        if !meta.is_file() {
            return Err(self.not_a_file(key));
        }
        Ok(Some(file))
    }

    fn open_root(&self) -> io::Result<OwnedFd> {
        use fs_err::os::unix::fs::OpenOptionsExt;
        let root = fs_err::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&self.root)?;
        Ok(root.into_file().into())
    }

    /// Opens, from `root`, each directory of `key` but the last component, refusing symlinks,
    /// creating missing ones when `create`. Returns the last directory and the file name, or
    /// `None` when a directory is missing and not created.
    fn walk<'k>(
        &self,
        root: OwnedFd,
        key: &'k str,
        create: bool,
    ) -> Result<Option<(OwnedFd, &'k str)>, CacheError> {
        let (dirs, name) = match key.rsplit_once('/') {
            Some((dirs, name)) => (Some(dirs), name),
            None => (None, key),
        };
        let mut dir = root;
        for component in dirs.into_iter().flat_map(|d| d.split('/')) {
            let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
            let next = match openat(dir.as_fd(), component, flags, 0) {
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    match mkdirat(dir.as_fd(), component) {
                        Ok(()) => {}
                        // Another put made it in between.
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(CacheError::local(&self.root.join(key), e)),
                    }
                    openat(dir.as_fd(), component, flags, 0)
                }
                other => other,
            };
            dir = match next {
                Ok(fd) => fd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(self.refused_or_local(key, e)),
            };
        }
        Ok(Some((dir, name)))
    }

    /// A symlink (`ELOOP` under `O_NOFOLLOW`) or a file where a directory should be
    /// (`ENOTDIR`) is a cache nobody should read from; anything else is the disk's problem.
    fn refused_or_local(&self, key: &str, e: io::Error) -> CacheError {
        match e.raw_os_error() {
            Some(libc::ELOOP | libc::ENOTDIR) => self.not_a_file(key),
            _ => CacheError::local(&self.root.join(key), e),
        }
    }

    fn not_a_file(&self, key: &str) -> CacheError {
        CacheError::Protocol {
            url: entry_url(&self.url, key),
            reason: "a symlink or special file is on its path; a cache directory holds only \
                     directories and regular files, and pybake follows no link in it"
                .into(),
            source: None,
        }
    }
}

impl CacheBackend for FileCache {
    fn url(&self) -> &str {
        &self.url
    }

    fn get(&self, key: &str, limit: u64) -> Result<Option<Vec<u8>>, CacheError> {
        let Some(file) = self.open_file(key)? else {
            return Ok(None);
        };
        let path = self.root.join(key);
        let len = file
            .metadata()
            .map_err(|e| CacheError::local(&path, e))?
            .len();
        let too_large = || CacheError::TooLarge {
            url: entry_url(&self.url, key),
            limit,
        };
        if len > limit {
            return Err(too_large());
        }
        let mut bytes = Vec::with_capacity(len as usize);
        // One byte past the limit tells a file that grew since the stat.
        file.take(limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| CacheError::local(&path, e))?;
        if bytes.len() as u64 > limit {
            return Err(too_large());
        }
        Ok(Some(bytes))
    }

    fn open(&self, key: &str) -> Result<Option<Box<dyn Read + Send>>, CacheError> {
        Ok(self
            .open_file(key)?
            .map(|f| Box::new(f) as Box<dyn Read + Send>))
    }

    fn exists(&self, key: &str) -> Result<bool, CacheError> {
        Ok(self.open_file(key)?.is_some())
    }

    fn put(&self, key: &str, body: Body<'_>) -> Result<(), CacheError> {
        check_key(key)?;
        fs_err::create_dir_all(&self.root).map_err(|e| CacheError::local(&self.root, e))?;
        let root = self
            .open_root()
            .map_err(|e| CacheError::local(&self.root, e))?;
        let Some((dir, name)) = self.walk(root, key, true)? else {
            // walk creates what is missing; a directory removed meanwhile is a race to report.
            return Err(CacheError::local(
                &self.root.join(key),
                io::Error::from(io::ErrorKind::NotFound),
            ));
        };
        let (temp_name, file) = self.temp_file(&dir, key)?;
        let written = write_body(file, body, &self.root.join(key));
        let renamed = written.and_then(|()| {
            renameat(dir.as_fd(), &temp_name, name)
                .map_err(|e| CacheError::local(&self.root.join(key), e))
        });
        if renamed.is_err() {
            let _ = unlinkat(dir.as_fd(), &temp_name);
        }
        renamed
    }
}

impl FileCache {
    /// A new, empty `.tmp-*` file in `dir`.
    fn temp_file(&self, dir: &OwnedFd, key: &str) -> Result<(String, File), CacheError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        loop {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let name = format!(
                ".tmp-{}-{}-{nanos}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            match openat(dir.as_fd(), &name, flags, 0o644) {
                Ok(fd) => return Ok((name, File::from(fd))),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(CacheError::local(&self.root.join(key), e)),
            }
        }
    }
}

/// Copies the whole body into `file` and syncs it, so that the rename publishes complete bytes
/// even after a crash.
fn write_body(mut file: File, body: Body<'_>, dest: &Path) -> Result<(), CacheError> {
    let (mut reader, len) = body.open()?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut copied = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CacheError::local(&body.path(), e)),
        };
        file.write_all(&buf[..n])
            .map_err(|e| CacheError::local(dest, e))?;
        copied += n as u64;
    }
    if copied != len {
        return Err(CacheError::local(
            &body.path(),
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the file shrank from {len} to {copied} bytes while it was stored"),
            ),
        ));
    }
    file.sync_all().map_err(|e| CacheError::local(dest, e))
}

fn cstring(name: &str) -> io::Result<CString> {
    // Keys are checked: a NUL never gets here.
    CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn openat(dir: BorrowedFd<'_>, name: &str, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    let name = cstring(name)?;
    // SAFETY: a valid descriptor and C string; on success the new descriptor is ours alone.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by openat(2) and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn mkdirat(dir: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let name = cstring(name)?;
    // SAFETY: a valid descriptor and C string.
    let rc = unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// rename(2) within one directory: replaces a file or a symlink at `to`, never follows one.
fn renameat(dir: BorrowedFd<'_>, from: &str, to: &str) -> io::Result<()> {
    let (from, to) = (cstring(from)?, cstring(to)?);
    // SAFETY: a valid descriptor and C strings.
    let rc =
        unsafe { libc::renameat(dir.as_raw_fd(), from.as_ptr(), dir.as_raw_fd(), to.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn unlinkat(dir: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let name = cstring(name)?;
    // SAFETY: a valid descriptor and C string.
    let rc = unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_absolute_directories() {
        let cache = FileCache::new("file:///srv/a%20b/cache/").unwrap();
        assert_eq!(cache.root(), Path::new("/srv/a b/cache/"));
        assert_eq!(cache.url(), "file:///srv/a%20b/cache");
        for url in ["file://host/x", "file://rel", "file:///x?y", "http://x/y"] {
            assert!(
                matches!(FileCache::new(url), Err(CacheError::BadUrl { .. })),
                "{url} accepted"
            );
        }
    }
}
