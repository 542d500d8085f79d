//! Store names: `<first 32 hex digits of the derivation hash>-<name>-<version>`.

use std::fmt;

use crate::hash::DrvHash;

/// 128 bits of the derivation hash are enough to make collisions implausible and keep paths
/// short enough to read (Nix uses 160 bits in base32).
const HASH_CHARS: usize = 32;

/// The longest file name the filesystems pybake runs on allow (`NAME_MAX` on Linux).
const NAME_MAX: usize = 255;

/// The longest store name. The store names files after an output by appending a suffix to its
/// store name: `.json`, `.log`, `.log.check` (the longest today, 10 bytes), `.lock`, and a
/// temporary build directory's `.XXXXXX`. 31 bytes are kept for them, so that any such name fits
/// in [`NAME_MAX`]; a new suffix MUST fit in that room.
pub const MAX_STORE_NAME_LEN: usize = NAME_MAX - 31;

/// How many bytes a recipe's `name` and `version` may take together: what is left of
/// [`MAX_STORE_NAME_LEN`] after the hash and the two `-` of `<hash>-<name>-<version>`.
/// The recipe loader checks it, so that a name too long for the store is a recipe error.
pub const MAX_NAME_VERSION_LEN: usize = MAX_STORE_NAME_LEN - HASH_CHARS - 2;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{write_atomic, Store};

    /// Every file the store names after an output, for the longest name the recipe loader lets
    /// through: a new suffix too long for [`MAX_STORE_NAME_LEN`]'s room fails here.
    #[test]
    fn the_longest_store_name_fits_every_file_named_after_it() {
        let name = StoreName::new(
            &DrvHash::of(b"x"),
            &"n".repeat(MAX_NAME_VERSION_LEN - 1),
            "1",
        );
        assert_eq!(name.as_str().len(), MAX_STORE_NAME_LEN);
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path()).unwrap();
        let _lock = store.lock(&name).unwrap();
        let tmp = store.fresh_tmp(&name).unwrap();
        std::fs::create_dir(tmp.path().join(name.as_str())).unwrap();
        write_atomic(&store.meta_path(&name), b"{}").unwrap();
        let log = store.log_path(&name);
        std::fs::write(&log, "").unwrap();
        let mut check = log.into_os_string();
        check.push(".check");
        std::fs::write(check, "").unwrap();
        std::fs::create_dir(store.path(&name)).unwrap();
    }
}
