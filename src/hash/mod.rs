//! Digests and the canonical serialisations they are computed over.

mod canon;
mod digest;
mod reader;
pub mod tree;

pub use canon::Canon;
pub use digest::{DrvHash, OutputHash, ParseDigestError, SourceHash};
pub use reader::HashingReader;
