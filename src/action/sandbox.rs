//! Running a step: in a sandbox when bubblewrap works, directly (with a warning) when it does
//! not. The sandbox is laid out here, as bubblewrap's arguments; as root, build steps get the
//! same layout from pybake itself ([`super::namespaces`], unless `PYBAKE_SANDBOX_IMPL` is
//! `bubblewrap`), and `pybake shell` always gets bubblewrap.
//!
//! Inside the sandbox every build sees the same paths on every machine: the build directory at
//! [`BUILD_DIR`], the store at [`CANONICAL_STORE`] holding only the dependency closure (read-only)
//! and the output being built (writable); fresh `/dev`, `/proc` and `/tmp`, no network, a fixed
//! host name, and every process killed when pybake dies. The rest of `/` is the recipe's root
//! (a store path, read-only, each of its top-level entries bound into the sandbox's empty `/`),
//! or, for a host build, the host's `/usr` read-only with an `/etc` of pybake's making (a build
//! user, `localhost`) plus the few host files a tool chain reads (see [`HOST_ETC`]).
//!
//! The step runs as uid/gid [`SANDBOX_UID`] with no capabilities, in a new session (no
//! controlling terminal to inject input into; only an interactive `pybake shell` keeps the
//! terminal, see [`Terminal`]), and cannot create user namespaces of its own.
//! When pybake is root, the host side of that user is the unprivileged build user
//! ([`super::build_user`]), never root.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::build_user::{self, Staging};
use super::namespaces::Plan;
use super::spawn::Spawn;
pub use crate::store::CANONICAL_STORE;

/// Where the build directory appears inside the sandbox.
pub const BUILD_DIR: &str = "/build";

/// The uid and gid a step has inside the sandbox (`pybake` in its `/etc/passwd`).
pub const SANDBOX_UID: u32 = 1000;

/// Host files under `/etc` a build on the host's `/usr` may read, bound read-only when they
/// exist: Debian's `cc`, `c++` and `awk` are links through `/etc/alternatives`, and the dynamic
/// loader reads its cache. Nothing else of the host's `/etc` (no `shadow`, no keys) is visible.
pub const HOST_ETC: &[&str] = &[
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxMode {
    /// Use bubblewrap when it works; otherwise build without isolation and say so once.
    Auto,
    /// Require bubblewrap; fail when it does not work.
    On,
    /// Never use bubblewrap.
    Off,
}

#[derive(Debug, Clone)]
pub enum Sandbox {
    Bwrap {
        program: PathBuf,
        /// The host uid/gid bubblewrap runs as when pybake is root.
        build_user: Option<(u32, u32)>,
        /// Build steps run in namespaces pybake sets up itself, laid out as bubblewrap lays
        /// them out ([`super::namespaces`]): when pybake is root and they work here, unless
        /// `PYBAKE_SANDBOX_IMPL=bubblewrap`. `pybake shell` always uses bubblewrap.
        own_namespaces: bool,
        /// Why pybake's own sandbox does not work here, when it was tried and failed.
        own_failed: Option<String>,
    },
    Off {
        why: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxUnavailable {
    #[error("--sandbox on was given but bubblewrap cannot be used: {why}\n  hint: install the Debian package `bubblewrap`, or use --sandbox auto")]
    NoBubblewrap { why: String },
    #[error("PYBAKE_SANDBOX_IMPL is `{value}`, which names no sandbox\n  hint: `pybake` (pybake's own, as root; the default) or `bubblewrap`")]
    UnknownImpl { value: String },
}

/// Who sets a step's sandbox up (`PYBAKE_SANDBOX_IMPL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Impl {
    /// pybake itself when it is root ([`super::namespaces`]), else bubblewrap.
    Own,
    Bubblewrap,
}

fn requested_impl() -> Result<Impl, SandboxUnavailable> {
    match std::env::var_os("PYBAKE_SANDBOX_IMPL") {
        None => Ok(Impl::Own),
        Some(v) if v == "pybake" => Ok(Impl::Own),
        Some(v) if v == "bubblewrap" => Ok(Impl::Bubblewrap),
        Some(v) => Err(SandboxUnavailable::UnknownImpl {
            value: v.to_string_lossy().into_owned(),
        }),
    }
}

/// Recipes with a root cannot be built without bubblewrap: they never fall back to the host.
#[derive(Debug, thiserror::Error)]
#[error("{} run on a root file system, which needs bubblewrap, but {why}\n  hint: install the Debian package `bubblewrap` (a recipe with a `root` never builds on the host's /usr)", recipes.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", "))]
pub struct RootNeedsSandbox {
    pub recipes: Vec<String>,
    pub why: String,
}

/// What a step's sandbox binds where.
pub struct Mounts<'a> {
    /// Host directory that appears as [`BUILD_DIR`].
    pub build_dir: &'a Path,
    /// Host directory that appears as [`CANONICAL_STORE`]; the output is created inside it.
    pub store_view: &'a Path,
    /// The root file system (a store path) that appears as `/`, read-only; `None`: the host's
    /// `/usr` and pybake's own `/etc`.
    pub root: Option<PathBuf>,
    /// Host directory holding the generated `passwd`, `group` and `hosts` (see [`write_etc`]).
    pub etc_dir: &'a Path,
    /// An empty host directory pybake's own sandbox mounts the step's `/` on (in the step's
    /// mount namespace only; see [`super::namespaces`]).
    pub new_root: &'a Path,
    /// Host store paths of the dependency closure, each bound read-only under the store view.
    pub inputs: Vec<(PathBuf, String)>,
}

/// What `/` is made of.
pub(super) enum System {
    /// A root file system: its top-level entries, and where the sandbox's maker finds it.
    Root {
        entries: Vec<(String, RootEntry)>,
        seen: PathBuf,
    },
    /// The host's `/usr`, with pybake's `/etc` files where bubblewrap finds them.
    Host { etc: PathBuf },
}

pub(super) enum RootEntry {
    Dir,
    File,
    Link(PathBuf),
}

/// Paths inside the sandbox that pybake mounts itself, whatever the root holds there.
const OWN_MOUNTS: &[&str] = &["build", "dev", "proc", "pybake", "tmp"];

/// The top-level entries of a root file system, sorted, without the ones pybake mounts.
fn root_entries(root: &Path) -> io::Result<Vec<(String, RootEntry)>> {
    let mut out = Vec::new();
    for e in fs_err::read_dir(root)? {
        let e = e?;
        let Some(name) = e.file_name().to_str().map(String::from) else {
            continue;
        };
        if OWN_MOUNTS.contains(&name.as_str()) {
            continue;
        }
        let ft = e.file_type()?;
        let kind = if ft.is_symlink() {
            RootEntry::Link(fs_err::read_link(e.path())?)
        } else if ft.is_dir() {
            RootEntry::Dir
        } else {
            RootEntry::File
        };
        out.push((name, kind));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// What `/` is made of for `m`, with host paths as `seen` says the sandbox's maker sees them.
fn system_of(m: &Mounts, seen: &mut dyn FnMut(&Path) -> io::Result<PathBuf>) -> io::Result<System> {
    Ok(match &m.root {
        Some(root) => System::Root {
            entries: root_entries(root)?,
            seen: seen(root)?,
        },
        None => System::Host {
            etc: seen(m.etc_dir)?,
        },
    })
}

/// Writes the sandbox's `/etc/passwd`, `/etc/group` and `/etc/hosts` into `dir`.
pub fn write_etc(dir: &Path) -> io::Result<()> {
    let u = SANDBOX_UID;
    let files = [
        (
            "passwd",
            format!(
                "root:x:0:0:root:/root:/bin/sh\npybake:x:{u}:{u}:pybake build user:{BUILD_DIR}/home:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            ),
        ),
        ("group", format!("root:x:0:\npybake:x:{u}:\nnogroup:x:65534:\n")),
        ("hosts", "127.0.0.1 localhost pybake\n::1 localhost\n".to_string()),
    ];
    fs_err::create_dir_all(dir)?;
    for (name, text) in files {
        let path = dir.join(name);
        // A reused build directory has them already: truncating a file frees its block, which
        // on ext4 with `discard` waits for the disk.
        if fs_err::read(&path).is_ok_and(|old| old == text.as_bytes()) {
            continue;
        }
        fs_err::write(path, text)?;
    }
    Ok(())
}

/// Whom the terminal pybake runs on (if any) belongs to while a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Terminal {
    /// Not the command's: it runs in a new session, without a controlling terminal. Build
    /// steps are untrusted input, and a process that shares a terminal can push characters into
    /// its input (`TIOCSTI`) for the user's shell to run after pybake exits.
    Detached,
    /// The command's: an interactive `pybake shell` the user types into. That is not untrusted
    /// input, and a shell in a new session could not take the terminal (no job control, and
    /// Ctrl-C would go to pybake instead of the shell).
    Shared,
}

/// The flags every sandbox gets, whatever it binds.
fn isolation_args(c: &mut Command, terminal: Terminal) {
    let id = SANDBOX_UID.to_string();
    c.args([
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
    ]);
    if terminal == Terminal::Detached {
        c.arg("--new-session");
    }
    c.args([
        "--hostname",
        "pybake",
        "--cap-drop",
        "ALL",
        "--uid",
        &id,
        "--gid",
        &id,
    ]);
}

fn probe(program: &Path, build_user: Option<(u32, u32)>) -> Result<(), String> {
    let mut c = Command::new(program);
    isolation_args(&mut c, Terminal::Detached);
    c.args(["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]);
    if let Some((uid, gid)) = build_user {
        // The same staging a build uses, on a directory that always exists.
        let mut staging = Staging::new(uid, gid);
        let staged = staging
            .stage(Path::new("/usr"))
            .map_err(|e| format!("cannot prepare the build user's view: {e}"))?;
        staging.install(&mut c);
        c.arg("--ro-bind").arg(staged).arg("/mnt");
    }
    let out = c
        .arg("true")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        let as_user = match build_user {
            Some((uid, _)) => format!(" as the build user (uid {uid})"),
            None => String::new(),
        };
        Err(format!(
            "{} does not work here{as_user} ({}): {}",
            program.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether pybake's own sandbox runs a step here (`true` on the host's `/usr`).
fn probe_own_namespaces(ids: (u32, u32)) -> io::Result<()> {
    let t = tempfile::Builder::new().prefix("pybake-probe").tempdir()?;
    let dirs = ["build/work", "store", "etc", "newroot"].map(|d| t.path().join(d));
    for d in &dirs {
        fs_err::create_dir_all(d)?;
    }
    write_etc(&dirs[2])?;
    for d in [
        t.path().join("build"),
        t.path().join("build/work"),
        dirs[1].clone(),
    ] {
        fs_err::os::unix::fs::chown(&d, Some(ids.0), Some(ids.1))?;
    }
    let m = Mounts {
        build_dir: &t.path().join("build"),
        store_view: &dirs[1],
        root: None,
        etc_dir: &dirs[2],
        new_root: &dirs[3],
        inputs: Vec::new(),
    };
    let system = System::Host {
        etc: dirs[2].clone(),
    };
    let plan = Plan::new(&m, &system, "work", ids, true)?;
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "exit 0"]).env_clear();
    let null = fs_err::File::open("/dev/null")?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&null);
    let status = Spawn::from_command(&cmd)?
        .start_in_sandbox([fd, fd, fd], &plan)?
        .wait()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "the probe step ended with {status}"
        )))
    }
}

/// `PYBAKE_BWRAP` names the program when it is not in a standard place (an empty value, or a
/// path that does not exist, disables the sandbox: the test suite uses this to exercise both).
fn find_bwrap() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PYBAKE_BWRAP") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    ["/usr/bin/bwrap", "/bin/bwrap", "/usr/local/bin/bwrap"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

impl Sandbox {
    /// Decides once per process how steps run.
    pub fn detect(mode: SandboxMode) -> Result<Sandbox, SandboxUnavailable> {
        static AUTO: OnceLock<Sandbox> = OnceLock::new();
        if mode == SandboxMode::Off {
            return Ok(Sandbox::Off {
                why: "--sandbox off was given".into(),
            });
        }
        let requested = requested_impl()?;
        let detected = AUTO.get_or_init(|| {
            let build_user = build_user::for_this_process();
            match find_bwrap() {
                None => Sandbox::Off {
                    why: "bubblewrap (bwrap) is not installed".into(),
                },
                Some(program) => match probe(&program, build_user) {
                    Ok(()) => {
                        let own = match (requested, build_user) {
                            (Impl::Own, Some(ids)) => {
                                Some(probe_own_namespaces(ids).map_err(|e| e.to_string()))
                            }
                            _ => None,
                        };
                        Sandbox::Bwrap {
                            program,
                            build_user,
                            own_namespaces: matches!(own, Some(Ok(()))),
                            own_failed: own.and_then(Result::err),
                        }
                    }
                    Err(why) => Sandbox::Off { why },
                },
            }
        });
        match (mode, detected) {
            (SandboxMode::On, Sandbox::Off { why }) => {
                Err(SandboxUnavailable::NoBubblewrap { why: why.clone() })
            }
            _ => Ok(detected.clone()),
        }
    }

    pub fn is_on(&self) -> bool {
        matches!(self, Sandbox::Bwrap { .. })
    }

    /// The host uid/gid that must own the build directory for the step to write it.
    pub fn build_user(&self) -> Option<(u32, u32)> {
        match self {
            Sandbox::Bwrap { build_user, .. } => *build_user,
            Sandbox::Off { .. } => None,
        }
    }

    /// The sandbox of a build step running in `/build/<cwd_rel>`, when pybake sets it up itself
    /// (see [`super::namespaces`]); `None` when bubblewrap or nothing does.
    pub(super) fn own_plan(&self, m: &Mounts, cwd_rel: &str) -> io::Result<Option<Plan>> {
        let Sandbox::Bwrap {
            build_user: Some(ids),
            own_namespaces: true,
            ..
        } = self
        else {
            return Ok(None);
        };
        let system = system_of(m, &mut |p: &Path| Ok(p.to_path_buf()))?;
        Plan::new(m, &system, cwd_rel, *ids, true).map(Some)
    }

    /// A command that runs `argv` (a build step: `sh -eu -c STEP`) with the build's view of the
    /// file system, in `/build/<cwd_rel>`. The caller sets the environment and stdio. Without
    /// the sandbox it runs in `build_dir/cwd_rel`: detached, under a supervisor (see
    /// [`super::supervise`]); sharing the terminal, directly, as the supervisor's own process
    /// group would be in the terminal's background.
    pub fn command(
        &self,
        m: &Mounts,
        cwd_rel: &str,
        argv: &[&str],
        terminal: Terminal,
    ) -> io::Result<Command> {
        let (mut c, staging) = self.command_and_staging(m, cwd_rel, argv, terminal)?;
        if let Some(s) = staging {
            s.install(&mut c);
        }
        Ok(c)
    }

    /// What [`Sandbox::command`] makes, with the staging its child does (as root in the
    /// sandbox) not yet installed in it: for a caller that starts the process itself
    /// ([`super::spawn`]).
    pub fn command_and_staging(
        &self,
        m: &Mounts,
        cwd_rel: &str,
        argv: &[&str],
        terminal: Terminal,
    ) -> io::Result<(Command, Option<Staging>)> {
        let Some((first, rest)) = argv.split_first() else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no command"));
        };
        let (program, build_user) = match self {
            Sandbox::Off { .. } => {
                let mut c = match terminal {
                    Terminal::Detached => super::supervise::command(first, rest),
                    Terminal::Shared => {
                        let mut c = Command::new(first);
                        c.args(rest);
                        c
                    }
                };
                c.current_dir(m.build_dir.join(cwd_rel));
                return Ok((c, None));
            }
            Sandbox::Bwrap {
                program,
                build_user,
                ..
            } => (program, build_user),
        };
        let mut c = Command::new(program);
        // Host paths as bubblewrap will see them: staged when it runs as the build user and
        // cannot reach them where they are (a store under /root, mode 0700); a mount namespace
        // per step is a millisecond, so not when it can.
        let mut staging = build_user.map(|(uid, gid)| Staging::new(uid, gid));
        let stage = match build_user {
            Some((uid, gid)) => {
                let mut reach = build_user::Reach::new(*uid, *gid);
                let mut all = vec![m.build_dir, m.store_view, m.etc_dir];
                all.extend(m.root.as_deref());
                all.extend(m.inputs.iter().map(|(p, _)| p.as_path()));
                !all.into_iter().all(|p| reach.can_reach(p))
            }
            None => false,
        };
        let mut seen = |host: &Path| -> io::Result<PathBuf> {
            match &mut staging {
                Some(s) if stage => s.stage(host),
                _ => Ok(host.to_path_buf()),
            }
        };
        let build_dir = seen(m.build_dir)?;
        let store_view = seen(m.store_view)?;
        let system = system_of(m, &mut seen)?;
        let inputs = m
            .inputs
            .iter()
            .map(|(host, name)| Ok((seen(host)?, name)))
            .collect::<io::Result<Vec<_>>>()?;

        isolation_args(&mut c, terminal);
        match &system {
            System::Root { entries, seen } => {
                // bubblewrap's `/` is a fresh tmpfs: each top-level entry of the root is bound
                // there, so the root needs no mount points of its own.
                for (name, kind) in entries {
                    let at = format!("/{name}");
                    match kind {
                        RootEntry::Link(target) => {
                            c.arg("--symlink").arg(target).arg(&at);
                        }
                        RootEntry::Dir | RootEntry::File => {
                            c.arg("--ro-bind").arg(seen.join(name)).arg(&at);
                        }
                    }
                }
            }
            System::Host { etc } => {
                c.args(["--ro-bind", "/usr", "/usr"]);
                // Mirror the host's merged-/usr symlinks (or bind the real directories).
                for top in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
                    match fs_err::read_link(top) {
                        Ok(target) => {
                            c.arg("--symlink").arg(target).arg(top);
                        }
                        Err(_) if Path::new(top).is_dir() => {
                            c.args(["--ro-bind", top, top]);
                        }
                        Err(_) => {}
                    }
                }
                for f in ["passwd", "group", "hosts"] {
                    c.arg("--ro-bind").arg(etc.join(f)).arg(format!("/etc/{f}"));
                }
                for host in HOST_ETC {
                    c.args(["--ro-bind-try", host, host]);
                }
            }
        }
        c.args(["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]);
        c.arg("--bind").arg(&build_dir).arg(BUILD_DIR);
        c.arg("--bind").arg(&store_view).arg(CANONICAL_STORE);
        for (host, name) in &inputs {
            c.arg("--ro-bind")
                .arg(host)
                .arg(format!("{CANONICAL_STORE}/{name}"));
        }
        c.arg("--chdir").arg(format!("{BUILD_DIR}/{cwd_rel}"));
        c.arg("--").args(argv);
        Ok((c, staging))
    }
}
