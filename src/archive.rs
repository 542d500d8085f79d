//! TEMPORARY STUB
use std::path::Path;
#[derive(Debug, thiserror::Error)]
#[error("archive not implemented")]
pub struct ArchiveError;
pub fn unpack(_: &Path, _: &Path) -> Result<(), ArchiveError> {
    Err(ArchiveError)
}
