//! `pybake realize`: build what is missing and print store paths.

use std::io::Write;

use super::{default_parallelism, Context, Global, EXIT_BUILD_FAILED};
use crate::build::{Sandbox, SandboxMode};
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
    /// Keep the build directory of a failed build and print where it is.
    #[arg(long)]
    pub keep_failed: bool,
    /// Fail before building anything if the recipes and lockfile.json disagree (for CI).
    #[arg(long)]
    pub locked: bool,
    /// Print a JSON summary on stdout instead of store paths.
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

pub fn run(g: &Global, a: &RealizeArgs) -> anyhow::Result<i32> {
    let ctx = Context::load(g)?;
    if a.locked {
        super::sources::check_locked(&ctx, g, &a.names)?;
    }
    let drvs = ctx.derivations(&a.names)?;
    let reporter = progress::for_stderr();
    let needs_build = scheduler::plan(&ctx.store, &drvs, &a.names)
        .iter()
        .any(|(_, cached)| !cached);
    // Only decide (and warn about) the sandbox when something will actually run.
    let sandbox = if needs_build {
        let s = Sandbox::detect(a.sandbox)?;
        if let Sandbox::Off { why } = &s {
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
        fetch: super::sources::fetch_config(g),
    };
    let outcomes = scheduler::realize(&ctx.store, &sandbox, &drvs, &a.names, &opts, &*reporter);

    let failed: Vec<_> = outcomes.iter().filter_map(|o| o.error.as_ref()).collect();
    for e in &failed {
        super::report(*e);
    }
    let mut out = std::io::stdout().lock();
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
        serde_json::to_writer_pretty(&mut out, &summary)?;
        writeln!(out)?;
    } else {
        for name in &a.names {
            if let Some(o) = outcomes
                .iter()
                .find(|o| &o.name == name && matches!(o.status, Status::Built | Status::Cached))
            {
                writeln!(out, "{}", o.path.display())?;
            }
        }
    }
    if failed.is_empty() && outcomes.iter().all(|o| o.status != Status::Skipped) {
        Ok(0)
    } else if failed.iter().any(|e| e.is_user_error()) {
        Ok(super::EXIT_USER_ERROR)
    } else {
        Ok(EXIT_BUILD_FAILED)
    }
}
