//! TEMPORARY STUB: replaced by the real fetch module.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::hash::SourceHash;

#[derive(Debug, Clone, Default)]
pub struct FetchConfig {
    pub user_mirrors: Vec<String>,
    pub named_mirrors: BTreeMap<String, Vec<String>>,
    pub offline: bool,
    pub retries: u32,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub progress: bool,
}
impl FetchConfig {
    pub fn from_env() -> Self {
        Self::default()
    }
}
pub struct Source<'a> {
    pub recipe: &'a str,
    pub urls: &'a [String],
    pub sha256: SourceHash,
}
#[derive(Debug, thiserror::Error)]
#[error("fetch not implemented")]
pub struct FetchError;
pub fn fetch(_: &FetchConfig, _: &Path, _: &Path, _: &Source) -> Result<PathBuf, FetchError> {
    Err(FetchError)
}
pub fn import(_: &Path, _: &Path, _: &Path) -> Result<(SourceHash, u64), FetchError> {
    Err(FetchError)
}
pub fn stored(sources_dir: &Path, sha256: &SourceHash) -> Option<PathBuf> {
    let p = sources_dir.join(sha256.to_hex());
    p.is_file().then_some(p)
}
