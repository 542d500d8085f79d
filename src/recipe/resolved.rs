//! Recipes after `extends` is applied and every value is checked: all types concrete.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::Location;
use crate::hash::SourceHash;

/// Environment variables a recipe's `[env]` may not set: pybake owns them (see docs/recipes.md).
pub const RESERVED_ENV: &[&str] = &[
    "out",
    "src",
    "PATH",
    "HOME",
    "TMPDIR",
    "SOURCE_DATE_EPOCH",
    "TZ",
    "LC_ALL",
    "PYBAKE_JOBS",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    pub name: String,
    pub version: String,
    pub description: String,
    /// `pybake run`'s command (not hashed: it says how to use the output, not how to build it).
    pub run: Option<String>,
    /// The file the recipe was read from, for messages.
    pub file: PathBuf,
    pub deps: Vec<Dep>,
    /// The recipe whose output the steps run on as `/` (read-only); `None` builds on the host's
    /// `/usr` (a host build).
    pub root: Option<Dep>,
    /// Direct dependencies (names, a subset of `deps`) whose store paths are blanked out of the
    /// output after the build: build-time tools whose paths an output records but never uses.
    pub remove_references_to: Vec<String>,
    pub steps: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub sources: Vec<Source>,
    pub provides: BTreeMap<String, semver::Version>,
    pub requires: BTreeMap<String, Requirement>,
}

impl Recipe {
    /// Every recipe that must be realized before this one: its `deps`, then its `root`.
    pub fn needs(&self) -> impl Iterator<Item = &Dep> {
        self.deps.iter().chain(self.root.as_ref())
    }

    /// Whether the steps run on the host's `/usr`, so that the output depends on the host:
    /// a recipe with steps and no root. A recipe without steps runs nothing: its output is its
    /// laid-out sources.
    pub fn is_host_build(&self) -> bool {
        self.root.is_none() && !self.steps.is_empty()
    }
}

/// A dependency with the line it was named on, so that graph errors can point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dep {
    pub name: String,
    /// Where it is named (a parent's file when inherited through `extends`).
    pub at: crate::recipe::Location,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub origin: Origin,
    /// Unpack an archive (tar.gz, tar.xz, tar.bz2) instead of copying the file.
    pub unpack: bool,
    /// Where under `$src` the source goes; `.` is `$src` itself.
    pub dest: String,
    /// Where the source is written: through `extends`, a parent's file.
    pub at: Location,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A file or directory beside the recipe; hashed by content when the derivation is hashed.
    Local { path: PathBuf },
    /// A download pinned by sha256; `urls` is the recipe's `url` followed by its `mirrors`.
    Url {
        urls: Vec<String>,
        sha256: SourceHash,
    },
}

impl Origin {
    /// The file name a URL source is known by (the last path segment of its first URL).
    pub fn file_name(&self) -> String {
        match self {
            Origin::Local { path } => path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            Origin::Url { urls, .. } => url_file_name(&urls[0]),
        }
    }
}

pub fn url_file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    path.rsplit('/').next().unwrap_or(path).to_string()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub version: semver::VersionReq,
    pub reason: String,
    /// Where it is named (a parent's file when inherited through `extends`).
    pub at: crate::recipe::Location,
}
