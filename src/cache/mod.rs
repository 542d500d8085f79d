// formats
pub mod compress;
pub mod keys;
pub mod narinfo;
