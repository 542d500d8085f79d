//! `pybake run` and `pybake serve`: use an output after realizing it.

use std::io::Write;
use std::path::PathBuf;

use super::{Global, UsageError};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The recipe whose output to run (it must have a `run` field).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Arguments passed on to the program (after `--`).
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The recipe whose output to serve.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Port to listen on (0: any free port).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: String,
}

/// Realizes `name` like `pybake realize` (progress on stderr) and returns its store path.
fn realize_one(g: &Global, name: &str) -> anyhow::Result<PathBuf> {
    let args = super::realize::RealizeArgs::for_one(name);
    let (code, paths) = super::realize::realize(g, &args)?;
    match paths.into_iter().next() {
        Some(p) if code == 0 => Ok(p),
        _ => Err(BuildFailed(name.to_string()).into()),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("`{0}` could not be realized (see above)")]
struct BuildFailed(String);

pub fn run(g: &Global, a: &RunArgs) -> anyhow::Result<i32> {
    let project = g.project()?;
    let recipe = project.recipe(&a.name)?;
    let Some(command) = recipe.run.clone() else {
        return Err(UsageError(format!(
            "recipe `{}` has no `run` field: add e.g. run = 'exec $out/bin/{} \"$@\"' to {}",
            a.name,
            a.name,
            recipe.file.display()
        ))
        .into());
    };
    let out = realize_one(g, &a.name)?;
    // The user's own environment (it is their terminal), plus $out; the command gets ARGS as "$@".
    let status = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(&command)
        .arg(format!("pybake-run-{}", a.name))
        .args(&a.args)
        .env("out", &out)
        .status()?;
    Ok(status.code().unwrap_or(super::EXIT_BUILD_FAILED))
}

pub fn serve(g: &Global, a: &ServeArgs) -> anyhow::Result<i32> {
    let out = realize_one(g, &a.name)?;
    let listener = std::net::TcpListener::bind((a.bind.as_str(), a.port))
        .map_err(|e| UsageError(format!("cannot listen on {}:{}: {e}", a.bind, a.port)))?;
    let addr = listener.local_addr()?;
    let page = if out.join("python.html").is_file() {
        "python.html"
    } else {
        ""
    };
    say!("pybake: serving {} (Ctrl-C to stop)", out.display());
    writeln!(std::io::stdout().lock(), "http://{addr}/{page}")?;
    crate::serve::serve(listener, out)?;
    Ok(0)
}
