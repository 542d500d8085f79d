//! Store names: `<first 32 hex digits of the derivation hash>-<name>-<version>`.

use std::fmt;

use crate::hash::DrvHash;

/// 128 bits of the derivation hash are enough to make collisions implausible and keep paths
/// short enough to read (Nix uses 160 bits in base32).
const HASH_CHARS: usize = 32;

#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct StoreName(String);

impl StoreName {
    pub fn new(drv: &DrvHash, name: &str, version: &str) -> Self {
        StoreName(format!("{}-{name}-{version}", &drv.to_hex()[..HASH_CHARS]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `s` has the shape of a store name's hash part followed by `-`.
    pub fn hash_prefix_len() -> usize {
        HASH_CHARS
    }

    /// Parses a name found in a file (reference scanning) or a listing.
    pub fn parse(s: &str) -> Option<Self> {
        let (hash, rest) = (s.get(..HASH_CHARS)?, s.get(HASH_CHARS..)?);
        let ok = hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && rest.starts_with('-')
            && rest.len() > 1;
        ok.then(|| StoreName(s.to_string()))
    }
}

impl fmt::Display for StoreName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
