//! `pybake gc` and `pybake gc-root`: garbage collection and the roots it keeps.

use std::io::Write;
use std::path::Path;

use super::{Global, EXIT_BUILD_FAILED};
use crate::store::{Garbage, GarbageKind, Store};

#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// List what would be removed, with sizes and a total; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep only the runtime closures of the roots: their outputs and what these reference.
    /// Build-time dependencies (compilers, build roots) and sources go too, so rebuilding
    /// anything later starts from downloads.
    #[arg(long)]
    pub runtime_only: bool,
    /// Fail at once if a realize is running on the store, instead of waiting for it.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum GcRootCommand {
    /// List the roots of every project using the store: recipe, store path, project.
    List,
    /// Make the current output of each NAME a root of this project (it must be in the store).
    Add(super::query::Targets),
    /// Remove this project's root of each NAME; `pybake gc` may then remove its output.
    Remove(super::query::Targets),
}

fn open_store(g: &Global) -> anyhow::Result<Store> {
    Ok(Store::open(&g.store)?)
}

pub fn gc(g: &Global, a: &GcArgs) -> anyhow::Result<i32> {
    let store = open_store(g)?;
    let guard = store.lock_for_gc(!a.no_wait, || {
        say!(
            "pybake: waiting for running realizes on this store to finish (gc never runs beside \
             one; --no-wait fails instead)"
        )
    })?;
    let plan = store.plan_gc(&guard, a.runtime_only)?;
    let verb = if a.dry_run {
        "would remove"
    } else {
        "removing"
    };
    for r in &plan.stale_roots {
        say!(
            "pybake: {verb} the GC root of `{}` ({}): its project {} is gone",
            r.recipe,
            r.store_name,
            r.project.display()
        );
    }
    let complete = |g: &Garbage| matches!(g.kind, GarbageKind::Output { complete: true, .. });
    if plan.roots.is_empty() && plan.outputs.iter().any(complete) {
        // A store filled before realize recorded roots has none: say why everything goes.
        say!(
            "pybake: warning: this store has no GC roots, so every output {}; `pybake realize` \
             records roots (outputs realized by older versions of pybake have none): realize, or \
             `pybake gc-root add`, what you want to keep first",
            if a.dry_run { "would go" } else { "goes" }
        );
    }
    let mut out = std::io::stdout().lock();
    if a.dry_run {
        for item in plan
            .outputs
            .iter()
            .chain(&plan.sources)
            .chain(&plan.other_files)
        {
            writeln!(out, "{}", line(item))?;
        }
        let counts = Counts::of(&plan.outputs, &plan.sources, &plan.other_files);
        writeln!(out, "would free {}: {counts}", human(plan.size()))?;
        return Ok(0);
    }
    let mut failed = None;
    let report = store.collect_garbage(&guard, &plan, |item| {
        if let Err(e) = writeln!(out, "{}", line(item)) {
            failed.get_or_insert(e);
        }
    });
    if let Some(e) = failed {
        return Err(e.into());
    }
    for name in &report.in_use {
        say!("pybake: keeping {name}: its output lock is held (a build or upload uses it)");
    }
    for e in &report.errors {
        super::report(e);
    }
    let split = |k: fn(&Garbage) -> bool| -> Vec<Garbage> {
        report.removed.iter().filter(|g| k(g)).cloned().collect()
    };
    let counts = Counts::of(
        &split(|g| matches!(g.kind, GarbageKind::Output { .. })),
        &split(|g| matches!(g.kind, GarbageKind::Source(_))),
        &split(|g| matches!(g.kind, GarbageKind::File(_))),
    );
    let temps = match report.temporaries {
        0 => String::new(),
        1 => ", 1 leftover temporary".into(),
        n => format!(", {n} leftover temporaries"),
    };
    writeln!(out, "freed {}: {counts}{temps}", human(report.size()))?;
    Ok(if report.errors.is_empty() {
        0
    } else {
        EXIT_BUILD_FAILED
    })
}

/// What a summary counts.
struct Counts {
    outputs: usize,
    sources: usize,
    files: usize,
}

impl Counts {
    fn of(outputs: &[Garbage], sources: &[Garbage], files: &[Garbage]) -> Self {
        Counts {
            outputs: outputs.len(),
            sources: sources.len(),
            files: files.len(),
        }
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        write!(
            f,
            "{}, {}",
            n(self.outputs, "output", "outputs"),
            n(self.sources, "source", "sources")
        )?;
        if self.files > 0 {
            write!(f, ", {}", n(self.files, "other file", "other files"))?;
        }
        Ok(())
    }
}

/// `<size>  <path>`, sizes aligned, with a note for an incomplete output.
fn line(item: &Garbage) -> String {
    let note = match &item.kind {
        GarbageKind::Output {
            complete: false, ..
        } => "  (incomplete: no valid metadata)",
        _ => "",
    };
    format!("{:>10}  {}{note}", human(item.size), item.path.display())
}

/// Bytes in binary units with one decimal (`97.7 KiB`), plain below 1 KiB.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

pub fn gc_root(g: &Global, c: &GcRootCommand) -> anyhow::Result<i32> {
    match c {
        GcRootCommand::List => {
            let store = open_store(g)?;
            let mut out = std::io::stdout().lock();
            for r in store.gc_roots()? {
                let mut notes = String::new();
                if !store.is_valid(&r.store_name) {
                    notes.push_str("  [not in the store]");
                }
                if r.project_gone() {
                    notes.push_str("  [project gone: the next gc removes this root]");
                }
                writeln!(
                    out,
                    "{} {}  ({}){notes}",
                    r.recipe,
                    store.path(&r.store_name).display(),
                    r.project.display()
                )?;
            }
            Ok(0)
        }
        GcRootCommand::Add(t) => {
            let project = g.project()?;
            let closure = project.closure(&t.names)?;
            let store = project.store();
            for name in &t.names {
                let Some(d) = closure.get(name) else { continue };
                if !store.is_valid(&d.store_name) {
                    anyhow::bail!(
                        "`{name}` ({}) is not in the store, so it cannot be a GC root\n  hint: run `pybake realize {name}`, which also records it as a root",
                        d.store_name
                    );
                }
                store.add_gc_root(&project.recipes().dir, name, &d.store_name)?;
            }
            Ok(0)
        }
        GcRootCommand::Remove(t) => {
            let store = open_store(g)?;
            for name in &t.names {
                if !store.remove_gc_root(Path::new(&g.recipes), name)? {
                    say!("pybake: `{name}` had no GC root in this project");
                }
            }
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1024), "1.0 KiB");
        assert_eq!(human(100_000), "97.7 KiB");
        assert_eq!(human(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }

    #[test]
    fn plan_summary_counts() {
        let plan = crate::store::GcPlan::default();
        let c = Counts::of(&plan.outputs, &plan.sources, &plan.other_files);
        assert_eq!(c.to_string(), "0 outputs, 0 sources");
    }
}
