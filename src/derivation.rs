//! Derivation hashes: what identifies a build (scheme `pybake-drv-v2`).
//!
//! The hash covers everything that can change an output and nothing else:
//! the scheme version, the host platform, the recipe's name, version, steps and `[env]`, each
//! source's destination, file name, unpack flag and content hash, each dependency's name and derivation
//! hash (so a change anywhere below propagates to every dependent), and what the steps run on:
//! the root recipe's derivation hash, or, for a host build (steps and no root), the host's
//! identity ([`host_identity`]: the distribution and its version from `/etc/os-release`), since
//! then the host's compiler and libraries shape the output. It MUST NOT cover where the
//! recipes, the checkout or the store live, the recipe's file name, comments, formatting, key
//! order, `description`, or whether the recipe was written out in full or through `extends`.
//!
//! v2 (from v1): the root or host identity, and the file name a source that is not unpacked is
//! copied under; also, since v1, sources get the fixed mtime `SOURCE_DATE_EPOCH` and steps run
//! as an unprivileged uid 1000, both of which change output bytes.

use std::collections::BTreeMap;

use crate::hash::{tree, Canon, DrvHash, SourceHash};
use crate::recipe::{Origin, Recipe, RecipeError, Source};
use crate::store::StoreName;

pub const SCHEME: &str = "pybake-drv-v2";

/// The platform outputs are built for, e.g. `x86_64-linux`.
pub fn host_platform() -> String {
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}

/// What a host build's output depends on besides its recipe: the distribution and version the
/// host's `/usr` comes from (`ID` and `VERSION_ID` of `/etc/os-release`, e.g. `debian 12`).
/// Read once per process.
pub fn host_identity() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let text = std::fs::read_to_string("/etc/os-release")
            .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
            .unwrap_or_default();
        identity_of(&text)
    })
}

/// `ID VERSION_ID` from an os-release text (`VERSION_CODENAME` when there is no version, as on
/// Debian testing; `unknown` for what is missing).
fn identity_of(os_release: &str) -> String {
    let field = |key: &str| {
        os_release.lines().find_map(|l| {
            let v = l.strip_prefix(key)?.strip_prefix('=')?;
            Some(v.trim().trim_matches('"').to_string())
        })
    };
    let id = field("ID").unwrap_or_else(|| "unknown".into());
    let version = field("VERSION_ID")
        .or_else(|| field("VERSION_CODENAME"))
        .unwrap_or_else(|| "unknown".into());
    format!("{id} {version}")
}

/// What a recipe's steps run on, as hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildsOn<'a> {
    /// The output of the root recipe with this derivation hash.
    Root(DrvHash),
    /// The host's `/usr`, identified by [`host_identity`].
    Host(&'a str),
    /// Nothing: a recipe without steps runs nothing.
    Nothing,
}

/// A recipe with its hash and store name.
#[derive(Debug, Clone)]
pub struct Derivation<'a> {
    pub recipe: &'a Recipe,
    pub hash: DrvHash,
    pub store_name: StoreName,
    /// The store name of the recipe's root, if it has one.
    pub root: Option<StoreName>,
    /// The content hash of each source, in the recipe's order.
    pub source_hashes: Vec<SourceHash>,
}

/// Hashes every recipe of `order`, which must list dependencies before dependents.
pub fn derive_all<'a>(order: &[&'a Recipe]) -> Result<Vec<Derivation<'a>>, RecipeError> {
    let platform = host_platform();
    let mut done: BTreeMap<&str, (DrvHash, StoreName)> = BTreeMap::new();
    let mut out = Vec::with_capacity(order.len());
    for recipe in order {
        let source_hashes = source_hashes(recipe)?;
        let deps: BTreeMap<&str, DrvHash> = recipe
            .deps
            .iter()
            .map(|d| (d.name.as_str(), done[d.name.as_str()].0))
            .collect();
        let root = recipe.root.as_ref().map(|r| &done[r.name.as_str()]);
        let on = match root {
            Some((h, _)) => BuildsOn::Root(*h),
            None if recipe.is_host_build() => BuildsOn::Host(host_identity()),
            None => BuildsOn::Nothing,
        };
        let hash = drv_hash(recipe, &source_hashes, &deps, &platform, on);
        let store_name = StoreName::new(&hash, &recipe.name, &recipe.version);
        let root = root.map(|(_, n)| n.clone());
        done.insert(&recipe.name, (hash, store_name.clone()));
        out.push(Derivation {
            recipe,
            hash,
            store_name,
            root,
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
    on: BuildsOn,
) -> DrvHash {
    // Every field is named here, so a new field of `Recipe` cannot be added without deciding
    // whether it is hashed.
    let Recipe {
        name,
        version,
        description: _, // words for people
        run: _,         // how to use the output, not how to build it
        file: _,        // where the recipe lives
        deps: _,        // hashed through `deps`, with each dependency's derivation hash
        root: _,        // hashed through `on`
        steps,
        env,
        sources,
        provides: _, // checked against `requires`; neither changes what is built
        requires: _,
    } = recipe;
    let mut c = Canon::new();
    c.field("scheme", SCHEME)
        .field("platform", platform)
        .field("name", name)
        .field("version", version);
    match on {
        BuildsOn::Root(h) => c.str("root").bytes(h.as_bytes()),
        BuildsOn::Host(id) => c.field("host", id),
        BuildsOn::Nothing => c.str("nothing"),
    };
    c.str("steps").str_list(steps);
    c.str("env").str_map(env);
    c.str("sources").u64(sources.len() as u64);
    for (s, h) in sources.iter().zip(source_hashes) {
        let Source {
            origin,
            unpack,
            dest,
            at: _,
        } = s;
        // A file that is not unpacked is copied under this name.
        c.field("dest", dest)
            .field("file", &origin.file_name())
            .field("unpack", if *unpack { "true" } else { "false" })
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
    use crate::recipe::Dep;
    use std::path::{Path, PathBuf};

    fn recipe() -> Recipe {
        Recipe {
            name: "hello".into(),
            version: "1.0".into(),
            description: String::new(),
            run: None,
            file: PathBuf::from("/somewhere/hello.toml"),
            deps: vec![Dep {
                name: "greeting".into(),
                at: crate::recipe::Location::at_line(Path::new("/somewhere/hello.toml"), Some(3)),
            }],
            root: None,
            steps: vec!["cc -o hello $src/hello.c".into()],
            env: BTreeMap::from([("GREETING".into(), "hi".into())]),
            sources: vec![Source {
                origin: Origin::Url {
                    urls: vec!["https://example.org/x.tar.gz".into()],
                    sha256: SourceHash::of(b"x"),
                },
                unpack: true,
                dest: ".".into(),
                at: crate::recipe::Location::at_line(Path::new("/somewhere/hello.toml"), None),
            }],
            provides: BTreeMap::new(),
            requires: BTreeMap::new(),
        }
    }

    const HOST: BuildsOn = BuildsOn::Host("debian 12");

    fn hash_of(r: &Recipe) -> DrvHash {
        let deps = BTreeMap::from([("greeting", DrvHash::of(b"dep"))]);
        drv_hash(r, &[SourceHash::of(b"x")], &deps, "x86_64-linux", HOST)
    }

    #[test]
    fn known_answer() {
        assert_eq!(
            hash_of(&recipe()).to_string(),
            "sha256:25f8ec03bf051c8fd36e038bb1c9e74faa2dd545d49f3bb37687a337d3271cbb"
        );
    }

    #[test]
    fn location_and_description_do_not_count() {
        let mut r = recipe();
        r.file = PathBuf::from("/elsewhere/other.toml");
        r.description = "words".into();
        r.deps[0].at.line = Some(9);
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
        r.sources[0].origin = Origin::Url {
            urls: vec!["https://example.org/y.tar.gz".into()],
            sha256: SourceHash::of(b"x"),
        };
        assert_ne!(hash_of(&r), base, "the file name a source has in $src");
        let mut r = recipe();
        r.sources[0].origin = Origin::Url {
            urls: vec!["https://mirror.example.net/pub/x.tar.gz".into()],
            sha256: SourceHash::of(b"x"),
        };
        assert_eq!(
            hash_of(&r),
            base,
            "where a source is downloaded from does not count"
        );
        let mut r = recipe();
        r.sources[0].dest = "sub".into();
        assert_ne!(hash_of(&r), base);
        let r = recipe();
        let deps = BTreeMap::from([("greeting", DrvHash::of(b"other"))]);
        assert_ne!(
            drv_hash(&r, &[SourceHash::of(b"x")], &deps, "x86_64-linux", HOST),
            base
        );
        assert_ne!(
            drv_hash(
                &r,
                &[SourceHash::of(b"y")],
                &BTreeMap::from([("greeting", DrvHash::of(b"dep"))]),
                "x86_64-linux",
                HOST
            ),
            base
        );
    }

    #[test]
    fn what_the_steps_run_on_counts() {
        let r = recipe();
        let deps = BTreeMap::from([("greeting", DrvHash::of(b"dep"))]);
        let with = |on| drv_hash(&r, &[SourceHash::of(b"x")], &deps, "x86_64-linux", on);
        let base = with(HOST);
        assert_ne!(with(BuildsOn::Host("debian 13")), base);
        assert_ne!(with(BuildsOn::Host("ubuntu 24.04")), base);
        let root = with(BuildsOn::Root(DrvHash::of(b"root")));
        assert_ne!(root, base);
        assert_ne!(with(BuildsOn::Root(DrvHash::of(b"other root"))), root);
        assert_ne!(with(BuildsOn::Nothing), base);
    }

    #[test]
    fn host_identity_reads_id_and_version() {
        let debian = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\nID=debian\n";
        assert_eq!(identity_of(debian), "debian 12");
        assert_eq!(
            identity_of("ID=debian\nVERSION_CODENAME=trixie\n"),
            "debian trixie"
        );
        assert_eq!(identity_of(""), "unknown unknown");
    }
}
