//! lockfile.json: every pin in one reviewable file (format 1; see docs/lockfile.md).
//!
//! Serialised with sorted keys and two-space indentation, one value per line, so a diff shows
//! exactly what moved. A lockfile of another format is refused, never guessed at.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic::{self, Publish};
use crate::derivation::{host_platform, Derivation};
use crate::hash::{DrvHash, SourceHash};
use crate::recipe::Origin;
use crate::toolchain::Pin;

pub const LOCK_FORMAT: u64 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lockfile {
    pub format: u64,
    pub platform: String,
    pub recipes: BTreeMap<String, LockedRecipe>,
    /// Tool name -> the recipes providing it (usually one).
    pub toolchains: BTreeMap<String, Vec<LockedToolchain>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedRecipe {
    pub drv_hash: DrvHash,
    pub sources: Vec<LockedSource>,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedSource {
    /// For a local source: its path relative to the recipe directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub sha256: SourceHash,
    /// Bytes (for a directory: the sum of its files). Absent for a download that `pybake lock`
    /// could not fetch (it says so when it writes the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// For a download: its URL followed by its mirrors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedToolchain {
    pub constraints: Vec<LockedConstraint>,
    pub provided_by: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedConstraint {
    pub reason: String,
    pub required_by: String,
    pub version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot read lockfile {path}: {source}\n  hint: run `pybake lock` to create it")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lockfile {path} is not valid: {source}\n  hint: regenerate it with `pybake lock`")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("lockfile {path} has format {found}; this pybake reads format {LOCK_FORMAT}\n  hint: use the pybake that wrote it, or regenerate it with `pybake lock`")]
    Format { path: PathBuf, found: String },
    #[error("cannot write lockfile {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the recipes and the lockfile {path} disagree:\n{}\n  hint: if the change is intended, run `pybake lock` (or `pybake lock --update NAME`) and commit lockfile.json", drift.iter().map(|d| format!("  - {d}")).collect::<Vec<_>>().join("\n"))]
    Drift { path: PathBuf, drift: Vec<String> },
    #[error("`{name}` is not in lockfile {path}\n  hint: `pybake lock --update` takes recipes that are locked already; run `pybake lock` to add new ones")]
    NotLocked { name: String, path: PathBuf },
}

impl LockError {
    /// Where in the lockfile the error is, when the JSON does not parse.
    pub fn location(&self) -> Option<crate::recipe::Location> {
        match self {
            LockError::Parse { path, source } if source.line() > 0 => {
                Some(crate::recipe::Location {
                    file: path.clone(),
                    line: Some(source.line()),
                    span: Some((u32::try_from(source.column().max(1)).unwrap_or(u32::MAX), 1)),
                })
            }
            _ => None,
        }
    }
}

impl Lockfile {
    pub fn empty() -> Self {
        Lockfile {
            format: LOCK_FORMAT,
            platform: host_platform(),
            recipes: BTreeMap::new(),
            toolchains: BTreeMap::new(),
        }
    }

    pub fn read(path: &Path) -> Result<Self, LockError> {
        let bytes = fs_err::read(path).map_err(|source| LockError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_slice(&bytes, path)
    }

    /// Parses the contents of a lockfile; `path` is only for messages. (The fuzz target in
    /// fuzz/ calls this directly.)
    pub fn from_slice(bytes: &[u8], path: &Path) -> Result<Self, LockError> {
        let parse = |source| LockError::Parse {
            path: path.to_path_buf(),
            source,
        };
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(parse)?;
        match value.get("format").and_then(|f| f.as_u64()) {
            Some(LOCK_FORMAT) => {}
            other => {
                return Err(LockError::Format {
                    path: path.to_path_buf(),
                    found: other.map_or_else(|| "(none)".to_string(), |f| f.to_string()),
                })
            }
        }
        serde_json::from_value(value).map_err(parse)
    }

    /// Sorted keys, two-space indentation, trailing newline.
    pub fn to_json(&self) -> String {
        // Through `Value`, whose maps are sorted, so field order in the structs cannot matter.
        let value = serde_json::to_value(self).expect("lockfile serialises");
        let mut s = serde_json::to_string_pretty(&value).expect("lockfile serialises");
        s.push('\n');
        s
    }

    pub fn write(&self, path: &Path) -> Result<(), LockError> {
        atomic::write(path, self.to_json().as_bytes(), Publish::READABLE).map_err(|source| {
            LockError::Write {
                path: path.to_path_buf(),
                source,
            }
        })
    }

    /// The entries of `drvs` and of the toolchains they use. `size_of` gives a URL source's size
    /// (from the store) or `None` when it is not known.
    pub fn from_derivations(
        recipes_dir: &Path,
        drvs: &[Derivation],
        pins: &[Pin],
        size_of: &dyn Fn(&SourceHash) -> Option<u64>,
    ) -> Self {
        let mut lock = Lockfile::empty();
        for d in drvs {
            let sources = d
                .recipe
                .sources
                .iter()
                .zip(&d.source_hashes)
                .map(|(s, h)| match &s.origin {
                    Origin::Local { path } => LockedSource {
                        path: Some(
                            path.strip_prefix(recipes_dir)
                                .unwrap_or(path)
                                .display()
                                .to_string(),
                        ),
                        sha256: *h,
                        size: Some(tree_size(path)),
                        urls: vec![],
                    },
                    Origin::Url { urls, .. } => LockedSource {
                        path: None,
                        sha256: *h,
                        size: size_of(h),
                        urls: urls.clone(),
                    },
                })
                .collect();
            lock.recipes.insert(
                d.recipe.name.clone(),
                LockedRecipe {
                    drv_hash: d.hash,
                    sources,
                    version: d.recipe.version.clone(),
                },
            );
        }
        for p in pins {
            lock.toolchains
                .entry(p.tool.clone())
                .or_default()
                .push(locked_pin(p));
        }
        lock
    }

    /// The recorded size of every download, by sha256 (what caps its download: see
    /// `FetchConfig::expected_sizes`). Local sources are left out: they are never fetched.
    pub fn download_sizes(&self) -> BTreeMap<SourceHash, u64> {
        self.recipes
            .values()
            .flat_map(|r| &r.sources)
            .filter(|s| s.path.is_none())
            .filter_map(|s| Some((s.sha256, s.size?)))
            .collect()
    }

    /// The recipes with a download of this sha256, sorted.
    pub fn recipes_downloading(&self, sha256: &SourceHash) -> Vec<&str> {
        self.recipes
            .iter()
            .filter(|(_, r)| {
                r.sources
                    .iter()
                    .any(|s| s.path.is_none() && s.sha256 == *sha256)
            })
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// How `self` (the lockfile) differs from `fresh` (computed from the recipes) for the recipes
    /// and toolchains in `fresh`. Sizes are not compared: they do not change what is built.
    pub fn drift(&self, fresh: &Lockfile) -> Vec<String> {
        let mut out = Vec::new();
        if self.platform != fresh.platform {
            out.push(format!(
                "platform: locked for {}, this machine is {}",
                self.platform, fresh.platform
            ));
        }
        for (name, now) in &fresh.recipes {
            let Some(locked) = self.recipes.get(name) else {
                out.push(format!("recipe `{name}` is not in the lockfile"));
                continue;
            };
            if locked.version != now.version {
                out.push(format!(
                    "recipe `{name}`: version {} in the lockfile, {} in the recipe",
                    locked.version, now.version
                ));
            }
            let key = |s: &LockedSource| (s.path.clone(), s.urls.clone(), s.sha256);
            let a: Vec<_> = locked.sources.iter().map(key).collect();
            let b: Vec<_> = now.sources.iter().map(key).collect();
            if a != b {
                for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                    if x != y {
                        out.push(format!(
                            "recipe `{name}`: source {} was {} {}, is now {} {}",
                            i + 1,
                            x.2,
                            x.1.first().cloned().or(x.0.clone()).unwrap_or_default(),
                            y.2,
                            y.1.first().cloned().or(y.0.clone()).unwrap_or_default(),
                        ));
                    }
                }
                if a.len() != b.len() {
                    out.push(format!(
                        "recipe `{name}`: {} sources in the lockfile, {} in the recipe",
                        a.len(),
                        b.len()
                    ));
                }
            }
            if locked.drv_hash != now.drv_hash && locked.version == now.version && a == b {
                out.push(format!(
                    "recipe `{name}`: derivation hash {} in the lockfile, {} now (its steps, env or dependencies changed)",
                    locked.drv_hash, now.drv_hash
                ));
            }
        }
        for (tool, now) in &fresh.toolchains {
            let locked = self.toolchains.get(tool).cloned().unwrap_or_default();
            for pin in now {
                match locked.iter().find(|l| l.provided_by == pin.provided_by) {
                    None => out.push(format!(
                        "toolchain {tool} from `{}` is not in the lockfile",
                        pin.provided_by
                    )),
                    Some(l) if l.version != pin.version => out.push(format!(
                        "toolchain {tool}: {} {} in the lockfile, {} now",
                        pin.provided_by, l.version, pin.version
                    )),
                    Some(_) => {}
                }
            }
        }
        out
    }

    /// Replaces `name`'s entry (and the toolchains it provides) with `fresh`'s.
    pub fn update_entry(&mut self, fresh: &Lockfile, name: &str) {
        if let Some(r) = fresh.recipes.get(name) {
            self.recipes.insert(name.to_string(), r.clone());
        }
        for (tool, pins) in &fresh.toolchains {
            for pin in pins.iter().filter(|p| p.provided_by == name) {
                let list = self.toolchains.entry(tool.clone()).or_default();
                list.retain(|p| p.provided_by != name);
                list.push(pin.clone());
                list.sort_by(|a, b| a.provided_by.cmp(&b.provided_by));
            }
        }
    }
}

fn locked_pin(p: &Pin) -> LockedToolchain {
    LockedToolchain {
        constraints: p
            .constraints
            .iter()
            .map(|(by, v, reason)| LockedConstraint {
                reason: reason.clone(),
                required_by: by.clone(),
                version: v.clone(),
            })
            .collect(),
        provided_by: p.provided_by.clone(),
        version: p.version.to_string(),
    }
}

fn tree_size(path: &Path) -> u64 {
    walkdir::WalkDir::new(path)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use super::*;

    #[test]
    fn json_has_sorted_keys_and_round_trips() {
        let mut l = Lockfile::empty();
        l.recipes.insert(
            "zlib".into(),
            LockedRecipe {
                drv_hash: DrvHash::of(b"z"),
                sources: vec![LockedSource {
                    path: None,
                    sha256: SourceHash::of(b"s"),
                    size: Some(3),
                    urls: vec!["https://example.org/z.tar.gz".into()],
                }],
                version: "1.2.13".into(),
            },
        );
        let text = l.to_json();
        let keys: Vec<&str> = text
            .lines()
            .filter_map(|line| line.trim().strip_prefix('"')?.split('"').next())
            .filter(|k| ["drv_hash", "sources", "version"].contains(k))
            .collect();
        assert_eq!(keys, ["drv_hash", "sources", "version"]);
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("lockfile.json");
        l.write(&p).unwrap();
        assert_eq!(Lockfile::read(&p).unwrap(), l);
    }

    #[test]
    fn download_sizes_leave_out_local_sources_and_unknown_sizes() {
        let source = |path: Option<&str>, data: &[u8], size| LockedSource {
            path: path.map(str::to_string),
            sha256: SourceHash::of(data),
            size,
            urls: vec![],
        };
        let mut l = Lockfile::empty();
        l.recipes.insert(
            "a".into(),
            LockedRecipe {
                drv_hash: DrvHash::of(b"a"),
                sources: vec![
                    source(None, b"url", Some(3)),
                    source(Some("dir"), b"dir", Some(9)),
                    source(None, b"unfetched", None),
                ],
                version: "1".into(),
            },
        );
        assert_eq!(
            l.download_sizes(),
            BTreeMap::from([(SourceHash::of(b"url"), 3)])
        );
        assert_eq!(l.recipes_downloading(&SourceHash::of(b"url")), ["a"]);
        assert!(l.recipes_downloading(&SourceHash::of(b"dir")).is_empty());
    }

    #[test]
    fn reads_from_bytes_like_from_a_file() {
        let l = Lockfile::empty();
        let path = Path::new("dir/lockfile.json");
        assert_eq!(
            Lockfile::from_slice(l.to_json().as_bytes(), path).unwrap(),
            l
        );
        let e = Lockfile::from_slice(b"{", path).unwrap_err().to_string();
        assert!(e.contains("dir/lockfile.json is not valid"), "{e}");
    }

    #[test]
    fn unknown_format_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("lockfile.json");
        std::fs::write(&p, r#"{"format": 99, "recipes": {}}"#).unwrap();
        let e = Lockfile::read(&p).unwrap_err().to_string();
        assert!(
            e.contains("format 99") && e.contains("reads format 1"),
            "{e}"
        );
    }

    #[test]
    fn a_failed_write_keeps_its_cause_and_names_the_lockfile() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("no-such-dir/lockfile.json");
        let e = Lockfile::empty().write(&p).unwrap_err();
        let LockError::Write { source, .. } = &e else {
            panic!("{e:?}")
        };
        // Decided from its kind, not its text: a missing directory, not an opaque "other".
        assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        assert!(e.to_string().contains("no-such-dir/lockfile.json"), "{e}");
    }
}
