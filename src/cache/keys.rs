//! ed25519 signing keys and signatures of a binary cache, in Nix's text forms.
//!
//! - Secret key: `<name>:<base64 of 64 bytes: 32-byte seed || 32-byte public key>`, as written
//!   by `nix-store --generate-binary-cache-key` (Nix's files load here, and the reverse).
//! - Public key: `<name>:<base64 of 32 bytes>`.
//! - Signature: `<key name>:<base64 of 64 bytes>`, over a fingerprint (see
//!   `narinfo::NarInfo::fingerprint`).
//!
//! Names MUST match `[A-Za-z0-9._-]+`; base64 is the standard alphabet with padding, and only
//! its canonical form is accepted. A signature is checked with `verify_strict` (RFC 8032's
//! cofactorless check that also refuses small-order keys and non-canonical encodings). A secret
//! key's text never appears in a message or a `Debug` output.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

/// Why a key or signature text was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("{what} is not of the form `<name>:<base64>`")]
    Syntax { what: &'static str },
    #[error("{what} has the invalid key name {name:?} (use letters, digits, `.`, `_` and `-`)")]
    BadName { what: &'static str, name: String },
    #[error("{what} {name:?} is not valid base64")]
    Base64 { what: &'static str, name: String },
    #[error("{what} {name:?} has {found} bytes, expected {expected}")]
    Length {
        what: &'static str,
        name: String,
        expected: usize,
        found: usize,
    },
    #[error("secret key {name:?} is corrupt: its public half does not belong to its seed")]
    Inconsistent { name: String },
    #[error("public key {name:?} is not a valid ed25519 key")]
    BadPoint { name: String },
    #[error("cannot get random bytes from the operating system for a new key: {0}")]
    Random(String),
}

/// Why a signed item is not trusted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigError {
    #[error("it is not signed")]
    NoSignature,
    #[error("it is signed only by keys that are not trusted: {}", keys.join(", "))]
    Untrusted { keys: Vec<String> },
    #[error("its signature by trusted key {key:?} does not verify: it was altered or signed by another key of that name")]
    Bad { key: String },
}

fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn check_name(what: &'static str, name: &str) -> Result<(), KeyError> {
    if is_name(name) {
        Ok(())
    } else {
        Err(KeyError::BadName {
            what,
            name: name.to_string(),
        })
    }
}

/// Splits `<name>:<base64>` and decodes exactly `N` bytes.
fn split<const N: usize>(what: &'static str, text: &str) -> Result<(String, [u8; N]), KeyError> {
    let (name, b64) = text.split_once(':').ok_or(KeyError::Syntax { what })?;
    check_name(what, name)?;
    let name = name.to_string();
    let bytes = BASE64.decode(b64).map_err(|_| KeyError::Base64 {
        what,
        name: name.clone(),
    })?;
    let found = bytes.len();
    let bytes = <[u8; N]>::try_from(bytes).map_err(|_| KeyError::Length {
        what,
        name: name.clone(),
        expected: N,
        found,
    })?;
    Ok((name, bytes))
}

/// A signing key with its name.
#[derive(Clone)]
pub struct SecretKey {
    name: String,
    key: SigningKey,
}

impl SecretKey {
    /// A new key from the operating system's random source.
    pub fn generate(name: &str) -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Self::from_seed(name, seed)
    }

    /// The key for a given 32-byte seed (ed25519 keys and signatures are deterministic).
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, KeyError> {
        check_name("secret key", name)?;
        Ok(SecretKey {
            name: name.to_string(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    pub fn sign(&self, fingerprint: &str) -> Signature {
        Signature {
            key: self.name.clone(),
            bytes: self.key.sign(fingerprint.as_bytes()).to_bytes(),
        }
    }

    /// The key file's text, `<name>:<base64 of seed || public>` (no newline). Deliberately not
    /// `Display`, so that the secret is not formatted by accident.
    pub fn to_file_text(&self) -> String {
        format!(
            "{}:{}",
            self.name,
            BASE64.encode(self.key.to_keypair_bytes())
        )
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({:?})", self.name)
    }
}

/// Parses a key file's text; surrounding whitespace (a final newline) is ignored.
impl FromStr for SecretKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let (name, bytes) = split::<64>("secret key", s.trim())?;
        let key = SigningKey::from_keypair_bytes(&bytes)
            .map_err(|_| KeyError::Inconsistent { name: name.clone() })?;
        Ok(SecretKey { name, key })
    }
}

/// A verifying key with its name.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    name: String,
    key: VerifyingKey,
}

impl PublicKey {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `sig` is this key's signature of `fingerprint` (the names must match too).
    pub fn verifies(&self, fingerprint: &str, sig: &Signature) -> bool {
        sig.key == self.name
            && self
                .key
                .verify_strict(
                    fingerprint.as_bytes(),
                    &ed25519_dalek::Signature::from_bytes(&sig.bytes),
                )
                .is_ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, BASE64.encode(self.key.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let (name, bytes) = split::<32>("public key", s.trim())?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| KeyError::BadPoint { name: name.clone() })?;
        Ok(PublicKey { name, key })
    }
}

/// A signature with the name of the key that made it.
#[derive(Clone, PartialEq, Eq)]
pub struct Signature {
    key: String,
    bytes: [u8; 64],
}

impl Signature {
    pub fn key_name(&self) -> &str {
        &self.key
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.key, BASE64.encode(self.bytes))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({self})")
    }
}

impl FromStr for Signature {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let (key, bytes) = split::<64>("signature", s)?;
        Ok(Signature { key, bytes })
    }
}

/// The public keys a client trusts; several at once, so a cache can rotate its key.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<PublicKey>,
}

impl TrustedKeys {
    pub fn new(keys: Vec<PublicKey>) -> Self {
        TrustedKeys { keys }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// The name of a trusted key that signed `fingerprint` among `sigs`. One valid signature
    /// by a trusted key suffices; the error says why none was found, preferring a bad
    /// signature by a trusted key (tampering) over untrusted or missing ones.
    pub fn verify(&self, fingerprint: &str, sigs: &[Signature]) -> Result<&str, SigError> {
        let mut bad = None;
        for sig in sigs {
            for key in self.keys.iter().filter(|k| k.name == sig.key) {
                if key.verifies(fingerprint, sig) {
                    return Ok(&key.name);
                }
                bad.get_or_insert_with(|| key.name.clone());
            }
        }
        match bad {
            Some(key) => Err(SigError::Bad { key }),
            None if sigs.is_empty() => Err(SigError::NoSignature),
            None => {
                let mut keys: Vec<String> = sigs.iter().map(|s| s.key.clone()).collect();
                keys.sort();
                keys.dedup();
                Err(SigError::Untrusted { keys })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8032, section 7.1, test 1 (empty message), with Nix's text forms around it.
    const RFC_SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const RFC_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    const RFC_SIG: &str = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";

    fn rfc_key() -> SecretKey {
        let seed: [u8; 32] = hex::decode(RFC_SEED).unwrap().try_into().unwrap();
        SecretKey::from_seed("cache.example.org-1", seed).unwrap()
    }

    #[test]
    fn known_answer_signature_for_a_fixed_seed() {
        let key = rfc_key();
        assert_eq!(hex::encode(key.public().key.as_bytes()), RFC_PUBLIC);
        let sig = key.sign("");
        assert_eq!(hex::encode(sig.bytes), RFC_SIG);
        assert_eq!(
            sig.to_string(),
            format!(
                "cache.example.org-1:{}",
                BASE64.encode(hex::decode(RFC_SIG).unwrap())
            )
        );
        assert!(key.public().verifies("", &sig));
        assert!(!key.public().verifies("x", &sig));
    }

    /// Nix's formats: a secret key is the 64-byte seed || public, a public key 32 bytes.
    #[test]
    fn text_forms_are_nix_s() {
        let key = rfc_key();
        let secret = key.to_file_text();
        let (name, b64) = secret.split_once(':').unwrap();
        assert_eq!(name, "cache.example.org-1");
        assert_eq!(
            hex::encode(BASE64.decode(b64).unwrap()),
            format!("{RFC_SEED}{RFC_PUBLIC}")
        );
        let public = key.public().to_string();
        assert_eq!(
            public,
            "cache.example.org-1:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
        );
        let parsed: SecretKey = format!("{secret}\n").parse().unwrap();
        assert_eq!(parsed.to_file_text(), secret);
        assert_eq!(public.parse::<PublicKey>().unwrap(), key.public());
        assert_eq!(format!("{parsed:?}"), "SecretKey(\"cache.example.org-1\")");
    }

    #[test]
    fn generated_keys_differ_and_sign() {
        let a = SecretKey::generate("a").unwrap();
        let b = SecretKey::generate("a").unwrap();
        assert_ne!(a.to_file_text(), b.to_file_text());
        assert!(a.public().verifies("fp", &a.sign("fp")));
        assert!(!b.public().verifies("fp", &a.sign("fp")));
    }

    #[test]
    fn refuses_malformed_keys_and_signatures() {
        let secret = rfc_key().to_file_text();
        let b64 = secret.split_once(':').unwrap().1;
        let err = |s: &str| s.parse::<SecretKey>().unwrap_err();
        assert_eq!(err(b64), KeyError::Syntax { what: "secret key" });
        assert!(matches!(
            err(&format!("bad name:{b64}")),
            KeyError::BadName { .. }
        ));
        assert!(matches!(err(&format!(":{b64}")), KeyError::BadName { .. }));
        assert!(matches!(err("k:not base64!"), KeyError::Base64 { .. }));
        assert!(matches!(
            err(&format!("k:{}", BASE64.encode([1u8; 32]))),
            KeyError::Length {
                expected: 64,
                found: 32,
                ..
            }
        ));
        // Seed of one key, public half of another.
        let mut mixed = BASE64.decode(b64).unwrap();
        mixed[40] ^= 1;
        assert!(matches!(
            err(&format!("k:{}", BASE64.encode(&mixed))),
            KeyError::Inconsistent { .. }
        ));
        // Unpadded base64 is not canonical.
        let public = rfc_key().public().to_string();
        assert!(matches!(
            public.trim_end_matches('=').parse::<PublicKey>(),
            Err(KeyError::Base64 { .. })
        ));
        assert!(matches!(
            "s:AAAA".parse::<Signature>(),
            Err(KeyError::Length { .. })
        ));
    }

    /// A message never carries the secret key's bytes.
    #[test]
    fn errors_do_not_show_the_secret() {
        let secret = rfc_key().to_file_text();
        let b64 = secret.split_once(':').unwrap().1;
        let mut bytes = BASE64.decode(b64).unwrap();
        bytes[40] ^= 1;
        let text = format!("k:{}", BASE64.encode(&bytes));
        let msg = text.parse::<SecretKey>().unwrap_err().to_string();
        assert!(!msg.contains(&text[2..12]), "{msg}");
    }

    #[test]
    fn trusted_keys_tell_missing_untrusted_and_bad_signatures_apart() {
        let (old, new, other) = (
            SecretKey::from_seed("cache-1", [1; 32]).unwrap(),
            SecretKey::from_seed("cache-2", [2; 32]).unwrap(),
            SecretKey::from_seed("other", [3; 32]).unwrap(),
        );
        let trusted = TrustedKeys::new(vec![old.public(), new.public()]);
        let fp = "pybake-1;x";
        assert_eq!(trusted.verify(fp, &[]), Err(SigError::NoSignature));
        assert_eq!(trusted.verify(fp, &[new.sign(fp)]), Ok("cache-2"));
        assert_eq!(
            trusted.verify(fp, &[other.sign(fp)]),
            Err(SigError::Untrusted {
                keys: vec!["other".into()]
            })
        );
        // A key named like a trusted one, but not it: a bad signature, not an untrusted one.
        let impostor = SecretKey::from_seed("cache-1", [9; 32]).unwrap();
        assert_eq!(
            trusted.verify(fp, &[impostor.sign(fp)]),
            Err(SigError::Bad {
                key: "cache-1".into()
            })
        );
        // One good signature among bad and untrusted ones suffices.
        assert_eq!(
            trusted.verify(fp, &[impostor.sign(fp), other.sign(fp), old.sign(fp)]),
            Ok("cache-1")
        );
    }
}
