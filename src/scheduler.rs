//! Realizing a closure: decide what is cached, then build the rest in parallel in dependency
//! order, up to `jobs` builds at once, each under its output's lock.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use crate::action::{BuildError, Builder, Check, Job, Sandbox};
use crate::derivation::Derivation;
use crate::fetch::FetchConfig;
use crate::progress::{Event, Reporter};
use crate::store::{Store, StoreError, StoreName};

pub use crate::progress::Status;

#[derive(Debug)]
pub struct Outcome {
    pub name: String,
    pub store_name: StoreName,
    pub path: PathBuf,
    pub status: Status,
    pub seconds: f64,
    pub error: Option<BuildError>,
}

pub struct Options {
    /// Recipes built at once.
    pub jobs: usize,
    /// `PYBAKE_JOBS` for each build.
    pub cores: usize,
    pub keep_going: bool,
    pub keep_failed: bool,
    pub fetch: FetchConfig,
}

impl Options {
    fn builder<'a>(
        &'a self,
        store: &'a Store,
        sandbox: &'a Sandbox,
        cancel: &'a AtomicBool,
        reporter: &'a dyn Reporter,
    ) -> Builder<'a> {
        Builder {
            store,
            sandbox,
            fetch: &self.fetch,
            jobs: self.cores,
            keep_failed: self.keep_failed,
            cancel,
            reporter,
            slots: Default::default(),
        }
    }
}

/// What a realize of `targets` would do: each needed derivation with whether it is cached,
/// in build order. A valid output needs nothing below it, as in Nix.
pub fn plan<'d, 'a>(
    store: &Store,
    drvs: &'d [Derivation<'a>],
    targets: &[String],
) -> Vec<(&'d Derivation<'a>, bool)> {
    let by_name: BTreeMap<&str, &Derivation> =
        drvs.iter().map(|d| (d.recipe.name.as_str(), d)).collect();
    let mut needed: BTreeMap<&str, bool> = BTreeMap::new();
    let mut queue: VecDeque<&str> = targets.iter().map(String::as_str).collect();
    while let Some(name) = queue.pop_front() {
        if needed.contains_key(name) {
            continue;
        }
        let d = by_name[name];
        let cached = store.is_valid(&d.store_name);
        needed.insert(name, cached);
        if !cached {
            queue.extend(d.recipe.needs().map(|x| x.name.as_str()));
        }
    }
    drvs.iter()
        .filter_map(|d| needed.get(d.recipe.name.as_str()).map(|c| (d, *c)))
        .collect()
}

/// The store names an output needs at run time: it and its references, transitively.
fn runtime_closure(store: &Store, roots: &[StoreName]) -> Result<Vec<StoreName>, StoreError> {
    let mut seen: BTreeSet<StoreName> = BTreeSet::new();
    let mut queue: VecDeque<StoreName> = roots.iter().cloned().collect();
    while let Some(n) = queue.pop_front() {
        if !seen.insert(n.clone()) {
            continue;
        }
        queue.extend(store.read_meta(&n)?.references);
    }
    Ok(seen.into_iter().collect())
}

enum Done {
    Finished(usize, Status, f64, Option<BuildError>),
}

/// Realizes `targets` (whose closure, in build order, is `drvs`). Returns an outcome for every
/// derivation that was needed, in build order.
pub fn realize(
    store: &Store,
    sandbox: &Sandbox,
    drvs: &[Derivation],
    targets: &[String],
    opts: &Options,
    reporter: &dyn Reporter,
) -> Vec<Outcome> {
    let plan = plan(store, drvs, targets);
    let to_build: Vec<&Derivation> = plan.iter().filter(|(_, c)| !c).map(|(d, _)| *d).collect();
    reporter.report(Event::Plan {
        build: to_build.len(),
        substitute: 0,
        cached: plan.len() - to_build.len(),
    });

    let mut outcomes: Vec<Outcome> = plan
        .iter()
        .map(|(d, cached)| Outcome {
            name: d.recipe.name.clone(),
            store_name: d.store_name.clone(),
            path: store.path(&d.store_name),
            status: if *cached {
                Status::Cached
            } else {
                Status::Skipped
            },
            seconds: 0.0,
            error: None,
        })
        .collect();
    let index: BTreeMap<&str, usize> = plan
        .iter()
        .enumerate()
        .map(|(i, (d, _))| (d.recipe.name.as_str(), i))
        .collect();
    // Unfinished dependencies of each derivation to build.
    let mut waiting: BTreeMap<usize, usize> = BTreeMap::new();
    let mut dependents: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, (d, cached)) in plan.iter().enumerate() {
        if *cached {
            continue;
        }
        let mut n = 0;
        for dep in d.recipe.needs() {
            let j = index[dep.name.as_str()];
            if !plan[j].1 {
                n += 1;
                dependents.entry(j).or_default().push(i);
            }
        }
        waiting.insert(i, n);
    }
    let mut ready: VecDeque<usize> = waiting
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(i, _)| *i)
        .collect();

    let cancel = AtomicBool::new(false);
    let builder = opts.builder(store, sandbox, &cancel, reporter);
    let mut stopped = false;
    // A pool of `jobs` threads, not a thread per build: creating and tearing one down per build
    // (a stack mapped and unmapped, with TLB shootdowns) showed in graphs of small builds. A
    // build's step dies with the thread that started it (PR_SET_PDEATHSIG), and these live as
    // long as the scope.
    let (job_tx, job_rx) = mpsc::channel::<(usize, Vec<(&str, StoreName)>)>();
    let job_rx = std::sync::Mutex::new(job_rx);
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<Done>();
        for _ in 0..opts.jobs.max(1).min(plan.len().max(1)) {
            let (tx, job_rx, builder) = (tx.clone(), &job_rx, &builder);
            let plan = &plan;
            scope.spawn(move || loop {
                let next = match job_rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok((i, deps)) = next else { return };
                let drv = plan[i].0;
                let started = Instant::now();
                // A panic in a build must not leave the loop below waiting for it forever:
                // the build counts as failed and the panic goes on once the scope ends.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    build_one(builder, store, drv, deps)
                }));
                let secs = started.elapsed().as_secs_f64();
                match result {
                    Ok(Ok(status)) => {
                        let _ = tx.send(Done::Finished(i, status, secs, None));
                    }
                    Ok(Err(e)) => {
                        let _ = tx.send(Done::Finished(i, Status::Failed, secs, Some(e)));
                    }
                    Err(panic) => {
                        let _ = tx.send(Done::Finished(i, Status::Failed, secs, None));
                        std::panic::resume_unwind(panic);
                    }
                }
            });
        }
        let mut running = 0usize;
        loop {
            while !stopped && running < opts.jobs.max(1) {
                let Some(i) = ready.pop_front() else { break };
                let drv = plan[i].0;
                let deps: Vec<(&str, StoreName)> = drv
                    .recipe
                    .deps
                    .iter()
                    .map(|d| {
                        (
                            d.name.as_str(),
                            plan[index[d.name.as_str()]].0.store_name.clone(),
                        )
                    })
                    .collect();
                reporter.report(Event::Started {
                    name: &drv.recipe.name,
                });
                if job_tx.send((i, deps)).is_err() {
                    break;
                }
                running += 1;
            }
            if running == 0 {
                break;
            }
            let Ok(Done::Finished(i, status, secs, error)) = rx.recv() else {
                break;
            };
            running -= 1;
            let cancelled = matches!(error, Some(BuildError::Cancelled { .. }));
            let o = &mut outcomes[i];
            o.status = if cancelled { Status::Skipped } else { status };
            o.seconds = secs;
            o.error = if cancelled { None } else { error };
            reporter.report(Event::Finished {
                name: &o.name,
                status: o.status,
                seconds: o.seconds,
            });
            if status == Status::Failed {
                if !opts.keep_going {
                    stopped = true;
                    cancel.store(true, Ordering::Relaxed);
                }
                continue; // dependents stay Skipped
            }
            for &j in dependents.get(&i).into_iter().flatten() {
                let n = waiting.get_mut(&j).expect("dependent is waiting");
                *n -= 1;
                if *n == 0 {
                    ready.push_back(j);
                }
            }
        }
        // The workers end once no job can come.
        drop(job_tx);
    });
    outcomes
}

fn build_one(
    builder: &Builder,
    store: &Store,
    drv: &Derivation,
    deps: Vec<(&str, StoreName)>,
) -> Result<Status, BuildError> {
    let _lock = store.lock(&drv.store_name)?;
    // Another pybake may have built it while we waited for the lock.
    if store.is_valid(&drv.store_name) {
        return Ok(Status::Cached);
    }
    let job = job(store, drv, deps)?;
    builder.build(&job)?;
    Ok(Status::Built)
}

fn job<'a>(
    store: &Store,
    drv: &'a Derivation<'a>,
    deps: Vec<(&'a str, StoreName)>,
) -> Result<Job<'a>, StoreError> {
    let roots: Vec<StoreName> = deps.iter().map(|(_, s)| s.clone()).collect();
    let closure = runtime_closure(store, &roots)?;
    Ok(Job { drv, deps, closure })
}

/// The job that builds `name`, one of `drvs` (a closure), whose dependencies must be in the
/// store: for `realize --check` and `pybake shell`.
pub fn job_for<'a>(
    store: &Store,
    drvs: &'a [Derivation<'a>],
    name: &str,
) -> Result<Job<'a>, StoreError> {
    let by_name: BTreeMap<&str, &Derivation> =
        drvs.iter().map(|d| (d.recipe.name.as_str(), d)).collect();
    let drv = by_name[name];
    let deps = drv
        .recipe
        .deps
        .iter()
        .map(|d| (d.name.as_str(), by_name[d.name.as_str()].store_name.clone()))
        .collect();
    job(store, drv, deps)
}

/// Builds `target` again (its closure must be realized) and compares with the stored output.
pub fn check(
    store: &Store,
    sandbox: &Sandbox,
    drvs: &[Derivation],
    target: &str,
    opts: &Options,
    reporter: &dyn Reporter,
) -> Result<Check, BuildError> {
    let cancel = AtomicBool::new(false);
    let builder = opts.builder(store, sandbox, &cancel, reporter);
    let job = job_for(store, drvs, target)?;
    let _lock = store.lock(&job.drv.store_name)?;
    builder.check(&job)
}
