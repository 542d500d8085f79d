//! The lockfile reader: any bytes give a lockfile or an error, never a panic, and a lockfile that
//! is accepted comes back unchanged through `write` and `read` (byte for byte the second time).
#![no_main]
#![allow(clippy::disallowed_methods)] // a harness may use std::fs (fuzz_target! does); pybake itself uses fs-err

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pybake::lock::Lockfile;

/// One directory for the whole run: the write/read round trip goes through real files.
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("pybake-fuzz-lockfile-")
            .tempdir()
            .expect("temp dir")
            .keep()
    })
}

fuzz_target!(|data: &[u8]| {
    let input = scratch().join("input.json");
    let lock = match Lockfile::from_slice(data, &input) {
        Ok(lock) => lock,
        Err(e) => {
            // Messages are built from the input: formatting them must not panic either.
            let _ = e.to_string();
            return;
        }
    };
    let path = scratch().join("lockfile.json");
    lock.write(&path)
        .expect("an accepted lockfile can be written");
    let again = Lockfile::read(&path).expect("a written lockfile can be read");
    assert_eq!(again, lock, "write/read changed the lockfile");
    assert_eq!(
        again.to_json(),
        lock.to_json(),
        "the serialisation is not stable"
    );
});
