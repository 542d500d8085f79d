//! What the store remembers of builds besides their outputs (docs/store.md):
//! - `.pybake/drv/<store name>.json`: the inputs of each output inserted, as hashed (a
//!   `crate::derivation::DrvRecord`, kept here as bytes: the store does not interpret it);
//! - `.pybake/last/<recipe name>`: the store name last inserted for that recipe, one line.
//!
//! Both are written with [`write_atomic`] (mode 0644); a reader sees the old or the new file,
//! never a mix. Neither decides validity: an output without a record is still valid.

use std::io;
use std::path::PathBuf;

use super::{io_at, write_atomic, Store, StoreError, StoreName};

/// Directories under `.pybake` that hold these records.
pub(super) const DIRS: [&str; 2] = ["drv", "last"];

impl Store {
    /// Where the inputs of output `name` are recorded.
    pub fn drv_path(&self, name: &StoreName) -> PathBuf {
        self.internal("drv").join(format!("{name}.json"))
    }

    /// Records the inputs of output `name` (the JSON of its derivation record).
    pub fn write_drv(&self, name: &StoreName, json: &[u8]) -> Result<(), StoreError> {
        write_atomic(&self.drv_path(name), json)
    }

    /// The recorded inputs of output `name`, if any.
    pub fn read_drv(&self, name: &StoreName) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.drv_path(name);
        match fs_err::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_at(&path)(e)),
        }
    }

    fn last_path(&self, recipe: &str) -> Result<PathBuf, StoreError> {
        // Recipe names are checked when recipes load; this keeps a name that is not from a
        // checked recipe from naming a file outside `.pybake/last`.
        if recipe.is_empty() || recipe.starts_with('.') || recipe.contains(['/', '\0']) {
            return Err(StoreError::Io {
                path: self.internal("last").join(recipe),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a recipe name"),
            });
        }
        Ok(self.internal("last").join(recipe))
    }

    /// Records that `name` is the output last inserted for `recipe`.
    pub fn set_last_built(&self, recipe: &str, name: &StoreName) -> Result<(), StoreError> {
        write_atomic(&self.last_path(recipe)?, format!("{name}\n").as_bytes())
    }

    /// The output last inserted for `recipe`, if any.
    pub fn last_built(&self, recipe: &str) -> Result<Option<StoreName>, StoreError> {
        let path = self.last_path(recipe)?;
        let text = match fs_err::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_at(&path)(e)),
        };
        // Empty after a power loss (there is no fsync): as if never recorded.
        if text.trim().is_empty() {
            return Ok(None);
        }
        StoreName::parse(text.trim())
            .map(Some)
            .map_err(|source| StoreError::BadLast { path, source })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use super::*;
    use crate::hash::DrvHash;

    #[test]
    fn records_and_last_builds_round_trip() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path()).unwrap();
        let name = StoreName::new(&DrvHash::of(b"x"), "hello", "1.0");
        assert_eq!(store.read_drv(&name).unwrap(), None);
        assert_eq!(store.last_built("hello").unwrap(), None);
        store.write_drv(&name, b"{}\n").unwrap();
        store.set_last_built("hello", &name).unwrap();
        assert_eq!(store.read_drv(&name).unwrap().unwrap(), b"{}\n");
        assert_eq!(store.last_built("hello").unwrap(), Some(name));
        assert!(store
            .set_last_built("../meta/x", &StoreName::new(&DrvHash::of(b"y"), "x", "1"))
            .is_err());
        std::fs::write(store.internal("last").join("bad"), "../../etc\n").unwrap();
        assert!(matches!(
            store.last_built("bad"),
            Err(StoreError::BadLast { .. })
        ));
    }
}
