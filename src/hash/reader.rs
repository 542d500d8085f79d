//! A reader that hashes what passes through it, so a download is verified while it streams.

use std::io::{self, Read};

use sha2::{Digest, Sha256};

use super::SourceHash;

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
