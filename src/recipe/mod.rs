//! Recipe files: one TOML file per recipe in a directory (see docs/recipes.md).
//!
//! Loading reads every `*.toml` in the directory in name order, parses each into a
//! [`raw::RawRecipe`], applies `extends`, and validates into [`Recipe`]. Dependencies are checked
//! by [`crate::graph`].
//!
//! What loading guarantees (the rest of pybake relies on it):
//! - Only regular files (or symlinks to them) are read; anything else named `*.toml` is an error
//!   before it is opened, so a fifo cannot hang the loader.
//! - `name` and `version` fit in a store name ([`crate::store::MAX_NAME_VERSION_LEN`]).
//! - A `path` source resolves, symlinks followed, inside the recipe directory; [`Origin::Local`]
//!   holds that resolved path, with no symlink left below the recipe directory. Host files that
//!   are not part of the project come in through `pybake import` or a pinned `file://` URL.
//! - A `dest` is relative and has no `..` (that it never passes through a symlink is checked when
//!   sources are laid out, see `action::sources`).

mod error;
mod raw;
mod resolved;
mod stamp;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub use error::{line_of, snippet, suggestion, Location, RecipeError};
pub use resolved::{url_file_name, Dep, Origin, Recipe, Requirement, Source, RESERVED_ENV};
pub use stamp::{FileStamp, ReadFiles};

use crate::store::MAX_NAME_VERSION_LEN;
use raw::{RawRecipe, RawSource};

/// Every recipe of a directory, by name.
#[derive(Debug, Clone)]
pub struct RecipeSet {
    pub dir: PathBuf,
    pub recipes: BTreeMap<String, Recipe>,
    /// What the directory and each file were when read (`None` for [`RecipeSet::from_texts`]).
    pub read: Option<ReadFiles>,
}

struct Parsed {
    raw: RawRecipe,
    file: PathBuf,
    text: String,
    /// The file as opened, before its bytes were read (`None` for a text not from a file).
    stamp: Option<FileStamp>,
    /// Where each line of `text` starts, once a location is asked for.
    lines: std::sync::OnceLock<Vec<usize>>,
}

impl Parsed {
    fn at(&self, span: Option<std::ops::Range<usize>>) -> Location {
        match span {
            Some(s) => {
                let lines = self.lines.get_or_init(|| error::line_starts(&self.text));
                Location::of_span_in(&self.file, &self.text, lines, s)
            }
            None => Location::at_line(&self.file, None),
        }
    }
}

impl RecipeSet {
    /// Reads and validates every recipe in `dir`.
    pub fn load(dir: &Path) -> Result<Self, RecipeError> {
        let read_dir = |e| RecipeError::ReadDir {
            dir: dir.to_path_buf(),
            source: e,
        };
        // Stamped before listing: an entry added after this changes what the stamp records.
        let dir_stamp = FileStamp::of(&fs_err::metadata(dir).map_err(read_dir)?);
        let mut files: Vec<PathBuf> = fs_err::read_dir(dir)
            .map_err(read_dir)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(read_dir)?;
        files.retain(|p| p.extension().is_some_and(|e| e == "toml"));
        files.sort();

        // Reading and parsing are independent per file; in parallel they halve a no-op
        // realize of a large graph. Errors are reported for the first file in name order.
        use rayon::prelude::*;
        let all: Vec<Result<Parsed, RecipeError>> =
            files.par_iter().map(|f| parse_file(f)).collect();
        let mut set = Self::resolve_all(dir, all)?;
        if let Some(read) = &mut set.read {
            read.dir = Some(dir_stamp);
        }
        Ok(set)
    }

    /// What [`Self::load`] does once it has read the files: parses and validates recipes given
    /// as `(file, text)` in name order, as if read from `dir` (where `path` sources are looked
    /// up). Lets the fuzz target (fuzz/) drive the loader without touching the disk.
    pub fn from_texts(dir: &Path, files: Vec<(PathBuf, String)>) -> Result<Self, RecipeError> {
        let all = files
            .into_iter()
            .map(|(file, text)| parse_text(file, text))
            .collect();
        Self::resolve_all(dir, all)
    }

    fn resolve_all(dir: &Path, all: Vec<Result<Parsed, RecipeError>>) -> Result<Self, RecipeError> {
        // `path` sources are confined to the real directory, symlinks resolved.
        let real_dir = fs_err::canonicalize(dir).map_err(|e| RecipeError::ReadDir {
            dir: dir.to_path_buf(),
            source: e,
        })?;
        let mut parsed: BTreeMap<String, Parsed> = BTreeMap::new();
        for p in all {
            let p = p?;
            let name = p.raw.name.get_ref().clone();
            if let Some(other) = parsed.get(&name) {
                return Err(RecipeError::Duplicate {
                    at: p.at(Some(p.raw.name.span())),
                    name,
                    other: other.file.clone(),
                });
            }
            parsed.insert(name, p);
        }

        let files = parsed
            .values()
            .map(|p| Some((p.file.clone(), p.stamp?)))
            .collect::<Option<Vec<_>>>()
            .map(|files| ReadFiles { dir: None, files });
        let mut recipes = BTreeMap::new();
        for name in parsed.keys() {
            let recipe = resolve(
                Dirs {
                    dir,
                    real_dir: &real_dir,
                },
                name,
                &parsed,
            )?;
            recipes.insert(name.clone(), recipe);
        }
        Ok(RecipeSet {
            dir: dir.to_path_buf(),
            recipes,
            read: files,
        })
    }

    pub fn get(&self, name: &str) -> Result<&Recipe, RecipeError> {
        self.recipes
            .get(name)
            .ok_or_else(|| RecipeError::UnknownRecipe {
                name: name.to_string(),
                dir: self.dir.clone(),
                hint: suggestion(name, self.recipes.keys().map(String::as_str)),
            })
    }
}

fn parse_file(file: &Path) -> Result<Parsed, RecipeError> {
    let read_err = |e| RecipeError::ReadFile {
        file: file.to_path_buf(),
        source: e,
    };
    let not_a_file = |file_type| RecipeError::NotAFile {
        file: file.to_path_buf(),
        kind: kind_of(file_type),
    };
    // Non-blocking: opening a fifo for reading would block until a writer comes. Then one
    // fstat says what was opened (a stat before the open would be a second lookup per file,
    // and racy).
    use fs_err::os::unix::fs::OpenOptionsExt;
    let opened = fs_err::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(file);
    let mut f = match opened {
        Ok(f) => f,
        // A socket cannot be opened at all: say what it is rather than why open failed.
        Err(e) => match fs_err::metadata(file) {
            Ok(m) if !m.is_file() => return Err(not_a_file(m.file_type())),
            _ => return Err(read_err(e)),
        },
    };
    let meta = f.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(not_a_file(meta.file_type()));
    }
    let stamp = FileStamp::of(&meta);
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0) + 1);
    std::io::Read::read_to_end(&mut f, &mut bytes).map_err(read_err)?;
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let lossy = String::from_utf8_lossy(e.as_bytes());
            // The valid prefix is the same in the lossy text, so the offset still points at
            // the first replacement character.
            return Err(RecipeError::NotUtf8 {
                at: Location::of_span(file, &lossy, valid..valid + 1),
            });
        }
    };
    let mut parsed = parse_text(file.to_path_buf(), text)?;
    parsed.stamp = Some(stamp);
    Ok(parsed)
}

fn parse_text(file: PathBuf, text: String) -> Result<Parsed, RecipeError> {
    let raw: RawRecipe = toml::from_str(&text).map_err(|e| RecipeError::Syntax {
        at: match e.span() {
            Some(s) => Location::of_span(&file, &text, s),
            None => Location::at_line(&file, None),
        },
        message: e.message().trim().to_string(),
    })?;
    Ok(Parsed {
        raw,
        file,
        text,
        stamp: None,
        lines: Default::default(),
    })
}

/// What a file that is not a regular file is, for messages.
fn kind_of(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a fifo"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "a special file"
    }
}

/// The recipe directory as given (for the paths recipes keep) and resolved (for confinement).
#[derive(Clone, Copy)]
struct Dirs<'a> {
    dir: &'a Path,
    real_dir: &'a Path,
}

/// The chain `name`, its parent, its grandparent, ... (child first).
fn extends_chain<'a>(
    name: &'a str,
    parsed: &'a BTreeMap<String, Parsed>,
) -> Result<Vec<&'a Parsed>, RecipeError> {
    let mut chain: Vec<&Parsed> = vec![&parsed[name]];
    let mut seen = BTreeSet::from([name]);
    while let Some(parent) = &chain[chain.len() - 1].raw.extends {
        let child = chain[chain.len() - 1];
        let Some(p) = parsed.get(parent.get_ref()) else {
            return Err(RecipeError::MissingParent {
                at: child.at(Some(parent.span())),
                recipe: child.raw.name.get_ref().clone(),
                parent: parent.get_ref().clone(),
            });
        };
        if !seen.insert(parent.get_ref()) {
            let mut names: Vec<&str> = chain
                .iter()
                .map(|p| p.raw.name.get_ref().as_str())
                .collect();
            names.push(parent.get_ref());
            return Err(RecipeError::ExtendsCycle {
                at: child.at(Some(parent.span())),
                cycle: names.join(" -> "),
            });
        }
        chain.push(p);
    }
    Ok(chain)
}

/// The nearest definition of a field along the chain, with the file it came from.
fn nearest<'a, T>(
    chain: &[&'a Parsed],
    field: impl Fn(&'a RawRecipe) -> Option<&'a T>,
) -> Option<(&'a Parsed, &'a T)> {
    chain.iter().find_map(|p| field(&p.raw).map(|v| (*p, v)))
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+')
}

fn check_token(
    p: &Parsed,
    value: &toml::Spanned<String>,
    field: &str,
) -> Result<String, RecipeError> {
    let v = value.get_ref();
    if v.is_empty() || !v.chars().all(is_name_char) || v.starts_with('.') {
        return Err(RecipeError::BadValue {
            at: p.at(Some(value.span())),
            field: field.to_string(),
            message: format!(
                "{v:?}: use letters, digits and `-_.+`, not starting with `.` (it becomes part of a store path)"
            ),
        });
    }
    Ok(v.clone())
}

fn resolve(
    dirs: Dirs,
    name: &str,
    parsed: &BTreeMap<String, Parsed>,
) -> Result<Recipe, RecipeError> {
    let chain = extends_chain(name, parsed)?;
    let me = chain[0];
    let bad = |p: &Parsed, span, field: &str, message: String| RecipeError::BadValue {
        at: p.at(span),
        field: field.to_string(),
        message,
    };

    let name = check_token(me, &me.raw.name, "name")?;
    let version = match nearest(&chain, |r| r.version.as_ref()) {
        Some((p, v)) => check_token(p, v, "version")?,
        None => return Err(bad(
            me,
            None,
            "version",
            "missing: every recipe needs `version = \"...\"` (or `extends` a recipe that has one)"
                .into(),
        )),
    };
    let len = name.len() + version.len();
    if len > MAX_NAME_VERSION_LEN {
        return Err(bad(
            me,
            Some(me.raw.name.span()),
            "name",
            format!(
                "`name` and `version` together are {len} bytes, but at most \
                 {MAX_NAME_VERSION_LEN} bytes are allowed: they become a file name in the store \
                 (`<hash>-<name>-<version>`); shorten the name or the version"
            ),
        ));
    }
    let description = nearest(&chain, |r| r.description.as_ref())
        .map(|(_, d)| d.clone())
        .unwrap_or_default();
    let run = nearest(&chain, |r| r.run.as_ref()).map(|(_, r)| r.clone());

    let deps = match nearest(&chain, |r| r.deps.as_ref()) {
        Some((p, deps)) => {
            let mut seen = BTreeSet::new();
            let mut out = Vec::new();
            for d in deps {
                if !seen.insert(d.get_ref()) {
                    return Err(bad(
                        p,
                        Some(d.span()),
                        "deps",
                        format!("`{}` is listed twice", d.get_ref()),
                    ));
                }
                out.push(Dep {
                    name: d.get_ref().clone(),
                    at: p.at(Some(d.span())),
                });
            }
            out
        }
        None => Vec::new(),
    };

    let root = nearest(&chain, |r| r.root.as_ref()).map(|(p, r)| Dep {
        name: r.get_ref().clone(),
        at: p.at(Some(r.span())),
    });

    let remove_references_to = match nearest(&chain, |r| r.remove_references_to.as_ref()) {
        Some((p, names)) => names
            .iter()
            .map(|n| {
                if deps.iter().any(|d| &d.name == n.get_ref()) {
                    Ok(n.get_ref().clone())
                } else {
                    Err(bad(
                        p,
                        Some(n.span()),
                        "remove-references-to",
                        format!(
                            "`{}` is not in `deps`: only a dependency's store path can be removed from the output",
                            n.get_ref()
                        ),
                    ))
                }
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };

    let steps: Vec<String> = nearest(&chain, |r| r.steps.as_ref())
        .map(|(_, s)| s.iter().map(|s| s.get_ref().clone()).collect())
        .unwrap_or_default();

    // [env] merges along the chain: the child's value wins.
    let mut env = BTreeMap::new();
    for p in chain.iter().rev() {
        for (k, v) in p.raw.env.iter().flatten() {
            if !is_env_name(k) {
                return Err(bad(
                    p,
                    Some(v.span()),
                    "env",
                    format!("{k:?} is not a valid environment variable name"),
                ));
            }
            if RESERVED_ENV.contains(&k.as_str()) || k.starts_with("DEP_") {
                return Err(bad(
                    p,
                    Some(v.span()),
                    "env",
                    format!("`{k}` is set by pybake for every build and cannot be overridden (see docs/recipes.md)"),
                ));
            }
            env.insert(k.clone(), v.get_ref().clone());
        }
    }

    let sources = match nearest(&chain, |r| r.sources.as_ref()) {
        Some((p, list)) => list
            .iter()
            .map(|s| resolve_source(dirs, p, s))
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };

    let mut provides = BTreeMap::new();
    if let Some((p, map)) = nearest(&chain, |r| r.provides.as_ref()) {
        for (tool, v) in map {
            let parsed = parse_lenient_version(v.get_ref()).ok_or_else(|| {
                bad(
                    p,
                    Some(v.span()),
                    "provides",
                    format!(
                        "{tool} = {:?} is not a version like \"3.1.69\"",
                        v.get_ref()
                    ),
                )
            })?;
            provides.insert(tool.clone(), parsed);
        }
    }
    let mut requires = BTreeMap::new();
    if let Some((p, map)) = nearest(&chain, |r| r.requires.as_ref()) {
        for (tool, req) in map {
            let r = req.get_ref();
            let version = semver::VersionReq::parse(&r.version).map_err(|e| {
                bad(
                    p,
                    Some(req.span()),
                    "requires",
                    format!(
                        "{tool}: {:?} is not a version constraint like \">= 3.1.8\": {e}",
                        r.version
                    ),
                )
            })?;
            requires.insert(
                tool.clone(),
                Requirement {
                    version,
                    reason: r.reason.clone(),
                    at: p.at(Some(req.span())),
                },
            );
        }
    }

    Ok(Recipe {
        name,
        version,
        description,
        run,
        file: me.file.clone(),
        deps,
        root,
        remove_references_to,
        steps,
        env,
        sources,
        provides,
        requires,
    })
}

/// Parses "3.1.69", "3.11" or "120" as semver by padding missing components with zeros.
pub fn parse_lenient_version(s: &str) -> Option<semver::Version> {
    if let Ok(v) = semver::Version::parse(s) {
        return Some(v);
    }
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 3 || parts.iter().any(|p| p.parse::<u64>().is_err()) {
        return None;
    }
    let mut nums = parts.iter().map(|p| p.parse::<u64>().unwrap_or(0));
    Some(semver::Version::new(
        nums.next().unwrap_or(0),
        nums.next().unwrap_or(0),
        nums.next().unwrap_or(0),
    ))
}

fn is_env_name(k: &str) -> bool {
    let mut chars = k.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn resolve_source(
    dirs: Dirs,
    p: &Parsed,
    spanned: &toml::Spanned<RawSource>,
) -> Result<Source, RecipeError> {
    let s: &RawSource = spanned.get_ref();
    let span = Some(spanned.span());
    let bad = |message: String| RecipeError::BadValue {
        at: p.at(span.clone()),
        field: "sources".into(),
        message,
    };
    let dest = s.dest.clone().unwrap_or_else(|| ".".into());
    if Path::new(&dest).is_absolute()
        || Path::new(&dest)
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(bad(format!(
            "dest {dest:?} must be a relative path inside $src without `..`"
        )));
    }
    let (origin, name) = match (&s.path, &s.url) {
        (Some(path), None) => {
            if s.sha256.is_some() || !s.mirrors.is_empty() {
                return Err(bad(
                    "`sha256` and `mirrors` apply to `url` sources; a `path` source is hashed by its content".into(),
                ));
            }
            // Paths are relative to the recipe directory, and the directory itself never enters a
            // hash: only the content does, so checkouts at different places agree.
            let full = dirs.dir.join(path);
            let real = match fs_err::canonicalize(&full) {
                Ok(real) => real,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(bad(format!(
                        "path {path:?} does not exist (looked for {})",
                        full.display()
                    )))
                }
                Err(e) => {
                    return Err(bad(format!(
                        "path {path:?} cannot be resolved (looked for {}): {e}",
                        full.display()
                    )))
                }
            };
            let Ok(inside) = real.strip_prefix(dirs.real_dir) else {
                return Err(bad(format!(
                    "path {path:?} resolves to {}, outside the recipe directory {}: a `path` \
                     source must lie inside it (symlinks are followed to check)\n  hint: bring \
                     in host files that are not part of the project with `pybake import FILE` \
                     or as a `url = \"file://...\"` source pinned by `sha256`",
                    real.display(),
                    dirs.real_dir.display()
                )));
            };
            // The resolved path, so that hashing and copying never go through a link here.
            (
                Origin::Local {
                    path: dirs.dir.join(inside),
                },
                path.clone(),
            )
        }
        (None, Some(url)) => {
            let Some(sha) = &s.sha256 else {
                return Err(bad(format!(
                    "url {url:?} needs `sha256 = \"...\"`: every download is pinned (get it with `sha256sum FILE`)"
                )));
            };
            let sha256 = sha.parse().map_err(|e| bad(format!("{e}")))?;
            for u in std::iter::once(url).chain(&s.mirrors) {
                if !["http://", "https://", "file://", "mirror://"]
                    .iter()
                    .any(|scheme| u.starts_with(scheme))
                {
                    return Err(bad(format!(
                        "{u:?} is not an http(s)://, file:// or mirror:// URL"
                    )));
                }
            }
            let mut urls = vec![url.clone()];
            urls.extend(s.mirrors.iter().cloned());
            (Origin::Url { urls, sha256 }, url_file_name(url))
        }
        _ => {
            return Err(bad(
                "each [[sources]] entry needs exactly one of `path` or `url`".into(),
            ))
        }
    };
    let unpack = s
        .unpack
        .unwrap_or_else(|| crate::archive::looks_like_archive(&name));
    Ok(Source {
        origin,
        unpack,
        dest,
        at: p.at(span),
    })
}

#[cfg(test)]
mod tests;
