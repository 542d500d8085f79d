//! Per-output metadata, stored as `.pybake/meta/<store name>.json`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::StoreName;
use crate::hash::{DrvHash, OutputHash};

pub const META_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub format: u32,
    pub store_name: StoreName,
    pub drv_hash: DrvHash,
    /// Canonical hash of the output tree (docs/store.md).
    pub output_hash: OutputHash,
    /// Store names this output mentions (itself excluded): its runtime dependencies.
    #[serde(default)]
    pub references: Vec<StoreName>,
    /// Host-specific absolute paths found in the output (only possible when built without the
    /// sandbox), with the files that contain each. Such an output is not portable.
    #[serde(default)]
    pub host_paths: BTreeMap<String, Vec<String>>,
    /// Whether the build ran inside bubblewrap.
    #[serde(default)]
    pub sandboxed: bool,
    /// The root the steps ran on (its store name), or `None`.
    #[serde(default)]
    pub root: Option<StoreName>,
    /// The direct dependencies it was built with (store names), in the recipe's order.
    #[serde(default)]
    pub deps: Vec<StoreName>,
    /// The sources it was built from (their content hashes), in the recipe's order.
    #[serde(default)]
    pub sources: Vec<crate::hash::SourceHash>,
    /// Whether the steps ran on the host's `/usr` (no root): the output then depends on the
    /// host, identified by `host` (docs/store.md), and a binary cache treats it with care.
    #[serde(default)]
    pub host_build: bool,
    /// For a host build, the host's identity as hashed (`debian 12`); empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// Wall time of the build.
    #[serde(default)]
    pub build_seconds: f64,
    /// The derivation record it was built from (a `crate::derivation::DrvRecord`, docs/store.md
    /// "Derivation records"), for `pybake explain`; the store does not interpret it. Kept in
    /// the metadata rather than a file of its own: one file fewer per build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<serde_json::Value>,
}

impl Meta {
    pub fn new(store_name: &StoreName, drv_hash: DrvHash, output_hash: OutputHash) -> Self {
        Meta {
            format: META_FORMAT,
            store_name: store_name.clone(),
            drv_hash,
            output_hash,
            references: Vec::new(),
            host_paths: BTreeMap::new(),
            sandboxed: false,
            root: None,
            deps: Vec::new(),
            sources: Vec::new(),
            host_build: false,
            host: String::new(),
            build_seconds: 0.0,
            inputs: None,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("metadata always serialises");
        v.push(b'\n');
        v
    }
}
