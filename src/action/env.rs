//! The environment of a build step, rebuilt from nothing (docs/recipes.md lists it).

use std::collections::BTreeMap;
use std::path::Path;

/// `SOURCE_DATE_EPOCH` for every build: 1980-01-01, the earliest date zip and some compilers
/// accept, so tools that embed "now" embed this instead.
pub const SOURCE_DATE_EPOCH: &str = "315532800";

/// The system part of PATH, after the dependencies' `bin/` directories.
pub const SYSTEM_PATH: &str = "/usr/bin:/bin";

/// `DEP_` + the name upper-cased with every character outside `[A-Z0-9_]` as `_`.
pub fn dep_var(name: &str) -> String {
    let mut s = String::from("DEP_");
    s.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    s
}

pub struct EnvInput<'a> {
    pub build_dir: &'a Path,
    pub out: &'a Path,
    /// Each direct dependency's name and path as the step sees it, in the recipe's order.
    pub deps: Vec<(&'a str, std::path::PathBuf)>,
    pub jobs: usize,
    pub recipe_env: &'a BTreeMap<String, String>,
}

pub fn build_env(i: &EnvInput) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let mut path: Vec<String> = i
        .deps
        .iter()
        .map(|(_, p)| p.join("bin").display().to_string())
        .collect();
    path.push(SYSTEM_PATH.to_string());
    env.insert("PATH".into(), path.join(":"));
    env.insert(
        "HOME".into(),
        i.build_dir.join("home").display().to_string(),
    );
    env.insert(
        "TMPDIR".into(),
        i.build_dir.join("tmp").display().to_string(),
    );
    env.insert("SOURCE_DATE_EPOCH".into(), SOURCE_DATE_EPOCH.into());
    env.insert("TZ".into(), "UTC".into());
    env.insert("LC_ALL".into(), "C".into());
    env.insert("out".into(), i.out.display().to_string());
    env.insert("src".into(), i.build_dir.join("src").display().to_string());
    env.insert("PYBAKE_JOBS".into(), i.jobs.to_string());
    for (name, p) in &i.deps {
        env.insert(dep_var(name), p.display().to_string());
    }
    for (k, v) in i.recipe_env {
        env.insert(k.clone(), v.clone());
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dep_vars() {
        assert_eq!(dep_var("build-python"), "DEP_BUILD_PYTHON");
        assert_eq!(dep_var("bzip2"), "DEP_BZIP2");
    }
}
