//! `pybake fetch`, `pybake import` and `pybake lock`: sources and pins.

use std::io::Write;
use std::path::PathBuf;

use super::{Context, Global, UsageError};
use crate::fetch::{self, FetchConfig};
use crate::lock::{LockError, Lockfile};
use crate::recipe::Origin;

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

/// The fetch settings: environment, `--offline`, and the download sizes the lockfile records
/// (which cap downloads). Without a lockfile, or with one that does not parse, nothing is capped:
/// the lockfile is optional unless `--locked` asks for it.
pub(crate) fn fetch_config(g: &Global) -> anyhow::Result<FetchConfig> {
    let mut cfg = FetchConfig::from_env()?;
    cfg.offline |= g.offline;
    cfg.progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    if let Ok(lock) = Lockfile::read(&g.lockfile_path()) {
        cfg.expected_sizes = lock.download_sizes();
    }
    Ok(cfg)
}

/// Every recipe name, when the user named none.
fn all_or(ctx: &Context, names: &[String]) -> Vec<String> {
    if names.is_empty() {
        ctx.set.recipes.keys().cloned().collect()
    } else {
        names.to_vec()
    }
}

/// Makes sure every URL source of `names`' closure is in the store. With `tolerate`, a source
/// that cannot be fetched is reported and skipped instead of stopping everything; the result
/// counts the sources fetched and those skipped.
fn fetch_closure(
    ctx: &Context,
    cfg: &FetchConfig,
    names: &[String],
    tolerate: bool,
) -> anyhow::Result<(usize, usize)> {
    let drvs = ctx.derivations(names)?;
    let (mut ok, mut skipped) = (0, 0);
    for d in &drvs {
        for (s, h) in d.recipe.sources.iter().zip(&d.source_hashes) {
            if let Origin::Url { urls, .. } = &s.origin {
                let got = fetch::fetch(
                    cfg,
                    &ctx.store.sources_dir(),
                    &ctx.store.tmp_dir(),
                    &fetch::Source {
                        recipe: &d.recipe.name,
                        urls,
                        sha256: *h,
                    },
                );
                match got {
                    Ok(_) => ok += 1,
                    Err(e) if tolerate => {
                        skipped += 1;
                        eprintln!("pybake: warning: {e}\n  (its size is left out of the lockfile and its sha256 is not verified)");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok((ok, skipped))
}

pub fn fetch(g: &Global, a: &FetchArgs) -> anyhow::Result<i32> {
    let ctx = Context::load(g)?;
    let names = all_or(&ctx, &a.names);
    let (n, _) = fetch_closure(&ctx, &fetch_config(g)?, &names, false)?;
    eprintln!("pybake: {n} source(s) in the store");
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
            eprintln!("pybake: warning: {w}");
        }
    }
    Ok(0)
}

pub fn lock(g: &Global, a: &LockArgs) -> anyhow::Result<i32> {
    let ctx = Context::load(g)?;
    let path = g.lockfile_path();
    let all: Vec<String> = ctx.set.recipes.keys().cloned().collect();
    for name in &a.update {
        ctx.set.get(name)?;
    }
    // Sizes come from the stored files, so every source is fetched (and verified) first. A
    // source that cannot be fetched here (an alternative toolchain behind a firewall, say)
    // does not stop the lock: its pin is still recorded, without a size.
    let targets = if a.update.is_empty() {
        all.clone()
    } else {
        a.update.clone()
    };
    // The sizes are what is being recorded again: the old ones must not cap the downloads
    // (a wrong one would refuse the very file that corrects it).
    let cfg = FetchConfig {
        expected_sizes: Default::default(),
        ..fetch_config(g)?
    };
    fetch_closure(&ctx, &cfg, &targets, true)?;
    let fresh = ctx.lock_entries(&all)?;
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
    eprintln!(
        "pybake: wrote {} ({} recipes)",
        path.display(),
        lock.recipes.len()
    );
    Ok(0)
}

/// `realize --locked`: refuse to build when the recipes drifted from the lockfile.
pub(crate) fn check_locked(ctx: &Context, g: &Global, names: &[String]) -> anyhow::Result<()> {
    let path = g.lockfile_path();
    let locked = Lockfile::read(&path)?;
    let fresh = ctx.lock_entries(names)?;
    let drift = locked.drift(&fresh);
    if drift.is_empty() {
        Ok(())
    } else {
        Err(UsageError(LockError::Drift { path, drift }.to_string()).into())
    }
}
