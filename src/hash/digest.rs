//! Typed sha256 digests.
//!
//! A derivation hash, an output content hash and a source hash are all sha256, but they answer
//! different questions; separate types make it impossible to pass one where another is meant.
//! Every digest displays as `sha256:<64 lowercase hex>` and parses from that form or from bare hex.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// Why a string is not a sha256 digest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{input:?} is not a sha256 digest: expected 64 hex characters, optionally prefixed with `sha256:`")]
pub struct ParseDigestError {
    pub input: String,
}

fn parse_hex32(s: &str) -> Result<[u8; 32], ParseDigestError> {
    let hex_part = s.strip_prefix("sha256:").unwrap_or(s);
    let mut out = [0u8; 32];
    if hex_part.len() != 64 || hex::decode_to_slice(hex_part, &mut out).is_err() {
        return Err(ParseDigestError {
            input: s.to_string(),
        });
    }
    Ok(out)
}

macro_rules! digest_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name([u8; 32]);

        impl $name {
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// 64 lowercase hex characters, no prefix.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// sha256 of `data`.
            pub fn of(data: &[u8]) -> Self {
                Self(Sha256::digest(data).into())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "sha256:{}", self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }

        impl FromStr for $name {
            type Err = ParseDigestError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_hex32(s).map(Self)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

digest_type!(
    /// Identifies a build: sha256 over the canonical serialisation of a resolved recipe and the
    /// derivation hashes of its dependencies. Names the store path.
    DrvHash
);
digest_type!(
    /// sha256 of an output tree's canonical serialisation (see [`crate::hash::tree`]).
    OutputHash
);
digest_type!(
    /// sha256 of a source: the bytes of a file, or the canonical tree hash of a directory.
    SourceHash
);
digest_type!(
    /// sha256 of an output's archive (the uncompressed stream of [`crate::hash::nar`]).
    NarHash
);
digest_type!(
    /// sha256 of a file as stored in a binary cache (a compressed archive).
    FileHash
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let h = SourceHash::of(b"abc");
        let shown = h.to_string();
        assert_eq!(
            shown,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(shown.parse::<SourceHash>().unwrap(), h);
        assert_eq!(h.to_hex().parse::<SourceHash>().unwrap(), h);
    }

    #[test]
    fn rejects_bad_input() {
        assert!("sha256:abc".parse::<DrvHash>().is_err());
        assert!("zz".repeat(32).parse::<DrvHash>().is_err());
        assert!("md5:".parse::<DrvHash>().is_err());
    }
}
