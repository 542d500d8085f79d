//! The library's entry point: a project's recipes, store, lockfile and settings, loaded once,
//! with the derivations of a closure computed once, and the operations on top (plan, fetch,
//! lock, realize, check). The command line only parses arguments and prints what these return.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::build::{
    BuildError, Builder, Check, Place, RootNeedsSandbox, Sandbox, SandboxMode, SandboxUnavailable,
    Shell, ShellError,
};
use crate::derivation::{derive_all, Derivation};
use crate::exit::Class;
use crate::fetch::{self, FetchConfig, FetchError};
use crate::graph::Graph;
use crate::lock::{LockError, Lockfile};
use crate::progress::{Event, Reporter};
use crate::recipe::{Origin, Recipe, RecipeError, RecipeSet};
use crate::scheduler::{self, Outcome};
use crate::store::{Store, StoreError};
use crate::toolchain::{Pin, ToolchainError};

/// Why a project operation could not run. Build failures are not errors here: they are
/// outcomes ([`Realized`]).
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    #[error(transparent)]
    Toolchain(Box<ToolchainError>),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    SandboxUnavailable(#[from] SandboxUnavailable),
    #[error(transparent)]
    RootNeedsSandbox(#[from] RootNeedsSandbox),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Shell(#[from] ShellError),
}

impl From<ToolchainError> for ProjectError {
    fn from(e: ToolchainError) -> Self {
        ProjectError::Toolchain(Box::new(e))
    }
}

impl ProjectError {
    /// What kind of problem this is (see [`crate::exit`]).
    pub fn class(&self) -> Class {
        match self {
            ProjectError::Recipe(e) => e.class(),
            ProjectError::Toolchain(_)
            | ProjectError::SandboxUnavailable(_)
            | ProjectError::RootNeedsSandbox(_) => Class::User,
            ProjectError::Lock(e) => match e {
                LockError::Write { .. } => Class::Environment,
                _ => Class::User,
            },
            ProjectError::Store(_) => Class::Environment,
            ProjectError::Fetch(e) => e.class(),
            ProjectError::Shell(e) => e.class(),
        }
    }
}

/// Where a project lives and how it fetches.
#[derive(Debug, Clone)]
pub struct Settings {
    pub recipes: PathBuf,
    pub store: PathBuf,
    pub lockfile: PathBuf,
    pub fetch: FetchConfig,
}

pub struct Project {
    set: RecipeSet,
    store: Store,
    lockfile_path: PathBuf,
    /// The lockfile as read at open; `None` when it is missing or does not parse (it is
    /// optional unless `--locked` asks for it).
    lockfile: Option<Lockfile>,
    fetch: FetchConfig,
}

impl Project {
    /// Loads and checks the recipes, opens the store and reads the lockfile. The download
    /// sizes the lockfile records cap downloads.
    pub fn open(settings: Settings) -> Result<Self, ProjectError> {
        let set = RecipeSet::load(&settings.recipes)?;
        Graph::new(&set)?;
        let store = Store::open(&settings.store)?;
        let lockfile = Lockfile::read(&settings.lockfile).ok();
        let mut fetch = settings.fetch;
        if let Some(l) = &lockfile {
            fetch.expected_sizes = l.download_sizes();
        }
        Ok(Project {
            set,
            store,
            lockfile_path: settings.lockfile,
            lockfile,
            fetch,
        })
    }

    pub fn recipes(&self) -> &RecipeSet {
        &self.set
    }

    pub fn recipe(&self, name: &str) -> Result<&Recipe, ProjectError> {
        Ok(self.set.get(name)?)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn lockfile_path(&self) -> &Path {
        &self.lockfile_path
    }

    pub fn fetch_config(&self) -> &FetchConfig {
        &self.fetch
    }

    /// Every recipe's name, sorted.
    pub fn all(&self) -> Vec<String> {
        self.set.recipes.keys().cloned().collect()
    }

    /// `targets` and everything they need, hashed, with the toolchain constraints checked.
    pub fn closure(&self, targets: &[String]) -> Result<Closure<'_>, ProjectError> {
        let graph = Graph::new(&self.set)?;
        let order = graph.closure(targets)?;
        let drvs = derive_all(&order)?;
        let pins = crate::toolchain::check(&drvs)?;
        Ok(Closure {
            project: self,
            targets: targets.to_vec(),
            drvs,
            pins,
        })
    }
}

/// How a realize runs.
#[derive(Debug, Clone)]
pub struct RealizeOptions {
    /// Recipes built at once.
    pub jobs: usize,
    /// `PYBAKE_JOBS` inside each build.
    pub cores: usize,
    pub keep_going: bool,
    pub keep_failed: bool,
    /// Refuse to start when the recipes drifted from the lockfile.
    pub locked: bool,
    /// Rebuild the targets afterwards and compare with the stored outputs.
    pub check: bool,
    pub sandbox: SandboxMode,
    /// Record the targets' outputs as GC roots of this project (`--no-root` turns it off).
    pub gc_root: bool,
}

/// What a realize did.
pub struct Realized {
    /// Every derivation the run needed, in build order.
    pub outcomes: Vec<Outcome>,
    /// With [`RealizeOptions::check`] and no failure: each target's rebuild compared.
    pub checks: Vec<(String, Result<Check, BuildError>)>,
}

impl Realized {
    /// Whether every needed derivation is in the store.
    pub fn all_ok(&self) -> bool {
        self.outcomes.iter().all(|o| o.error.is_none())
            && self
                .outcomes
                .iter()
                .all(|o| o.status != crate::progress::Status::Skipped)
    }
}

/// The derivations of a set of targets' closure, in build order.
pub struct Closure<'p> {
    project: &'p Project,
    targets: Vec<String>,
    drvs: Vec<Derivation<'p>>,
    pins: Vec<Pin>,
}

impl<'p> Closure<'p> {
    pub fn derivations(&self) -> &[Derivation<'p>] {
        &self.drvs
    }

    pub fn targets(&self) -> &[String] {
        &self.targets
    }

    /// The derivation of `name`, which must be in the closure.
    pub fn get(&self, name: &str) -> Option<&Derivation<'p>> {
        self.drvs.iter().find(|d| d.recipe.name == name)
    }

    /// Each needed derivation with whether it is valid in the store, in build order. A valid
    /// output needs nothing below it, as in Nix.
    pub fn plan(&self) -> Vec<(&Derivation<'p>, bool)> {
        scheduler::plan(&self.project.store, &self.drvs, &self.targets)
    }

    /// Lockfile entries for the closure, as the recipes give them now.
    pub fn lock_entries(&self) -> Lockfile {
        let sources = self.project.store.sources_dir();
        let size_of = |h: &crate::hash::SourceHash| {
            fetch::stored(&sources, h)
                .and_then(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
        };
        Lockfile::from_derivations(&self.project.set.dir, &self.drvs, &self.pins, &size_of)
    }

    /// Fails when the recipes of the closure drifted from the lockfile (`--locked`).
    pub fn check_locked(&self) -> Result<(), ProjectError> {
        let path = self.project.lockfile_path.clone();
        let locked = match &self.project.lockfile {
            Some(l) => l.clone(),
            // Read again for the error that says why it is unusable.
            None => Lockfile::read(&path)?,
        };
        let drift = locked.drift(&self.lock_entries());
        if drift.is_empty() {
            Ok(())
        } else {
            Err(LockError::Drift { path, drift }.into())
        }
    }

    /// Makes sure every downloaded source of the closure is in the store. With `tolerate`, a
    /// source that cannot be fetched is reported and skipped; returns the number in the store
    /// and the failures.
    pub fn fetch_sources(
        &self,
        cfg: &FetchConfig,
        tolerate: bool,
        reporter: &dyn Reporter,
    ) -> Result<(usize, Vec<FetchError>), ProjectError> {
        let store = &self.project.store;
        let (mut ok, mut failed) = (0, Vec::new());
        for d in &self.drvs {
            for (s, h) in d.recipe.sources.iter().zip(&d.source_hashes) {
                let Origin::Url { urls, .. } = &s.origin else {
                    continue;
                };
                let src = fetch::Source {
                    recipe: &d.recipe.name,
                    urls,
                    sha256: *h,
                };
                match fetch::fetch(cfg, &store.sources_dir(), &store.tmp_dir(), &src, reporter) {
                    Ok(_) => ok += 1,
                    Err(e) if tolerate => failed.push(e),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok((ok, failed))
    }

    /// Builds what the targets need and is not in the store; with `check`, rebuilds the
    /// targets and compares.
    pub fn realize(
        &self,
        opts: &RealizeOptions,
        reporter: &dyn Reporter,
    ) -> Result<Realized, ProjectError> {
        let store = &self.project.store;
        if opts.locked {
            self.check_locked()?;
        }
        // Held to the end, so that gc never removes what this run found valid or built.
        let _gc = store.lock_for_realize(|| {
            reporter.report(Event::Note("waiting for a running `pybake gc` to finish"))
        })?;
        // Temporaries of killed pybakes; the locks they hold tell live ones apart.
        for e in store.remove_orphans().errors {
            reporter.report(Event::Warning(&format!(
                "cannot remove a leftover temporary: {e}"
            )));
        }
        let will_run: Vec<&Recipe> = self
            .plan()
            .iter()
            .filter(|(d, valid)| !valid && !d.recipe.steps.is_empty())
            .map(|(d, _)| d.recipe)
            .collect();
        let sandbox = if will_run.is_empty() && !opts.check {
            // Nothing runs: no need to probe bubblewrap (or warn about it).
            Sandbox::Off {
                why: "nothing runs".into(),
            }
        } else {
            self.decide_sandbox(opts.sandbox, &will_run, reporter)?
        };
        let sched = scheduler::Options {
            jobs: opts.jobs.max(1),
            cores: opts.cores.max(1),
            keep_going: opts.keep_going,
            keep_failed: opts.keep_failed,
            fetch: self.project.fetch.clone(),
        };
        let outcomes =
            scheduler::realize(store, &sandbox, &self.drvs, &self.targets, &sched, reporter);
        let mut realized = Realized {
            outcomes,
            checks: Vec::new(),
        };
        if opts.check && realized.all_ok() {
            for name in &self.targets {
                let c = scheduler::check(store, &sandbox, &self.drvs, name, &sched, reporter);
                realized.checks.push((name.clone(), c));
            }
        }
        if opts.gc_root {
            record_gc_roots(self, reporter);
        }
        Ok(realized)
    }

    fn decide_sandbox(
        &self,
        mode: SandboxMode,
        will_run: &[&Recipe],
        reporter: &dyn Reporter,
    ) -> Result<Sandbox, ProjectError> {
        let s = Sandbox::detect(mode)?;
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
            if mode == SandboxMode::Auto {
                reporter.report(Event::Warning(&format!(
                    "{why}; builds run without network isolation and see host paths \
                     (install the Debian package `bubblewrap` to isolate them)"
                )));
            }
        }
        Ok(s)
    }
}

/// The requested store paths of a realize that exist, in the order requested.
pub fn requested_paths(closure: &Closure, realized: &Realized) -> Vec<PathBuf> {
    let by_name: BTreeMap<&str, &Outcome> = realized
        .outcomes
        .iter()
        .map(|o| (o.name.as_str(), o))
        .collect();
    closure
        .targets()
        .iter()
        .filter_map(|n| by_name.get(n.as_str()))
        .filter(|o| o.error.is_none() && o.status != crate::progress::Status::Skipped)
        .filter(|o| o.status != crate::progress::Status::Failed)
        .map(|o| o.path.clone())
        .collect()
}

/// Records each target whose output is valid as a GC root of the project (docs/store.md,
/// "Roots and garbage collection"). A root that cannot be written is a warning: the outputs are
/// there, only a later gc could remove them.
fn record_gc_roots(closure: &Closure, reporter: &dyn Reporter) {
    let store = &closure.project.store;
    for name in &closure.targets {
        let Some(d) = closure.get(name).filter(|d| store.is_valid(&d.store_name)) else {
            continue;
        };
        if let Err(e) = store.add_gc_root(&closure.project.set.dir, name, &d.store_name) {
            reporter.report(Event::Warning(&format!(
                "cannot record {} as the GC root of `{name}`, so `pybake gc` may remove it: {e}",
                d.store_name
            )));
        }
    }
}

/// How `pybake shell` prepares its build environment.
#[derive(Debug, Clone)]
pub struct ShellOptions {
    pub sandbox: SandboxMode,
    /// `PYBAKE_JOBS` in the shell.
    pub cores: usize,
    pub place: Place,
}

impl Closure<'_> {
    /// `name`'s build environment for `pybake shell`: its directory prepared at `opts.place`,
    /// in the sandbox a build of it would get. `name` must be a target of this closure, and its
    /// dependencies (and root) in the store: realize them first.
    pub fn shell(
        &self,
        name: &str,
        opts: &ShellOptions,
        reporter: &dyn Reporter,
    ) -> Result<Shell, ProjectError> {
        let Some(drv) = self.get(name) else {
            return Err(RecipeError::UnknownRecipe {
                name: name.to_string(),
                dir: self.project.set.dir.clone(),
                hint: " (among the targets of this closure)".into(),
            }
            .into());
        };
        // A shell runs something even for a recipe without steps.
        let sandbox = self.decide_sandbox(opts.sandbox, &[drv.recipe], reporter)?;
        let store = &self.project.store;
        let job = scheduler::job_for(store, &self.drvs, name)?;
        let cancel = std::sync::atomic::AtomicBool::new(false);
        let builder = Builder {
            store,
            sandbox: &sandbox,
            fetch: &self.project.fetch,
            jobs: opts.cores.max(1),
            keep_failed: false,
            cancel: &cancel,
            reporter,
        };
        Ok(builder.shell(&job, opts.place.clone())?)
    }
}
