//! `<hash part>.narinfo`: what a binary cache says about one output (docs/binary-cache.md).
//!
//! Text, UTF-8, at most [`MAX_NARINFO_SIZE`] bytes, one `Key: value` line each, every line
//! ending in `\n`. Written in this order (parsed in any order):
//!
//! ```text
//! StoreName: <store name>
//! DrvHash: sha256:<hex>
//! OutputHash: sha256:<hex>
//! URL: nar/<FileHash hex>.nar.zst
//! Compression: zstd
//! FileHash: sha256:<hex>
//! FileSize: <decimal>
//! NarHash: sha256:<hex>
//! NarSize: <decimal>
//! References: <store name> ...     (sorted, distinct, space separated; may be empty)
//! Root: <store name>               (only for an output built on a root)
//! HostBuild: <host identity>       (only for a host build)
//! Sig: <key name>:<base64>         (zero or more)
//! ```
//!
//! Everything read from a cache is hostile, so parsing is strict: unknown keys (other than
//! `X-...`, which are ignored), repeated keys (other than `Sig`), control characters, a
//! non-canonical decimal, a store name that is not one, and a URL other than the one the
//! FileHash implies are all errors. The URL is used as a cache key, so it must not be able to
//! name anything else. The file name's hash part must be StoreName's.
//!
//! Signatures cover the fingerprint `pybake-1;<StoreName>;<NarHash>;<NarSize>;<References
//! joined by ,>`: what identifies the output and its bytes. The other fields are checked
//! against what they describe: FileHash/FileSize by the download, OutputHash after unpacking,
//! DrvHash against the store name the client asked for.

use std::fmt::Write as _;

use crate::cache::keys::{KeyError, SecretKey, SigError, Signature, TrustedKeys};
use crate::hash::{DrvHash, FileHash, NarHash, OutputHash, ParseDigestError};
use crate::store::{Meta, StoreName};

/// The largest narinfo accepted (a cache may be hostile; real ones are well under 4 KiB).
pub const MAX_NARINFO_SIZE: usize = 64 * 1024;

/// How an archive is compressed. Only zstd is written or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zstd,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
        }
    }

    /// The file name extension of an archive so compressed.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Zstd => "nar.zst",
        }
    }
}

/// One output's entry in a binary cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarInfo {
    pub store_name: StoreName,
    pub drv_hash: DrvHash,
    pub output_hash: OutputHash,
    pub compression: Compression,
    pub file_hash: FileHash,
    pub file_size: u64,
    pub nar_hash: NarHash,
    pub nar_size: u64,
    /// Runtime references; written sorted and deduplicated whatever their order here.
    pub references: Vec<StoreName>,
    pub root: Option<StoreName>,
    /// The host identity of a host build (`debian 12`).
    pub host_build: Option<String>,
    pub sigs: Vec<Signature>,
}

#[derive(Debug, thiserror::Error)]
pub enum NarInfoError {
    #[error("narinfo is {size} bytes, more than the limit of {MAX_NARINFO_SIZE}")]
    TooLarge { size: usize },
    #[error("narinfo line {line} is not valid UTF-8")]
    NotUtf8 { line: usize },
    #[error("narinfo does not end with a newline (truncated?)")]
    NoFinalNewline,
    #[error("narinfo line {line}: {problem}")]
    Line { line: usize, problem: LineProblem },
    #[error("narinfo has no {key} line")]
    Missing { key: &'static str },
    #[error("narinfo URL {url:?} is not the archive's address {expected:?}")]
    Url { url: String, expected: String },
    #[error("narinfo {expected}.narinfo describes {found}, whose hash part differs")]
    WrongName { expected: String, found: StoreName },
    #[error("narinfo for {store_name} has DrvHash {drv_hash}, which does not name it")]
    DrvHashMismatch {
        store_name: StoreName,
        drv_hash: DrvHash,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum LineProblem {
    #[error("not of the form `Key: value`")]
    Syntax,
    #[error("contains a control character or stray whitespace")]
    Control,
    #[error("unknown key {0:?} (only keys starting with `X-` may be added)")]
    UnknownKey(String),
    #[error("{0} appears twice")]
    Duplicate(&'static str),
    #[error("{key}: {source}")]
    Digest {
        key: &'static str,
        source: ParseDigestError,
    },
    #[error("{key}: {value:?} is not a decimal number of bytes")]
    Size { key: &'static str, value: String },
    #[error("{key}: {value:?} is not a store name")]
    StoreName { key: &'static str, value: String },
    #[error("References: {name} is not after {previous} (they must be sorted and distinct)")]
    ReferenceOrder { previous: String, name: String },
    #[error("Compression {0:?} is not supported (only zstd)")]
    Compression(String),
    #[error("HostBuild is empty")]
    EmptyHost,
    #[error("Sig: {0}")]
    Sig(#[source] KeyError),
}

/// A store name from a cache, checked as every store name is (`StoreName::parse`: hash part,
/// characters, length), since it becomes a file name and a bwrap argument.
fn store_name(key: &'static str, value: &str) -> Result<StoreName, LineProblem> {
    StoreName::parse(value).map_err(|_| LineProblem::StoreName {
        key,
        value: value.to_string(),
    })
}

/// A canonical decimal u64: digits only, no sign, no leading zero.
fn size(key: &'static str, value: &str) -> Result<u64, LineProblem> {
    let canonical = !value.is_empty()
        && value.bytes().all(|b| b.is_ascii_digit())
        && (value == "0" || !value.starts_with('0'));
    value
        .parse()
        .ok()
        .filter(|_| canonical)
        .ok_or_else(|| LineProblem::Size {
            key,
            value: value.to_string(),
        })
}

fn digest<T: std::str::FromStr<Err = ParseDigestError>>(
    key: &'static str,
    value: &str,
) -> Result<T, LineProblem> {
    // Only the form pybake writes: `sha256:` and lowercase hex (the digest types also accept
    // bare and uppercase hex, for users).
    let canonical = value.strip_prefix("sha256:").is_some_and(|h| {
        h.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if !canonical {
        return Err(LineProblem::Digest {
            key,
            source: ParseDigestError {
                input: value.to_string(),
            },
        });
    }
    value
        .parse()
        .map_err(|source| LineProblem::Digest { key, source })
}

/// The first 32 characters of a store name: the name of its narinfo.
pub fn hash_part(name: &StoreName) -> &str {
    // A deserialised `StoreName` is not checked (yet): never panic on a short one.
    let s = name.as_str();
    s.get(..StoreName::hash_prefix_len()).unwrap_or(s)
}

/// The cache key of an output's narinfo, `<hash part>.narinfo`.
pub fn narinfo_key(name: &StoreName) -> String {
    format!("{}.narinfo", hash_part(name))
}

impl NarInfo {
    /// The entry for a stored output whose archive has been written and compressed.
    pub fn new(meta: &Meta, file: (FileHash, u64), nar: (NarHash, u64)) -> Self {
        NarInfo {
            store_name: meta.store_name.clone(),
            drv_hash: meta.drv_hash,
            output_hash: meta.output_hash,
            compression: Compression::Zstd,
            file_hash: file.0,
            file_size: file.1,
            nar_hash: nar.0,
            nar_size: nar.1,
            references: meta.references.clone(),
            root: meta.root.clone(),
            host_build: meta.host_build.then(|| meta.host.clone()),
            sigs: Vec::new(),
        }
    }

    /// The cache key of the compressed archive, `nar/<FileHash hex>.nar.zst`.
    pub fn url(&self) -> String {
        format!(
            "nar/{}.{}",
            self.file_hash.to_hex(),
            self.compression.extension()
        )
    }

    fn sorted_references(&self) -> Vec<&str> {
        let mut refs: Vec<&str> = self.references.iter().map(StoreName::as_str).collect();
        refs.sort_unstable();
        refs.dedup();
        refs
    }

    /// What a signature covers.
    pub fn fingerprint(&self) -> String {
        format!(
            "pybake-1;{};{};{};{}",
            self.store_name,
            self.nar_hash,
            self.nar_size,
            self.sorted_references().join(",")
        )
    }

    /// Adds `key`'s signature, replacing an earlier one by a key of the same name.
    pub fn sign(&mut self, key: &SecretKey) {
        let sig = key.sign(&self.fingerprint());
        self.sigs.retain(|s| s.key_name() != key.name());
        self.sigs.push(sig);
    }

    /// The name of a trusted key that signed this entry (see [`TrustedKeys::verify`]).
    pub fn verify<'k>(&self, trusted: &'k TrustedKeys) -> Result<&'k str, SigError> {
        trusted.verify(&self.fingerprint(), &self.sigs)
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut line = |k: &str, v: &dyn std::fmt::Display| {
            let _ = writeln!(s, "{k}: {v}");
        };
        line("StoreName", &self.store_name);
        line("DrvHash", &self.drv_hash);
        line("OutputHash", &self.output_hash);
        line("URL", &self.url());
        line("Compression", &self.compression.as_str());
        line("FileHash", &self.file_hash);
        line("FileSize", &self.file_size);
        line("NarHash", &self.nar_hash);
        line("NarSize", &self.nar_size);
        let refs = self.sorted_references();
        if refs.is_empty() {
            s.push_str("References:\n");
        } else {
            let _ = writeln!(s, "References: {}", refs.join(" "));
        }
        if let Some(root) = &self.root {
            let _ = writeln!(s, "Root: {root}");
        }
        if let Some(host) = &self.host_build {
            // A line break here would forge keys; the host identity is ours, but keep the
            // output parseable whatever it holds.
            let host: String = host
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            let _ = writeln!(s, "HostBuild: {}", host.trim());
        }
        for sig in &self.sigs {
            let _ = writeln!(s, "Sig: {sig}");
        }
        s
    }

    /// Parses the narinfo stored under `<hash_part>.narinfo`.
    pub fn parse(bytes: &[u8], hash_part: &str) -> Result<Self, NarInfoError> {
        if bytes.len() > MAX_NARINFO_SIZE {
            return Err(NarInfoError::TooLarge { size: bytes.len() });
        }
        let text = std::str::from_utf8(bytes).map_err(|e| NarInfoError::NotUtf8 {
            line: 1 + bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count(),
        })?;
        let body = text
            .strip_suffix('\n')
            .ok_or(NarInfoError::NoFinalNewline)?;
        let mut f = Fields::default();
        for (i, l) in body.split('\n').enumerate() {
            f.line(l).map_err(|problem| NarInfoError::Line {
                line: i + 1,
                problem,
            })?;
        }
        let info = f.finish()?;
        if self::hash_part(&info.store_name) != hash_part {
            return Err(NarInfoError::WrongName {
                expected: hash_part.to_string(),
                found: info.store_name,
            });
        }
        Ok(info)
    }
}

/// The fields seen so far while parsing.
#[derive(Default)]
struct Fields {
    store_name: Option<StoreName>,
    drv_hash: Option<DrvHash>,
    output_hash: Option<OutputHash>,
    url: Option<String>,
    compression: Option<Compression>,
    file_hash: Option<FileHash>,
    file_size: Option<u64>,
    nar_hash: Option<NarHash>,
    nar_size: Option<u64>,
    references: Option<Vec<StoreName>>,
    root: Option<StoreName>,
    host_build: Option<String>,
    sigs: Vec<Signature>,
}

fn once<T>(slot: &mut Option<T>, key: &'static str, value: T) -> Result<(), LineProblem> {
    if slot.is_some() {
        return Err(LineProblem::Duplicate(key));
    }
    *slot = Some(value);
    Ok(())
}

impl Fields {
    fn line(&mut self, line: &str) -> Result<(), LineProblem> {
        let (key, rest) = line.split_once(':').ok_or(LineProblem::Syntax)?;
        let value = match rest.strip_prefix(' ') {
            Some(v) => v,
            None if rest.is_empty() => "",
            None => return Err(LineProblem::Syntax),
        };
        if line.chars().any(char::is_control) || value != value.trim() {
            return Err(LineProblem::Control);
        }
        match key {
            "StoreName" => once(
                &mut self.store_name,
                "StoreName",
                store_name("StoreName", value)?,
            ),
            "DrvHash" => once(&mut self.drv_hash, "DrvHash", digest("DrvHash", value)?),
            "OutputHash" => once(
                &mut self.output_hash,
                "OutputHash",
                digest("OutputHash", value)?,
            ),
            "URL" => once(&mut self.url, "URL", value.to_string()),
            "Compression" => {
                let c = match value {
                    "zstd" => Compression::Zstd,
                    other => return Err(LineProblem::Compression(other.to_string())),
                };
                once(&mut self.compression, "Compression", c)
            }
            "FileHash" => once(&mut self.file_hash, "FileHash", digest("FileHash", value)?),
            "FileSize" => once(&mut self.file_size, "FileSize", size("FileSize", value)?),
            "NarHash" => once(&mut self.nar_hash, "NarHash", digest("NarHash", value)?),
            "NarSize" => once(&mut self.nar_size, "NarSize", size("NarSize", value)?),
            "References" => {
                let mut refs: Vec<StoreName> = Vec::new();
                for r in value.split(' ').filter(|_| !value.is_empty()) {
                    let name = store_name("References", r)?;
                    if let Some(previous) = refs.last() {
                        if previous.as_str() >= name.as_str() {
                            return Err(LineProblem::ReferenceOrder {
                                previous: previous.to_string(),
                                name: name.to_string(),
                            });
                        }
                    }
                    refs.push(name);
                }
                once(&mut self.references, "References", refs)
            }
            "Root" => once(&mut self.root, "Root", store_name("Root", value)?),
            "HostBuild" => {
                if value.is_empty() {
                    return Err(LineProblem::EmptyHost);
                }
                once(&mut self.host_build, "HostBuild", value.to_string())
            }
            "Sig" => {
                self.sigs.push(value.parse().map_err(LineProblem::Sig)?);
                Ok(())
            }
            k if k.starts_with("X-") && k.len() > 2 => Ok(()),
            other => Err(LineProblem::UnknownKey(other.to_string())),
        }
    }

    fn finish(self) -> Result<NarInfo, NarInfoError> {
        fn need<T>(v: Option<T>, key: &'static str) -> Result<T, NarInfoError> {
            v.ok_or(NarInfoError::Missing { key })
        }
        let info = NarInfo {
            store_name: need(self.store_name, "StoreName")?,
            drv_hash: need(self.drv_hash, "DrvHash")?,
            output_hash: need(self.output_hash, "OutputHash")?,
            compression: need(self.compression, "Compression")?,
            file_hash: need(self.file_hash, "FileHash")?,
            file_size: need(self.file_size, "FileSize")?,
            nar_hash: need(self.nar_hash, "NarHash")?,
            nar_size: need(self.nar_size, "NarSize")?,
            references: need(self.references, "References")?,
            root: self.root,
            host_build: self.host_build,
            sigs: self.sigs,
        };
        if !info
            .drv_hash
            .to_hex()
            .starts_with(hash_part(&info.store_name))
        {
            return Err(NarInfoError::DrvHashMismatch {
                store_name: info.store_name,
                drv_hash: info.drv_hash,
            });
        }
        let url = need(self.url, "URL")?;
        if url != info.url() {
            return Err(NarInfoError::Url {
                url,
                expected: info.url(),
            });
        }
        Ok(info)
    }
}

#[cfg(test)]
mod tests;
