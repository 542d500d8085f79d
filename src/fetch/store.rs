//! The source store directory: lookup, atomic commit of a verified temp file, import.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use super::FetchError;
use crate::atomic::{self, Publish};
use crate::hash::{HashingReader, SourceHash};

/// `sources_dir/<hex>` if the source is stored. Trusts the store: the file is not re-hashed.
pub fn stored(sources_dir: &Path, sha256: &SourceHash) -> Option<PathBuf> {
    let path = sources_dir.join(sha256.to_hex());
    let meta = fs_err::metadata(&path).ok()?;
    meta.is_file().then_some(path)
}

/// Adds a local file to the store under its sha256 (like `nix-store --add-fixed`), returning
/// the hash and the size. A source already stored is left as is.
pub fn import(
    sources_dir: &Path,
    tmp_dir: &Path,
    file: &Path,
) -> Result<(SourceHash, u64), FetchError> {
    let import_err = |source| FetchError::Import {
        file: file.to_path_buf(),
        source,
    };
    let input = fs_err::File::open(file).map_err(import_err)?;
    let mut temp = temp_file(tmp_dir, "import-")?;
    let mut reader = HashingReader::new(input);
    match copy(&mut reader, temp.as_file_mut()) {
        Ok(_) => {}
        Err(CopyError::Read(e)) => return Err(import_err(e)),
        Err(CopyError::Write(e)) => return Err(store_err(temp.path(), e)),
    }
    let (hash, size) = reader.finish();
    if stored(sources_dir, &hash).is_none() {
        commit(temp, sources_dir, &hash)?;
    }
    Ok((hash, size))
}

/// What [`import_stream`] did with a stream.
#[derive(Debug)]
pub enum Imported {
    /// The source is in the store now (or was already).
    Stored(PathBuf),
    /// The stream's bytes are not the source: another sha256 (or more than `limit` bytes).
    Mismatch { actual: SourceHash, bytes: u64 },
}

/// Stores what `input` yields as the source `expected`, verifying its sha256 while streaming
/// (from a binary cache's `sources/`: untrusted bytes, so nothing enters the store unless it is
/// exactly the pinned file). At most `limit` bytes are read. A failing read is `Err(Read)`.
pub fn import_stream(
    sources_dir: &Path,
    tmp_dir: &Path,
    input: &mut dyn Read,
    expected: &SourceHash,
    limit: u64,
) -> Result<Imported, StreamError> {
    if let Some(p) = stored(sources_dir, expected) {
        return Ok(Imported::Stored(p));
    }
    let mut temp = temp_file(tmp_dir, "fetch-").map_err(StreamError::Store)?;
    // One byte past the limit tells a body that is too long from one that is exactly it.
    let mut reader = HashingReader::new(input.take(limit.saturating_add(1)));
    match copy(&mut reader, temp.as_file_mut()) {
        Ok(_) => {}
        Err(CopyError::Read(e)) => return Err(StreamError::Read(e)),
        Err(CopyError::Write(e)) => return Err(StreamError::Store(store_err(temp.path(), e))),
    }
    let (actual, bytes) = reader.finish();
    if actual != *expected || bytes > limit {
        return Ok(Imported::Mismatch { actual, bytes });
    }
    commit(temp, sources_dir, expected)
        .map(Imported::Stored)
        .map_err(StreamError::Store)
}

/// Why [`import_stream`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("reading the source failed")]
    Read(#[source] io::Error),
    #[error(transparent)]
    Store(FetchError),
}

/// A new temp file in `tmp_dir` (created if missing), removed on drop. It stays locked while
/// open, so that cleaning the store (`Store::remove_orphans`) knows its writer is alive.
pub(super) fn temp_file(tmp_dir: &Path, prefix: &str) -> Result<NamedTempFile, FetchError> {
    fs_err::create_dir_all(tmp_dir).map_err(|e| store_err(tmp_dir, e))?;
    atomic::locked_temp_file(tmp_dir, prefix).map_err(|e| store_err(tmp_dir, e))
}

/// Makes a verified temp file the stored source `sha256`: read-only, fsynced, renamed into
/// place, and the directory entry fsynced.
pub(super) fn commit(
    temp: NamedTempFile,
    sources_dir: &Path,
    sha256: &SourceHash,
) -> Result<PathBuf, FetchError> {
    fs_err::create_dir_all(sources_dir).map_err(|e| store_err(sources_dir, e))?;
    let dest = sources_dir.join(sha256.to_hex());
    atomic::commit(temp, &dest, Publish::FINAL).map_err(|e| store_err(&dest, e))?;
    Ok(dest)
}

pub(super) fn store_err(path: &Path, source: io::Error) -> FetchError {
    FetchError::Store {
        path: path.to_path_buf(),
        source,
    }
}

pub(super) enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Copies everything, telling a failing source from a failing destination. Each chunk is
/// written as soon as it is read (no buffering beyond one read).
pub(super) fn copy(r: &mut impl Read, w: &mut impl Write) -> Result<u64, CopyError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        w.write_all(&buf[..n]).map_err(CopyError::Write)?;
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn import_stores_a_read_only_file_under_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        let (sources, tmp) = (dir.path().join("sources"), dir.path().join("tmp"));
        let file = dir.path().join("zlib-1.3.tar.gz");
        fs_err::write(&file, b"zlib bytes").unwrap();

        let (hash, size) = import(&sources, &tmp, &file).unwrap();
        assert_eq!((hash, size), (SourceHash::of(b"zlib bytes"), 10));
        let path = stored(&sources, &hash).unwrap();
        assert_eq!(path, sources.join(hash.to_hex()));
        assert_eq!(fs_err::read(&path).unwrap(), b"zlib bytes");
        let mode = fs_err::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o444);
        // Importing again is a no-op and leaves no temp file behind.
        assert_eq!(import(&sources, &tmp, &file).unwrap(), (hash, size));
        assert_eq!(fs_err::read_dir(&tmp).unwrap().count(), 0);
        assert_eq!(fs_err::read_dir(&sources).unwrap().count(), 1);
    }

    #[test]
    fn temp_files_are_locked_while_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let temp = temp_file(dir.path(), "fetch-").unwrap();
        let other = std::fs::File::open(temp.path()).unwrap();
        assert!(matches!(
            other.try_lock(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
    }

    #[test]
    fn import_of_a_missing_file_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.tar.gz");
        let err = import(dir.path(), dir.path(), &missing).unwrap_err();
        assert!(err.to_string().contains("nope.tar.gz"), "{err}");
        assert!(matches!(err, FetchError::Import { .. }));
    }

    #[test]
    fn stored_is_none_for_absent_sources() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(stored(dir.path(), &SourceHash::of(b"x")), None);
    }
}
