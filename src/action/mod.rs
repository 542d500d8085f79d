//! Building one derivation: a fresh directory, sources laid out, steps run in a cleared
//! environment (in the sandbox when possible), the output scanned, hashed and moved into the
//! store atomically.
//!
//! Build directory (on the store's filesystem, under `.pybake/tmp/slot-XXXX/`, reused by the
//! next build of the same realize when a step left it as it was made; see [`BuildSlot`]):
//! `build/src` (`$src`), `build/work` (where steps run), `build/home` (`$HOME`), `build/tmp`
//! (`$TMPDIR`), and `store/` (seen as the store; the step creates `store/<store name>` = `$out`).

mod build_user;
mod env;
mod namespaces;
mod prepare;
mod references;
mod sandbox;
mod scan;
pub mod shell;
mod sources;
mod spawn;
pub mod supervise;

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use env::{dep_var, SOURCE_DATE_EPOCH, SYSTEM_PATH};
pub use prepare::Prepared;
pub use sandbox::{
    RootNeedsSandbox, Sandbox, SandboxMode, SandboxUnavailable, Terminal, BUILD_DIR,
    CANONICAL_STORE,
};
pub use shell::{Place, Shell, ShellError};

use prepare::{Dirs, Isolation};

use crate::derivation::Derivation;
use crate::exit::Class;
use crate::fetch::FetchConfig;
use crate::hash::{tree, OutputHash};
use crate::progress::{Event, Reporter};
use crate::recipe::Location;
use crate::store::{BuildSlot, Meta, Store, StoreError, StoreName};

/// How many log lines a failure message shows.
const TAIL_LINES: usize = 25;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    StepFailed(Box<StepFailure>),
    #[error("recipe `{recipe}`: the steps finished but did not create $out\n  hint: a step must write the result to $out (e.g. `mkdir -p $out`); log: {log}{kept}")]
    NoOutput {
        recipe: String,
        log: PathBuf,
        kept: String,
    },
    #[error("recipe `{recipe}`: cannot start the step runner: {source}")]
    Spawn {
        recipe: String,
        #[source]
        source: std::io::Error,
    },
    #[error("recipe `{recipe}`: cancelled because another build failed")]
    Cancelled { recipe: String },
    #[error("recipe `{recipe}`: {source}")]
    Fetch {
        recipe: String,
        #[source]
        source: Box<crate::fetch::FetchError>,
    },
    #[error("recipe `{recipe}`: {source}")]
    Unpack {
        recipe: String,
        #[source]
        source: Box<crate::archive::ArchiveError>,
    },
    #[error("recipe `{recipe}` runs on the root {root}, which needs bubblewrap, but {why}\n  hint: install the Debian package `bubblewrap` (a recipe with a root never builds on the host)")]
    NeedsSandbox {
        recipe: String,
        root: StoreName,
        why: String,
    },
    #[error("two sources write {path}: give one of them another `dest`")]
    SourceClash { path: PathBuf },
    #[error("recipe `{recipe}`: the source at {at} would be written through the symlink $src/{} that an earlier source put there; pybake never writes through a link under $src\n  hint: give this source a `dest` that does not pass through `{}`", path.display(), path.display())]
    ThroughSymlink {
        recipe: String,
        at: Location,
        /// The link, relative to `$src`.
        path: PathBuf,
    },
    #[error("recipe `{recipe}`: the source at {at} goes under $src/{}, which an earlier source made a file, not a directory\n  hint: give this source another `dest`", path.display())]
    NotADirectory {
        recipe: String,
        at: Location,
        /// The file, relative to `$src`.
        path: PathBuf,
    },
    #[error("cannot read {path}: {source}")]
    Tree {
        path: PathBuf,
        #[source]
        source: tree::TreeError,
    },
    #[error("build I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A step that exited non-zero (boxed in [`BuildError`] to keep `Result`s small).
#[derive(Debug, thiserror::Error)]
#[error("recipe `{recipe}`: step {number}/{total} failed with {status}:\n    {step}\n--- last lines of the log ---\n{tail}\n--- full log: {log} ---{kept}")]
pub struct StepFailure {
    pub recipe: String,
    pub number: usize,
    pub total: usize,
    pub step: String,
    pub status: String,
    pub tail: String,
    pub log: PathBuf,
    pub kept: String,
}

impl BuildError {
    /// Whether this failure is the user's to fix in a recipe or arguments (exit code 2) rather
    /// than a build that failed (exit code 1).
    pub fn is_user_error(&self) -> bool {
        self.class() == Class::User
    }

    /// What kind of failure this is (see [`crate::exit`]).
    pub fn class(&self) -> Class {
        use crate::archive::ArchiveError;
        match self {
            BuildError::StepFailed(_)
            | BuildError::NoOutput { .. }
            | BuildError::Cancelled { .. } => Class::Build,
            BuildError::SourceClash { .. }
            | BuildError::NeedsSandbox { .. }
            | BuildError::ThroughSymlink { .. }
            | BuildError::NotADirectory { .. } => Class::User,
            BuildError::Fetch { source, .. } => source.class(),
            // A pinned archive that does not unpack (or two sources writing one path) is the
            // recipe's; a disk that cannot take it is the machine's.
            BuildError::Unpack { source, .. } => match **source {
                ArchiveError::Write { .. } | ArchiveError::Dest { .. } => Class::Environment,
                _ => Class::User,
            },
            BuildError::Spawn { .. }
            | BuildError::Tree { .. }
            | BuildError::Io { .. }
            | BuildError::Store(_) => Class::Environment,
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What stays the same for every build of one `realize`.
pub struct Builder<'a> {
    pub store: &'a Store,
    pub sandbox: &'a Sandbox,
    pub fetch: &'a FetchConfig,
    pub jobs: usize,
    pub keep_failed: bool,
    pub cancel: &'a AtomicBool,
    /// Where steps and downloads are reported.
    pub reporter: &'a dyn Reporter,
    /// Build directories of this realize's finished builds, for its next ones.
    pub slots: Slots,
}

/// Build directories of finished builds that the next builds reuse ([`BuildSlot`]).
#[derive(Default)]
pub struct Slots(std::sync::Mutex<Vec<BuildSlot>>);

impl Slots {
    fn take(&self) -> Option<BuildSlot> {
        self.0.lock().ok()?.pop()
    }

    /// Keeps `slot` for another build if it is as fresh once its store view is emptied;
    /// otherwise removes it. The store view may hold an output not moved into the store (a
    /// failed or compared build's) and the mount points the sandbox made for dependencies:
    /// empty directories, kept aside as spare mount points ([`Dirs::lend_mount_points`]).
    fn give_back(&self, slot: BuildSlot, store_view: &Path) {
        let spare = slot.path().join(prepare::SPARE);
        if let Ok(entries) = fs_err::read_dir(store_view) {
            for (i, e) in entries.flatten().enumerate() {
                let path = e.path();
                if is_empty_dir(&path)
                    && fs_err::create_dir_all(&spare).is_ok()
                    && fs_err::rename(&path, spare.join(format!("{}-{i}", std::process::id())))
                        .is_ok()
                {
                    continue;
                }
                let _ = crate::store::remove_tree(&path);
            }
        }
        // `etc/` is written again for every build (see `Builder::ready`), and only empty
        // directories go to `spare/`, which a step never sees.
        if slot.is_pristine(&["etc", prepare::SPARE]) {
            if let Ok(mut pool) = self.0.lock() {
                pool.push(slot);
            }
        }
    }
}

/// A directory (not a link to one) with nothing in it.
fn is_empty_dir(path: &Path) -> bool {
    fs_err::symlink_metadata(path).is_ok_and(|m| m.is_dir())
        && fs_err::read_dir(path).is_ok_and(|mut d| d.next().is_none())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    Insert,
    Compare,
}

enum Built {
    Inserted(Meta),
    Compared(Check),
}

/// The result of building an output again (`realize --check`).
#[derive(Debug, Clone)]
pub struct Check {
    /// The rebuilt output's content hash.
    pub output_hash: OutputHash,
    /// Relative paths that differ between the stored and the rebuilt output (empty: identical).
    pub differences: Vec<String>,
    /// Where the rebuilt output was kept (`--keep-failed` and differences found).
    pub kept: Option<PathBuf>,
}

/// One derivation to build, with the store names of what it may see.
pub struct Job<'a> {
    pub drv: &'a Derivation<'a>,
    /// Direct dependencies: (recipe name, store name), in the recipe's order.
    pub deps: Vec<(&'a str, StoreName)>,
    /// The dependencies' runtime closure (direct deps included): bound into the sandbox and
    /// looked for by reference scanning.
    pub closure: Vec<StoreName>,
}

impl Builder<'_> {
    /// Builds `job` into the store; the caller holds the output's lock.
    pub fn build(&self, job: &Job) -> Result<Meta, BuildError> {
        match self.build_then(job, Then::Insert)? {
            Built::Inserted(meta) => Ok(meta),
            Built::Compared(_) => unreachable!("asked to insert"),
        }
    }

    /// Builds `job` again although its output is in the store, and compares the two outputs
    /// file by file without touching the stored one. The log goes to `<log>.check`.
    pub fn check(&self, job: &Job) -> Result<Check, BuildError> {
        match self.build_then(job, Then::Compare)? {
            Built::Compared(c) => Ok(c),
            Built::Inserted(_) => unreachable!("asked to compare"),
        }
    }

    fn build_then(&self, job: &Job, then: Then) -> Result<Built, BuildError> {
        let started = Instant::now();
        let recipe = job.drv.recipe;
        let name = &job.drv.store_name;
        self.store.remove_build_dirs_of(name)?;
        let slot = match self.slots.take() {
            Some(slot) => slot,
            None => {
                let mut slot = self.store.build_slot()?;
                let dirs = Dirs::under(slot.path());
                dirs.create()?;
                slot.made(&dirs.skeleton()).map_err(io(slot.path()))?;
                slot
            }
        };
        let dirs = Dirs::under(slot.path());
        let (build_dir, store_view) = (dirs.build.clone(), dirs.store_view.clone());
        let mut log_path = self.store.log_path(name);
        if then == Then::Compare {
            log_path.as_mut_os_string().push(".check");
        }
        let mut log = crate::store::create_readable(&log_path).map_err(io(&log_path))?;

        let result = self.run(job, dirs, &mut log, &log_path);
        let result = result.and_then(|()| {
            let built = store_view.join(name.as_str());
            if !built.is_dir() {
                return Err(BuildError::NoOutput {
                    recipe: recipe.name.clone(),
                    log: log_path.clone(),
                    kept: String::new(),
                });
            }
            // Built by the build user; stored as root's, like every other output.
            if self.sandbox.build_user().is_some() && !recipe.steps.is_empty() {
                build_user::chown_tree(&built, 0, 0).map_err(io(&built))?;
            }
            // Before hashing: what is hashed is what gets stored.
            crate::store::unshare_hard_links(&built)?;
            let blank: Vec<StoreName> = job
                .deps
                .iter()
                .filter(|(n, _)| recipe.remove_references_to.iter().any(|r| r == n))
                .map(|(_, s)| s.clone())
                .collect();
            references::blank_out(&built, &blank).map_err(io(&built))?;
            let mut meta = self.describe(job, &built, &build_dir, &store_view)?;
            meta.build_seconds = started.elapsed().as_secs_f64();
            // What it was built from, for `pybake explain`.
            meta.inputs = Some(job.drv.record.to_value());
            if then == Then::Compare {
                let stored = self.store.path(name);
                let differences =
                    tree::diff(&stored, &built).map_err(|source| BuildError::Tree {
                        path: stored.clone(),
                        source,
                    })?;
                return Ok(Built::Compared(Check {
                    output_hash: meta.output_hash,
                    differences,
                    kept: None,
                }));
            }
            self.store.insert(&built, name, &meta)?;
            // The last build of its recipe, for `pybake explain`; the output is valid without it.
            if let Err(e) = crate::explain::remember(self.store, job.drv) {
                self.reporter.report(Event::Warning(&format!(
                    "cannot record {name} as the last build of `{}`: {e}",
                    recipe.name
                )));
            }
            Ok(Built::Inserted(meta))
        });
        match result {
            Err(e) if self.keep_failed => {
                let kept = self.store.keep_slot(slot, name);
                Err(with_kept(e, &kept))
            }
            // A check that found differences keeps the rebuilt output for comparison.
            Ok(Built::Compared(mut c)) if self.keep_failed && !c.differences.is_empty() => {
                let kept = self.store.keep_slot(slot, name);
                c.kept = Some(kept.join("store").join(name.as_str()));
                Ok(Built::Compared(c))
            }
            other => {
                self.slots.give_back(slot, &store_view);
                other
            }
        }
    }

    fn run(
        &self,
        job: &Job,
        dirs: Dirs,
        log: &mut std::fs::File,
        log_path: &Path,
    ) -> Result<(), BuildError> {
        let recipe = job.drv.recipe;
        let root = self.root_for(job, !recipe.steps.is_empty())?;
        self.lay_out_sources(job, &dirs)?;
        if recipe.steps.is_empty() {
            // Nothing to run: the laid-out sources are the output (a build root of .debs).
            let out = dirs.store_view.join(job.drv.store_name.as_str());
            return fs_err::rename(dirs.build.join("src"), &out).map_err(io(&out));
        }
        let prepared = self.ready(job, dirs, root)?;

        let total = recipe.steps.len();
        for (i, step) in recipe.steps.iter().enumerate() {
            self.reporter.report(Event::Step {
                name: &recipe.name,
                number: i + 1,
                total,
                step,
            });
            // One write, not one per formatted piece.
            let header = format!("=== pybake: step {}/{total}: {step}\n", i + 1);
            log.write_all(header.as_bytes()).map_err(io(log_path))?;
            let spawn_err = |source| BuildError::Spawn {
                recipe: recipe.name.clone(),
                source,
            };
            let (cmd, isolation) = prepared
                .step(&["/bin/sh", "-eu", "-c", step])
                .map_err(spawn_err)?;
            let null = fs_err::File::open("/dev/null").map_err(spawn_err)?;
            let stdio = [null.as_raw_fd(), log.as_raw_fd(), log.as_raw_fd()];
            let spawn = spawn::Spawn::from_command(&cmd);
            let started = match &isolation {
                Isolation::Own(plan) => spawn.and_then(|s| s.start_in_sandbox(stdio, plan)),
                Isolation::Bubblewrap(staging) => {
                    spawn.and_then(|s| s.start(stdio, staging.as_ref()))
                }
                Isolation::None if supervise::uses_pid_namespace() => {
                    spawn.and_then(|s| s.start_in_pid_namespace(stdio))
                }
                // The supervisor process (`pybake __supervise`), which SIGTERM asks to stop.
                Isolation::None => spawn.and_then(|s| s.start(stdio, None)),
            };
            let ask_supervisor = !self.sandbox.is_on() && !supervise::uses_pid_namespace();
            let status = wait_cancellable(started.map_err(spawn_err)?, self.cancel, ask_supervisor)
                .map_err(spawn_err)?;
            let Some(status) = status else {
                return Err(BuildError::Cancelled {
                    recipe: recipe.name.clone(),
                });
            };
            if !status.success() {
                log.flush().map_err(io(log_path))?;
                return Err(BuildError::StepFailed(Box::new(StepFailure {
                    recipe: recipe.name.clone(),
                    number: i + 1,
                    total,
                    step: step.clone(),
                    status: describe_status(&status),
                    tail: tail(log_path, TAIL_LINES),
                    log: log_path.to_path_buf(),
                    kept: String::new(),
                })));
            }
        }
        Ok(())
    }

    /// Output hash, references and host-specific paths of a finished output, from one read of
    /// each file.
    fn describe(
        &self,
        job: &Job,
        built: &Path,
        build_dir: &Path,
        store_view: &Path,
    ) -> Result<Meta, BuildError> {
        let tree_err = |source| BuildError::Tree {
            path: built.to_path_buf(),
            source,
        };
        let mut candidates = job.closure.clone();
        candidates.push(job.drv.store_name.clone());
        let mut prefixes = vec![CANONICAL_STORE.to_string()];
        let mut host = Vec::new();
        if !self.sandbox.is_on() {
            prefixes.push(self.store.root().display().to_string());
            prefixes.push(store_view.display().to_string());
            host.push(self.store.root().display().to_string());
            host.push(
                build_dir
                    .parent()
                    .unwrap_or(build_dir)
                    .display()
                    .to_string(),
            );
        }
        let found = scan::scan(built, &prefixes, &candidates, &host).map_err(tree_err)?;
        let mut meta = Meta::new(&job.drv.store_name, job.drv.hash, found.output_hash);
        meta.references = found
            .references
            .into_iter()
            .filter(|n| n != &job.drv.store_name)
            .collect();
        meta.host_paths = found.host_paths;
        meta.sandboxed = self.sandbox.is_on() && !job.drv.recipe.steps.is_empty();
        meta.root = job.drv.root.clone();
        meta.deps = job.deps.iter().map(|(_, s)| s.clone()).collect();
        meta.sources = job.drv.source_hashes.clone();
        if job.drv.recipe.is_host_build() {
            meta.host_build = true;
            meta.host = crate::derivation::host_identity().to_string();
        }
        Ok(meta)
    }
}

/// The content hash of `path` and the outputs of `store` it refers to, found as a build's
/// output is scanned (`pybake hash --references`): the hash part of each output's name after
/// the sandbox's store path or the store's own.
pub fn references_in(
    store: &Store,
    path: &Path,
) -> Result<(OutputHash, std::collections::BTreeSet<StoreName>), tree::TreeError> {
    let io_err = |source| tree::TreeError::Io {
        path: store.root().to_path_buf(),
        source,
    };
    let mut candidates: Vec<StoreName> = fs_err::read_dir(store.root())
        .map_err(io_err)?
        .filter_map(|e| StoreName::parse(e.ok()?.file_name().to_str()?).ok())
        .collect();
    candidates.sort();
    let prefixes = [
        CANONICAL_STORE.to_string(),
        store.root().display().to_string(),
    ];
    let found = scan::scan(path, &prefixes, &candidates, &[])?;
    Ok((found.output_hash, found.references))
}

fn with_kept(e: BuildError, kept: &Path) -> BuildError {
    let note = format!("\n  build directory kept at {}", kept.display());
    match e {
        BuildError::StepFailed(mut f) => {
            f.kept = note;
            BuildError::StepFailed(f)
        }
        BuildError::NoOutput { recipe, log, .. } => BuildError::NoOutput {
            recipe,
            log,
            kept: note,
        },
        other => other,
    }
}

/// How long a supervisor gets to clean up after SIGTERM before its group is killed outright.
const SUPERVISOR_GRACE: Duration = Duration::from_secs(5);

/// Waits for a started step, stopping it if `cancel` is set: SIGTERM first when it is the
/// supervisor process (`ask_supervisor`; it then kills everything the step started, see
/// [`supervise`]), else its process group killed at once (bubblewrap's death ends its sandbox,
/// the namespace init's its namespace). `None` when cancelled.
fn wait_cancellable(
    mut child: spawn::Child,
    cancel: &AtomicBool,
    ask_supervisor: bool,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    let exit = ExitWatch::new(child.id());
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if cancel.load(Ordering::Relaxed) {
            if ask_supervisor {
                // SAFETY: our unreaped child, so the pid is still its.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
                let deadline = Instant::now() + SUPERVISOR_GRACE;
                while Instant::now() < deadline {
                    if child.try_wait()?.is_some() {
                        return Ok(None);
                    }
                    exit.wait(Duration::from_millis(50));
                }
            }
            child.kill();
            child.wait()?;
            return Ok(None);
        }
        exit.wait(Duration::from_millis(50));
    }
}

/// Sleeps until a process exits or a timeout passes, whichever is first: a pidfd polled for
/// readability, so short steps are not charged a fixed polling interval. Where pidfds are not
/// available (Linux before 5.3) it falls back to short sleeps.
struct ExitWatch {
    fd: Option<std::os::fd::OwnedFd>,
}

impl ExitWatch {
    fn new(pid: u32) -> Self {
        use std::os::fd::FromRawFd;
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        ExitWatch {
            // SAFETY: a non-negative return is a descriptor we now own.
            fd: (fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) }),
        }
    }

    fn wait(&self, timeout: Duration) {
        use std::os::fd::AsRawFd;
        match &self.fd {
            Some(fd) => {
                let mut pfd = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd; the result only decides when we look again.
                unsafe {
                    libc::poll(&mut pfd, 1, timeout.as_millis() as i32);
                }
            }
            None => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

fn describe_status(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        // How a shell reports a command a signal killed, and bubblewrap a step: say which
        // signal, since "exit code 137" alone hides an OOM kill.
        (Some(code), _) if (129..=128 + 64).contains(&code) => {
            let sig = code - 128;
            format!(
                "exit code {code} (128 + {sig}: a process of the step was killed by signal {sig}{})",
                signal_name(sig)
            )
        }
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("signal {sig}{}", signal_name(sig)),
        _ => status.to_string(),
    }
}

/// `, SIGKILL` for the signals a failed build usually meets; empty for others.
fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => ", SIGHUP",
        libc::SIGINT => ", SIGINT",
        libc::SIGQUIT => ", SIGQUIT",
        libc::SIGILL => ", SIGILL",
        libc::SIGABRT => ", SIGABRT",
        libc::SIGBUS => ", SIGBUS",
        libc::SIGFPE => ", SIGFPE",
        libc::SIGKILL => ", SIGKILL: the kernel's OOM killer sends it when memory runs out",
        libc::SIGSEGV => ", SIGSEGV",
        libc::SIGPIPE => ", SIGPIPE",
        libc::SIGALRM => ", SIGALRM",
        libc::SIGTERM => ", SIGTERM",
        libc::SIGXCPU => ", SIGXCPU",
        libc::SIGXFSZ => ", SIGXFSZ",
        _ => "",
    }
}

/// The last `n` lines of a file (reading at most its last 64 KiB).
fn tail(path: &Path, n: usize) -> String {
    let Ok(mut f) = fs_err::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
