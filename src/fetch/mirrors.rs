//! Which URLs to try for a source, in which order; and the fetch settings from the environment.
//!
//! Order (duplicates dropped, first occurrence kept):
//! 1. for each user mirror prefix `P`: `P/<file name>` for the file name of each source URL
//!    (the last path segment, without query or fragment), then `P/sha256/<hex>`;
//! 2. each source URL, `mirror://NAME/PATH` expanded to `BASE/PATH` for each base of NAME.
//!
//! User mirrors come before every upstream URL because a user sets them to avoid upstream (a
//! local cache, an offline directory). Both layouts are tried because a plain directory of
//! downloaded tarballs is the easy thing to set up, and the content-addressed one cannot confuse
//! two different files of the same name (GitHub's `v1.0.tar.gz`).

use std::collections::BTreeMap;

use std::time::Duration;

use super::{Attempt, ConfigError, Failure, FetchConfig};
use crate::hash::SourceHash;

pub(super) enum Step {
    Try(String),
    Skip(Attempt),
}

pub(super) fn plan(cfg: &FetchConfig, urls: &[String], sha256: &SourceHash) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::new();
    let mut push = |step: Step| {
        let url = match &step {
            Step::Try(u) => u,
            Step::Skip(a) => &a.url,
        };
        let seen = out.iter().any(|s| match s {
            Step::Try(u) => u == url,
            Step::Skip(a) => &a.url == url,
        });
        if !seen {
            out.push(step);
        }
    };
    for prefix in &cfg.user_mirrors {
        let prefix = normalise_prefix(prefix);
        for name in urls.iter().filter_map(|u| file_name(u)) {
            push(Step::Try(format!("{prefix}/{name}")));
        }
        push(Step::Try(format!("{prefix}/sha256/{}", sha256.to_hex())));
    }
    for url in urls {
        for step in expand(cfg, url) {
            push(step);
        }
    }
    out
}

/// A user mirror prefix without trailing `/`; a bare absolute path becomes a `file://` URL.
fn normalise_prefix(prefix: &str) -> String {
    let prefix = prefix.trim_end_matches('/');
    if prefix.starts_with('/') {
        format!("file://{prefix}")
    } else {
        prefix.to_string()
    }
}

fn expand(cfg: &FetchConfig, url: &str) -> Vec<Step> {
    let skip = |failure| {
        vec![Step::Skip(Attempt {
            url: url.to_string(),
            tries: 0,
            failure,
        })]
    };
    if let Some(rest) = url.strip_prefix("mirror://") {
        let Some((name, path)) = rest
            .split_once('/')
            .filter(|(n, p)| !n.is_empty() && !p.is_empty())
        else {
            return skip(Failure::BadUrl {
                reason: "a mirror URL has the form mirror://NAME/PATH",
            });
        };
        let bases = named_bases(&cfg.named_mirrors, name);
        if bases.is_empty() {
            return skip(Failure::NoMirrorBase {
                name: name.to_string(),
                var: format!("PYBAKE_MIRROR_{}", env_key(name).to_uppercase()),
            });
        }
        return bases
            .iter()
            .map(|base| Step::Try(format!("{}/{path}", base.trim_end_matches('/'))))
            .collect();
    }
    if ["http://", "https://", "file://"]
        .iter()
        .any(|s| url.starts_with(s))
    {
        vec![Step::Try(url.to_string())]
    } else {
        skip(Failure::BadUrl {
            reason: "unsupported URL scheme (pybake fetches http://, https://, file:// and \
                     mirror:// URLs)",
        })
    }
}

/// The bases configured for mirror `name`, matching keys without case and with `-` as `_`.
fn named_bases<'a>(named: &'a BTreeMap<String, Vec<String>>, name: &str) -> &'a [String] {
    let key = env_key(name);
    named
        .iter()
        .find(|(k, _)| env_key(k) == key)
        .map(|(_, v)| v.as_slice())
        .unwrap_or_default()
}

fn env_key(name: &str) -> String {
    name.to_ascii_lowercase().replace('-', "_")
}

pub(super) fn is_file_url(url: &str) -> bool {
    url.starts_with("file://")
}

/// The last path segment of a URL, without query or fragment; `None` if there is none.
pub(super) fn file_name(url: &str) -> Option<&str> {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = after_scheme.split(['?', '#']).next().unwrap_or_default();
    let (_, name) = path.rsplit_once('/')?;
    (!name.is_empty()).then_some(name)
}

pub(super) fn config_from_vars(
    vars: impl Iterator<Item = (String, String)>,
) -> Result<FetchConfig, ConfigError> {
    let split = |v: &str| -> Vec<String> {
        v.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    let mut cfg = FetchConfig::default();
    for (key, value) in vars {
        if key == "PYBAKE_MIRRORS" {
            cfg.user_mirrors = split(&value);
        } else if key == "PYBAKE_OFFLINE" {
            let v = value.trim().to_ascii_lowercase();
            cfg.offline = !matches!(v.as_str(), "" | "0" | "false" | "no" | "off");
        } else if key == "PYBAKE_LOW_SPEED_LIMIT" {
            cfg.low_speed_limit = value.trim().parse().map_err(|_| ConfigError {
                var: "PYBAKE_LOW_SPEED_LIMIT",
                value: value.clone(),
                expected: "a whole number of bytes per second (0 turns the check off)",
            })?;
        } else if key == "PYBAKE_LOW_SPEED_TIME" {
            cfg.low_speed_time = value
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|s| *s > 0.0)
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                .ok_or_else(|| ConfigError {
                    var: "PYBAKE_LOW_SPEED_TIME",
                    value: value.clone(),
                    expected: "a number of seconds greater than 0, such as 30 or 1.5",
                })?;
        } else if let Some(name) = key.strip_prefix("PYBAKE_MIRROR_") {
            if !name.is_empty() {
                cfg.named_mirrors.insert(env_key(name), split(&value));
            }
        }
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| match s {
                Step::Try(u) => u.clone(),
                Step::Skip(a) => format!("skip {}", a.url),
            })
            .collect()
    }

    #[test]
    fn user_mirrors_first_then_urls_with_mirror_scheme_expanded() {
        let sha = SourceHash::of(b"x");
        let mut cfg = FetchConfig {
            user_mirrors: vec!["https://cache.local/src/".into(), "/srv/dl".into()],
            ..FetchConfig::default()
        };
        cfg.named_mirrors.insert(
            "gnu".into(),
            vec!["https://ftp.gnu.org/gnu/".into(), "https://m2/gnu".into()],
        );
        let src = [
            "https://example.org/dl/zlib-1.3.tar.gz?raw=1".to_string(),
            "mirror://gnu/zlib/zlib-1.3.tar.gz".to_string(),
            "mirror://debian/pool/zlib-1.3.tar.gz".to_string(),
            "ftp://old/zlib-1.3.tar.gz".to_string(),
        ];
        let hex = sha.to_hex();
        assert_eq!(
            urls(&plan(&cfg, &src, &sha)),
            [
                "https://cache.local/src/zlib-1.3.tar.gz".to_string(),
                format!("https://cache.local/src/sha256/{hex}"),
                "file:///srv/dl/zlib-1.3.tar.gz".to_string(),
                format!("file:///srv/dl/sha256/{hex}"),
                "https://example.org/dl/zlib-1.3.tar.gz?raw=1".to_string(),
                "https://ftp.gnu.org/gnu/zlib/zlib-1.3.tar.gz".to_string(),
                "https://m2/gnu/zlib/zlib-1.3.tar.gz".to_string(),
                "skip mirror://debian/pool/zlib-1.3.tar.gz".to_string(),
                "skip ftp://old/zlib-1.3.tar.gz".to_string(),
            ]
        );
    }

    #[test]
    fn unconfigured_mirror_names_the_variable_to_set() {
        let steps = plan(
            &FetchConfig::default(),
            &["mirror://python-org/ftp/x.tgz".into()],
            &SourceHash::of(b""),
        );
        let [Step::Skip(a)] = &steps[..] else {
            panic!("expected one skip")
        };
        assert!(
            a.to_string()
                .contains("set PYBAKE_MIRROR_PYTHON_ORG=<base URL>"),
            "{a}"
        );
    }

    #[test]
    fn file_names() {
        assert_eq!(file_name("https://h/a/b.tar.gz?x=1#f"), Some("b.tar.gz"));
        assert_eq!(file_name("mirror://gnu/b.tgz"), Some("b.tgz"));
        assert_eq!(file_name("https://h/dir/"), None);
        assert_eq!(file_name("https://h"), None);
    }

    #[test]
    fn config_from_environment_variables() {
        let vars = [
            ("PYBAKE_MIRRORS", " https://a, file:///b\nhttps://c "),
            (
                "PYBAKE_MIRROR_DEBIAN",
                "https://deb.debian.org/debian/ https://d2",
            ),
            ("PYBAKE_MIRROR_PYTHON_ORG", "https://py"),
            ("PYBAKE_OFFLINE", "1"),
            ("PYBAKE_LOW_SPEED_LIMIT", " 500 "),
            ("PYBAKE_LOW_SPEED_TIME", "1.5"),
            ("HOME", "/root"),
        ];
        let cfg =
            config_from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap();
        assert_eq!(cfg.user_mirrors, ["https://a", "file:///b", "https://c"]);
        assert_eq!(
            cfg.named_mirrors["debian"],
            ["https://deb.debian.org/debian/", "https://d2"]
        );
        assert_eq!(
            named_bases(&cfg.named_mirrors, "python-org"),
            ["https://py"]
        );
        assert!(cfg.offline);
        assert_eq!(cfg.retries, 3);
        assert_eq!(cfg.low_speed_limit, 500);
        assert_eq!(cfg.low_speed_time, Duration::from_millis(1500));

        for off in ["0", "", "false", "No"] {
            let cfg =
                config_from_vars(std::iter::once(("PYBAKE_OFFLINE".into(), off.into()))).unwrap();
            assert!(!cfg.offline, "{off:?}");
        }
    }

    #[test]
    fn unusable_low_speed_settings_name_the_variable() {
        for (var, value) in [
            ("PYBAKE_LOW_SPEED_LIMIT", "1k"),
            ("PYBAKE_LOW_SPEED_LIMIT", "-1"),
            ("PYBAKE_LOW_SPEED_TIME", "30s"),
            ("PYBAKE_LOW_SPEED_TIME", "0"),
            ("PYBAKE_LOW_SPEED_TIME", "inf"),
            ("PYBAKE_LOW_SPEED_TIME", "NaN"),
        ] {
            let err = config_from_vars(std::iter::once((var.into(), value.into()))).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(var) && msg.contains(value), "{msg}");
        }
    }
}
