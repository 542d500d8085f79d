//! Running a step: inside bubblewrap when it works, directly (with a warning) when it does not.
//!
//! Inside the sandbox every build sees the same paths on every machine: the build directory at
//! [`BUILD_DIR`], the store at [`CANONICAL_STORE`] holding only the dependency closure (read-only)
//! and the output being built (writable); `/usr` and `/etc` read-only, fresh `/dev`, `/proc` and
//! `/tmp`, no network, a fixed host name, and every process killed when pybake dies.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub use crate::store::CANONICAL_STORE;

/// Where the build directory appears inside the sandbox.
pub const BUILD_DIR: &str = "/build";

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
    Bwrap { program: PathBuf },
    Off { why: String },
}

#[derive(Debug, thiserror::Error)]
#[error("--sandbox on was given but bubblewrap cannot be used: {why}\n  hint: install the Debian package `bubblewrap`, or use --sandbox auto")]
pub struct SandboxUnavailable {
    pub why: String,
}

/// What a step's sandbox binds where.
pub struct Mounts<'a> {
    /// Host directory that appears as [`BUILD_DIR`].
    pub build_dir: &'a Path,
    /// Host directory that appears as [`CANONICAL_STORE`]; the output is created inside it.
    pub store_view: &'a Path,
    /// Host store paths of the dependency closure, each bound read-only under the store view.
    pub inputs: Vec<(PathBuf, String)>,
}

fn probe(program: &Path) -> Result<(), String> {
    let out = Command::new(program)
        .args([
            "--unshare-all",
            "--die-with-parent",
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
        ])
        .args(["--proc", "/proc", "true"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} does not work here ({}): {}",
            program.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
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
        let detected = AUTO.get_or_init(|| match find_bwrap() {
            None => Sandbox::Off {
                why: "bubblewrap (bwrap) is not installed".into(),
            },
            Some(program) => match probe(&program) {
                Ok(()) => Sandbox::Bwrap { program },
                Err(why) => Sandbox::Off { why },
            },
        });
        match (mode, detected) {
            (SandboxMode::On, Sandbox::Off { why }) => Err(SandboxUnavailable { why: why.clone() }),
            _ => Ok(detected.clone()),
        }
    }

    pub fn is_on(&self) -> bool {
        matches!(self, Sandbox::Bwrap { .. })
    }

    /// The build directory as the step sees it.
    pub fn build_dir_seen(&self, m: &Mounts) -> PathBuf {
        match self {
            Sandbox::Bwrap { .. } => PathBuf::from(BUILD_DIR),
            Sandbox::Off { .. } => m.build_dir.to_path_buf(),
        }
    }

    /// A command that runs `sh -eu -c step` with the build's view of the file system.
    /// The caller sets the environment, working directory inside the build dir, and stdio.
    pub fn command(&self, m: &Mounts, cwd_rel: &str, step: &str) -> Command {
        match self {
            Sandbox::Off { .. } => {
                let mut c = Command::new("/bin/sh");
                c.args(["-eu", "-c", step])
                    .current_dir(m.build_dir.join(cwd_rel));
                c
            }
            Sandbox::Bwrap { program } => {
                let mut c = Command::new(program);
                c.args(["--unshare-all", "--die-with-parent", "--hostname", "pybake"]);
                c.args(["--ro-bind", "/usr", "/usr"]);
                // Mirror the host's merged-/usr symlinks (or bind the real directories).
                for top in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
                    match std::fs::read_link(top) {
                        Ok(target) => {
                            c.arg("--symlink").arg(target).arg(top);
                        }
                        Err(_) if Path::new(top).is_dir() => {
                            c.args(["--ro-bind", top, top]);
                        }
                        Err(_) => {}
                    }
                }
                c.args([
                    "--ro-bind",
                    "/etc",
                    "/etc",
                    "--dev",
                    "/dev",
                    "--proc",
                    "/proc",
                ]);
                c.args(["--tmpfs", "/tmp"]);
                c.arg("--bind").arg(m.build_dir).arg(BUILD_DIR);
                c.arg("--bind").arg(m.store_view).arg(CANONICAL_STORE);
                for (host, name) in &m.inputs {
                    c.arg("--ro-bind")
                        .arg(host)
                        .arg(format!("{CANONICAL_STORE}/{name}"));
                }
                c.arg("--chdir").arg(format!("{BUILD_DIR}/{cwd_rel}"));
                c.args(["--", "/bin/sh", "-eu", "-c", step]);
                c
            }
        }
    }
}
