//! The recipe file as written: serde types that keep source spans for error messages.
//!
//! Every field is optional here because a recipe that `extends` another may leave any field
//! (but `name`) to its parent; [`super::resolved`] decides what is required.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRecipe {
    pub name: Spanned<String>,
    pub version: Option<Spanned<String>>,
    pub description: Option<String>,
    /// How `pybake run` starts the output: a shell command with `$out` set and ARGS as "$@".
    pub run: Option<String>,
    pub extends: Option<Spanned<String>>,
    /// The recipe whose output is `/` for this recipe's steps.
    pub root: Option<Spanned<String>>,
    pub deps: Option<Vec<Spanned<String>>>,
    /// Dependencies whose store paths are blanked out of the output after the build (Nix's
    /// remove-references-to), so that they are not runtime references.
    #[serde(rename = "remove-references-to")]
    pub remove_references_to: Option<Vec<Spanned<String>>>,
    pub steps: Option<Vec<Spanned<String>>>,
    pub env: Option<BTreeMap<String, Spanned<String>>>,
    pub sources: Option<Vec<Spanned<RawSource>>>,
    /// Toolchains this recipe's output provides, with their versions (`emscripten = "3.1.69"`).
    pub provides: Option<BTreeMap<String, Spanned<String>>>,
    /// Version constraints on toolchains provided by the dependency closure.
    pub requires: Option<BTreeMap<String, Spanned<RawRequirement>>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub path: Option<String>,
    pub url: Option<String>,
    pub sha256: Option<String>,
    #[serde(default)]
    pub mirrors: Vec<String>,
    pub unpack: Option<bool>,
    pub dest: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequirement {
    pub version: String,
    #[serde(default)]
    pub reason: String,
}
