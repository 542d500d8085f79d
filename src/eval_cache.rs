//! The evaluation cache: a no-op realize that reads no recipe.
//!
//! Evaluating a project (reading and parsing every recipe file, resolving, the graph, hashing
//! every derivation of the closure) is most of what a realize with nothing to do costs: 1000
//! recipes take milliseconds, `make -q` a few. So after a realize whose targets all ended up in
//! the store, pybake remembers, for that recipe directory and those targets, the targets' store
//! names together with what the evaluation depended on:
//! - the recipe directory and every recipe file, each by its [`FileStamp`] (device, inode,
//!   mode, size, mtime and ctime to the nanosecond, as git's index does), taken when the file
//!   was opened, before it was read;
//! - the host identity ([`host_identity`]: a host build's hash covers it);
//! - the pybake executable itself (a different pybake may evaluate differently).
//!
//! The next realize of the same targets stats those files (no read) and, if every stamp is the
//! same and every target's output is valid, reports them cached without evaluating anything.
//! Anything else (a file edited, added, removed, renamed or `touch`ed; a target missing from the
//! store) is a miss, and the realize evaluates as usual. Never remembered, so always evaluated:
//! - a recipe directory with a `path` source: its content is hashed on every evaluation;
//! - files changed less than [`RACY_NS`] before the evaluation began: a change within the same
//!   clock tick as the stamp would leave it unchanged (git's "racily clean" entries);
//! - realizes with `--check`, `--explain`, `--json`, `--locked`, `--push` or `-j 0`, which need
//!   the evaluated derivations (the command line decides).
//!
//! Entries live in `.pybake/evals/<key>` (docs/store.md), one per recipe directory and target
//! list; `pybake gc` removes them all. An entry that cannot be read or parsed is a miss.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::derivation::host_identity;
use crate::recipe::{FileStamp, Origin, RecipeSet};
use crate::store::{Store, StoreError, StoreName};

/// The first line of an entry; a different one is a miss.
const FORMAT: &str = "pybake-eval-cache 1";

/// How long before the evaluation began a file must have last changed to be remembered.
pub const RACY_NS: i128 = 2_000_000_000;

/// What holds at the moment an evaluation begins, before any recipe is read.
#[derive(Debug, Clone)]
pub struct Start {
    exe: Option<FileStamp>,
    at_ns: i128,
}

impl Start {
    pub fn now() -> Self {
        let at_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        Start {
            exe: fs_err::metadata("/proc/self/exe")
                .ok()
                .map(|m| FileStamp::of(&m)),
            at_ns,
        }
    }
}

/// A target as remembered: its recipe and the store name its derivation had.
pub type Output = (String, StoreName);

/// The entry's file name: a digest of the recipe directory (absolute) and the targets.
fn entry_key(recipes: &Path, targets: &[String]) -> String {
    let dir = std::path::absolute(recipes).unwrap_or_else(|_| recipes.to_path_buf());
    let mut h = Sha256::new();
    h.update(FORMAT.as_bytes());
    h.update([0]);
    h.update(dir.as_os_str().as_encoded_bytes());
    for t in targets {
        h.update([0]);
        h.update(t.as_bytes());
    }
    hex::encode(h.finalize())[..32].to_string()
}

/// The remembered outputs of `targets` when nothing their evaluation read has changed since;
/// `None` otherwise (whether the outputs are still valid is for the caller to check).
pub fn lookup(
    store: &Store,
    recipes: &Path,
    targets: &[String],
    start: &Start,
) -> Option<Vec<Output>> {
    let path = store.evals_dir().join(entry_key(recipes, targets));
    let text = fs_err::read_to_string(path).ok()?;
    let mut lines = text.lines();
    if lines.next()? != FORMAT {
        return None;
    }
    let mut outputs = Vec::new();
    // Each of these must be there (an entry cut short by a crash is a miss): the outputs come
    // last, so one that has any has every stamp before them.
    let (mut saw_exe, mut saw_host, mut saw_dir) = (false, false, false);
    for line in lines {
        let (kind, rest) = line.split_once(' ')?;
        match kind {
            "exe" => {
                saw_exe = true;
                if Some(rest.parse::<FileStamp>().ok()?) != start.exe {
                    return None;
                }
            }
            "host" => {
                saw_host = true;
                if rest != host_identity() {
                    return None;
                }
            }
            "dir" => {
                saw_dir = true;
                let now = FileStamp::of(&fs_err::metadata(recipes).ok()?);
                if rest.parse::<FileStamp>().ok()? != now {
                    return None;
                }
            }
            "file" => {
                let (stamp, name) = split_stamp(rest)?;
                let now = FileStamp::of(&fs_err::metadata(recipes.join(name)).ok()?);
                if stamp != now {
                    return None;
                }
            }
            "out" => {
                let (recipe, name) = rest.split_once(' ')?;
                outputs.push((recipe.to_string(), StoreName::parse(name).ok()?));
            }
            _ => return None,
        }
    }
    (saw_exe && saw_host && saw_dir && !outputs.is_empty()).then_some(outputs)
}

/// `<6 stamp fields> <file name>`.
fn split_stamp(rest: &str) -> Option<(FileStamp, &str)> {
    let mut at = 0;
    for _ in 0..6 {
        at += rest[at..].find(' ')? + 1;
    }
    Some((rest[..at - 1].parse().ok()?, &rest[at..]))
}

/// Why an evaluation was not remembered (none of these is an error: the next realize
/// evaluates again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotRemembered {
    /// A recipe has a `path` source, whose content only an evaluation can hash.
    PathSource,
    /// A file changed too shortly before the evaluation began to trust its stamp.
    Racy,
    /// What was read is not known (recipes not loaded from a directory), or a file name
    /// cannot be written in an entry, or the executable could not be stamped.
    Unknown,
}

/// Remembers that evaluating `set` (begun at `start`) for `targets` gave `outputs`. Call only
/// when every output is valid in the store.
pub fn remember(
    store: &Store,
    set: &RecipeSet,
    targets: &[String],
    outputs: &[Output],
    start: &Start,
) -> Result<Result<(), NotRemembered>, StoreError> {
    let has_path_source = set
        .recipes
        .values()
        .flat_map(|r| &r.sources)
        .any(|s| matches!(s.origin, Origin::Local { .. }));
    if has_path_source {
        return Ok(Err(NotRemembered::PathSource));
    }
    let (Some(read), Some(exe)) = (&set.read, start.exe) else {
        return Ok(Err(NotRemembered::Unknown));
    };
    let Some(dir) = read.dir else {
        return Ok(Err(NotRemembered::Unknown));
    };
    let stamps = std::iter::once(dir).chain(read.files.iter().map(|(_, s)| *s));
    if stamps
        .into_iter()
        .any(|s| s.last_change_ns() + RACY_NS > start.at_ns)
    {
        return Ok(Err(NotRemembered::Racy));
    }
    let mut text = format!("{FORMAT}\nexe {exe}\nhost {}\ndir {dir}\n", host_identity());
    for (file, stamp) in &read.files {
        let name = file.file_name().and_then(|n| n.to_str());
        match name {
            Some(n) if !n.contains('\n') && file.parent() == Some(set.dir.as_path()) => {
                text.push_str(&format!("file {stamp} {n}\n"));
            }
            _ => return Ok(Err(NotRemembered::Unknown)),
        }
    }
    for (recipe, name) in outputs {
        text.push_str(&format!("out {recipe} {name}\n"));
    }
    let key = entry_key(&set.dir, targets);
    if fs_err::read(store.evals_dir().join(&key)).is_ok_and(|old| old == text.as_bytes()) {
        return Ok(Ok(()));
    }
    store.write_eval_entry(&key, text.as_bytes())?;
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use super::*;
    use crate::hash::DrvHash;

    /// A start as if evaluation began long after the files were written (they are fresh, so
    /// a real start would find them racy).
    fn later() -> Start {
        let mut s = Start::now();
        s.at_ns += 10 * RACY_NS;
        s
    }

    #[test]
    fn an_entry_answers_until_a_stamp_changes_and_a_cut_entry_never() {
        let t = tempfile::tempdir().unwrap();
        let recipes = t.path().join("recipes");
        std::fs::create_dir(&recipes).unwrap();
        let a = recipes.join("a.toml");
        std::fs::write(&a, "name = \"a\"\nversion = \"1\"\n").unwrap();
        let store = Store::open(&t.path().join("store")).unwrap();
        let set = RecipeSet::load(&recipes).unwrap();
        let targets = vec!["a".to_string()];
        let outputs = vec![(
            "a".to_string(),
            StoreName::new(&DrvHash::of(b"a"), "a", "1"),
        )];
        let start = later();

        // Files changed within the racy window are never remembered.
        assert_eq!(
            remember(&store, &set, &targets, &outputs, &Start::now()).unwrap(),
            Err(NotRemembered::Racy)
        );
        assert_eq!(
            remember(&store, &set, &targets, &outputs, &start).unwrap(),
            Ok(())
        );
        assert_eq!(
            lookup(&store, &recipes, &targets, &start),
            Some(outputs.clone())
        );
        let other = vec!["b".to_string()];
        assert_eq!(
            lookup(&store, &recipes, &other, &start),
            None,
            "other targets"
        );

        let entry = store.evals_dir().join(entry_key(&recipes, &targets));
        let text = std::fs::read_to_string(&entry).unwrap();
        for kind in ["exe ", "host ", "dir "] {
            let cut: String = text
                .lines()
                .filter(|l| !l.starts_with(kind))
                .map(|l| format!("{l}\n"))
                .collect();
            std::fs::write(&entry, cut).unwrap();
            assert_eq!(
                lookup(&store, &recipes, &targets, &start),
                None,
                "without {kind:?}"
            );
        }
        std::fs::write(&entry, &text).unwrap();
        assert!(lookup(&store, &recipes, &targets, &start).is_some());

        // (An edit within the same clock tick that keeps the size is what the racy window is
        // for; this one changes the size.)
        std::fs::write(&a, "name = \"a\"\nversion = \"10\"\n").unwrap();
        assert_eq!(lookup(&store, &recipes, &targets, &start), None, "edited");

        // A file name that would make a line of its own in the entry is not remembered.
        std::fs::write(
            recipes.join("b\nout a x.toml"),
            "name = \"b\"\nversion = \"1\"\n",
        )
        .unwrap();
        let set = RecipeSet::load(&recipes).unwrap();
        assert_eq!(
            remember(&store, &set, &targets, &outputs, &start).unwrap(),
            Err(NotRemembered::Unknown)
        );
    }

    #[test]
    fn a_stamp_and_a_name_with_spaces_split() {
        let s = "1 2 100644 3 4 5 my recipe.toml";
        let (stamp, name) = split_stamp(s).unwrap();
        assert_eq!(stamp.ino, 2);
        assert_eq!(name, "my recipe.toml");
        assert!(split_stamp("1 2 3").is_none());
    }
}
