//! Settings that are not recipes: where binary caches are and which keys to trust (docs/config.md).
//!
//! Sources, each overriding the ones before it, key by key (a list is replaced, not merged):
//! 1. the user's file, `$XDG_CONFIG_HOME/pybake/config.toml` (default `~/.config/...`);
//! 2. the project's `pybake.toml`, beside the recipe directory;
//! 3. environment variables (`PYBAKE_SUBSTITUTERS`, `PYBAKE_TRUSTED_PUBLIC_KEYS`,
//!    `PYBAKE_SECRET_KEY_FILE`);
//! 4. command-line flags (applied by the CLI with [`Config::apply`]).
//!
//! A file that does not parse, or has an unknown key, is an error naming the file and line.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}{}: {message}\n  hint: docs/config.md lists every setting", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Parse {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
    #[error("{var}: {message}\n  hint: docs/config.md says what it takes")]
    Env { var: &'static str, message: String },
}

/// One binary cache to substitute from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Substituter {
    /// `file:///dir`, `http(s)://host/prefix` or `s3://bucket/prefix?endpoint=...&region=...`.
    pub url: String,
    /// Lower is tried first; default: the cache's own `Priority` (docs/binary-cache.md), else 50.
    #[serde(default)]
    pub priority: Option<u32>,
    /// Accept entries without a signature by a trusted key from this cache (only for caches
    /// you control end to end, such as a local directory).
    #[serde(default)]
    pub allow_unsigned: bool,
}

/// The settings, merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pub substituters: Vec<Substituter>,
    /// Public keys (`name:base64`) whose signatures make a cache entry trusted.
    pub trusted_public_keys: Vec<String>,
    /// The key `cache push` signs with (a file holding `name:base64`, mode 0600).
    pub secret_key_file: Option<PathBuf>,
    /// Whether realize asks substituters at all (`--no-substitute` turns it off).
    pub substitute: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    substituters: Option<Vec<Substituter>>,
    trusted_public_keys: Option<Vec<String>>,
    secret_key_file: Option<PathBuf>,
    substitute: Option<bool>,
}

impl Config {
    /// Reads the user's file, then the project's `pybake.toml` in `project_dir`, then the
    /// environment.
    pub fn load(project_dir: &Path) -> Result<Config, ConfigError> {
        let mut c = Config {
            substitute: true,
            ..Config::default()
        };
        if let Some(user) = user_file() {
            c.merge_file(&user)?;
        }
        c.merge_file(&project_dir.join("pybake.toml"))?;
        c.merge_env(|k| std::env::var(k).ok())?;
        Ok(c)
    }

    /// Applies a file if it exists; its paths are relative to its directory.
    fn merge_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = match fs_err::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let raw: RawConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            line: e.span().map(|s| crate::recipe::line_of(&text, s.start)),
            message: e.message().trim().to_string(),
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        self.merge(raw, dir);
        Ok(())
    }

    fn merge(&mut self, raw: RawConfig, dir: &Path) {
        if let Some(s) = raw.substituters {
            self.substituters = s;
        }
        if let Some(k) = raw.trusted_public_keys {
            self.trusted_public_keys = k;
        }
        if let Some(f) = raw.secret_key_file {
            self.secret_key_file = Some(dir.join(f));
        }
        if let Some(s) = raw.substitute {
            self.substitute = s;
        }
    }

    /// `PYBAKE_SUBSTITUTERS` (URLs separated by spaces), `PYBAKE_TRUSTED_PUBLIC_KEYS` (keys
    /// separated by spaces), `PYBAKE_SECRET_KEY_FILE`.
    fn merge_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = var("PYBAKE_SUBSTITUTERS") {
            self.substituters = v
                .split_whitespace()
                .map(|url| Substituter {
                    url: url.to_string(),
                    priority: None,
                    allow_unsigned: false,
                })
                .collect();
        }
        if let Some(v) = var("PYBAKE_TRUSTED_PUBLIC_KEYS") {
            self.trusted_public_keys = v.split_whitespace().map(String::from).collect();
        }
        if let Some(v) = var("PYBAKE_SECRET_KEY_FILE") {
            if v.is_empty() {
                return Err(ConfigError::Env {
                    var: "PYBAKE_SECRET_KEY_FILE",
                    message: "is set but empty".into(),
                });
            }
            self.secret_key_file = Some(PathBuf::from(v));
        }
        Ok(())
    }

    /// Applies command-line flags: each given list replaces the configured one.
    pub fn apply(
        &mut self,
        substituters: &[String],
        trusted_public_keys: &[String],
        secret_key_file: Option<&Path>,
        no_substitute: bool,
    ) {
        if !substituters.is_empty() {
            self.substituters = substituters
                .iter()
                .map(|url| Substituter {
                    url: url.clone(),
                    priority: None,
                    allow_unsigned: false,
                })
                .collect();
        }
        if !trusted_public_keys.is_empty() {
            self.trusted_public_keys = trusted_public_keys.to_vec();
        }
        if let Some(f) = secret_key_file {
            self.secret_key_file = Some(f.to_path_buf());
        }
        if no_substitute {
            self.substitute = false;
        }
    }
}

/// `$XDG_CONFIG_HOME/pybake/config.toml`, or `$HOME/.config/pybake/config.toml`.
fn user_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("pybake").join("config.toml"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn later_sources_replace_earlier_ones() {
        let t = tempfile::tempdir().unwrap();
        let mut c = Config {
            substitute: true,
            ..Config::default()
        };
        let user = write(
            t.path(),
            "user.toml",
            "trusted-public-keys = [\"a:AAAA\"]\n[[substituters]]\nurl = \"file:///user\"\n",
        );
        c.merge_file(&user).unwrap();
        let project = write(
            t.path(),
            "pybake.toml",
            "secret-key-file = \"keys/ci.sec\"\n[[substituters]]\nurl = \"http://cache/p\"\npriority = 10\nallow-unsigned = true\n",
        );
        c.merge_file(&project).unwrap();
        assert_eq!(
            c.trusted_public_keys,
            ["a:AAAA"],
            "kept from the user's file"
        );
        assert_eq!(
            c.substituters,
            [Substituter {
                url: "http://cache/p".into(),
                priority: Some(10),
                allow_unsigned: true
            }]
        );
        assert_eq!(c.secret_key_file, Some(t.path().join("keys/ci.sec")));
        c.merge_env(|k| match k {
            "PYBAKE_SUBSTITUTERS" => Some("s3://b/p http://x".into()),
            _ => None,
        })
        .unwrap();
        let urls: Vec<&str> = c.substituters.iter().map(|s| s.url.as_str()).collect();
        assert_eq!(urls, ["s3://b/p", "http://x"]);
        c.apply(&[], &["b:BBBB".into()], None, true);
        assert_eq!(c.trusted_public_keys, ["b:BBBB"]);
        assert!(!c.substitute);
    }

    #[test]
    fn a_bad_file_names_its_line() {
        let t = tempfile::tempdir().unwrap();
        let p = write(
            t.path(),
            "pybake.toml",
            "substitute = true\nsubstituters = 3\n",
        );
        let mut c = Config::default();
        let e = c.merge_file(&p).unwrap_err();
        assert!(e.to_string().contains("pybake.toml:2"), "{e}");
        let p = write(t.path(), "pybake.toml", "substituterz = []\n");
        let e = c.merge_file(&p).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn a_missing_file_is_no_error() {
        let t = tempfile::tempdir().unwrap();
        let mut c = Config::default();
        c.merge_file(&t.path().join("absent.toml")).unwrap();
        assert_eq!(c, Config::default());
    }
}
