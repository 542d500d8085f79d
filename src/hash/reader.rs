//! A reader that hashes what passes through it, so a download is verified while it streams.

use std::io::{self, Read};

use sha2::{Digest, Sha256};

use super::SourceHash;

/// Reads until `buf` is full or the input ends; the number of bytes read. Chunked readers use
/// it so that each chunk but the last is whole (a short read is not the end).
pub fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The digest of everything read, and the total length.
    pub fn finish(self) -> (SourceHash, u64) {
        (
            SourceHash::from_bytes(self.hasher.finalize().into()),
            self.bytes,
        )
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_what_it_reads() {
        let mut r = HashingReader::new(&b"abc"[..]);
        let mut sink = Vec::new();
        r.read_to_end(&mut sink).unwrap();
        let (h, n) = r.finish();
        assert_eq!(n, 3);
        assert_eq!(h, SourceHash::of(b"abc"));
    }
}
