//! `pybake realize`: build what is missing and print store paths.

use std::io::Write;

use super::{default_parallelism, Global, EXIT_BUILD_FAILED};
use crate::action::{BuildError, Check, SandboxMode};
use crate::exit::Class;
use crate::progress::{self, Status};
use crate::project::{self, requested_paths, Project, RealizeOptions, Realized};

#[derive(Debug, clap::Args)]
pub struct RealizeArgs {
    /// Recipes to realize.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    /// Build up to N recipes at once [default: the number of cores]. `-j 0` builds nothing
    /// locally: what cannot be substituted from a binary cache fails, saying so.
    #[arg(short = 'j', long, value_name = "N")]
    pub jobs: Option<usize>,
    /// The value of PYBAKE_JOBS inside each build (for `make -j`) [default: the number of cores].
    #[arg(long, value_name = "N")]
    pub cores: Option<usize>,
    /// After a failure, go on building everything that does not depend on it.
    #[arg(long)]
    pub keep_going: bool,
    /// Keep the build directory of a failed build (and, with --check, the rebuilt output that
    /// differs) and print where it is.
    #[arg(long)]
    pub keep_failed: bool,
    /// Fail before building anything if the recipes and lockfile.json disagree (for CI).
    #[arg(long)]
    pub locked: bool,
    /// Build NAME... again although they are in the store, and report whether the new output
    /// is identical to the stored one (or which files differ). Exit code 1 if any differs.
    #[arg(long)]
    pub check: bool,
    /// Print a JSON summary on stdout instead of store paths:
    /// `{"results": [{"name", "path", "status", "seconds"}]}` for every recipe the run needed,
    /// with status `built`, `substituted` (downloaded from a binary cache and verified),
    /// `cached`, `failed` or `skipped` (a dependency failed, or the run stopped at another
    /// failure).
    #[arg(long)]
    pub json: bool,
    /// Before building, say for each derivation to build why it is not the one built last time
    /// (as `pybake explain NAME` does), on stderr.
    #[arg(long)]
    pub explain: bool,
    /// Isolation of build steps: a sandbox when bubblewrap works (auto), always (on), never
    /// (off). As root pybake sets the sandbox up itself, as bubblewrap would
    /// (`PYBAKE_SANDBOX_IMPL=bubblewrap`: bubblewrap does); docs/recipes.md, "The sandbox".
    #[arg(long, value_enum, env = "PYBAKE_SANDBOX", default_value = "auto")]
    pub sandbox: SandboxMode,
    /// Do not record NAME... as GC roots. By default each requested output becomes the root of
    /// its recipe in this project (replacing the root of an earlier version), which `pybake gc`
    /// keeps with everything it needs.
    #[arg(long)]
    pub no_root: bool,
    #[command(flatten)]
    pub push: super::cache::PushArgs,
}

#[derive(serde::Serialize)]
struct Summary {
    results: Vec<SummaryRow>,
}

#[derive(serde::Serialize)]
struct SummaryRow {
    name: String,
    path: String,
    status: Status,
    seconds: f64,
}

impl RealizeArgs {
    /// The defaults, for commands that realize one recipe before using it.
    pub fn for_one(name: &str) -> Self {
        RealizeArgs {
            names: vec![name.to_string()],
            jobs: None,
            cores: None,
            keep_going: false,
            keep_failed: false,
            locked: false,
            check: false,
            json: false,
            explain: false,
            sandbox: std::env::var("PYBAKE_SANDBOX")
                .ok()
                .and_then(|v| clap::ValueEnum::from_str(&v, true).ok())
                .unwrap_or(SandboxMode::Auto),
            // What `run` and `serve` use stays until they are done with it, and after.
            no_root: false,
            push: Default::default(),
        }
    }
}

impl RealizeArgs {
    /// Whether the evaluation cache may answer (`crate::eval_cache`): not for what needs the
    /// evaluated derivations (a check, explanations, the JSON summary's, the lockfile
    /// comparison, an upload) or could fail without them (`-j 0` with nothing to substitute).
    fn may_skip_evaluation(&self) -> bool {
        !(self.check
            || self.explain
            || self.json
            || self.locked
            || self.push.push.is_some()
            || self.jobs == Some(0))
    }

    fn options(&self) -> RealizeOptions {
        RealizeOptions {
            jobs: self.jobs.unwrap_or_else(default_parallelism),
            cores: self.cores.unwrap_or_else(default_parallelism),
            keep_going: self.keep_going,
            keep_failed: self.keep_failed,
            locked: self.locked,
            check: self.check,
            sandbox: self.sandbox,
            gc_root: !self.no_root,
            build_locally: self.jobs != Some(0),
        }
    }
}

pub fn run(g: &Global, a: &RealizeArgs) -> anyhow::Result<i32> {
    let (code, paths) = realize(g, a)?;
    if !a.json {
        let mut out = std::io::stdout().lock();
        for p in paths {
            writeln!(out, "{}", p.display())?;
        }
    }
    Ok(code)
}

/// Realizes `a.names`; returns the exit code and the requested store paths that exist.
pub(crate) fn realize(
    g: &Global,
    a: &RealizeArgs,
) -> anyhow::Result<(i32, Vec<std::path::PathBuf>)> {
    let settings = g.settings()?;
    if a.may_skip_evaluation() {
        let reporter = progress::for_stderr();
        if let Some((realized, paths)) =
            project::realize_unchanged(&settings, &a.names, !a.no_root, &*reporter)?
        {
            print_summary(&realized);
            return Ok((0, paths));
        }
    }
    let project = Project::open(settings)?;
    let result = realize_in(&project, a);
    // Freeing a large graph's recipes one allocation at a time costs more than what is left of
    // a no-op realize; the process ends soon after, and the project holds no lock or temporary.
    std::mem::forget(project);
    result
}

/// [`realize`] in a project that is open already.
pub(crate) fn realize_in(
    project: &Project,
    a: &RealizeArgs,
) -> anyhow::Result<(i32, Vec<std::path::PathBuf>)> {
    let closure = project.closure(&a.names)?;
    if a.explain {
        super::explain::before_realize(project, &closure)?;
    }
    let reporter = progress::for_stderr();
    let realized = closure.realize(&a.options(), &*reporter)?;

    let failed: Vec<_> = realized
        .outcomes
        .iter()
        .filter_map(|o| o.error.as_ref())
        .collect();
    for e in &failed {
        super::report(*e);
    }
    if a.json {
        let summary = Summary {
            results: realized
                .outcomes
                .iter()
                .map(|o| SummaryRow {
                    name: o.name.clone(),
                    path: o.path.display().to_string(),
                    status: o.status,
                    seconds: (o.seconds * 1000.0).round() / 1000.0,
                })
                .collect(),
        };
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &summary)?;
        writeln!(out)?;
    }
    print_summary(&realized);
    let paths = requested_paths(&closure, &realized);
    let code = if !realized.all_ok() {
        // The most telling cause among the failures: the user's, then the environment's, then
        // a failed build.
        let classes: Vec<Class> = failed.iter().map(|e| e.class()).collect();
        [Class::User, Class::Environment, Class::Build]
            .into_iter()
            .find(|c| classes.contains(c))
            .unwrap_or(Class::Build)
            .exit_code()
    } else {
        print_checks(&realized.checks)
    };
    // `--push CACHE`: what the run realized (its targets' runtime closures, their build logs
    // and the sources of the closure) goes to the cache; a failed upload fails the command.
    let code = match &a.push.push {
        Some(cache) if code == 0 => {
            super::cache::push_closure(project, &closure, cache, &a.push, &*reporter)?
        }
        _ => code,
    };
    // As for the project (see `realize`): the derivations are not freed one by one.
    std::mem::forget(closure);
    Ok((code, paths))
}

fn print_summary(realized: &Realized) {
    let rows: Vec<(&str, Status, f64)> = realized
        .outcomes
        .iter()
        .map(|o| (o.name.as_str(), o.status, o.seconds))
        .collect();
    for line in progress::summary(&rows) {
        say!("pybake: {line}");
    }
}

/// `--check`: reports each comparison on stderr; 1 if any differs or could not be rebuilt.
fn print_checks(checks: &[(String, Result<Check, BuildError>)]) -> i32 {
    let mut code = 0;
    for (name, c) in checks {
        match c {
            Ok(c) if c.differences.is_empty() => {
                say!("pybake: check {name}: identical ({})", c.output_hash);
            }
            Ok(c) => {
                code = EXIT_BUILD_FAILED;
                say!(
                    "pybake: check {name}: NOT reproducible: {} path(s) differ from the stored output:",
                    c.differences.len()
                );
                for d in c.differences.iter().take(50) {
                    say!("  {d}");
                }
                match &c.kept {
                    Some(k) => say!("  the rebuilt output is kept at {}", k.display()),
                    None => {
                        say!("  (add --keep-failed to keep the rebuilt output for comparison)")
                    }
                }
            }
            Err(e) => {
                code = EXIT_BUILD_FAILED;
                super::report(e);
            }
        }
    }
    code
}
