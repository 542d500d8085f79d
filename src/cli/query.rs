//! Read-only commands: plan, path, log, graph.

use std::io::Write;

use super::Global;
use crate::graph::Graph;
use crate::project::PlanState;
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
    let project = g.project()?;
    let closure = project.closure(&t.names)?;
    let reporter = crate::progress::for_stderr();
    let planned = closure.plan_with_substitutes(&*reporter)?;
    let mut out = std::io::stdout().lock();
    for p in planned {
        let path = project.store().path(&p.store_name);
        match p.state {
            PlanState::Valid => writeln!(out, "cached {}", path.display())?,
            PlanState::Build => writeln!(out, "build  {}", path.display())?,
            PlanState::Substitute { cache } => {
                writeln!(out, "substitute {} (from {cache})", path.display())?
            }
        }
    }
    Ok(0)
}

pub fn path(g: &Global, t: &Targets) -> anyhow::Result<i32> {
    let project = g.project()?;
    let closure = project.closure(&t.names)?;
    let mut out = std::io::stdout().lock();
    for name in &t.names {
        if let Some(d) = closure.get(name) {
            writeln!(out, "{}", project.store().path(&d.store_name).display())?;
        }
    }
    Ok(0)
}

pub fn log(g: &Global, o: &One) -> anyhow::Result<i32> {
    let project = g.project()?;
    let closure = project.closure(std::slice::from_ref(&o.name))?;
    let Some(d) = closure.get(&o.name) else {
        return Ok(0);
    };
    let log = project.store().log_path(&d.store_name);
    let bytes = fs_err::read(&log).map_err(|_| {
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
    write!(std::io::stdout().lock(), "{}", graph.dot(&t.names)?)?;
    Ok(0)
}

#[derive(Debug, clap::Args)]
pub struct HashArgs {
    /// Files or directories.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<std::path::PathBuf>,
    /// Also list the outputs of the store that each path refers to, as a build's output is
    /// scanned (one line each, indented, after the path's hash)
    #[arg(long)]
    pub references: bool,
}

pub fn hash(g: &Global, h: &HashArgs) -> anyhow::Result<i32> {
    let store = if h.references {
        Some(crate::store::Store::open(&g.store)?)
    } else {
        None
    };
    let mut out = std::io::stdout().lock();
    for p in &h.paths {
        match &store {
            None => {
                let digest = crate::hash::SourceHash::from_bytes(crate::hash::tree::hash_path(p)?);
                writeln!(out, "{digest}  {}", p.display())?;
            }
            Some(store) => {
                let (digest, refs) = crate::action::references_in(store, p)?;
                writeln!(out, "{digest}  {}", p.display())?;
                for r in refs {
                    writeln!(out, "  {r}")?;
                }
            }
        }
    }
    Ok(0)
}
