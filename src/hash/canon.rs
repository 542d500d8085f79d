//! The canonical serialiser behind every hash pybake computes over structured data.
//!
//! Format (MUST stay byte-stable; change the scheme version of the caller instead):
//! every item is a one-byte tag followed by its payload.
//! - `s` string: u64 little-endian byte length, then the UTF-8 bytes.
//! - `b` bytes:  u64 little-endian length, then the bytes.
//! - `u` u64:    8 bytes little-endian.
//! - `l` list:   u64 little-endian count, then the items.
//! - `m` map:    u64 little-endian count, then key (string item) / value pairs, keys sorted.
//!
//! Length prefixes make the encoding injective: no two different values serialise to the same
//! bytes, which a plain concatenation (or `Debug` output) does not guarantee.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

#[derive(Default)]
pub struct Canon {
    hasher: Sha256,
}

impl Canon {
    pub fn new() -> Self {
        Self::default()
    }

    fn tag(&mut self, tag: u8, len: u64) {
        self.hasher.update([tag]);
        self.hasher.update(len.to_le_bytes());
    }

    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes_tagged(b's', s.as_bytes())
    }

    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.bytes_tagged(b'b', b)
    }

    fn bytes_tagged(&mut self, tag: u8, b: &[u8]) -> &mut Self {
        self.tag(tag, b.len() as u64);
        self.hasher.update(b);
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.tag(b'u', v);
        self
    }

    /// A string field with its name, so that adding a field later cannot collide with old data.
    pub fn field(&mut self, name: &str, value: &str) -> &mut Self {
        self.str(name).str(value)
    }

    pub fn list<T>(&mut self, items: &[T], mut each: impl FnMut(&mut Self, &T)) -> &mut Self {
        self.tag(b'l', items.len() as u64);
        for item in items {
            each(self, item);
        }
        self
    }

    pub fn str_list(&mut self, items: &[String]) -> &mut Self {
        self.list(items, |c, s| {
            c.str(s);
        })
    }

    pub fn str_map(&mut self, map: &BTreeMap<String, String>) -> &mut Self {
        self.tag(b'm', map.len() as u64);
        for (k, v) in map {
            self.str(k).str(v);
        }
        self
    }

    pub fn finish(self) -> [u8; 32] {
        self.hasher.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer() {
        let mut c = Canon::new();
        c.field("name", "hello")
            .u64(1)
            .str_list(&["a".into(), "bc".into()]);
        assert_eq!(
            hex::encode(c.finish()),
            "6edbaa96ab2302ddde4c2c3e96176b41ddd34412b01e29f5108de8ec20dc93ce"
        );
    }

    #[test]
    fn length_prefix_makes_it_injective() {
        let mut a = Canon::new();
        a.str("ab").str("c");
        let mut b = Canon::new();
        b.str("a").str("bc");
        assert_ne!(a.finish(), b.finish());
    }
}
