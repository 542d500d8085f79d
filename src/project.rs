//! The library's entry point: a project's recipes, store, lockfile and settings, loaded once,
//! with the derivations of a closure computed once, and the operations on top (plan, fetch,
//! lock, realize, check). The command line only parses arguments and prints what these return.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::action::{
    BuildError, Builder, Check, Place, RootNeedsSandbox, Sandbox, SandboxMode, SandboxUnavailable,
    Shell, ShellError,
};
use crate::cache::keys::{PublicKey, TrustedKeys};
use crate::cache::substitute::{Candidate, Substituters};
use crate::config::Config;
use crate::derivation::{derive_all, Derivation};
use crate::eval_cache;
use crate::exit::Class;
use crate::fetch::{self, FetchConfig, FetchError};
use crate::graph::Graph;
use crate::lock::{LockError, Lockfile};
use crate::progress::Status;
use crate::progress::{Event, Reporter};
use crate::recipe::{Origin, Recipe, RecipeError, RecipeSet};
use crate::scheduler::{self, Outcome};
use crate::store::StoreName;
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
    #[error("trusted public key {key:?} is not usable: {source}\n  hint: a public key is `name:base64`, as `pybake key generate` prints it")]
    TrustedKey {
        key: String,
        #[source]
        source: crate::cache::keys::KeyError,
    },
    #[error("-j 0 builds nothing locally, but {} cannot be substituted from the configured caches{}", names.join(", "), if *any_cache { "" } else { " (none is configured: see --substituter)" })]
    NothingToSubstitute { names: Vec<String>, any_cache: bool },
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
            ProjectError::TrustedKey { .. } => Class::User,
            ProjectError::NothingToSubstitute { .. } => Class::Environment,
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
    /// Substituters and keys (docs/config.md), flags already applied.
    pub config: Config,
}

pub struct Project {
    set: RecipeSet,
    store: Store,
    lockfile_path: PathBuf,
    /// The lockfile as read at open; `None` when it is missing or does not parse (it is
    /// optional unless `--locked` asks for it).
    lockfile: Option<Lockfile>,
    fetch: FetchConfig,
    config: Config,
    /// When loading began, for the evaluation cache.
    started: eval_cache::Start,
}

impl Project {
    /// Loads and checks the recipes, opens the store and reads the lockfile. The download
    /// sizes the lockfile records cap downloads.
    pub fn open(settings: Settings) -> Result<Self, ProjectError> {
        let started = eval_cache::Start::now();
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
            config: settings.config,
            started,
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

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The configured binary caches to substitute from, opened (none with `--no-substitute`).
    pub fn substituters(&self, reporter: &dyn Reporter) -> Result<Substituters, ProjectError> {
        // Offline, only caches on this machine's file system are asked.
        let usable: Vec<crate::config::Substituter> = self
            .config
            .substituters
            .iter()
            .filter(|s| !self.fetch.offline || s.url.starts_with("file://"))
            .cloned()
            .collect();
        if !self.config.substitute || usable.is_empty() {
            return Ok(Substituters::none());
        }
        let keys = self
            .config
            .trusted_public_keys
            .iter()
            .map(|k| {
                k.parse::<PublicKey>()
                    .map_err(|source| ProjectError::TrustedKey {
                        key: k.clone(),
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Substituters::open(
            &usable,
            TrustedKeys::new(keys),
            reporter,
        ))
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
    /// Build what cannot be substituted (`-j 0` turns it off: then such outputs fail).
    pub build_locally: bool,
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
                .and_then(|p| fs_err::metadata(p).ok())
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
        let substituted = self.substitute(opts, reporter)?;
        self.sources_from_caches(reporter)?;
        if !opts.build_locally {
            let missing: Vec<String> = self
                .plan()
                .iter()
                .filter(|(_, valid)| !valid)
                .map(|(d, _)| d.recipe.name.clone())
                .collect();
            if !missing.is_empty() {
                return Err(ProjectError::NothingToSubstitute {
                    names: missing,
                    any_cache: !self.project.config.substituters.is_empty()
                        && self.project.config.substitute,
                });
            }
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
        let mut outcomes =
            scheduler::realize(store, &sandbox, &self.drvs, &self.targets, &sched, reporter);
        for o in &mut outcomes {
            if let Some(seconds) = substituted.get(&o.store_name) {
                o.status = Status::Substituted;
                o.seconds = *seconds;
            }
        }
        // Substituted outputs below a valid target are not in the build plan: list them too,
        // in build order, so the summary says everything this run brought in.
        let listed: std::collections::BTreeSet<StoreName> =
            outcomes.iter().map(|o| o.store_name.clone()).collect();
        let extra: Vec<Outcome> = self
            .drvs
            .iter()
            .filter(|d| !listed.contains(&d.store_name))
            .filter_map(|d| {
                substituted.get(&d.store_name).map(|seconds| Outcome {
                    name: d.recipe.name.clone(),
                    store_name: d.store_name.clone(),
                    path: store.path(&d.store_name),
                    status: Status::Substituted,
                    seconds: *seconds,
                    error: None,
                })
            })
            .collect();
        outcomes.splice(0..0, extra);
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
        if realized.all_ok() {
            self.remember_evaluation(reporter);
        }
        Ok(realized)
    }

    /// Lets the next realize of the same targets skip evaluation while nothing it read
    /// changes ([`eval_cache`]): remembers the targets' outputs, when all are valid.
    fn remember_evaluation(&self, reporter: &dyn Reporter) {
        let store = &self.project.store;
        let outputs: Vec<eval_cache::Output> = self
            .drvs
            .iter()
            .filter(|d| self.targets.contains(&d.recipe.name))
            .map(|d| (d.recipe.name.clone(), d.store_name.clone()))
            .collect();
        if !outputs.iter().all(|(_, n)| store.is_valid(n)) {
            return;
        }
        let set = &self.project.set;
        let started = &self.project.started;
        if let Err(e) = eval_cache::remember(store, set, &self.targets, &outputs, started) {
            reporter.report(Event::Warning(&format!(
                "cannot write the evaluation cache, so the next realize evaluates the recipes again: {e}"
            )));
        }
    }

    /// Substitutes what the targets need from the configured caches, before anything is
    /// built; returns the outputs substituted, with the seconds each took. A failed download
    /// is a warning: the next cache that has the output is tried, then it is left to be built.
    /// The sources of what is still to be built, from the configured caches' `sources/` when
    /// they have them (and only when the bytes are the pinned ones): a fleet keeps building when
    /// an upstream file disappears, and does not wait on upstream servers. What no cache has is
    /// downloaded as usual when its build starts.
    fn sources_from_caches(&self, reporter: &dyn Reporter) -> Result<(), ProjectError> {
        let store = &self.project.store;
        let missing: std::collections::BTreeSet<crate::hash::SourceHash> = self
            .plan()
            .iter()
            .filter(|(_, valid)| !valid)
            .flat_map(|(d, _)| d.recipe.sources.iter().zip(&d.source_hashes))
            .filter(|(s, _)| matches!(s.origin, Origin::Url { .. }))
            .map(|(_, h)| *h)
            .filter(|h| fetch::stored(&store.sources_dir(), h).is_none())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let subs = self.project.substituters(reporter)?;
        for h in &missing {
            let limit = self.project.fetch.expected_sizes.get(h).copied();
            subs.fetch_source(store, h, limit, reporter);
        }
        Ok(())
    }

    fn substitute(
        &self,
        opts: &RealizeOptions,
        reporter: &dyn Reporter,
    ) -> Result<BTreeMap<StoreName, f64>, ProjectError> {
        let mut done = BTreeMap::new();
        let store = &self.project.store;
        let wanted: Vec<StoreName> = self
            .plan()
            .iter()
            .filter(|(_, valid)| !valid)
            .map(|(d, _)| d.store_name.clone())
            .collect();
        if wanted.is_empty() {
            return Ok(done);
        }
        let subs = self.project.substituters(reporter)?;
        if subs.is_empty() {
            return Ok(done);
        }
        let mut candidates = subs.query_closure(&wanted, &|n| store.is_valid(n), reporter);
        let targets = self.target_store_names();
        let needs_of = self.needs_by_store_name();
        let needs = |n: &StoreName| needs_of.get(n).cloned().unwrap_or_default();
        // Each round substitutes what is obtainable; a failure drops that entry and the choice is
        // made again, so an output whose download failed is built (with what it needs).
        loop {
            let chosen = crate::cache::substitute::choose(
                &targets,
                &|n| store.is_valid(n),
                &candidates,
                &needs,
            );
            if chosen.is_empty() {
                return Ok(done);
            }
            reporter.report(Event::Plan {
                build: 0,
                substitute: chosen.len(),
                cached: 0,
            });
            let failed = self.run_substitutions(&subs, &chosen, opts.jobs, reporter, &mut done);
            if failed.is_empty() {
                return Ok(done);
            }
            for (name, cache) in failed {
                if let Some(list) = candidates.get_mut(&name) {
                    list.retain(|c| c.cache != cache);
                }
            }
        }
    }

    /// The targets' store names.
    fn target_store_names(&self) -> Vec<StoreName> {
        self.targets
            .iter()
            .filter_map(|t| self.get(t))
            .map(|d| d.store_name.clone())
            .collect()
    }

    /// Each derivation's build inputs (deps and root), by store name.
    fn needs_by_store_name(&self) -> BTreeMap<StoreName, Vec<StoreName>> {
        self.drvs
            .iter()
            .map(|d| {
                let needs = d
                    .recipe
                    .needs()
                    .filter_map(|x| self.get(&x.name))
                    .map(|x| x.store_name.clone())
                    .collect();
                (d.store_name.clone(), needs)
            })
            .collect()
    }

    /// What a realize would do with each output it needs, asking the configured substituters
    /// as realize does (all at once, before anything is built): valid in the store, substituted
    /// from a cache, or built. Outputs below a valid or substitutable one are not needed, except
    /// the runtime references of a substitutable one; those that are no derivation of this
    /// closure come first, then the derivations in build order. Refused cache entries are
    /// warnings, as in realize.
    pub fn plan_with_substitutes(
        &self,
        reporter: &dyn Reporter,
    ) -> Result<Vec<Planned<'_, 'p>>, ProjectError> {
        let store = &self.project.store;
        let valid = |n: &StoreName| store.is_valid(n);
        let wanted: Vec<StoreName> = self
            .plan()
            .iter()
            .filter(|(_, valid)| !valid)
            .map(|(d, _)| d.store_name.clone())
            .collect();
        let subs = if wanted.is_empty() {
            Substituters::none()
        } else {
            self.project.substituters(reporter)?
        };
        let chosen = if subs.is_empty() {
            BTreeMap::new()
        } else {
            let candidates = subs.query_closure(&wanted, &valid, reporter);
            let needs_of = self.needs_by_store_name();
            let needs = |n: &StoreName| needs_of.get(n).cloned().unwrap_or_default();
            crate::cache::substitute::choose(
                &self.target_store_names(),
                &valid,
                &candidates,
                &needs,
            )
        };
        let state_of = |n: &StoreName| match chosen.get(n) {
            _ if valid(n) => PlanState::Valid,
            Some(c) => PlanState::Substitute {
                cache: subs.caches[c.cache].url().to_string(),
            },
            None => PlanState::Build,
        };
        // The walk of scheduler::plan, stopping at substitutable outputs too.
        let by_name: BTreeMap<&str, &Derivation> = self
            .drvs
            .iter()
            .map(|d| (d.recipe.name.as_str(), d))
            .collect();
        let mut needed: std::collections::BTreeSet<&StoreName> = Default::default();
        let mut queue: Vec<&str> = self.targets.iter().map(String::as_str).collect();
        while let Some(name) = queue.pop() {
            let Some(d) = by_name.get(name) else { continue };
            if !needed.insert(&d.store_name) {
                continue;
            }
            if state_of(&d.store_name) == PlanState::Build {
                queue.extend(d.recipe.needs().map(|x| x.name.as_str()));
            }
        }
        needed.extend(chosen.keys());
        let in_closure: std::collections::BTreeSet<&StoreName> =
            self.drvs.iter().map(|d| &d.store_name).collect();
        let mut out: Vec<Planned> = chosen
            .keys()
            .filter(|n| !in_closure.contains(n))
            .map(|n| Planned {
                store_name: n.clone(),
                derivation: None,
                state: state_of(n),
            })
            .collect();
        out.extend(
            self.drvs
                .iter()
                .filter(|d| needed.contains(&d.store_name))
                .map(|d| Planned {
                    store_name: d.store_name.clone(),
                    derivation: Some(d),
                    state: state_of(&d.store_name),
                }),
        );
        Ok(out)
    }

    /// Downloads `chosen`, references before what mentions them, up to `jobs` at once (at
    /// least two: downloads wait on the network more than on the CPU). Returns the (output,
    /// cache) pairs that failed.
    fn run_substitutions(
        &self,
        subs: &Substituters,
        chosen: &BTreeMap<StoreName, Candidate>,
        jobs: usize,
        reporter: &dyn Reporter,
        done: &mut BTreeMap<StoreName, f64>,
    ) -> Vec<(StoreName, usize)> {
        let store = &self.project.store;
        let mut left: BTreeMap<&StoreName, &Candidate> = chosen.iter().collect();
        let mut failed = Vec::new();
        let name_of = |n: &StoreName| -> String {
            self.drvs
                .iter()
                .find(|d| &d.store_name == n)
                .map(|d| d.recipe.name.clone())
                .unwrap_or_else(|| n.to_string())
        };
        while !left.is_empty() {
            // Those whose references are all in the store (or are themselves).
            let ready: Vec<(&StoreName, &Candidate)> = left
                .iter()
                .filter(|(n, c)| {
                    c.info
                        .references
                        .iter()
                        .all(|r| r == **n || store.is_valid(r))
                })
                .map(|(n, c)| (*n, *c))
                .collect();
            if ready.is_empty() {
                // References that failed: what needs them cannot be substituted now.
                failed.extend(left.iter().map(|(n, c)| ((*n).clone(), c.cache)));
                break;
            }
            let width = jobs.max(2);
            let results: Vec<(StoreName, usize, f64, Result<(), String>)> =
                std::thread::scope(|scope| {
                    let mut out = Vec::new();
                    for chunk in ready.chunks(width) {
                        let handles: Vec<_> = chunk
                            .iter()
                            .map(|(n, c)| {
                                let label = name_of(n);
                                let inputs = self
                                    .drvs
                                    .iter()
                                    .find(|d| d.store_name == **n)
                                    .map(|d| d.record.to_value());
                                scope.spawn(move || {
                                    reporter.report(Event::Substituting { name: &label });
                                    let t = std::time::Instant::now();
                                    let r = subs.fetch(store, c, inputs, reporter);
                                    let secs = t.elapsed().as_secs_f64();
                                    let status = if r.is_ok() {
                                        Status::Substituted
                                    } else {
                                        Status::Failed
                                    };
                                    reporter.report(Event::Finished {
                                        name: &label,
                                        status,
                                        seconds: secs,
                                    });
                                    (
                                        (*n).clone(),
                                        c.cache,
                                        secs,
                                        r.map(|_| ())
                                            .map_err(|e| crate::cache::substitute::error_chain(&e)),
                                    )
                                })
                            })
                            .collect();
                        out.extend(handles.into_iter().filter_map(|h| h.join().ok()));
                    }
                    out
                });
            for (n, cache, secs, r) in results {
                left.remove(&n);
                match r {
                    Ok(()) => {
                        if let Some(d) = self.drvs.iter().find(|d| d.store_name == n) {
                            if let Err(e) = crate::explain::remember(store, d) {
                                reporter.report(Event::Warning(&format!(
                                    "cannot record the derivation of {n}: {e}"
                                )));
                            }
                        }
                        done.insert(n, secs);
                    }
                    Err(why) => {
                        reporter.report(Event::Warning(&format!(
                            "{why}; trying another cache, or building it"
                        )));
                        failed.push((n, cache));
                    }
                }
            }
        }
        failed
    }

    fn decide_sandbox(
        &self,
        mode: SandboxMode,
        will_run: &[&Recipe],
        reporter: &dyn Reporter,
    ) -> Result<Sandbox, ProjectError> {
        let s = Sandbox::detect(mode)?;
        if let Sandbox::Bwrap {
            own_failed: Some(why),
            ..
        } = &s
        {
            reporter.report(Event::Warning(&format!(
                "pybake cannot set up its own sandbox here ({why}); steps run in bubblewrap, \
                 which costs a few milliseconds more per step"
            )));
        }
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

/// What a realize would do with an output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanState {
    /// In the store already.
    Valid,
    /// To be downloaded from the cache at this URL (the first that has a trusted entry).
    Substitute {
        cache: String,
    },
    Build,
}

/// One line of [`Closure::plan_with_substitutes`].
pub struct Planned<'c, 'p> {
    pub store_name: StoreName,
    /// `None` for a runtime reference of a substitutable output that is no derivation of the
    /// closure.
    pub derivation: Option<&'c Derivation<'p>>,
    pub state: PlanState,
}

/// A realize with nothing to do that skips evaluation: when the evaluation cache
/// ([`eval_cache`]) remembers `targets` for these recipes, nothing they depend on changed and
/// every output is valid, reports them cached (and records their GC roots with `gc_root`) as
/// a realize would. Returns the outcomes and the targets' paths in the order requested, or
/// `None`: then evaluate ([`Project::open`]) and realize as usual.
pub fn realize_unchanged(
    settings: &Settings,
    targets: &[String],
    gc_root: bool,
    reporter: &dyn Reporter,
) -> Result<Option<(Realized, Vec<PathBuf>)>, ProjectError> {
    let started = eval_cache::Start::now();
    let store = Store::open(&settings.store)?;
    let Some(outputs) = eval_cache::lookup(&store, &settings.recipes, targets, &started) else {
        return Ok(None);
    };
    // As in a realize: gc waits until the roots are recorded.
    let _gc = store.lock_for_realize(|| {
        reporter.report(Event::Note("waiting for a running `pybake gc` to finish"))
    })?;
    if !outputs.iter().all(|(_, n)| store.is_valid(n)) {
        return Ok(None);
    }
    let by_recipe: BTreeMap<&str, &StoreName> =
        outputs.iter().map(|(r, n)| (r.as_str(), n)).collect();
    let Some(paths) = targets
        .iter()
        .map(|t| by_recipe.get(t.as_str()).map(|n| store.path(n)))
        .collect::<Option<Vec<PathBuf>>>()
    else {
        return Ok(None);
    };
    reporter.report(Event::Note(
        "the recipes are as they were at their last evaluation: not evaluated again",
    ));
    reporter.report(Event::Plan {
        build: 0,
        substitute: 0,
        cached: outputs.len(),
    });
    if gc_root {
        for (recipe, name) in &outputs {
            if let Err(e) = store.add_gc_root(&settings.recipes, recipe, name) {
                reporter.report(Event::Warning(&format!(
                    "cannot record {name} as the GC root of `{recipe}`, so `pybake gc` may remove it: {e}"
                )));
            }
        }
    }
    let outcomes = outputs
        .into_iter()
        .map(|(name, store_name)| Outcome {
            path: store.path(&store_name),
            name,
            store_name,
            status: Status::Cached,
            seconds: 0.0,
            error: None,
        })
        .collect();
    let realized = Realized {
        outcomes,
        checks: Vec::new(),
    };
    Ok(Some((realized, paths)))
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
            slots: Default::default(),
        };
        Ok(builder.shell(&job, opts.place.clone())?)
    }
}
