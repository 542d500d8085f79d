//! `pybake fetch`, `pybake import` and `pybake lock`: sources and pins.

use std::io::Write;
use std::path::PathBuf;

use super::Global;
use crate::fetch::{self, FetchConfig};
use crate::lock::{LockError, Lockfile};
use crate::progress;
use crate::project::Project;

#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// Recipes whose closure's sources to download (default: every recipe).
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Files to add to the store under their sha256.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct LockArgs {
    /// Change only these recipes' entries (and the toolchains they provide).
    #[arg(long, value_name = "NAME", num_args = 1..)]
    pub update: Vec<String>,
}

/// Every recipe name, when the user named none.
fn all_or(project: &Project, names: &[String]) -> Vec<String> {
    if names.is_empty() {
        project.all()
    } else {
        names.to_vec()
    }
}

pub fn fetch(g: &Global, a: &FetchArgs) -> anyhow::Result<i32> {
    let project = g.project()?;
    let closure = project.closure(&all_or(&project, &a.names))?;
    let reporter = progress::for_stderr();
    let (n, _) = closure.fetch_sources(project.fetch_config(), false, &*reporter)?;
    say!("pybake: {n} source(s) in the store");
    Ok(0)
}

pub fn import(g: &Global, a: &ImportArgs) -> anyhow::Result<i32> {
    let store = crate::store::Store::open(&g.store)?;
    let lock = Lockfile::read(&g.lockfile_path()).ok();
    let sizes = lock
        .as_ref()
        .map(Lockfile::download_sizes)
        .unwrap_or_default();
    let mut out = std::io::stdout().lock();
    for f in &a.files {
        let (hash, size) = fetch::import(&store.sources_dir(), &store.tmp_dir(), f)?;
        writeln!(out, "{hash}  {size}  {}", f.display())?;
        let recipes = lock
            .as_ref()
            .map(|l| l.recipes_downloading(&hash))
            .unwrap_or_default();
        if let Some(w) = fetch::locked_size_wrong(&sizes, &recipes.join(" "), &hash, size) {
            say!("pybake: warning: {w}");
        }
    }
    Ok(0)
}

pub fn lock(g: &Global, a: &LockArgs) -> anyhow::Result<i32> {
    let project = g.project()?;
    let path = project.lockfile_path().to_path_buf();
    for name in &a.update {
        project.recipe(name)?;
    }
    let all = project.closure(&project.all())?;
    // Sizes come from the stored files, so every source is fetched (and verified) first. A
    // source that cannot be fetched here (an alternative toolchain behind a firewall, say)
    // does not stop the lock: its pin is still recorded, without a size.
    let targets = if a.update.is_empty() {
        project.all()
    } else {
        a.update.clone()
    };
    // The sizes are what is being recorded again: the old ones must not cap the downloads
    // (a wrong one would refuse the very file that corrects it).
    let cfg = FetchConfig {
        expected_sizes: Default::default(),
        ..project.fetch_config().clone()
    };
    let reporter = progress::for_stderr();
    let (_, failed) = project
        .closure(&targets)?
        .fetch_sources(&cfg, true, &*reporter)?;
    for e in failed {
        say!("pybake: warning: {e}\n  (its size is left out of the lockfile and its sha256 is not verified)");
    }
    let fresh = all.lock_entries();
    let lock = if a.update.is_empty() {
        fresh
    } else {
        let mut existing = Lockfile::read(&path)?;
        for name in &a.update {
            if !existing.recipes.contains_key(name) {
                return Err(LockError::NotLocked {
                    name: name.clone(),
                    path,
                }
                .into());
            }
            existing.update_entry(&fresh, name);
        }
        existing
    };
    lock.write(&path)?;
    say!(
        "pybake: wrote {} ({} recipes)",
        path.display(),
        lock.recipes.len()
    );
    Ok(0)
}
