//! What the store remembers of builds besides their outputs and metadata (docs/store.md):
//! - `.pybake/drv/<store name>.json`: the inputs of an output, as hashed (a
//!   `crate::derivation::DrvRecord`, kept here as bytes: the store does not interpret it), as
//!   versions before records moved into the metadata (`Meta::inputs`) wrote them: read only;
//! - `.pybake/built.log`: one line `<recipe name> <store name>` appended per output inserted,
//!   so the last line naming a recipe says what was built last for it. An append is one
//!   `write` on a file opened `O_APPEND`: no temporary, no rename and no new file per build,
//!   which matter in a graph of many small builds (a file created and one deleted per build
//!   cost ~5% of such a graph). `pybake gc` compacts it to one line per recipe.
//!
//! Neither decides validity: an output without a record is still valid.

use fs_err::os::unix::fs::OpenOptionsExt;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::{io_at, Store, StoreError, StoreName};

/// The journal of inserted outputs, under `.pybake`.
const BUILT_LOG: &str = "built.log";

impl Store {
    /// Where older versions recorded the inputs of output `name`.
    pub fn drv_path(&self, name: &StoreName) -> PathBuf {
        self.internal("drv").join(format!("{name}.json"))
    }

    /// The inputs of output `name` recorded in a file of their own by an older version, if any.
    pub fn read_drv(&self, name: &StoreName) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.drv_path(name);
        match fs_err::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_at(&path)(e)),
        }
    }

    fn built_log(&self) -> PathBuf {
        self.root.join(".pybake").join(BUILT_LOG)
    }

    /// Records that `name` is the output last inserted for `recipe`.
    pub fn set_last_built(&self, recipe: &str, name: &StoreName) -> Result<(), StoreError> {
        // Recipe names are checked when recipes load; this keeps a line parseable whatever
        // the caller passes.
        if recipe.is_empty() || recipe.contains(|c: char| c.is_whitespace() || c == '\0') {
            return Err(StoreError::Io {
                path: self.built_log(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a recipe name"),
            });
        }
        let path = self.built_log();
        let mut file = fs_err::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o644)
            .open(&path)
            .map_err(io_at(&path))?;
        // Readable by all whatever the umask (docs/store.md, "File modes").
        let meta = file.metadata().map_err(io_at(&path))?;
        if meta.permissions().mode() & 0o777 != 0o644 {
            file.set_permissions(std::fs::Permissions::from_mode(0o644))
                .map_err(io_at(&path))?;
        }
        // One write: appends of other processes never land inside the line.
        file.write_all(format!("{recipe} {name}\n").as_bytes())
            .map_err(io_at(&path))
    }

    /// The output last inserted for `recipe`, if any.
    pub fn last_built(&self, recipe: &str) -> Result<Option<StoreName>, StoreError> {
        self.built_lines()?.remove(recipe).transpose()
    }

    /// The last line of each recipe in the journal (a line cut short by a crash is skipped).
    fn built_lines(&self) -> Result<BTreeMap<String, Result<StoreName, StoreError>>, StoreError> {
        let path = self.built_log();
        let text = match fs_err::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(io_at(&path)(e)),
        };
        let mut last = BTreeMap::new();
        for line in text.split(|b| *b == b'\n') {
            let Ok(line) = std::str::from_utf8(line) else {
                continue;
            };
            let Some((recipe, name)) = line.split_once(' ') else {
                continue;
            };
            let parsed = StoreName::parse(name).map_err(|source| StoreError::BadLast {
                path: path.clone(),
                source,
            });
            last.insert(recipe.to_string(), parsed);
        }
        Ok(last)
    }

    /// Rewrites the journal with one line per recipe (the last), dropping lines that name no
    /// output. `pybake gc` calls it; a concurrent append may be lost, which only makes
    /// `explain` say less.
    pub fn compact_built_log(&self) -> Result<(), StoreError> {
        let lines = self.built_lines()?;
        if lines.is_empty() {
            return Ok(());
        }
        let text: String = lines
            .into_iter()
            .filter_map(|(recipe, name)| Some(format!("{recipe} {}\n", name.ok()?)))
            .collect();
        self.write_internal(&self.built_log(), text.as_bytes())
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
        let newer = StoreName::new(&DrvHash::of(b"z"), "hello", "1.1");
        let other = StoreName::new(&DrvHash::of(b"y"), "other", "1");
        assert_eq!(store.read_drv(&name).unwrap(), None);
        assert_eq!(store.last_built("hello").unwrap(), None);
        std::fs::create_dir_all(store.drv_path(&name).parent().unwrap()).unwrap();
        std::fs::write(store.drv_path(&name), b"{}\n").unwrap();
        store.set_last_built("hello", &name).unwrap();
        assert_eq!(store.read_drv(&name).unwrap().unwrap(), b"{}\n");
        assert_eq!(store.last_built("hello").unwrap(), Some(name.clone()));
        store.set_last_built("other", &other).unwrap();
        store.set_last_built("hello", &newer).unwrap();
        assert_eq!(store.last_built("hello").unwrap(), Some(newer.clone()));
        assert_eq!(store.last_built("other").unwrap(), Some(other.clone()));
        assert!(store.set_last_built("a b", &other).is_err());
        assert!(store.set_last_built("", &other).is_err());

        // A line cut short by a crash is skipped; gc keeps one line per recipe.
        let log = store.built_log();
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(b"other").unwrap();
        drop(f);
        assert_eq!(store.last_built("other").unwrap(), Some(other.clone()));
        store.compact_built_log().unwrap();
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            format!("hello {newer}\nother {other}\n")
        );

        std::fs::write(&log, "bad ../../etc\n").unwrap();
        assert!(matches!(
            store.last_built("bad"),
            Err(StoreError::BadLast { .. })
        ));
    }
}
