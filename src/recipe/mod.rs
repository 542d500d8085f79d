//! Recipe files: one TOML file per recipe in a directory (see docs/recipes.md).
//!
//! Loading reads every `*.toml` in the directory in name order, parses each into a
//! [`raw::RawRecipe`], applies `extends`, and validates into [`Recipe`]. Dependencies are checked
//! by [`crate::graph`].

mod error;
mod raw;
mod resolved;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub use error::{line_of, suggestion, Location, RecipeError};
pub use resolved::{url_file_name, Dep, Origin, Recipe, Requirement, Source, RESERVED_ENV};

use raw::{RawRecipe, RawSource};

/// Every recipe of a directory, by name.
#[derive(Debug, Clone)]
pub struct RecipeSet {
    pub dir: PathBuf,
    pub recipes: BTreeMap<String, Recipe>,
}

struct Parsed {
    raw: RawRecipe,
    file: PathBuf,
    text: String,
}

impl Parsed {
    fn at(&self, span: Option<std::ops::Range<usize>>) -> Location {
        Location {
            file: self.file.clone(),
            line: span.map(|s| line_of(&self.text, s.start)),
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
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
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
        Self::resolve_all(dir, all)
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

        let mut recipes = BTreeMap::new();
        for name in parsed.keys() {
            let recipe = resolve(dir, name, &parsed)?;
            recipes.insert(name.clone(), recipe);
        }
        Ok(RecipeSet {
            dir: dir.to_path_buf(),
            recipes,
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
    let text = std::fs::read_to_string(file).map_err(|e| RecipeError::ReadFile {
        file: file.to_path_buf(),
        source: e,
    })?;
    parse_text(file.to_path_buf(), text)
}

fn parse_text(file: PathBuf, text: String) -> Result<Parsed, RecipeError> {
    let raw: RawRecipe = toml::from_str(&text).map_err(|e| RecipeError::Syntax {
        at: Location {
            file: file.clone(),
            line: e.span().map(|s| line_of(&text, s.start)),
        },
        message: e.message().trim().to_string(),
    })?;
    Ok(Parsed { raw, file, text })
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
    dir: &Path,
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
                    line: Some(line_of(&p.text, d.span().start)),
                });
            }
            out
        }
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
            .map(|s| resolve_source(dir, p, s))
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
                    line: Some(line_of(&p.text, req.span().start)),
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
    dir: &Path,
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
            let full = dir.join(path);
            if !full.exists() {
                return Err(bad(format!(
                    "path {path:?} does not exist (looked for {})",
                    full.display()
                )));
            }
            (Origin::Local { path: full }, path.clone())
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
        line: span.map(|s| line_of(&p.text, s.start)),
    })
}

#[cfg(test)]
mod tests;
