//! The recipe loader, as `pybake lock` runs it: parse and resolve (`extends`, defaults, checks),
//! build the graph, hash the derivations, check toolchains, make the lockfile entries.
//!
//! Input: the text of up to 8 recipe files separated by NUL bytes, loaded as `r0.toml`,
//! `r1.toml`, ... from a fixture directory holding a few `path` sources. No input may panic, and
//! a recipe that is accepted must satisfy what the rest of pybake relies on: its name and version
//! are safe store-path components, its source destinations stay inside `$src`, its `[env]` sets
//! nothing pybake owns; hashing is deterministic and the lockfile entries round-trip.
#![no_main]
#![allow(clippy::disallowed_methods)] // a harness may use std::fs (fuzz_target! does); pybake itself uses fs-err

use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pybake::derivation::derive_all;
use pybake::graph::Graph;
use pybake::lock::Lockfile;
use pybake::recipe::{Origin, Recipe, RecipeSet, RESERVED_ENV};

/// The recipe directory: `path` sources the inputs can name (`hello.c`, `files`, `files/a.txt`).
fn fixture() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("pybake-fuzz-recipe-")
            .tempdir()
            .expect("temp dir")
            .keep();
        std::fs::write(dir.join("hello.c"), "int main(void) { return 0; }\n").expect("fixture");
        std::fs::create_dir_all(dir.join("files/sub")).expect("fixture");
        std::fs::write(dir.join("files/a.txt"), "a\n").expect("fixture");
        std::fs::write(dir.join("files/sub/b.txt"), "b\n").expect("fixture");
        dir.canonicalize().expect("fixture")
    })
}

fn safe_token(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'))
}

fn check_recipe(r: &Recipe) {
    assert!(safe_token(&r.name), "accepted name {:?}", r.name);
    assert!(safe_token(&r.version), "accepted version {:?}", r.version);
    for s in &r.sources {
        assert!(
            Path::new(&s.dest)
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir)),
            "accepted dest {:?}",
            s.dest
        );
        if let Origin::Url { urls, .. } = &s.origin {
            assert!(!urls.is_empty(), "a url source without URL");
        }
    }
    for k in r.env.keys() {
        assert!(
            !RESERVED_ENV.contains(&k.as_str()) && !k.starts_with("DEP_"),
            "accepted env {k:?}"
        );
    }
}

/// Hashing a `path` source walks it, so only sources inside the fixture are hashed: today's
/// loader still accepts `path = "/"` (issue 9, item 2), which would hash the whole machine.
fn hashable(set: &RecipeSet) -> bool {
    set.recipes
        .values()
        .flat_map(|r| &r.sources)
        .all(|s| match &s.origin {
            Origin::Local { path } => path.canonicalize().is_ok_and(|p| p.starts_with(fixture())),
            Origin::Url { .. } => true,
        })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let files: Vec<(PathBuf, String)> = text
        .split('\0')
        .take(8)
        .enumerate()
        .map(|(i, t)| (fixture().join(format!("r{i}.toml")), t.to_string()))
        .collect();
    let set = match RecipeSet::from_texts(fixture(), files) {
        Ok(set) => set,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    set.recipes.values().for_each(check_recipe);
    let graph = match Graph::new(&set) {
        Ok(g) => g,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let _ = graph.dot(&set.recipes.keys().cloned().collect::<Vec<_>>());
    if !hashable(&set) {
        return;
    }
    let order = graph.all();
    let drvs = match derive_all(&order) {
        Ok(d) => d,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let again = derive_all(&order).expect("hashing succeeded once");
    for (a, b) in drvs.iter().zip(&again) {
        assert_eq!(
            a.hash, b.hash,
            "derivation hash of {} not stable",
            a.recipe.name
        );
    }
    let pins = match pybake::toolchain::check(&drvs) {
        Ok(p) => p,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let lock = Lockfile::from_derivations(fixture(), &drvs, &pins, &|_| None);
    let json = lock.to_json();
    let back = Lockfile::from_slice(json.as_bytes(), Path::new("lockfile.json"))
        .expect("a lockfile pybake wrote can be read");
    assert_eq!(back, lock, "lockfile entries do not round-trip");
});
