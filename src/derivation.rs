//! Derivation hashes: what identifies a build (scheme `pybake-drv-v1`).
//!
//! The hash covers everything that can change an output and nothing else:
//! the scheme version, the host platform, the recipe's name, version, steps and `[env]`, each
//! source's destination, unpack flag and content hash, and each dependency's name and derivation
//! hash (so a change anywhere below propagates to every dependent). It MUST NOT cover where the
//! recipes, the checkout or the store live, the recipe's file name, comments, formatting, key
//! order, `description`, or whether the recipe was written out in full or through `extends`.

use std::collections::BTreeMap;

use crate::hash::{tree, Canon, DrvHash, SourceHash};
use crate::recipe::{Origin, Recipe, RecipeError};
use crate::store::StoreName;

pub const SCHEME: &str = "pybake-drv-v1";

/// The platform outputs are built for, e.g. `x86_64-linux`.
pub fn host_platform() -> String {
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}

/// A recipe with its hash and store name.
#[derive(Debug, Clone)]
pub struct Derivation<'a> {
    pub recipe: &'a Recipe,
    pub hash: DrvHash,
    pub store_name: StoreName,
    /// The content hash of each source, in the recipe's order.
    pub source_hashes: Vec<SourceHash>,
}

/// Hashes every recipe of `order`, which must list dependencies before dependents.
pub fn derive_all<'a>(order: &[&'a Recipe]) -> Result<Vec<Derivation<'a>>, RecipeError> {
    let platform = host_platform();
    let mut done: BTreeMap<&str, DrvHash> = BTreeMap::new();
    let mut out = Vec::with_capacity(order.len());
    for recipe in order {
        let source_hashes = source_hashes(recipe)?;
        let deps: BTreeMap<&str, DrvHash> = recipe
            .deps
            .iter()
            .map(|d| (d.name.as_str(), done[d.name.as_str()]))
            .collect();
        let hash = drv_hash(recipe, &source_hashes, &deps, &platform);
        done.insert(&recipe.name, hash);
        out.push(Derivation {
            recipe,
            hash,
            store_name: StoreName::new(&hash, &recipe.name, &recipe.version),
            source_hashes,
        });
    }
    Ok(out)
}

fn source_hashes(recipe: &Recipe) -> Result<Vec<SourceHash>, RecipeError> {
    recipe
        .sources
        .iter()
        .map(|s| match &s.origin {
            Origin::Url { sha256, .. } => Ok(*sha256),
            Origin::Local { path } => {
                tree::hash_path(path)
                    .map(SourceHash::from_bytes)
                    .map_err(|source| RecipeError::HashSource {
                        recipe: recipe.name.clone(),
                        path: path.clone(),
                        source,
                    })
            }
        })
        .collect()
}

/// The derivation hash of one recipe given its sources' and dependencies' hashes.
pub fn drv_hash(
    recipe: &Recipe,
    source_hashes: &[SourceHash],
    deps: &BTreeMap<&str, DrvHash>,
    platform: &str,
) -> DrvHash {
    let mut c = Canon::new();
    c.field("scheme", SCHEME)
        .field("platform", platform)
        .field("name", &recipe.name)
        .field("version", &recipe.version);
    c.str("steps").str_list(&recipe.steps);
    c.str("env").str_map(&recipe.env);
    c.str("sources").u64(recipe.sources.len() as u64);
    for (s, h) in recipe.sources.iter().zip(source_hashes) {
        c.field("dest", &s.dest)
            .field("unpack", if s.unpack { "true" } else { "false" })
            .str("sha256")
            .bytes(h.as_bytes());
    }
    c.str("deps").u64(deps.len() as u64);
    for (name, h) in deps {
        c.str(name).bytes(h.as_bytes());
    }
    DrvHash::from_bytes(c.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::{Dep, Source};
    use std::path::PathBuf;

    fn recipe() -> Recipe {
        Recipe {
            name: "hello".into(),
            version: "1.0".into(),
            description: String::new(),
            run: None,
            file: PathBuf::from("/somewhere/hello.toml"),
            deps: vec![Dep {
                name: "greeting".into(),
                line: Some(3),
            }],
            steps: vec!["cc -o hello $src/hello.c".into()],
            env: BTreeMap::from([("GREETING".into(), "hi".into())]),
            sources: vec![Source {
                origin: Origin::Url {
                    urls: vec!["https://example.org/x.tar.gz".into()],
                    sha256: SourceHash::of(b"x"),
                },
                unpack: true,
                dest: ".".into(),
                at: crate::recipe::Location {
                    file: PathBuf::from("/somewhere/hello.toml"),
                    line: None,
                },
            }],
            provides: BTreeMap::new(),
            requires: BTreeMap::new(),
        }
    }

    fn hash_of(r: &Recipe) -> DrvHash {
        let deps = BTreeMap::from([("greeting", DrvHash::of(b"dep"))]);
        drv_hash(r, &[SourceHash::of(b"x")], &deps, "x86_64-linux")
    }

    #[test]
    fn known_answer() {
        assert_eq!(
            hash_of(&recipe()).to_string(),
            "sha256:27f3aa843679b7c706fcdd10950348d0c24da2cfbf2d6ef1c208b5fcd91a0060"
        );
    }

    #[test]
    fn location_and_description_do_not_count() {
        let mut r = recipe();
        r.file = PathBuf::from("/elsewhere/other.toml");
        r.description = "words".into();
        r.deps[0].line = Some(9);
        assert_eq!(hash_of(&r), hash_of(&recipe()));
    }

    #[test]
    fn every_input_counts() {
        let base = hash_of(&recipe());
        let mut r = recipe();
        r.steps[0].push(' ');
        assert_ne!(hash_of(&r), base);
        let mut r = recipe();
        r.env.insert("GREETING".into(), "ho".into());
        assert_ne!(hash_of(&r), base);
        let mut r = recipe();
        r.version = "1.1".into();
        assert_ne!(hash_of(&r), base);
        let mut r = recipe();
        r.sources[0].dest = "sub".into();
        assert_ne!(hash_of(&r), base);
        let r = recipe();
        let deps = BTreeMap::from([("greeting", DrvHash::of(b"other"))]);
        assert_ne!(
            drv_hash(&r, &[SourceHash::of(b"x")], &deps, "x86_64-linux"),
            base
        );
        assert_ne!(
            drv_hash(
                &r,
                &[SourceHash::of(b"y")],
                &BTreeMap::from([("greeting", DrvHash::of(b"dep"))]),
                "x86_64-linux"
            ),
            base
        );
    }
}
