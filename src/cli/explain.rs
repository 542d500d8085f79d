//! `pybake explain NAME` and `realize --explain`: why a recipe's current derivation is not the
//! one built last time (see [`crate::explain`]).

use super::Global;
use crate::project::{Closure, Project};
use std::io::Write;

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// The recipe to explain.
    #[arg(value_name = "NAME")]
    pub name: String,
}

pub fn run(g: &Global, a: &ExplainArgs) -> anyhow::Result<i32> {
    let project = g.project()?;
    let closure = project.closure(std::slice::from_ref(&a.name))?;
    if let Some(drv) = closure.get(&a.name) {
        let e = crate::explain::explain(project.store(), closure.derivations(), drv)?;
        writeln!(std::io::stdout().lock(), "{e}")?;
    }
    Ok(0)
}

/// `realize --explain`: the explanation of each derivation the realize will build, on stderr.
pub(crate) fn before_realize(project: &Project, closure: &Closure) -> anyhow::Result<()> {
    for (drv, valid) in closure.plan() {
        if !valid {
            let e = crate::explain::explain(project.store(), closure.derivations(), drv)?;
            say!("{e}");
        }
    }
    Ok(())
}
