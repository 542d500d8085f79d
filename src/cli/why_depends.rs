//! `pybake why-depends A B`: why A's output needs B's.

use std::io::Write;

use super::{Global, EXIT_BUILD_FAILED};
use crate::store::Edge;

#[derive(Debug, clap::Args)]
pub struct WhyDependsArgs {
    /// The recipe whose output depends (its current derivation, which must be in the store).
    #[arg(value_name = "A")]
    pub from: String,
    /// The recipe it depends on.
    #[arg(value_name = "B")]
    pub to: String,
    /// Follow build dependencies and build roots too, not only runtime references.
    #[arg(long)]
    pub build: bool,
}

pub fn why_depends(g: &Global, a: &WhyDependsArgs) -> anyhow::Result<i32> {
    let project = g.project()?;
    let closure = project.closure(&[a.from.clone(), a.to.clone()])?;
    let store = project.store();
    let name_of = |recipe: &str| {
        closure
            .get(recipe)
            .map(|d| d.store_name.clone())
            .ok_or_else(|| anyhow::anyhow!("`{recipe}` is not in the closure"))
    };
    let (from, to) = (name_of(&a.from)?, name_of(&a.to)?);
    if !store.is_valid(&from) {
        anyhow::bail!(
            "`{}` ({from}) is not in the store, so what it references is not known\n  hint: run `pybake realize {}` first",
            a.from,
            a.from
        );
    }
    let Some(hops) = store.dependency_path(&from, &to, a.build)? else {
        let mut msg = format!(
            "pybake: `{}` ({from}) does not depend on `{}` ({to}) {}",
            a.from,
            a.to,
            if a.build { "at all" } else { "at run time" }
        );
        if !a.build && store.dependency_path(&from, &to, true)?.is_some() {
            msg.push_str(&format!(
                "; it is a build-time dependency only\n  hint: `pybake why-depends --build {} {}` shows the chain",
                a.from, a.to
            ));
        }
        say!("{msg}");
        return Ok(EXIT_BUILD_FAILED);
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", store.path(&from).display())?;
    for hop in &hops {
        let how = match hop.edge {
            Edge::Reference => {
                let files = store.files_mentioning(&hop.from, &hop.to)?;
                match files.split_first() {
                    Some((first, [])) => format!("{first} mentions {}", hop.to),
                    Some((first, rest)) => format!(
                        "{first} mentions {} (and {} more file{})",
                        hop.to,
                        rest.len(),
                        if rest.len() == 1 { "" } else { "s" }
                    ),
                    None => format!(
                        "references {} (recorded when it was built; no file mentions it now)",
                        hop.to
                    ),
                }
            }
            Edge::BuildDep => format!("built with {} (build dependency)", hop.to),
            Edge::BuildRoot => format!("built on {} (build root)", hop.to),
        };
        writeln!(out, "  {how}")?;
        writeln!(out, "{}", store.path(&hop.to).display())?;
    }
    Ok(0)
}
