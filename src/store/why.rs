//! `why-depends`: the shortest chain of dependencies from one output to another, and the files
//! of an output that mention the next one (as `nix why-depends` shows).

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::path::Path;

use memchr::memmem;

use super::{Store, StoreError, StoreName};
use crate::hash::tree::{self, Entry, Kind, Scanner, TreeError};

/// How one output depends on the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// It mentions it (`references`): a runtime dependency.
    Reference,
    /// It was built with it (`deps`).
    BuildDep,
    /// Its steps ran on it (`root`).
    BuildRoot,
}

/// One link of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub from: StoreName,
    pub edge: Edge,
    pub to: StoreName,
}

impl Store {
    /// The shortest chain from `from` to `to` through runtime references, or with `build`
    /// through build dependencies and roots too; `None` when there is none, an empty chain when
    /// `from` is `to`. Where chains are equally short, references are preferred, then build
    /// dependencies in the recipe's order. Outputs not in the store end a chain.
    pub fn dependency_path(
        &self,
        from: &StoreName,
        to: &StoreName,
        build: bool,
    ) -> Result<Option<Vec<Hop>>, StoreError> {
        let mut came_from: BTreeMap<StoreName, Option<(StoreName, Edge)>> = BTreeMap::new();
        came_from.insert(from.clone(), None);
        let mut queue = VecDeque::from([from.clone()]);
        while let Some(n) = queue.pop_front() {
            if &n == to {
                break;
            }
            let meta = match self.read_meta(&n) {
                Ok(m) => m,
                Err(StoreError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                    continue
                }
                Err(e) => return Err(e),
            };
            let mut next: Vec<(StoreName, Edge)> = meta
                .references
                .into_iter()
                .map(|r| (r, Edge::Reference))
                .collect();
            if build {
                next.extend(meta.deps.into_iter().map(|d| (d, Edge::BuildDep)));
                next.extend(meta.root.into_iter().map(|r| (r, Edge::BuildRoot)));
            }
            for (m, edge) in next {
                if !came_from.contains_key(&m) {
                    came_from.insert(m.clone(), Some((n.clone(), edge)));
                    queue.push_back(m);
                }
            }
        }
        if !came_from.contains_key(to) {
            return Ok(None);
        }
        let mut hops = Vec::new();
        let mut at = to.clone();
        while let Some(Some((prev, edge))) = came_from.get(&at) {
            hops.push(Hop {
                from: prev.clone(),
                edge: *edge,
                to: at.clone(),
            });
            at = prev.clone();
        }
        hops.reverse();
        Ok(Some(hops))
    }

    /// The files (and symlinks) of the output `output` that mention `name` (its hash part), as
    /// paths relative to the output, sorted. Each file is read once, in chunks.
    pub fn files_mentioning(
        &self,
        output: &StoreName,
        name: &StoreName,
    ) -> Result<Vec<String>, TreeError> {
        files_mentioning(&self.path(output), name.hash_part().as_bytes())
    }
}

fn files_mentioning(root: &Path, needle: &[u8]) -> Result<Vec<String>, TreeError> {
    let finder = Finder(memmem::Finder::new(needle));
    let scanned = tree::hash_path_scanning(root, &finder)?;
    let mut found = Vec::new();
    for (entry, hit) in scanned.entries {
        let hit = match (&entry.kind, hit) {
            (Kind::File { .. }, Some(hit)) => hit,
            (Kind::Symlink { target }, _) => finder.0.find(target.as_bytes()).is_some(),
            _ => false,
        };
        if hit {
            found.push(entry.rel);
        }
    }
    Ok(found)
}

struct Finder<'a>(memmem::Finder<'a>);

impl Scanner for Finder<'_> {
    type State = bool;

    fn overlap(&self) -> usize {
        self.0.needle().len().saturating_sub(1)
    }

    fn start(&self, _: &Entry) -> bool {
        false
    }

    fn window(&self, found: &mut bool, data: &[u8]) {
        *found = *found || self.0.find(data).is_some();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use super::*;
    use crate::hash::{DrvHash, OutputHash};
    use crate::store::Meta;

    #[test]
    fn finds_the_files_that_mention_a_name_even_across_chunks() {
        let t = tempfile::tempdir().unwrap();
        let name = StoreName::new(&DrvHash::of(b"dep"), "dep", "1");
        let needle = name.hash_part().as_bytes();
        std::fs::create_dir_all(t.path().join("lib")).unwrap();
        let mut big = vec![b'x'; tree::CHUNK - 10];
        big.extend_from_slice(needle);
        std::fs::write(t.path().join("lib/big"), big).unwrap();
        std::fs::write(t.path().join("plain"), "nothing here").unwrap();
        std::os::unix::fs::symlink(format!("/pybake/store/{name}/bin"), t.path().join("link"))
            .unwrap();
        assert_eq!(
            files_mentioning(t.path(), needle).unwrap(),
            ["lib/big", "link"]
        );
    }

    #[test]
    fn the_shortest_chain_prefers_references() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path()).unwrap();
        let n = |s: &str| StoreName::new(&DrvHash::of(s.as_bytes()), s, "1");
        let (a, b, c, d) = (n("a"), n("b"), n("c"), n("d"));
        let put = |name: &StoreName, refs: &[&StoreName], deps: &[&StoreName]| {
            let mut m = Meta::new(name, DrvHash::of(b"x"), OutputHash::of(b"o"));
            m.references = refs.iter().map(|r| (*r).clone()).collect();
            m.deps = deps.iter().map(|r| (*r).clone()).collect();
            crate::store::write_atomic(&store.meta_path(name), &m.to_json()).unwrap();
        };
        put(&a, &[&b], &[&b, &d]);
        put(&b, &[&c], &[&c]);
        put(&c, &[], &[]);
        put(&d, &[], &[&c]);
        let hop = |from: &StoreName, edge, to: &StoreName| Hop {
            from: from.clone(),
            edge,
            to: to.clone(),
        };
        assert_eq!(
            store.dependency_path(&a, &c, false).unwrap(),
            Some(vec![
                hop(&a, Edge::Reference, &b),
                hop(&b, Edge::Reference, &c)
            ])
        );
        assert_eq!(store.dependency_path(&a, &d, false).unwrap(), None);
        assert_eq!(
            store.dependency_path(&a, &d, true).unwrap(),
            Some(vec![hop(&a, Edge::BuildDep, &d)])
        );
        assert_eq!(store.dependency_path(&a, &a, false).unwrap(), Some(vec![]));
        assert_eq!(store.dependency_path(&c, &a, true).unwrap(), None);
    }
}
