//! Toolchain version constraints: a recipe `requires` a version of a tool that some recipe of
//! its dependency closure `provides` (e.g. cpython-browser requires emscripten >= 3.1.8 from emsdk).

use std::collections::BTreeMap;

use crate::derivation::Derivation;
use crate::recipe::{Location, Recipe};

/// A toolchain in use: who provides it at which version, and the constraints it satisfies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub tool: String,
    pub version: semver::Version,
    pub provided_by: String,
    /// (recipe that requires it, constraint, reason)
    pub constraints: Vec<(String, String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ToolchainError {
    #[error(transparent)]
    Violated(Box<Violation>),
    #[error("{at}: recipe `{recipe}` requires {tool} {constraint}, but no recipe in its dependencies provides {tool}\n  hint: add the recipe that has `[provides] {tool} = \"...\"` to `deps`")]
    Missing {
        at: Box<Location>,
        recipe: String,
        tool: String,
        constraint: String,
    },
}

impl ToolchainError {
    /// The `[requires]` entry the error is about.
    pub fn location(&self) -> &Location {
        match self {
            ToolchainError::Violated(v) => &v.at,
            ToolchainError::Missing { at, .. } => at.as_ref(),
        }
    }
}

/// A provided version outside a constraint (boxed in [`ToolchainError`] to keep it small).
#[derive(Debug, thiserror::Error)]
#[error("{at}: recipe `{recipe}` requires {tool} {constraint}, but `{provider}` provides {tool} {version}{reason}\n  hint: pin a {tool} that satisfies the constraint in recipe `{provider}`, then run `pybake lock --update {provider}`")]
pub struct Violation {
    pub at: Location,
    pub recipe: String,
    pub tool: String,
    pub constraint: String,
    pub provider: String,
    pub version: semver::Version,
    pub reason: String,
}

/// Checks every constraint of `drvs` (a closure in build order) and returns the pins in use.
pub fn check(drvs: &[Derivation]) -> Result<Vec<Pin>, ToolchainError> {
    let by_name: BTreeMap<&str, &Recipe> = drvs
        .iter()
        .map(|d| (d.recipe.name.as_str(), d.recipe))
        .collect();
    let mut pins: BTreeMap<(String, String), Pin> = BTreeMap::new();
    for d in drvs {
        let r = d.recipe;
        for (tool, req) in &r.requires {
            let at = req.at.clone();
            let reason = if req.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", req.reason)
            };
            let Some((provider, version)) = find_provider(r, tool, &by_name) else {
                return Err(ToolchainError::Missing {
                    at: Box::new(at),
                    recipe: r.name.clone(),
                    tool: tool.clone(),
                    constraint: req.version.to_string(),
                });
            };
            if !req.version.matches(version) {
                return Err(ToolchainError::Violated(Box::new(Violation {
                    at,
                    recipe: r.name.clone(),
                    tool: tool.clone(),
                    constraint: req.version.to_string(),
                    provider: provider.to_string(),
                    version: version.clone(),
                    reason,
                })));
            }
            pins.entry((tool.clone(), provider.to_string()))
                .or_insert_with(|| Pin {
                    tool: tool.clone(),
                    version: version.clone(),
                    provided_by: provider.to_string(),
                    constraints: vec![],
                })
                .constraints
                .push((r.name.clone(), req.version.to_string(), req.reason.clone()));
        }
    }
    // Tools provided but not constrained are pinned too: the lockfile records every toolchain.
    for d in drvs {
        for (tool, version) in &d.recipe.provides {
            pins.entry((tool.clone(), d.recipe.name.clone()))
                .or_insert_with(|| Pin {
                    tool: tool.clone(),
                    version: version.clone(),
                    provided_by: d.recipe.name.clone(),
                    constraints: vec![],
                });
        }
    }
    Ok(pins.into_values().collect())
}

/// The nearest provider of `tool` among `r` and its dependencies (breadth-first, by name).
fn find_provider<'a>(
    r: &'a Recipe,
    tool: &str,
    by_name: &BTreeMap<&str, &'a Recipe>,
) -> Option<(&'a str, &'a semver::Version)> {
    let mut queue = std::collections::VecDeque::from([r]);
    let mut seen = std::collections::BTreeSet::new();
    while let Some(x) = queue.pop_front() {
        if !seen.insert(x.name.as_str()) {
            continue;
        }
        if let Some(v) = x.provides.get(tool) {
            return Some((x.name.as_str(), v));
        }
        queue.extend(
            x.deps
                .iter()
                .filter_map(|d| by_name.get(d.name.as_str()).copied()),
        );
    }
    None
}
