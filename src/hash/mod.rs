//! Digests and the canonical serialisations they are computed over.

mod canon;
mod digest;
pub mod nar;
mod reader;
pub mod tree;

pub use canon::Canon;
pub use digest::{DrvHash, FileHash, NarHash, OutputHash, ParseDigestError, SourceHash};
pub use reader::{read_up_to, HashingReader};
