//! `pybake shell NAME`: NAME's build environment, to run its steps by hand (as `nix develop`).
//!
//! The shell gets what a step gets (see [`super::prepare`]): the sandbox, the recipe's root, the
//! step environment, `$src` laid out, the dependency closure mounted, `/build/work` as working
//! directory, the build user. Its directory is either
//! - fresh: `.pybake/tmp/shell-XXXXXX/`, laid out like a build's, covered by a lock of its own
//!   while the shell runs ([`crate::store::ShellDir`]) and removed when it ends unless kept; or
//! - one that `realize --keep-failed` kept (`.pybake/tmp/<store name>.XXXXXX/`), entered as the
//!   failed step left it. The output's lock is held meanwhile, so that no build of the same
//!   output replaces the directory under the user.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::prepare::{Dirs, Prepared};
use super::sandbox::Terminal;
use super::{BuildError, Builder, Job};
use crate::exit::Class;
use crate::store::{OutputLock, ShellDir, StoreError, StoreName};

/// Where a shell works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A fresh build directory; with `keep`, left in place afterwards.
    Fresh { keep: bool },
    /// A build directory kept by `realize --keep-failed`.
    Kept(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error("{} is not a build directory kept by `pybake realize --keep-failed` in the store {}\n  hint: pass --keep-failed the directory a failed `realize --keep-failed` printed after \"build directory kept at\"", dir.display(), store.display())]
    NotKept { dir: PathBuf, store: PathBuf },
    #[error("{} was kept from a build of {kept}, but `{recipe}` is now {current}: the recipe or one of its inputs changed since\n  hint: `pybake realize --keep-failed {recipe}` keeps a directory of the current derivation; `pybake shell {recipe}` starts in a fresh one", dir.display())]
    OtherDerivation {
        dir: PathBuf,
        kept: StoreName,
        recipe: String,
        current: StoreName,
    },
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ShellError {
    /// What kind of problem this is (see [`crate::exit`]).
    pub fn class(&self) -> Class {
        match self {
            ShellError::NotKept { .. } | ShellError::OtherDerivation { .. } => Class::User,
            ShellError::Build(e) => e.class(),
            ShellError::Store(_) => Class::Environment,
        }
    }
}

/// What keeps a shell's directory as long as the shell needs it (held, never read).
enum Guard {
    Fresh { _dir: ShellDir },
    Kept { _lock: OutputLock },
}

/// A build directory ready for a shell. Dropping it removes a fresh directory (unless kept).
pub struct Shell {
    recipe: String,
    prepared: Prepared,
    top: PathBuf,
    removed_on_exit: bool,
    _guard: Guard,
}

impl Builder<'_> {
    /// Prepares `job`'s build environment at `place` for a shell. The job's dependencies must
    /// be in the store.
    pub fn shell(&self, job: &Job, place: Place) -> Result<Shell, ShellError> {
        let recipe = job.drv.recipe.name.clone();
        let root = self.root_for(job, true)?;
        match place {
            Place::Fresh { keep } => {
                let mut dir = self.store.shell_dir()?;
                if keep {
                    dir.keep();
                }
                let top = dir.path().to_path_buf();
                let dirs = Dirs::under(&top);
                dirs.create()?;
                self.lay_out_sources(job, &dirs)?;
                let prepared = self.ready(job, dirs, root)?;
                Ok(Shell {
                    recipe,
                    prepared,
                    top,
                    removed_on_exit: !keep,
                    _guard: Guard::Fresh { _dir: dir },
                })
            }
            Place::Kept(dir) => {
                let not_kept = || ShellError::NotKept {
                    dir: dir.clone(),
                    store: self.store.root().to_path_buf(),
                };
                let (top, owner) = self.store.kept_build_dir(&dir).ok_or_else(not_kept)?;
                if owner != job.drv.store_name {
                    return Err(ShellError::OtherDerivation {
                        dir,
                        kept: owner,
                        recipe,
                        current: job.drv.store_name.clone(),
                    });
                }
                let lock = self.store.lock(&owner)?;
                // A build that held the lock meanwhile replaced the directory.
                if self.store.kept_build_dir(&top).is_none() {
                    return Err(not_kept());
                }
                let prepared = self.ready(job, Dirs::under(&top), root)?;
                Ok(Shell {
                    recipe,
                    prepared,
                    top,
                    removed_on_exit: false,
                    _guard: Guard::Kept { _lock: lock },
                })
            }
        }
    }
}

impl Shell {
    /// The shell's directory on the host; the build directory (`/build`) is its `build/`.
    pub fn dir(&self) -> &Path {
        &self.top
    }

    /// The build directory on the host (`/build` in the sandbox).
    pub fn build_dir(&self) -> &Path {
        self.prepared.build_dir()
    }

    /// Whether the directory goes when this value is dropped.
    pub fn removed_on_exit(&self) -> bool {
        self.removed_on_exit
    }

    /// The environment the shell gets: a step's.
    pub fn env(&self) -> &BTreeMap<String, String> {
        self.prepared.env()
    }

    /// A command that runs `argv` in the build environment, or, with no `argv`, a shell: an
    /// interactive one (bash when the system has it) on a terminal, one that reads commands
    /// from its input otherwise. Stdio is the caller's.
    pub fn command(&self, argv: &[&str], terminal: Terminal) -> std::io::Result<Command> {
        const INTERACTIVE: &str =
            "if command -v bash >/dev/null 2>&1; then exec bash --norc -i; else exec sh -i; fi";
        let argv: &[&str] = match (argv.is_empty(), terminal) {
            (false, _) => argv,
            (true, Terminal::Shared) => &["/bin/sh", "-c", INTERACTIVE],
            (true, Terminal::Detached) => &["/bin/sh"],
        };
        let mut cmd = self.prepared.command(argv, terminal)?;
        if terminal == Terminal::Shared {
            // For the user at the terminal only, never in a build: line editing needs to know
            // the terminal, and the prompt says where the user is.
            if let Some(term) = std::env::var_os("TERM") {
                cmd.env("TERM", term);
            }
            cmd.env("PS1", format!("[pybake shell {}] $ ", self.recipe));
        }
        Ok(cmd)
    }
}
