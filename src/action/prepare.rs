//! Making a build directory ready for a job's steps, and the command that runs one of them.
//! A build ([`Builder::build`]) and `pybake shell` ([`super::shell`]) share this, so a shell is
//! the environment a step gets: the same sources, `/etc`, ownership, mounts and variables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::build_user::Staging;
use super::namespaces::Plan;
use super::sandbox::{self, Mounts, Terminal};
use super::{build_user, env, io, sources, BuildError, Builder, Job, Sandbox, CANONICAL_STORE};
use crate::store::StoreName;

/// Where a slot keeps the spare mount points ([`Dirs::lend_mount_points`]).
pub(super) const SPARE: &str = "spare";

/// The host directories of one build under its temporary directory `top` (see the module doc
/// of [`super`]): `build/` (seen as `/build`), `store/` (seen as the store) and `etc/`.
pub(super) struct Dirs {
    pub build: PathBuf,
    pub store_view: PathBuf,
    pub etc: PathBuf,
    /// Empty: pybake's own sandbox mounts the step's `/` here (in the step's namespace).
    pub new_root: PathBuf,
    /// Empty directories, mount points of earlier builds' dependencies, made mount points
    /// again (see [`Dirs::lend_mount_points`]).
    pub spare: PathBuf,
}

impl Dirs {
    pub fn under(top: &Path) -> Self {
        Dirs {
            build: top.join("build"),
            store_view: top.join("store"),
            etc: top.join("etc"),
            new_root: top.join("newroot"),
            spare: top.join(SPARE),
        }
    }

    /// The directories [`Dirs::create`] makes, parents first.
    pub fn skeleton(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.build.clone()];
        dirs.extend(["src", "work", "home", "tmp"].map(|d| self.build.join(d)));
        dirs.push(self.store_view.clone());
        dirs.push(self.new_root.clone());
        dirs
    }

    /// Puts a mount point for each of `names` in the store view, from the spare ones where
    /// there are: each directory the sandbox mounts a dependency on must exist there, and
    /// making and removing one per dependency and build was a cost of its own (on ext4 with
    /// `discard`, removing a directory waits for the disk to discard its block). The sandbox
    /// makes those it does not find.
    pub fn lend_mount_points<'a>(&self, names: impl Iterator<Item = &'a str>) {
        let Ok(spare) = fs_err::read_dir(&self.spare) else {
            return;
        };
        let mut spare = spare.flatten();
        for name in names {
            let Some(dir) = spare.next() else {
                return;
            };
            let _ = fs_err::rename(dir.path(), self.store_view.join(name));
        }
    }

    /// Creates `build/{src,work,home,tmp}` and `store/`.
    pub fn create(&self) -> Result<(), BuildError> {
        for d in ["src", "work", "home", "tmp"] {
            fs_err::create_dir_all(self.build.join(d)).map_err(io(&self.build))?;
        }
        fs_err::create_dir_all(&self.store_view).map_err(io(&self.store_view))?;
        fs_err::create_dir_all(&self.new_root).map_err(io(&self.new_root))
    }
}

/// How a step's process is isolated.
pub(super) enum Isolation {
    /// The command is bubblewrap's, with the staging its process does first, if any.
    Bubblewrap(Option<Staging>),
    /// pybake's own sandbox ([`super::namespaces`]).
    Own(Plan),
    /// None (the sandbox is off).
    None,
}

/// A build directory made ready for a job's steps: `/etc` written, owned by the build user,
/// with what the sandbox binds and the environment every step gets.
pub struct Prepared {
    sandbox: Sandbox,
    dirs: Dirs,
    root: Option<PathBuf>,
    inputs: Vec<(PathBuf, String)>,
    env: BTreeMap<String, String>,
}

impl Prepared {
    /// The build directory on the host (`/build` in the sandbox).
    pub fn build_dir(&self) -> &Path {
        &self.dirs.build
    }

    /// The environment of every step (docs/recipes.md).
    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    /// A command that runs `argv` in `/build/work` with the step environment (nothing else of
    /// pybake's), in the sandbox when it is on. Stdio is the caller's to set.
    pub fn command(&self, argv: &[&str], terminal: Terminal) -> std::io::Result<Command> {
        let mut cmd = self
            .sandbox
            .command(&self.mounts(), "work", argv, terminal)?;
        cmd.env_clear().envs(&self.env);
        Ok(cmd)
    }

    /// A build step's command, with what its process must do first (see [`super::spawn`],
    /// which starts it).
    pub(super) fn step(&self, argv: &[&str]) -> std::io::Result<(Command, Isolation)> {
        let m = self.mounts();
        if let Some(plan) = self.sandbox.own_plan(&m, "work")? {
            let mut cmd = Command::new(argv.first().copied().unwrap_or("/bin/sh"));
            cmd.args(argv.iter().skip(1)).env_clear().envs(&self.env);
            return Ok((cmd, Isolation::Own(plan)));
        }
        let (mut cmd, staging) =
            self.sandbox
                .command_and_staging(&m, "work", argv, Terminal::Detached)?;
        cmd.env_clear().envs(&self.env);
        let isolation = if self.sandbox.is_on() {
            Isolation::Bubblewrap(staging)
        } else {
            Isolation::None
        };
        Ok((cmd, isolation))
    }

    fn mounts(&self) -> Mounts<'_> {
        Mounts {
            build_dir: &self.dirs.build,
            store_view: &self.dirs.store_view,
            root: self.root.clone(),
            etc_dir: &self.dirs.etc,
            new_root: &self.dirs.new_root,
            inputs: self.inputs.clone(),
        }
    }
}

impl Builder<'_> {
    /// The root file system the steps run on (a store path), if the recipe has one. `runs`:
    /// whether anything will run there (a recipe without steps only lays out its sources).
    pub(super) fn root_for(&self, job: &Job, runs: bool) -> Result<Option<PathBuf>, BuildError> {
        match (&job.drv.root, self.sandbox) {
            (Some(root), Sandbox::Bwrap { .. }) => Ok(Some(self.store.path(root))),
            (Some(root), Sandbox::Off { why }) if runs => Err(BuildError::NeedsSandbox {
                recipe: job.drv.recipe.name.clone(),
                root: root.clone(),
                why: why.clone(),
            }),
            _ => Ok(None),
        }
    }

    /// Lays out the job's sources in `build/src` (`$src`).
    pub(super) fn lay_out_sources(&self, job: &Job, dirs: &Dirs) -> Result<(), BuildError> {
        sources::prepare(
            job.drv.recipe,
            &job.drv.source_hashes,
            self.store,
            self.fetch,
            self.reporter,
            &dirs.build.join("src"),
        )
    }

    /// Writes the sandbox's `/etc`, gives the build user what a step must write, and works out
    /// the mounts and the environment. Sources are laid out already.
    pub(super) fn ready(
        &self,
        job: &Job,
        dirs: Dirs,
        root: Option<PathBuf>,
    ) -> Result<Prepared, BuildError> {
        if self.sandbox.is_on() && root.is_none() {
            sandbox::write_etc(&dirs.etc).map_err(io(&dirs.etc))?;
        }
        // The step runs as the build user, who must be able to write what it is given.
        if let Some((uid, gid)) = self.sandbox.build_user() {
            for d in [&dirs.build, &dirs.store_view] {
                build_user::chown_tree(d, uid, gid).map_err(io(d))?;
            }
            // Its own, mode 0700, so that bubblewrap running as the build user reaches what
            // is in it without a staging mount namespace (see build_user), and nobody else
            // does.
            if let Some(top) = dirs.build.parent() {
                fs_err::os::unix::fs::lchown(top, Some(uid), Some(gid)).map_err(io(top))?;
            }
        }
        let inputs: Vec<(PathBuf, String)> = job
            .closure
            .iter()
            .map(|n| (self.store.path(n), n.as_str().to_string()))
            .collect();
        let on = self.sandbox.is_on();
        if on {
            dirs.lend_mount_points(job.closure.iter().map(|n| n.as_str()));
        }
        let seen_build = if on {
            PathBuf::from(sandbox::BUILD_DIR)
        } else {
            dirs.build.clone()
        };
        let seen_store = |n: &StoreName| -> PathBuf {
            if on {
                Path::new(CANONICAL_STORE).join(n.as_str())
            } else {
                self.store.path(n)
            }
        };
        let out = if on {
            Path::new(CANONICAL_STORE).join(job.drv.store_name.as_str())
        } else {
            dirs.store_view.join(job.drv.store_name.as_str())
        };
        let env = env::build_env(&env::EnvInput {
            build_dir: &seen_build,
            out: &out,
            deps: job.deps.iter().map(|(n, s)| (*n, seen_store(s))).collect(),
            jobs: self.jobs,
            recipe_env: &job.drv.recipe.env,
        });
        Ok(Prepared {
            sandbox: self.sandbox.clone(),
            dirs,
            root,
            inputs,
            env,
        })
    }
}
