//! `remove-references-to`: blanking dependencies' store paths out of an output after its build,
//! as Nix's `remove-references-to` does. A build tool's path that an output records but never
//! uses at run time (a compiler in a config file, a path in debug data) would otherwise make the
//! tool a runtime reference, and everyone who downloads the output would download the tool too.
//!
//! Each occurrence of a listed dependency's hash part (32 hex digits) becomes 32 `e`s: the
//! file keeps its size and layout (it may be a binary), and the path no longer names anything in
//! any store. Files are rewritten through a temporary file in the same directory and a rename,
//! streamed with bounded memory.

use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use fs_err::File;
use memchr::memmem;

use crate::atomic::{self, Publish};
use crate::store::StoreName;

/// How much of a file is handled at a time.
const CHUNK: usize = 256 * 1024;

/// Replaces every occurrence of the hash parts of `names` in the files and symlink targets
/// under `root`; returns how many entries changed.
pub fn blank_out(root: &Path, names: &[StoreName]) -> io::Result<usize> {
    if names.is_empty() {
        return Ok(0);
    }
    let patterns: Vec<&[u8]> = names.iter().map(|n| n.hash_part().as_bytes()).collect();
    let finders: Vec<memmem::Finder> = patterns.iter().map(memmem::Finder::new).collect();
    let mut changed = 0;
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.map_err(|e| {
            let path = e.path().map(Path::to_path_buf).unwrap_or_default();
            io::Error::other(format!("walking {}: {e}", path.display()))
        })?;
        let ft = e.file_type();
        if ft.is_symlink() {
            let target = fs_err::read_link(e.path())?;
            let mut bytes = target.as_os_str().as_encoded_bytes().to_vec();
            if replace_all(&mut bytes, &finders) {
                use std::os::unix::ffi::OsStrExt;
                fs_err::remove_file(e.path())?;
                fs_err::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&bytes), e.path())?;
                changed += 1;
            }
        } else if ft.is_file() && contains_any(e.path(), &finders)? {
            rewrite(e.path(), &finders)?;
            changed += 1;
        }
    }
    Ok(changed)
}

/// The same length as every hash part; `e` as in Nix.
const BLANK: [u8; StoreName::HASH_LEN] = [b'e'; StoreName::HASH_LEN];

/// Blanks every match in `buf`; whether there was one.
fn replace_all(buf: &mut [u8], finders: &[memmem::Finder]) -> bool {
    let mut any = false;
    for f in finders {
        let hits: Vec<usize> = f.find_iter(buf).collect();
        for at in hits {
            buf[at..at + BLANK.len()].copy_from_slice(&BLANK);
            any = true;
        }
    }
    any
}

/// Whether the file holds any pattern, reading it in chunks that overlap by a pattern's length
/// minus one (so a match across two reads is seen whole).
fn contains_any(path: &Path, finders: &[memmem::Finder]) -> io::Result<bool> {
    let keep = BLANK.len() - 1;
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; CHUNK + keep];
    let mut carried = 0;
    loop {
        let n = crate::hash::read_up_to(&mut f, &mut buf[carried..])?;
        if n == 0 {
            return Ok(false);
        }
        let len = carried + n;
        if finders.iter().any(|fd| fd.find(&buf[..len]).is_some()) {
            return Ok(true);
        }
        carried = keep.min(len);
        buf.copy_within(len - carried..len, 0);
    }
}

/// Rewrites the file with every match blanked, through a temporary file and a rename; the
/// mode is kept.
fn rewrite(path: &Path, finders: &[memmem::Finder]) -> io::Result<()> {
    let keep = BLANK.len() - 1;
    let mode = fs_err::metadata(path)?.permissions().mode();
    let how = Publish::READABLE.with_mode(mode & 0o7777);
    atomic::write_with(path, ".pybake-blank-", how, |out| {
        let mut input = File::open(path)?;
        let mut buf = vec![0u8; CHUNK + keep];
        let mut carried = 0;
        loop {
            let n = crate::hash::read_up_to(&mut input, &mut buf[carried..])?;
            let len = carried + n;
            replace_all(&mut buf[..len], finders);
            if n == 0 {
                return out.write_all(&buf[..len]);
            }
            // A match starting in the last `keep` bytes is not complete yet: keep them for the
            // next round, where the whole match is in the buffer.
            let emit = len - keep.min(len);
            out.write_all(&buf[..emit])?;
            buf.copy_within(emit..len, 0);
            carried = len - emit;
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use super::*;
    use crate::hash::DrvHash;

    #[test]
    fn every_occurrence_is_blanked_even_across_chunks_and_in_links() {
        let t = tempfile::tempdir().unwrap();
        let tool = StoreName::new(&DrvHash::of(b"tool"), "emsdk", "1");
        let other = StoreName::new(&DrvHash::of(b"keep"), "zlib", "1");
        let path = format!("/pybake/store/{tool}/bin/emcc");
        // A match straddling the chunk boundary, one at the very end, and another store path
        // that must stay.
        let mut big = vec![b'x'; CHUNK - 10];
        big.extend_from_slice(path.as_bytes());
        big.extend_from_slice(format!(" /pybake/store/{other} ").as_bytes());
        big.extend_from_slice(tool.hash_part().as_bytes());
        std::fs::write(t.path().join("big"), &big).unwrap();
        std::fs::set_permissions(t.path().join("big"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::fs::write(t.path().join("clean"), "nothing here").unwrap();
        std::os::unix::fs::symlink(&path, t.path().join("link")).unwrap();

        assert_eq!(blank_out(t.path(), std::slice::from_ref(&tool)).unwrap(), 2);
        let after = std::fs::read(t.path().join("big")).unwrap();
        assert_eq!(after.len(), big.len(), "same size");
        let text = String::from_utf8_lossy(&after);
        assert!(!text.contains(tool.hash_part()), "blanked");
        assert_eq!(text.matches(&"e".repeat(32)).count(), 2);
        assert!(text.contains(other.as_str()), "other paths stay");
        let mode = std::fs::metadata(t.path().join("big"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        let link = std::fs::read_link(t.path().join("link")).unwrap();
        assert_eq!(
            link.to_str().unwrap(),
            format!("/pybake/store/{}-emsdk-1/bin/emcc", "e".repeat(32))
        );
        assert_eq!(
            std::fs::read(t.path().join("clean")).unwrap(),
            b"nothing here"
        );
    }
}
