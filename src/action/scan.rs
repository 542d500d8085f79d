//! Reference scanning: which store paths, and which host-specific paths, an output mentions.
//!
//! As in Nix, only the hash parts of candidate store names are looked for (the closure the build
//! could see, and the output itself), so arbitrary text that merely looks like a path is ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use memchr::memmem;

use crate::hash::tree::{self, Entry, Kind, Scanner, TreeError};
use crate::hash::OutputHash;
use crate::store::StoreName;

pub struct Findings {
    /// The output's content hash, from the same read of each file as the scan.
    pub output_hash: OutputHash,
    pub references: BTreeSet<StoreName>,
    /// host path -> files (relative to the output) that contain it.
    pub host_paths: BTreeMap<String, Vec<String>>,
}

/// Hashes `out` and scans it for `<prefix>/<hash>` of each candidate under each store prefix, and
/// for each of `host_paths` verbatim. Each file is read once, in chunks, so memory stays bounded
/// whatever the size of the output's files.
pub fn scan(
    out: &Path,
    store_prefixes: &[String],
    candidates: &[StoreName],
    host_paths: &[String],
) -> Result<Findings, TreeError> {
    let finders = Finders::new(store_prefixes, candidates, host_paths);
    let scanned = tree::hash_path_scanning(out, &finders)?;
    let mut found = Findings {
        output_hash: OutputHash::from_bytes(scanned.hash),
        references: BTreeSet::new(),
        host_paths: BTreeMap::new(),
    };
    for (entry, hits) in scanned.entries {
        let hits = match (&entry.kind, hits) {
            (Kind::File { .. }, Some(hits)) => hits,
            (Kind::Symlink { target }, _) => {
                let mut hits = finders.start(&entry);
                finders.window(&mut hits, target.as_bytes());
                hits
            }
            _ => continue,
        };
        found
            .references
            .extend(hits.references.into_iter().map(|i| candidates[i].clone()));
        for (i, hit) in hits.host_paths.iter().enumerate() {
            if *hit {
                found
                    .host_paths
                    .entry(host_paths[i].clone())
                    .or_default()
                    .push(entry.rel.clone());
            }
        }
    }
    Ok(found)
}

/// The patterns, compiled once and shared by the threads that read files.
struct Finders<'a> {
    /// `<store prefix>/`
    prefixes: Vec<memmem::Finder<'static>>,
    /// Hash part of each candidate's name -> its index in the candidates.
    by_hash: BTreeMap<&'a [u8], usize>,
    hosts: Vec<memmem::Finder<'a>>,
    /// Longest pattern (a prefix with the hash after it, or a host path) minus one.
    overlap: usize,
}

/// What one file (or symlink target) contains, by index into the candidates and host paths.
struct Hits {
    references: BTreeSet<usize>,
    host_paths: Vec<bool>,
}

impl<'a> Finders<'a> {
    fn new(
        store_prefixes: &[String],
        candidates: &'a [StoreName],
        host_paths: &'a [String],
    ) -> Self {
        let by_hash = candidates
            .iter()
            .enumerate()
            .map(|(i, n)| (&n.as_str().as_bytes()[..StoreName::hash_prefix_len()], i))
            .collect();
        let prefixes: Vec<memmem::Finder<'static>> = store_prefixes
            .iter()
            .map(|p| {
                let p = format!("{}/", p.trim_end_matches('/'));
                memmem::Finder::new(p.as_bytes()).into_owned()
            })
            .collect();
        let longest = prefixes
            .iter()
            .map(|f| f.needle().len() + StoreName::hash_prefix_len())
            .chain(host_paths.iter().map(|p| p.len()))
            .max()
            .unwrap_or(0);
        Finders {
            prefixes,
            by_hash,
            hosts: host_paths
                .iter()
                .map(|p| memmem::Finder::new(p.as_bytes()))
                .collect(),
            overlap: longest.saturating_sub(1),
        }
    }
}

impl Scanner for Finders<'_> {
    type State = Hits;

    fn overlap(&self) -> usize {
        self.overlap
    }

    fn start(&self, _: &Entry) -> Hits {
        Hits {
            references: BTreeSet::new(),
            host_paths: vec![false; self.hosts.len()],
        }
    }

    fn window(&self, hits: &mut Hits, data: &[u8]) {
        for finder in &self.prefixes {
            for at in finder.find_iter(data) {
                let start = at + finder.needle().len();
                // A hash cut off by the window's end is seen whole in the next window.
                let Some(hash) = data.get(start..start + StoreName::hash_prefix_len()) else {
                    continue;
                };
                if let Some(i) = self.by_hash.get(hash) {
                    hits.references.insert(*i);
                }
            }
        }
        for (hit, finder) in hits.host_paths.iter_mut().zip(&self.hosts) {
            *hit = *hit || finder.find(data).is_some();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
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

    /// A file holding `pattern` so that its byte `split` is the first byte of the second chunk.
    fn straddling(dir: &Path, pattern: &[u8], split: usize) {
        let mut data = vec![b'x'; tree::CHUNK - split];
        data.extend_from_slice(pattern);
        data.extend_from_slice(&[b'y'; 100]);
        std::fs::write(dir.join("f"), data).unwrap();
    }

    #[test]
    fn references_and_host_paths_straddling_a_chunk_boundary_are_found() {
        let dep = StoreName::new(&DrvHash::of(b"d"), "dep", "1");
        let prefixes = ["/pybake/store".to_string()];
        let host = ["/home/me/somewhat/longer/host/store".to_string()];
        let reference = format!("/pybake/store/{dep}/bin");
        let ref_len = "/pybake/store/".len() + StoreName::hash_prefix_len();
        for split in 1..ref_len {
            let t = tempfile::tempdir().unwrap();
            straddling(t.path(), reference.as_bytes(), split);
            let f = scan(t.path(), &prefixes, std::slice::from_ref(&dep), &host).unwrap();
            assert_eq!(
                f.references,
                BTreeSet::from([dep.clone()]),
                "split at {split}"
            );
        }
        for split in 1..host[0].len() {
            let t = tempfile::tempdir().unwrap();
            straddling(t.path(), host[0].as_bytes(), split);
            let f = scan(t.path(), &prefixes, std::slice::from_ref(&dep), &host).unwrap();
            assert_eq!(f.host_paths[&host[0]], ["f"], "split at {split}");
        }
    }

    /// The scan as it was before it shared a read with hashing: whole files in memory.
    fn whole_file_scan(
        out: &Path,
        store_prefixes: &[String],
        candidates: &[StoreName],
        host_paths: &[String],
    ) -> (
        OutputHash,
        BTreeSet<StoreName>,
        BTreeMap<String, Vec<String>>,
    ) {
        let by_hash: BTreeMap<&str, &StoreName> = candidates
            .iter()
            .map(|n| (&n.as_str()[..StoreName::hash_prefix_len()], n))
            .collect();
        let mut refs = BTreeSet::new();
        let mut hosts: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut visit = |rel: &str, data: &[u8]| {
            for p in store_prefixes {
                let p = format!("{}/", p.trim_end_matches('/'));
                for at in memmem::find_iter(data, p.as_bytes()) {
                    let start = at + p.len();
                    let Some(hash) = data.get(start..start + StoreName::hash_prefix_len()) else {
                        continue;
                    };
                    if let Some(name) = std::str::from_utf8(hash).ok().and_then(|h| by_hash.get(h))
                    {
                        refs.insert((*name).clone());
                    }
                }
            }
            for p in host_paths {
                if memmem::find(data, p.as_bytes()).is_some() {
                    hosts.entry(p.clone()).or_default().push(rel.to_string());
                }
            }
        };
        for e in tree::entries(out).unwrap() {
            match &e.kind {
                Kind::File { .. } => visit(&e.rel, &std::fs::read(&e.path).unwrap()),
                Kind::Symlink { target } => visit(&e.rel, target.as_bytes()),
                Kind::Dir => {}
            }
        }
        let hash = OutputHash::from_bytes(tree::hash_path(out).unwrap());
        (hash, refs, hosts)
    }

    #[test]
    fn agrees_with_the_whole_file_scan_on_a_sample_tree() {
        use std::os::unix::fs::PermissionsExt;
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let names: Vec<StoreName> = (0..6)
            .map(|i| StoreName::new(&DrvHash::of(&[i]), &format!("p{i}"), "1"))
            .collect();
        // The last two are not candidates: they must not be reported.
        let candidates = &names[..4];
        let prefixes = ["/pybake/store".to_string(), "/home/me/cache/".to_string()];
        let hosts = ["/home/me/cache".to_string(), "/tmp/build.Xy12".to_string()];
        let mut patterns: Vec<String> = names
            .iter()
            .flat_map(|n| {
                [
                    format!("/pybake/store/{n}/lib"),
                    format!("/home/me/cache/{n}"),
                ]
            })
            .collect();
        patterns.extend(hosts.iter().cloned());
        patterns.push("/pybake/store/short".into());

        let t = tempfile::tempdir().unwrap();
        let chunk = tree::CHUNK;
        let sizes = [
            0,
            1,
            70,
            chunk - 1,
            chunk,
            chunk + 1,
            2 * chunk + 9,
            3 * chunk,
        ];
        for i in 0..40 {
            let dir = t.path().join(format!("d{}", i % 5));
            std::fs::create_dir_all(&dir).unwrap();
            let size = if i < sizes.len() {
                sizes[i]
            } else {
                next(3 * chunk)
            };
            let mut data: Vec<u8> = (0..size).map(|_| next(256) as u8).collect();
            for _ in 0..next(4) {
                let p = patterns[next(patterns.len())].as_bytes();
                // Near a chunk boundary half of the time.
                let at = if next(2) == 0 {
                    (next(4) * chunk).saturating_sub(next(p.len() + 1))
                } else {
                    next(size + 1)
                };
                let at = at.min(data.len());
                let end = (at + p.len()).min(data.len());
                data.splice(at..end, p.iter().copied());
            }
            let path = dir.join(format!("f{i}"));
            std::fs::write(&path, &data).unwrap();
            if i % 7 == 0 {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            if i % 9 == 0 {
                std::os::unix::fs::symlink(
                    &patterns[next(patterns.len())],
                    dir.join(format!("l{i}")),
                )
                .unwrap();
            }
        }

        let f = scan(t.path(), &prefixes, candidates, &hosts).unwrap();
        let (hash, refs, host_paths) = whole_file_scan(t.path(), &prefixes, candidates, &hosts);
        assert_eq!(f.output_hash, hash);
        assert_eq!(f.references, refs);
        assert_eq!(f.host_paths, host_paths);
        assert!(
            refs.len() >= 2 && host_paths.len() == 2,
            "the sample exercises the scan"
        );
    }
}
