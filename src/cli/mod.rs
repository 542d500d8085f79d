//! The command line: argument types (clap) and one module per subcommand.
//! `anyhow` lives here and nowhere below.

/// `eprintln!` that never panics: a closed stderr (`pybake realize 2>&1 | head`) must not turn
/// a finished build into a crash. What cannot be written is dropped.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

mod cache;
mod explain;
mod gc;
mod query;
mod realize;
mod run;
mod shell;
mod sources;
mod why_depends;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::action::SandboxUnavailable;
use crate::config::Config;
use crate::exit::Class;
use crate::fetch::FetchConfig;
use crate::project::{Project, ProjectError, Settings};
use crate::recipe::RecipeError;

/// Exit code for a build that failed.
pub const EXIT_BUILD_FAILED: i32 = 1;
/// Exit code for a user error: a bad recipe or bad arguments.
pub const EXIT_USER_ERROR: i32 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "pybake",
    version,
    about = "A declarative, content-addressed build system",
    long_about = "pybake builds recipes (one TOML file each, in --recipes DIR) into a content-addressed \
store (--store DIR). Every output's path is named by a hash of everything that can change it, so a \
second realize builds nothing and an edited recipe rebuilds exactly itself and its dependents.\n\n\
Exit codes: 0 success; 1 a build failed; 2 a user error (bad recipe, lockfile, configuration or \
arguments, or a pinned source whose hash does not match); 3 the environment (network, disk, \
permissions, an unreachable cache).",
    after_help = "Docs: docs/recipes.md (recipe format), docs/store.md (store layout), docs/debugging.md (explain, shell)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Args)]
pub struct Global {
    /// Directory of recipe files (*.toml).
    #[arg(long, global = true, env = "PYBAKE_RECIPES", default_value = "recipes")]
    pub recipes: PathBuf,
    /// The store: outputs, metadata, logs and fetched sources.
    #[arg(long, global = true, env = "PYBAKE_STORE", default_value = "cache")]
    pub store: PathBuf,
    /// The lockfile [default: lockfile.json beside the recipe directory].
    #[arg(long, global = true, env = "PYBAKE_LOCKFILE", value_name = "PATH")]
    pub lockfile: Option<PathBuf>,
    /// Never use the network: sources must already be in the store (see `pybake import`).
    /// PYBAKE_OFFLINE=1 (or true, yes, on) does the same.
    #[arg(long, global = true, env = "PYBAKE_OFFLINE", value_parser = clap::builder::FalseyValueParser::new())]
    pub offline: bool,
    /// A binary cache to substitute outputs from (repeatable; replaces the configured ones):
    /// file:///DIR, http(s)://HOST/PREFIX or s3://BUCKET/PREFIX?endpoint=URL&region=R.
    #[arg(long = "substituter", global = true, value_name = "URL")]
    pub substituters: Vec<String>,
    /// A public key (`name:base64`) whose signatures make cache entries trusted (repeatable;
    /// replaces the configured ones).
    #[arg(long = "trusted-public-key", global = true, value_name = "KEY")]
    pub trusted_public_keys: Vec<String>,
    /// Never substitute from binary caches: build everything that is not in the store.
    #[arg(long, global = true)]
    pub no_substitute: bool,
}

impl Global {
    pub fn lockfile_path(&self) -> PathBuf {
        self.lockfile
            .clone()
            .unwrap_or_else(|| self.project_dir().join("lockfile.json"))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build NAME... and everything they need; print each requested store path on stdout.
    ///
    /// Outputs already in the store are not built again. Progress goes to stderr. When no
    /// recipe file changed since the last realize of the same NAMEs, the recipes are not even
    /// read again (the evaluation cache, docs/store.md).
    Realize(realize::RealizeArgs),
    /// Show, in build order, what realizing NAME... would build, substitute and find cached.
    ///
    /// One line per output: `cached PATH`, `build  PATH`, or `substitute PATH (from URL)` when
    /// a configured binary cache has a trusted entry for it (the caches are asked as realize
    /// asks them; refused entries are warnings on stderr).
    Plan(query::Targets),
    /// Print the store path of each NAME (whether or not it is built yet).
    Path(query::Targets),
    /// Say why NAME's current derivation is not the one last built for it in this store.
    ///
    /// Prints "never built", "up to date", or each input that differs from the last build:
    /// `steps[N]` with the old and new text, `env.VAR`, a source's sha256, the version, the
    /// root or host, and for a dependency whose derivation changed, in one line, the chain down
    /// to the first recipe whose own inputs changed. See docs/debugging.md.
    Explain(explain::ExplainArgs),
    /// Print the build log of NAME's current derivation.
    Log(query::One),
    /// Print the dependency graph of NAME... (default: every recipe) as Graphviz DOT.
    Graph(query::MaybeTargets),
    /// Download every source of NAME...'s closure (default: all recipes) into the store.
    ///
    /// Nothing is built. Use it to prepare for --offline work or to warm a CI cache.
    Fetch(sources::FetchArgs),
    /// Add local files to the store under their sha256, so recipes pinning them never download.
    ///
    /// For firewalled machines: copy the files over by any means, `pybake import` them, then
    /// build with --offline. Prints each file's sha256 and size.
    Import(sources::ImportArgs),
    /// Write lockfile.json: every recipe's version, derivation hash and sources, and the
    /// toolchain versions with the constraints they satisfy.
    ///
    /// Fetches any source not yet in the store (to record its size). Without --update the whole
    /// file is regenerated; with --update NAME only NAME's entry changes.
    Lock(sources::LockArgs),
    /// Realize NAME, then run the command its recipe's `run` field gives, with ARGS.
    ///
    /// Example: `pybake run cpython-node -- -c 'print(1+1)'`. The command runs in your own
    /// environment (not the build sandbox) with `$out` set to the store path.
    Run(run::RunArgs),
    /// Enter NAME's build environment: a shell in the sandbox a build of NAME gets.
    ///
    /// The same root, environment variables, $src laid out and dependencies (realized first)
    /// at their /pybake/store paths, in a fresh build directory (/build, working directory
    /// /build/work), as the build user, so that the steps can be run by hand, as `nix develop`
    /// allows. With `-- CMD ARGS...` runs CMD there instead and exits with its status. The
    /// directory is removed on exit unless --keep; --keep-failed DIR enters the directory a
    /// failed `realize --keep-failed` kept. See docs/debugging.md.
    Shell(shell::ShellArgs),
    /// Realize NAME and serve its output over HTTP on loopback, with the headers a
    /// WebAssembly page needs (application/wasm, cross-origin isolation for SharedArrayBuffer).
    ///
    /// Prints the page's URL on stdout (python.html when the output has one).
    Serve(run::ServeArgs),
    /// Remove every output and source that no GC root needs; print what went and the total.
    ///
    /// `pybake realize` records its requested outputs as roots (see `pybake gc-root list`).
    /// Kept: each root's output, what it references at run time, and what it was built from
    /// (dependencies, build root and sources, transitively), so that changing a recipe rebuilds
    /// only that recipe; --runtime-only keeps the runtime closures alone. Also removed: outputs
    /// without valid metadata, logs of failed builds, leftover temporaries. gc waits for running
    /// realizes and never removes an output whose lock is held.
    Gc(gc::GcArgs),
    /// List, add or remove GC roots (the outputs `pybake gc` keeps).
    #[command(subcommand, name = "gc-root")]
    GcRoot(gc::GcRootCommand),
    /// Print the chain of references by which A's output depends on B's, one store path per
    /// line with, for each hop, the file that mentions the next.
    ///
    /// Exit code 1 if A does not depend on B at run time (it says when B is a build-time
    /// dependency only; --build follows build dependencies too).
    WhyDepends(why_depends::WhyDependsArgs),
    /// Print the content hash of a file (its sha256) or directory (canonical tree hash).
    ///
    /// This is the hash a `path` source or an output gets (docs/store.md).
    Hash(query::HashArgs),
    /// Binary caches: push outputs to one, verify one's entries (docs/binary-cache.md).
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Signing keys for binary caches.
    #[command(subcommand)]
    Key(cache::KeyCommand),
    /// Internal: runs an unsandboxed build step and kills whatever it leaves running.
    #[command(name = "__supervise", hide = true)]
    Supervise(SuperviseArgs),
}

#[derive(Debug, clap::Args)]
pub struct SuperviseArgs {
    /// The pybake process the step belongs to.
    parent: i32,
    /// The program and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<std::ffi::OsString>,
}

impl Global {
    /// The project these options name: recipes, store, lockfile, fetch settings.
    pub(crate) fn project(&self) -> anyhow::Result<Project> {
        Ok(Project::open(self.settings()?)?)
    }

    pub(crate) fn settings(&self) -> anyhow::Result<Settings> {
        let mut fetch = FetchConfig::from_env()?;
        fetch.offline |= self.offline;
        let lockfile = self.lockfile_path();
        let mut config = Config::load(self.project_dir())?;
        config.apply(
            &self.substituters,
            &self.trusted_public_keys,
            None,
            self.no_substitute,
        );
        Ok(Settings {
            recipes: self.recipes.clone(),
            store: self.store.clone(),
            lockfile,
            fetch,
            config,
        })
    }

    /// The project's directory: the one holding the recipe directory (and `pybake.toml`).
    pub(crate) fn project_dir(&self) -> &std::path::Path {
        self.recipes
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."))
    }
}

/// Runs the command; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    let result = match &cli.command {
        Command::Supervise(a) => {
            return crate::action::supervise::run(a.parent, &a.command[0], &a.command[1..])
        }
        Command::Realize(a) => realize::run(&cli.global, a),
        Command::Cache(c) => cache::run(&cli.global, c),
        Command::Key(k) => cache::key(k),
        Command::Plan(t) => query::plan(&cli.global, t),
        Command::Path(t) => query::path(&cli.global, t),
        Command::Log(o) => query::log(&cli.global, o),
        Command::Explain(a) => explain::run(&cli.global, a),
        Command::Graph(t) => query::graph(&cli.global, t),
        Command::Hash(h) => query::hash(&cli.global, h),
        Command::Gc(a) => gc::gc(&cli.global, a),
        Command::GcRoot(c) => gc::gc_root(&cli.global, c),
        Command::WhyDepends(a) => why_depends::why_depends(&cli.global, a),
        Command::Run(a) => run::run(&cli.global, a),
        Command::Shell(a) => shell::run(&cli.global, a),
        Command::Serve(a) => run::serve(&cli.global, a),
        Command::Fetch(a) => sources::fetch(&cli.global, a),
        Command::Import(a) => sources::import(&cli.global, a),
        Command::Lock(a) => sources::lock(&cli.global, a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            report(e.as_ref());
            exit_code(&e)
        }
    }
}

/// Prints an error and the causes its message does not already include.
pub fn report(e: &(dyn std::error::Error + 'static)) {
    let top = e.to_string();
    say!("error: {top}");
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !top.contains(&text) {
            say!("  caused by: {text}");
        }
        cause = c.source();
    }
    if let Some(at) = location_of(e) {
        // Read again for display only (lossily: the error may be that it is not UTF-8).
        if let Ok(bytes) = fs_err::read(&at.file) {
            eprint!(
                "{}",
                crate::recipe::snippet(&at, &String::from_utf8_lossy(&bytes))
            );
        }
    }
}

/// The place in a recipe file or the lockfile that an error is about, if any.
fn location_of(e: &(dyn std::error::Error + 'static)) -> Option<crate::recipe::Location> {
    if let Some(p) = e.downcast_ref::<ProjectError>() {
        return match p {
            ProjectError::Recipe(r) => r.location().cloned(),
            ProjectError::Lock(l) => l.location(),
            ProjectError::Toolchain(t) => Some(t.location().clone()),
            _ => None,
        };
    }
    if let Some(r) = e.downcast_ref::<RecipeError>() {
        return r.location().cloned();
    }
    if let Some(l) = e.downcast_ref::<crate::lock::LockError>() {
        return l.location();
    }
    e.downcast_ref::<crate::toolchain::ToolchainError>()
        .map(|t| t.location().clone())
}

/// The exit code of an error: the class of the first error in its chain that has one.
fn exit_code(e: &anyhow::Error) -> i32 {
    class_of(e).exit_code()
}

fn class_of(e: &anyhow::Error) -> Class {
    if let Some(p) = e.downcast_ref::<ProjectError>() {
        return p.class();
    }
    if let Some(b) = e.downcast_ref::<crate::action::BuildError>() {
        return b.class();
    }
    if let Some(f) = e.downcast_ref::<crate::fetch::FetchError>() {
        return f.class();
    }
    if let Some(r) = e.downcast_ref::<RecipeError>() {
        return r.class();
    }
    if e.downcast_ref::<crate::store::StoreError>().is_some()
        || e.downcast_ref::<std::io::Error>().is_some()
    {
        return Class::Environment;
    }
    if e.downcast_ref::<crate::toolchain::ToolchainError>()
        .is_some()
        || e.downcast_ref::<crate::lock::LockError>().is_some()
        || e.downcast_ref::<SandboxUnavailable>().is_some()
        || e.downcast_ref::<crate::action::RootNeedsSandbox>()
            .is_some()
        || e.downcast_ref::<UsageError>().is_some()
        || e.downcast_ref::<crate::fetch::ConfigError>().is_some()
        || e.downcast_ref::<crate::config::ConfigError>().is_some()
    {
        return Class::User;
    }
    Class::Build
}

/// A bad combination of arguments that clap cannot express.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub(crate) fn default_parallelism() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
