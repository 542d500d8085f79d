//! Reference scanning: which store paths, and which host-specific paths, an output mentions.
//!
//! As in Nix, only the hash parts of candidate store names are looked for (the closure the build
//! could see, and the output itself), so arbitrary text that merely looks like a path is ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use memchr::memmem;

use crate::hash::tree::{self, Kind, TreeError};
use crate::store::StoreName;

pub struct Findings {
    pub references: BTreeSet<StoreName>,
    /// host path -> files (relative to the output) that contain it.
    pub host_paths: BTreeMap<String, Vec<String>>,
}

/// Scans `out` for `<prefix>/<hash>` of each candidate under each store prefix, and for each of
/// `host_paths` verbatim.
pub fn scan(
    out: &Path,
    store_prefixes: &[String],
    candidates: &[StoreName],
    host_paths: &[String],
) -> Result<Findings, TreeError> {
    let by_hash: BTreeMap<&str, &StoreName> = candidates
        .iter()
        .map(|n| (&n.as_str()[..StoreName::hash_prefix_len()], n))
        .collect();
    let prefixes: Vec<(String, memmem::Finder)> = store_prefixes
        .iter()
        .map(|p| {
            let p = format!("{}/", p.trim_end_matches('/'));
            let f = memmem::Finder::new(p.as_bytes()).into_owned();
            (p, f)
        })
        .collect();
    let host_finders: Vec<(String, memmem::Finder)> = host_paths
        .iter()
        .map(|p| (p.clone(), memmem::Finder::new(p.as_bytes()).into_owned()))
        .collect();

    let mut found = Findings {
        references: BTreeSet::new(),
        host_paths: BTreeMap::new(),
    };
    let mut visit = |rel: &str, data: &[u8]| {
        for (prefix, finder) in &prefixes {
            for at in finder.find_iter(data) {
                let start = at + prefix.len();
                let Some(hash) = data.get(start..start + StoreName::hash_prefix_len()) else {
                    continue;
                };
                if let Some(name) = std::str::from_utf8(hash).ok().and_then(|h| by_hash.get(h)) {
                    found.references.insert((*name).clone());
                }
            }
        }
        for (p, finder) in &host_finders {
            if finder.find(data).is_some() {
                found
                    .host_paths
                    .entry(p.clone())
                    .or_default()
                    .push(rel.to_string());
            }
        }
    };

    for e in tree::entries(out)? {
        match &e.kind {
            Kind::File { .. } => {
                let data = std::fs::read(&e.path).map_err(|source| TreeError::Io {
                    path: e.path.clone(),
                    source,
                })?;
                visit(&e.rel, &data);
            }
            Kind::Symlink { target } => visit(&e.rel, target.as_bytes()),
            Kind::Dir => {}
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::DrvHash;

    #[test]
    fn finds_known_store_paths_and_host_paths() {
        let t = tempfile::tempdir().unwrap();
        let dep = StoreName::new(&DrvHash::of(b"d"), "dep", "1");
        let other = StoreName::new(&DrvHash::of(b"o"), "other", "1");
        std::fs::write(
            t.path().join("cfg"),
            format!("PREFIX=/pybake/store/{dep}/bin\nHOST=/home/me/store/x\n"),
        )
        .unwrap();
        std::os::unix::fs::symlink(format!("/pybake/store/{other}/lib"), t.path().join("l"))
            .unwrap();
        let f = scan(
            t.path(),
            &["/pybake/store".into()],
            std::slice::from_ref(&dep),
            &["/home/me/store".into()],
        )
        .unwrap();
        assert_eq!(f.references, BTreeSet::from([dep]));
        assert_eq!(f.host_paths["/home/me/store"], vec!["cfg".to_string()]);
    }
}
