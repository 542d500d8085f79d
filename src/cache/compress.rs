//! zstd compression of archives, hashing the compressed bytes as they stream by.
//!
//! Push: [`Compressor`] is a `Write` that compresses into another `Write` and returns the
//! FileHash and FileSize of what it wrote, so the archive is written, compressed and hashed in
//! one pass without staging the output in memory:
//!
//! ```text
//! let mut z = Compressor::new(tmp_file, DEFAULT_LEVEL, threads)?;
//! let nar = write_nar(output_dir, &mut z)?;
//! let (file_hash, file_size, tmp_file) = z.finish()?;
//! ```
//!
//! Pull: [`Decompressor`] is a `Read` over the downloaded bytes that hashes them as read and
//! refuses more than the narinfo's FileSize; after the archive is unpacked, [`Decompressor::finish`]
//! reads whatever is left and returns the FileHash and FileSize to compare with the narinfo's.
//! The decoder's window is capped (`WINDOW_LOG_MAX`), so a hostile frame cannot make it
//! allocate more than 128 MiB.

use std::io::{self, BufReader, Read, Write};

use sha2::{Digest, Sha256};

use crate::hash::FileHash;

/// The level `cache push` uses unless told otherwise (see docs/binary-cache.md for the
/// measurements behind it).
pub const DEFAULT_LEVEL: i32 = 3;
/// log2 of the largest window the decoder accepts (zstd's default limit; levels up to 19 use
/// at most 2^23).
const WINDOW_LOG_MAX: u32 = 27;

#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    #[error("cannot read the data to compress")]
    Read(#[source] io::Error),
    #[error("cannot write the compressed data")]
    Write(#[source] io::Error),
    #[error("cannot set up zstd (level {level}, {threads} threads)")]
    Setup {
        level: i32,
        threads: u32,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the compressed data")]
    Source(#[source] io::Error),
    #[error("the compressed file is longer than the {limit} bytes announced")]
    TooLong { limit: u64 },
}

/// Passes writes through, hashing and counting them.
struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A zstd compressor writing into `W`.
pub struct Compressor<W: Write> {
    encoder: zstd::stream::write::Encoder<'static, HashWriter<W>>,
}

impl<W: Write> Compressor<W> {
    /// `threads` > 1 compresses in parallel (zstd splits the input into jobs of several MiB, so
    /// small archives stay on one thread whatever is asked).
    pub fn new(out: W, level: i32, threads: u32) -> Result<Self, CompressError> {
        let setup = |source| CompressError::Setup {
            level,
            threads,
            source,
        };
        let sink = HashWriter {
            inner: out,
            hasher: Sha256::new(),
            len: 0,
        };
        let mut encoder = zstd::stream::write::Encoder::new(sink, level).map_err(setup)?;
        if threads > 1 {
            encoder.multithread(threads).map_err(setup)?;
        }
        // zstd's own checksum lets `zstd -t` check a file by hand; FileHash is what pybake checks.
        encoder.include_checksum(true).map_err(setup)?;
        Ok(Compressor { encoder })
    }

    /// Ends the stream; returns the hash and length of the compressed bytes, and the writer.
    pub fn finish(self) -> Result<(FileHash, u64, W), CompressError> {
        let mut sink = self.encoder.finish().map_err(CompressError::Write)?;
        sink.flush().map_err(CompressError::Write)?;
        let hash = FileHash::from_bytes(sink.hasher.finalize().into());
        Ok((hash, sink.len, sink.inner))
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.encoder.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.encoder.flush()
    }
}

/// Compresses all of `input` into `out`; returns the compressed bytes' hash and length.
pub fn compress_stream(
    input: &mut impl Read,
    out: impl Write,
    level: i32,
    threads: u32,
) -> Result<(FileHash, u64), CompressError> {
    let mut z = Compressor::new(out, level, threads)?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CompressError::Read(e)),
        };
        z.write_all(&buf[..n]).map_err(CompressError::Write)?;
    }
    let (hash, len, _) = z.finish()?;
    Ok((hash, len))
}

/// Hashes and counts what is read through it, and refuses to read past `limit`.
struct Counted<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
    limit: u64,
    over: bool,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Read one byte past the limit at most: enough to tell that the file is too long.
        let room = (self.limit - self.len.min(self.limit)).saturating_add(1);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.len += n as u64;
        if self.len > self.limit {
            self.over = true;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the compressed file is longer than the {} bytes announced",
                    self.limit
                ),
            ));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Decompresses a downloaded archive, hashing the compressed bytes on the way.
pub struct Decompressor<R: Read> {
    decoder: zstd::stream::read::Decoder<'static, BufReader<Counted<R>>>,
}

impl<R: Read> Decompressor<R> {
    /// `max_compressed` is the narinfo's FileSize: a longer download fails as soon as it
    /// passes it.
    pub fn new(input: R, max_compressed: u64) -> Result<Self, CompressError> {
        let counted = Counted {
            inner: input,
            hasher: Sha256::new(),
            len: 0,
            limit: max_compressed,
            over: false,
        };
        let mut decoder =
            zstd::stream::read::Decoder::new(counted).map_err(|source| CompressError::Setup {
                level: 0,
                threads: 1,
                source,
            })?;
        decoder
            .window_log_max(WINDOW_LOG_MAX)
            .map_err(|source| CompressError::Setup {
                level: 0,
                threads: 1,
                source,
            })?;
        Ok(Decompressor { decoder })
    }

    /// Reads what is left of the compressed input (so the hash covers all of it, even where
    /// the archive reader stopped early) and returns its hash and length.
    pub fn finish(self) -> Result<(FileHash, u64), CompressError> {
        let mut counted = self.decoder.finish().into_inner();
        if !counted.over {
            match io::copy(&mut counted, &mut io::sink()) {
                Ok(_) => {}
                Err(_) if counted.over => {}
                Err(e) => return Err(CompressError::Source(e)),
            }
        }
        if counted.over {
            return Err(CompressError::TooLong {
                limit: counted.limit,
            });
        }
        Ok((
            FileHash::from_bytes(counted.hasher.finalize().into()),
            counted.len,
        ))
    }
}

impl<R: Read> Read for Decompressor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.decoder.read(buf)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use super::*;
    use crate::hash::nar::{unpack_nar, write_nar, NarLimits};

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivially: a repeating text with a counter.
        let mut v = Vec::with_capacity(len + 32);
        let mut i = 0u64;
        while v.len() < len {
            v.extend(format!("line {i} of a sample output\n").as_bytes());
            i += 1;
        }
        v.truncate(len);
        v
    }

    #[test]
    fn round_trip_with_hash_of_the_compressed_bytes() {
        let data = sample(3 << 20);
        for threads in [1, 2] {
            let mut out = Vec::new();
            let (hash, len) = compress_stream(&mut &data[..], &mut out, 3, threads).unwrap();
            assert_eq!((hash, len), (FileHash::of(&out), out.len() as u64));
            assert!(len < data.len() as u64 / 4);
            let mut d = Decompressor::new(&out[..], len).unwrap();
            let mut back = Vec::new();
            d.read_to_end(&mut back).unwrap();
            assert!(back == data);
            assert_eq!(d.finish().unwrap(), (hash, len));
        }
    }

    /// Push and pull pipelines as the substituter will use them: tree -> archive -> zstd ->
    /// bytes -> zstd -> archive -> tree, each hash checked on the way.
    #[test]
    fn streams_an_archive_through_compression() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(src.join("lib")).unwrap();
        std::fs::write(src.join("lib/a.py"), sample(500_000)).unwrap();
        let mut z = Compressor::new(Vec::new(), 3, 2).unwrap();
        let (nar_hash, nar_size) = write_nar(&src, &mut z).unwrap();
        let (file_hash, file_size, file) = z.finish().unwrap();
        assert_eq!(file_hash, FileHash::of(&file));

        let mut d = Decompressor::new(&file[..], file_size).unwrap();
        let dest = t.path().join("dest");
        let got = unpack_nar(&mut d, &dest, &NarLimits::new(nar_size)).unwrap();
        assert_eq!(got, (nar_hash, nar_size));
        assert_eq!(d.finish().unwrap(), (file_hash, file_size));
        assert_eq!(
            std::fs::read(dest.join("lib/a.py")).unwrap(),
            sample(500_000)
        );
    }

    #[test]
    fn a_download_longer_than_announced_fails_at_the_limit() {
        let data = sample(1 << 20);
        let mut out = Vec::new();
        let (_, len) = compress_stream(&mut &data[..], &mut out, 1, 1).unwrap();
        // The same file followed by more: refused once past the announced size.
        let mut longer = out.clone();
        longer.extend_from_slice(&out);
        let mut d = Decompressor::new(&longer[..], len).unwrap();
        let mut sink = Vec::new();
        let err = d.read_to_end(&mut sink).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(matches!(d.finish(), Err(CompressError::TooLong { limit }) if limit == len));
        // A shorter announced size than the real one fails too, even if the reader stops first.
        let mut d = Decompressor::new(&out[..], len - 1).unwrap();
        let _ = d.read(&mut [0u8; 16]);
        assert!(matches!(d.finish(), Err(CompressError::TooLong { .. })));
    }

    #[test]
    fn corrupt_or_truncated_input_is_an_error_not_a_panic() {
        let data = sample(1 << 20);
        let mut out = Vec::new();
        compress_stream(&mut &data[..], &mut out, 3, 1).unwrap();
        let mut flipped = out.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0xff;
        for bad in [&flipped[..], &out[..out.len() / 2], b"not zstd at all"] {
            let mut d = Decompressor::new(bad, bad.len() as u64).unwrap();
            assert!(d.read_to_end(&mut Vec::new()).is_err());
        }
    }
}
