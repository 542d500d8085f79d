//! GC roots: the outputs `pybake gc` keeps, with what they need (see `gc.rs`).
//!
//! A root belongs to a project, named by its canonical recipe directory, and a recipe of it:
//! `.pybake/gcroots/<project key>-<recipe>`, where the project key is the first 16 hex digits
//! of the sha256 of the directory's path bytes. The file holds the root's store name, a newline,
//! the project's directory and a newline. It is written with [`write_atomic`], so a reader sees
//! the old root or the new one, never a mix. Realizing a newer version of a recipe replaces that
//! recipe's root (the old output becomes collectable); projects sharing a store have separate
//! keys and so separate roots. The directory is recorded so that `gc` can tell a root whose
//! project is gone (a deleted checkout), which it removes.

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::gc::GcError;
use super::{files, io_at, Store, StoreName};

/// Hex digits of the project key: 64 bits tell apart the projects of one store.
const KEY_HEX: usize = 16;
/// A root file is a store name and a path; anything longer is not one.
const MAX_ROOT_FILE: u64 = 64 * 1024;

/// One root as recorded in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcRoot {
    /// The root's file under `.pybake/gcroots`.
    pub file: PathBuf,
    pub recipe: String,
    pub store_name: StoreName,
    /// The project's canonical recipe directory, as recorded.
    pub project: PathBuf,
}

impl GcRoot {
    /// Whether the project that recorded the root no longer exists. A directory that cannot be
    /// examined for another reason (permissions, a failing mount) is not taken for gone.
    pub fn project_gone(&self) -> bool {
        match fs_err::metadata(&self.project) {
            Ok(m) => !m.is_dir(),
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        }
    }
}

/// The key of the project whose canonical recipe directory is `dir`.
pub fn project_key(dir: &Path) -> String {
    hex::encode(Sha256::digest(dir.as_os_str().as_bytes()))[..KEY_HEX].to_string()
}

/// Recipe names as the recipe loader allows them; a root's file is named after one.
fn check_recipe_name(name: &str) -> Result<(), GcError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+'));
    if ok {
        Ok(())
    } else {
        Err(GcError::BadRecipeName {
            name: name.chars().take(80).collect(),
        })
    }
}

impl Store {
    pub fn gc_roots_dir(&self) -> PathBuf {
        self.internal("gcroots")
    }

    fn gc_root_file(
        &self,
        recipes_dir: &Path,
        recipe: &str,
    ) -> Result<(PathBuf, PathBuf), GcError> {
        check_recipe_name(recipe)?;
        let dir = fs_err::canonicalize(recipes_dir).map_err(io_at(recipes_dir))?;
        let file = self
            .gc_roots_dir()
            .join(format!("{}-{recipe}", project_key(&dir)));
        Ok((file, dir))
    }

    /// Records `name` as the root of `recipe` in the project whose recipe directory is
    /// `recipes_dir`, replacing that recipe's earlier root. Returns the root's file.
    pub fn add_gc_root(
        &self,
        recipes_dir: &Path,
        recipe: &str,
        name: &StoreName,
    ) -> Result<PathBuf, GcError> {
        let (file, dir) = self.gc_root_file(recipes_dir, recipe)?;
        let roots = self.gc_roots_dir();
        files::create_dir(&roots).map_err(io_at(&roots))?;
        let mut text = format!("{name}\n").into_bytes();
        text.extend_from_slice(dir.as_os_str().as_bytes());
        text.push(b'\n');
        // A realize of the same targets again records the same root: nothing to write.
        if fs_err::read(&file).is_ok_and(|old| old == text) {
            return Ok(file);
        }
        self.write_internal(&file, &text)?;
        Ok(file)
    }

    /// Removes the root of `recipe` in the project of `recipes_dir`; whether there was one.
    pub fn remove_gc_root(&self, recipes_dir: &Path, recipe: &str) -> Result<bool, GcError> {
        let (file, _) = self.gc_root_file(recipes_dir, recipe)?;
        remove_root_file(&file)
    }

    /// Every root of every project, sorted by file name. A file that is not a root (other than
    /// a temporary of [`write_atomic`]) is an error: gc cannot know what it was meant to keep.
    pub fn gc_roots(&self) -> Result<Vec<GcRoot>, GcError> {
        let dir = self.gc_roots_dir();
        let entries = match fs_err::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_at(&dir)(e).into()),
        };
        let mut roots = Vec::new();
        for e in entries {
            let e = e.map_err(io_at(&dir))?;
            let file = e.path();
            let name = e.file_name();
            if name
                .as_bytes()
                .starts_with(crate::atomic::TEMP_PREFIX.as_bytes())
            {
                continue;
            }
            roots.push(read_root(&file)?);
        }
        roots.sort_by(|a, b| a.file.cmp(&b.file));
        Ok(roots)
    }
}

pub(super) fn remove_root_file(file: &Path) -> Result<bool, GcError> {
    match fs_err::remove_file(file) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_at(file)(e).into()),
    }
}

fn read_root(file: &Path) -> Result<GcRoot, GcError> {
    let bad = |why: String| GcError::BadRoot {
        path: file.to_path_buf(),
        why,
    };
    let recipe = file
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split_at_checked(KEY_HEX))
        .filter(|(key, _)| key.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|(_, rest)| rest.strip_prefix('-'))
        .filter(|r| check_recipe_name(r).is_ok())
        .ok_or_else(|| bad("its name is not `<16 hex>-<recipe>`".into()))?
        .to_string();
    let mut bytes = Vec::new();
    fs_err::File::open(file)
        .and_then(|f| f.take(MAX_ROOT_FILE).read_to_end(&mut bytes))
        .map_err(io_at(file))?;
    let text = bytes
        .strip_suffix(b"\n")
        .ok_or_else(|| bad("it does not end with a newline".into()))?;
    let (name, project) = text
        .iter()
        .position(|&b| b == b'\n')
        .map(|at| (&text[..at], &text[at + 1..]))
        .ok_or_else(|| bad("it holds no project directory".into()))?;
    let store_name = std::str::from_utf8(name)
        .map_err(|_| bad("its first line is not UTF-8".into()))
        .and_then(|n| StoreName::parse(n).map_err(|e| bad(e.to_string())))?;
    let project = PathBuf::from(std::ffi::OsStr::from_bytes(project));
    if !project.is_absolute() {
        return Err(bad("its project directory is not an absolute path".into()));
    }
    Ok(GcRoot {
        file: file.to_path_buf(),
        recipe,
        store_name,
        project,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use super::*;
    use crate::hash::DrvHash;

    #[test]
    fn a_recipe_has_one_root_per_project() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(&t.path().join("store")).unwrap();
        let (one, two) = (t.path().join("one"), t.path().join("two"));
        std::fs::create_dir_all(&one).unwrap();
        std::fs::create_dir_all(&two).unwrap();
        let v = |n: &str| StoreName::new(&DrvHash::of(n.as_bytes()), "x", n);
        store.add_gc_root(&one, "x", &v("1")).unwrap();
        store.add_gc_root(&two, "x", &v("2")).unwrap();
        // Through a symlink: the same project.
        std::os::unix::fs::symlink(&one, t.path().join("link")).unwrap();
        store
            .add_gc_root(&t.path().join("link"), "x", &v("3"))
            .unwrap();

        let roots = store.gc_roots().unwrap();
        let mut names: Vec<_> = roots.iter().map(|r| r.store_name.clone()).collect();
        names.sort();
        let mut expected = vec![v("2"), v("3")];
        expected.sort();
        assert_eq!(names, expected);
        assert!(roots.iter().all(|r| r.recipe == "x" && !r.project_gone()));
        let one_root = roots.iter().find(|r| r.store_name == v("3")).unwrap();
        assert_eq!(one_root.project, std::fs::canonicalize(&one).unwrap());

        assert!(store.remove_gc_root(&one, "x").unwrap());
        assert!(!store.remove_gc_root(&one, "x").unwrap());
        assert_eq!(store.gc_roots().unwrap().len(), 1);
        std::fs::remove_dir(&two).unwrap();
        assert!(store.gc_roots().unwrap()[0].project_gone());
    }

    #[test]
    fn hostile_recipe_names_and_root_files_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path()).unwrap();
        let name = StoreName::new(&DrvHash::of(b"x"), "x", "1");
        for bad in ["", "../x", "a/b", ".hidden"] {
            assert!(matches!(
                store.add_gc_root(t.path(), bad, &name),
                Err(GcError::BadRecipeName { .. })
            ));
        }
        let dir = store.gc_roots_dir();
        std::fs::create_dir_all(&dir).unwrap();
        for (file, text) in [
            ("0123456789abcdef-x", "not a store name\n/p\n"),
            ("0123456789abcdef-y", &format!("{name}\n")),
            ("0123456789abcdef-z", &format!("{name}\nrelative\n")),
            ("notakey-x", &format!("{name}\n/p\n")),
        ] {
            let p = dir.join(file);
            std::fs::write(&p, text).unwrap();
            assert!(
                matches!(store.gc_roots(), Err(GcError::BadRoot { .. })),
                "{file}"
            );
            std::fs::remove_file(&p).unwrap();
        }
        // A temporary of an interrupted write is not a root.
        std::fs::write(dir.join(".tmpAbC"), "").unwrap();
        assert_eq!(store.gc_roots().unwrap(), vec![]);
    }
}
