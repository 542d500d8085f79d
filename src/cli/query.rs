//! Read-only commands: plan, path, log, graph.

use std::io::Write;

use super::{Context, Global};
use crate::graph::Graph;
use crate::recipe::RecipeSet;

#[derive(Debug, clap::Args)]
pub struct Targets {
    /// Recipe names.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct One {
    /// Recipe name.
    #[arg(value_name = "NAME")]
    pub name: String,
}

#[derive(Debug, clap::Args)]
pub struct MaybeTargets {
    /// Recipe names (default: every recipe).
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
}

pub fn plan(g: &Global, t: &Targets) -> anyhow::Result<i32> {
    let ctx = Context::load(g)?;
    let drvs = ctx.derivations(&t.names)?;
    let mut out = std::io::stdout().lock();
    for (d, cached) in crate::scheduler::plan(&ctx.store, &drvs, &t.names) {
        let what = if cached { "cached" } else { "build " };
        writeln!(out, "{what} {}", ctx.store.path(&d.store_name).display())?;
    }
    Ok(0)
}

pub fn path(g: &Global, t: &Targets) -> anyhow::Result<i32> {
    let ctx = Context::load(g)?;
    let drvs = ctx.derivations(&t.names)?;
    let mut out = std::io::stdout().lock();
    for name in &t.names {
        let d = drvs
            .iter()
            .find(|d| &d.recipe.name == name)
            .expect("targets are in their closure");
        writeln!(out, "{}", ctx.store.path(&d.store_name).display())?;
    }
    Ok(0)
}

pub fn log(g: &Global, o: &One) -> anyhow::Result<i32> {
    let ctx = Context::load(g)?;
    let targets = [o.name.clone()];
    let drvs = ctx.derivations(&targets)?;
    let d = drvs
        .iter()
        .find(|d| d.recipe.name == o.name)
        .expect("target is in its closure");
    let log = ctx.store.log_path(&d.store_name);
    let bytes = std::fs::read(&log).map_err(|_| {
        anyhow::anyhow!(
            "no build log for `{}` ({}) in this store: it has not been built here since its last change\n  hint: run `pybake realize {}`",
            o.name,
            d.store_name,
            o.name
        )
    })?;
    std::io::stdout().lock().write_all(&bytes)?;
    Ok(0)
}

pub fn graph(g: &Global, t: &MaybeTargets) -> anyhow::Result<i32> {
    let set = RecipeSet::load(&g.recipes)?;
    let graph = Graph::new(&set)?;
    print!("{}", graph.dot(&t.names)?);
    Ok(0)
}

#[derive(Debug, clap::Args)]
pub struct HashArgs {
    /// Files or directories.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<std::path::PathBuf>,
}

pub fn hash(h: &HashArgs) -> anyhow::Result<i32> {
    let mut out = std::io::stdout().lock();
    for p in &h.paths {
        let digest = crate::hash::SourceHash::from_bytes(crate::hash::tree::hash_path(p)?);
        writeln!(out, "{digest}  {}", p.display())?;
    }
    Ok(0)
}
