//! `pybake realize`: build what is missing and print store paths.

use std::io::Write;

use super::{default_parallelism, Context, Global, EXIT_BUILD_FAILED};
use crate::build::{RootNeedsSandbox, Sandbox, SandboxMode};
use crate::progress;
use crate::scheduler::{self, Options, Status};

#[derive(Debug, clap::Args)]
pub struct RealizeArgs {
    /// Recipes to realize.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    /// Build up to N recipes at once [default: the number of cores].
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
    /// with status `built`, `cached`, `failed` or `skipped` (a dependency failed, or the run
    /// stopped at another failure).
    #[arg(long)]
    pub json: bool,
    /// Isolation of build steps: bubblewrap when it works (auto), always (on), never (off).
    #[arg(long, value_enum, env = "PYBAKE_SANDBOX", default_value = "auto")]
    pub sandbox: SandboxMode,
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
            sandbox: std::env::var("PYBAKE_SANDBOX")
                .ok()
                .and_then(|v| clap::ValueEnum::from_str(&v, true).ok())
                .unwrap_or(SandboxMode::Auto),
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
    let ctx = Context::load(g)?;
    if a.locked {
        super::sources::check_locked(&ctx, g, &a.names)?;
    }
    let drvs = ctx.derivations(&a.names)?;
    let reporter = progress::for_stderr();
    // Temporaries of killed pybakes; the locks they hold tell live ones apart.
    for e in ctx.store.remove_orphans().errors {
        reporter.note(&format!("warning: cannot remove a leftover temporary: {e}"));
    }
    let plan = scheduler::plan(&ctx.store, &drvs, &a.names);
    let will_run: Vec<&crate::recipe::Recipe> = plan
        .iter()
        .filter(|(d, cached)| !cached && !d.recipe.steps.is_empty())
        .map(|(d, _)| d.recipe)
        .collect();
    // Only decide (and warn about) the sandbox when something will actually run.
    let sandbox = if !will_run.is_empty() {
        let s = Sandbox::detect(a.sandbox)?;
        if let Sandbox::Off { why } = &s {
            let rooted: Vec<String> = will_run
                .iter()
                .filter(|r| r.root.is_some())
                .map(|r| r.name.clone())
                .collect();
            if !rooted.is_empty() {
                return Err(RootNeedsSandbox {
                    recipes: rooted,
                    why: why.clone(),
                }
                .into());
            }
            if a.sandbox == SandboxMode::Auto {
                reporter.note(&format!(
                    "warning: {why}; builds run without network isolation and see host paths \
                     (install the Debian package `bubblewrap` to isolate them)"
                ));
            }
        }
        s
    } else {
        Sandbox::Off {
            why: "nothing to build".into(),
        }
    };
    let opts = Options {
        jobs: a.jobs.unwrap_or_else(default_parallelism).max(1),
        cores: a.cores.unwrap_or_else(default_parallelism).max(1),
        keep_going: a.keep_going,
        keep_failed: a.keep_failed,
        fetch: super::sources::fetch_config(g)?,
    };
    let outcomes = scheduler::realize(&ctx.store, &sandbox, &drvs, &a.names, &opts, &*reporter);

    let failed: Vec<_> = outcomes.iter().filter_map(|o| o.error.as_ref()).collect();
    for e in &failed {
        super::report(*e);
    }
    if a.json {
        let summary = Summary {
            results: outcomes
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
    let paths: Vec<std::path::PathBuf> = a
        .names
        .iter()
        .filter_map(|name| {
            outcomes
                .iter()
                .find(|o| &o.name == name && matches!(o.status, Status::Built | Status::Cached))
                .map(|o| o.path.clone())
        })
        .collect();
    let all_ok = failed.is_empty() && outcomes.iter().all(|o| o.status != Status::Skipped);
    let code = if all_ok && a.check {
        check(
            &ctx,
            &sandbox_for_check(a, &sandbox)?,
            &drvs,
            a,
            &opts,
            &*reporter,
        )?
    } else if all_ok {
        0
    } else if failed.iter().any(|e| e.is_user_error()) {
        super::EXIT_USER_ERROR
    } else {
        EXIT_BUILD_FAILED
    };
    Ok((code, paths))
}

/// The sandbox decision was skipped when nothing needed building; a check always builds.
fn sandbox_for_check(a: &RealizeArgs, decided: &Sandbox) -> anyhow::Result<Sandbox> {
    match decided {
        Sandbox::Off { why } if why == "nothing to build" => Ok(Sandbox::detect(a.sandbox)?),
        s => Ok(s.clone()),
    }
}

/// `--check`: rebuild each target and compare; report on stderr, exit 1 if any differs.
fn check(
    ctx: &Context,
    sandbox: &Sandbox,
    drvs: &[crate::derivation::Derivation],
    a: &RealizeArgs,
    opts: &Options,
    reporter: &dyn progress::Reporter,
) -> anyhow::Result<i32> {
    let mut code = 0;
    for name in &a.names {
        let c = scheduler::check(&ctx.store, sandbox, drvs, name, opts, reporter);
        match c {
            Ok(c) if c.differences.is_empty() => {
                eprintln!("pybake: check {name}: identical ({})", c.output_hash);
            }
            Ok(c) => {
                code = EXIT_BUILD_FAILED;
                eprintln!(
                    "pybake: check {name}: NOT reproducible: {} path(s) differ from the stored output:",
                    c.differences.len()
                );
                for d in c.differences.iter().take(50) {
                    eprintln!("  {d}");
                }
                match &c.kept {
                    Some(k) => eprintln!("  the rebuilt output is kept at {}", k.display()),
                    None => {
                        eprintln!("  (add --keep-failed to keep the rebuilt output for comparison)")
                    }
                }
            }
            Err(e) => {
                code = EXIT_BUILD_FAILED;
                super::report(&e);
            }
        }
    }
    Ok(code)
}
