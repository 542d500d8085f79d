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

/// A validated store name. Every way of making one checks it ([`StoreName::new`] from a checked
/// recipe, [`StoreName::parse`] and deserialisation from metadata or a binary cache), because a
/// name reaches file system paths and bubblewrap's arguments: it MUST be 32 lowercase hex
/// digits, `-`, then at least one character of `[A-Za-z0-9+._-]` (no `/`, no NUL, so never a
/// path of its own), at most [`MAX_STORE_NAME_LEN`] bytes. As the hash part comes first, it
/// never starts with `.` and is never `.` or `..`.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct StoreName(String);

/// Why a string is not a store name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{shown:?} is not a store name ({why}); a store name is 32 lowercase hex digits, `-`, and a name of letters, digits and `+._-`, at most {MAX_STORE_NAME_LEN} bytes")]
pub struct BadStoreName {
    /// The offending text, cut to a readable length.
    pub shown: String,
    pub why: &'static str,
}

impl StoreName {
    /// The length of the hash part.
    pub const HASH_LEN: usize = HASH_CHARS;

    /// The store name of a derivation; `name` and `version` come from a checked recipe.
    pub fn new(drv: &DrvHash, name: &str, version: &str) -> Self {
        let s = format!("{}-{name}-{version}", &drv.to_hex()[..HASH_CHARS]);
        debug_assert!(validate(&s).is_ok(), "{s}");
        StoreName(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The length of the hash part.
    pub fn hash_prefix_len() -> usize {
        HASH_CHARS
    }

    /// The hash part: the first 32 hex digits of the derivation hash.
    pub fn hash_part(&self) -> &str {
        &self.0[..HASH_CHARS]
    }

    /// Checks a name read from a file, a listing or a binary cache.
    pub fn parse(s: &str) -> Result<Self, BadStoreName> {
        validate(s)?;
        Ok(StoreName(s.to_string()))
    }
}

fn validate(s: &str) -> Result<(), BadStoreName> {
    let bad = |why| {
        Err(BadStoreName {
            shown: s.chars().take(80).collect(),
            why,
        })
    };
    if s.len() > MAX_STORE_NAME_LEN {
        return bad("too long");
    }
    let Some((hash, rest)) = s.split_at_checked(HASH_CHARS) else {
        return bad("too short");
    };
    if !hash
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return bad("the hash part is not 32 lowercase hex digits");
    }
    let Some(name) = rest.strip_prefix('-') else {
        return bad("no `-` after the hash part");
    };
    if name.is_empty() {
        return bad("nothing after the hash part");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'.' | b'_' | b'-'))
    {
        return bad("a character outside [A-Za-z0-9+._-]");
    }
    Ok(())
}

impl TryFrom<String> for StoreName {
    type Error = BadStoreName;
    fn try_from(s: String) -> Result<Self, BadStoreName> {
        validate(&s)?;
        Ok(StoreName(s))
    }
}

impl From<StoreName> for String {
    fn from(n: StoreName) -> String {
        n.0
    }
}

impl fmt::Display for StoreName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use super::*;

    #[test]
    fn hostile_names_are_refused_wherever_they_come_from() {
        let h = "0123456789abcdef0123456789abcdef";
        assert!(StoreName::parse(&format!("{h}-zlib-1.2.13")).is_ok());
        for bad in [
            String::new(),
            h.to_string(),
            format!("{h}-"),
            format!("{h}zlib"),
            format!("{}-zlib", h.to_uppercase()),
            format!("{h}-../../etc"),
            format!("{h}-a/b"),
            format!("{h}-a\0b"),
            format!("{h}-a b"),
            format!("{h}-\u{e9}"),
            format!("{h}-{}", "n".repeat(MAX_STORE_NAME_LEN)),
            "../../../../etc/passwd".to_string(),
        ] {
            assert!(StoreName::parse(&bad).is_err(), "{bad:?}");
            let json = serde_json::to_string(&bad).unwrap();
            assert!(
                serde_json::from_str::<StoreName>(&json).is_err(),
                "deserialised {bad:?}"
            );
        }
        let ok: StoreName = serde_json::from_str(&format!("\"{h}-zlib-1.2.13\"")).unwrap();
        assert_eq!(ok.hash_part(), h);
    }
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
