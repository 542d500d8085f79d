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
//! What is hashed is a [`DrvRecord`]: the same record is kept in the store for every built output
//! (in its metadata, `inputs`) so that `pybake explain` can name the input that changed.
//! The hash is computed from the record and nothing else, so the two cannot disagree.
//!
//! v2 (from v1): the root or host identity, and the file name a source that is not unpacked is
//! copied under; also, since v1, sources get the fixed mtime `SOURCE_DATE_EPOCH` and steps run
//! as an unprivileged uid 1000, both of which change output bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
        let text = fs_err::read_to_string("/etc/os-release")
            .or_else(|_| fs_err::read_to_string("/usr/lib/os-release"))
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

/// What a recipe's steps run on, as recorded and hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildsOn {
    /// The output of the root recipe `name`. Only its derivation hash is hashed: the name and
    /// store name are there for people, and the hash already covers both.
    Root {
        name: String,
        drv_hash: DrvHash,
        store_name: StoreName,
    },
    /// The host's `/usr`, identified by [`host_identity`].
    Host(String),
    /// Nothing: a recipe without steps runs nothing.
    Nothing,
}

/// One source as hashed: where it goes under `$src`, the file name a source that is not
/// unpacked is copied under, whether it is unpacked, and its content hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInput {
    pub dest: String,
    pub file: String,
    pub unpack: bool,
    pub sha256: SourceHash,
}

/// A dependency as recorded: its derivation hash (hashed) and store name (for finding its own
/// record; the hash already covers it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepInput {
    pub drv_hash: DrvHash,
    pub store_name: StoreName,
}

/// Everything a derivation hash covers, field by field: the derivation's inputs. The store keeps
/// one per built output in its metadata (`inputs`, docs/store.md), as Nix keeps `.drv`
/// files, so that `pybake explain` can say which input changed. [`DrvRecord::drv_hash`] hashes
/// exactly this record, so what is recorded and what is hashed cannot drift apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrvRecord {
    pub scheme: String,
    pub platform: String,
    pub name: String,
    pub version: String,
    pub builds_on: BuildsOn,
    pub steps: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub sources: Vec<SourceInput>,
    /// Direct dependencies by recipe name (the root is in `builds_on`).
    pub deps: BTreeMap<String, DepInput>,
    /// Dependencies whose store paths are blanked out of the output.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_references_to: Vec<String>,
}

impl DrvRecord {
    /// The record of `recipe` given its sources' content hashes (in the recipe's order), its
    /// dependencies and what it builds on.
    pub fn new(
        recipe: &Recipe,
        source_hashes: &[SourceHash],
        deps: BTreeMap<String, DepInput>,
        platform: &str,
        builds_on: BuildsOn,
    ) -> Self {
        // Every field is named here, so a new field of `Recipe` cannot be added without deciding
        // whether it is recorded (and so hashed).
        let Recipe {
            name,
            version,
            description: _, // words for people
            run: _,         // how to use the output, not how to build it
            file: _,        // where the recipe lives
            deps: _,        // recorded through `deps`, with each dependency's derivation hash
            root: _,        // recorded through `builds_on`
            remove_references_to,
            steps,
            env,
            sources,
            provides: _, // checked against `requires`; neither changes what is built
            requires: _,
        } = recipe;
        let sources = sources
            .iter()
            .zip(source_hashes)
            .map(|(s, h)| {
                let Source {
                    origin,
                    unpack,
                    dest,
                    at: _, // where the recipe says it
                } = s;
                SourceInput {
                    dest: dest.clone(),
                    // A file that is not unpacked is copied under this name; the URL and
                    // mirrors it is downloaded from do not count, only its content.
                    file: origin.file_name(),
                    unpack: *unpack,
                    sha256: *h,
                }
            })
            .collect();
        DrvRecord {
            scheme: SCHEME.to_string(),
            platform: platform.to_string(),
            name: name.clone(),
            version: version.clone(),
            builds_on,
            steps: steps.clone(),
            env: env.clone(),
            sources,
            deps,
            remove_references_to: remove_references_to.clone(),
        }
    }

    /// The derivation hash: sha256 over the canonical serialisation of this record.
    pub fn drv_hash(&self) -> DrvHash {
        // Destructured, so a new field forces a decision about hashing it.
        let DrvRecord {
            scheme,
            platform,
            name,
            version,
            builds_on,
            steps,
            env,
            sources,
            deps,
            remove_references_to,
        } = self;
        let mut c = Canon::new();
        c.field("scheme", scheme)
            .field("platform", platform)
            .field("name", name)
            .field("version", version);
        match builds_on {
            BuildsOn::Root {
                drv_hash,
                name: _,       // covered by the root's derivation hash
                store_name: _, // made from it
            } => c.str("root").bytes(drv_hash.as_bytes()),
            BuildsOn::Host(id) => c.field("host", id),
            BuildsOn::Nothing => c.str("nothing"),
        };
        c.str("steps").str_list(steps);
        c.str("env").str_map(env);
        c.str("sources").u64(sources.len() as u64);
        for SourceInput {
            dest,
            file,
            unpack,
            sha256,
        } in sources
        {
            c.field("dest", dest)
                .field("file", file)
                .field("unpack", if *unpack { "true" } else { "false" })
                .str("sha256")
                .bytes(sha256.as_bytes());
        }
        c.str("deps").u64(deps.len() as u64);
        for (
            name,
            DepInput {
                drv_hash,
                store_name: _, // made from the hash
            },
        ) in deps
        {
            c.str(name).bytes(drv_hash.as_bytes());
        }
        // Only when used, so that the hashes of recipes without it stay as they were: an item
        // appended to a length-prefixed stream cannot make it equal another one.
        if !remove_references_to.is_empty() {
            c.str("remove-references-to").str_list(remove_references_to);
        }
        DrvHash::from_bytes(c.finish())
    }

    /// The record as written to the store: pretty JSON, keys in a fixed order, a final newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a record always serialises");
        v.push(b'\n');
        v
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The record as a JSON value, as the store's metadata keeps it.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a record always serialises")
    }

    pub fn from_value(v: serde_json::Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(v)
    }
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
    /// What `hash` was computed from.
    pub record: DrvRecord,
}

/// Hashes every recipe of `order`, which must list dependencies before dependents.
pub fn derive_all<'a>(order: &[&'a Recipe]) -> Result<Vec<Derivation<'a>>, RecipeError> {
    let platform = host_platform();
    let mut done: BTreeMap<&str, DepInput> = BTreeMap::new();
    let mut out = Vec::with_capacity(order.len());
    for recipe in order {
        let source_hashes = source_hashes(recipe)?;
        let deps: BTreeMap<String, DepInput> = recipe
            .deps
            .iter()
            .map(|d| (d.name.clone(), done[d.name.as_str()].clone()))
            .collect();
        let root = recipe.root.as_ref().map(|r| (r, &done[r.name.as_str()]));
        let builds_on = match root {
            Some((r, d)) => BuildsOn::Root {
                name: r.name.clone(),
                drv_hash: d.drv_hash,
                store_name: d.store_name.clone(),
            },
            None if recipe.is_host_build() => BuildsOn::Host(host_identity().to_string()),
            None => BuildsOn::Nothing,
        };
        let root = root.map(|(_, d)| d.store_name.clone());
        let record = DrvRecord::new(recipe, &source_hashes, deps, &platform, builds_on);
        let hash = record.drv_hash();
        let store_name = StoreName::new(&hash, &recipe.name, &recipe.version);
        done.insert(
            &recipe.name,
            DepInput {
                drv_hash: hash,
                store_name: store_name.clone(),
            },
        );
        out.push(Derivation {
            recipe,
            hash,
            store_name,
            root,
            source_hashes,
            record,
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
            remove_references_to: vec![],
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

    fn host() -> BuildsOn {
        BuildsOn::Host("debian 12".into())
    }

    fn deps(hash: &[u8]) -> BTreeMap<String, DepInput> {
        let h = DrvHash::of(hash);
        BTreeMap::from([(
            "greeting".to_string(),
            DepInput {
                drv_hash: h,
                store_name: StoreName::new(&h, "greeting", "1"),
            },
        )])
    }

    fn record(r: &Recipe, source: &[u8], dep: &[u8], on: BuildsOn) -> DrvRecord {
        DrvRecord::new(r, &[SourceHash::of(source)], deps(dep), "x86_64-linux", on)
    }

    fn hash_of(r: &Recipe) -> DrvHash {
        record(r, b"x", b"dep", host()).drv_hash()
    }

    fn root(hash: &[u8], name: &str) -> BuildsOn {
        let h = DrvHash::of(hash);
        BuildsOn::Root {
            name: name.into(),
            drv_hash: h,
            store_name: StoreName::new(&h, name, "1"),
        }
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
        assert_ne!(record(&r, b"x", b"other", host()).drv_hash(), base);
        assert_ne!(record(&r, b"y", b"dep", host()).drv_hash(), base);
    }

    #[test]
    fn what_the_steps_run_on_counts() {
        let r = recipe();
        let with = |on| record(&r, b"x", b"dep", on).drv_hash();
        let base = with(host());
        assert_ne!(with(BuildsOn::Host("debian 13".into())), base);
        assert_ne!(with(BuildsOn::Host("ubuntu 24.04".into())), base);
        let rooted = with(root(b"root", "base"));
        assert_ne!(rooted, base);
        assert_ne!(with(root(b"other root", "base")), rooted);
        assert_eq!(
            with(root(b"root", "renamed")),
            rooted,
            "the root's name is covered by its hash"
        );
        assert_ne!(with(BuildsOn::Nothing), base);
    }

    /// The record's JSON is a file format (docs/store.md): pinned here byte for byte.
    #[test]
    fn record_json_is_readable_and_round_trips() {
        let rec = record(&recipe(), b"x", b"dep", root(b"root", "base"));
        let json = String::from_utf8(rec.to_json()).unwrap();
        let h = |b: &[u8]| DrvHash::of(b).to_hex();
        let expected = format!(
            r#"{{
  "scheme": "pybake-drv-v2",
  "platform": "x86_64-linux",
  "name": "hello",
  "version": "1.0",
  "builds_on": {{
    "root": {{
      "name": "base",
      "drv_hash": "sha256:{root}",
      "store_name": "{root_short}-base-1"
    }}
  }},
  "steps": [
    "cc -o hello $src/hello.c"
  ],
  "env": {{
    "GREETING": "hi"
  }},
  "sources": [
    {{
      "dest": ".",
      "file": "x.tar.gz",
      "unpack": true,
      "sha256": "{x}"
    }}
  ],
  "deps": {{
    "greeting": {{
      "drv_hash": "sha256:{dep}",
      "store_name": "{dep_short}-greeting-1"
    }}
  }}
}}
"#,
            root = h(b"root"),
            root_short = &h(b"root")[..32],
            x = SourceHash::of(b"x"),
            dep = h(b"dep"),
            dep_short = &h(b"dep")[..32],
        );
        assert_eq!(json, expected);
        let back = DrvRecord::from_json(json.as_bytes()).unwrap();
        assert_eq!(back, rec);
        assert_eq!(back.drv_hash(), rec.drv_hash());
        let host = record(&recipe(), b"x", b"dep", host());
        let json = String::from_utf8(host.to_json()).unwrap();
        assert!(
            json.contains("\"builds_on\": {\n    \"host\": \"debian 12\"\n  }"),
            "{json}"
        );
        let nothing = record(&recipe(), b"x", b"dep", BuildsOn::Nothing);
        let json = String::from_utf8(nothing.to_json()).unwrap();
        assert!(json.contains("\"builds_on\": \"nothing\""), "{json}");
        assert_eq!(DrvRecord::from_json(json.as_bytes()).unwrap(), nothing);
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
