//! `pybake shell NAME [-- CMD ARGS...]`: NAME's build environment, to run its steps by hand.

use std::io::IsTerminal;
use std::path::PathBuf;

use super::realize::RealizeArgs;
use super::{default_parallelism, Global};
use crate::action::{Place, SandboxMode, Terminal};
use crate::progress;
use crate::project::ShellOptions;

#[derive(Debug, clap::Args)]
pub struct ShellArgs {
    /// The recipe whose build environment to enter.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Enter DIR, the build directory of a failed build kept by `realize --keep-failed` (which
    /// prints it), instead of a fresh one. It stays after the shell.
    #[arg(long, value_name = "DIR", conflicts_with = "keep")]
    pub keep_failed: Option<PathBuf>,
    /// Keep the fresh build directory after the shell ends (it is removed otherwise).
    #[arg(long)]
    pub keep: bool,
    /// The value of PYBAKE_JOBS in the shell [default: the number of cores].
    #[arg(long, value_name = "N")]
    pub cores: Option<usize>,
    /// Isolation, as for a build: bubblewrap when it works (auto), always (on), never (off).
    #[arg(long, value_enum, env = "PYBAKE_SANDBOX", default_value = "auto")]
    pub sandbox: SandboxMode,
    /// A command to run there instead of a shell; pybake exits with its status.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub fn run(g: &Global, a: &ShellArgs) -> anyhow::Result<i32> {
    let project = g.project()?;
    let closure = project.closure(std::slice::from_ref(&a.name))?;
    let needs: Vec<String> = closure
        .get(&a.name)
        .map(|d| d.recipe.needs().map(|n| n.name.clone()).collect())
        .unwrap_or_default();
    if !needs.is_empty() {
        let mut args = RealizeArgs::for_one(&a.name);
        args.names = needs;
        args.cores = a.cores;
        args.sandbox = a.sandbox;
        let (code, _) = super::realize::realize_in(&project, &args)?;
        if code != 0 {
            say!(
                "pybake: the dependencies of `{}` could not be realized (see above)",
                a.name
            );
            return Ok(code);
        }
    }
    // Plain lines, never live bars: they would keep redrawing under the user's shell.
    let reporter = progress::Plain::new();
    let opts = ShellOptions {
        sandbox: a.sandbox,
        cores: a.cores.unwrap_or_else(default_parallelism),
        place: match &a.keep_failed {
            Some(dir) => Place::Kept(dir.clone()),
            None => Place::Fresh { keep: a.keep },
        },
    };
    let shell = closure.shell(&a.name, &opts, &reporter)?;
    let after = if a.keep_failed.is_some() {
        "it stays after the shell"
    } else if shell.removed_on_exit() {
        "it is removed on exit (--keep keeps it)"
    } else {
        "it is kept after the shell (--keep)"
    };
    say!(
        "pybake: shell for `{}` in the build directory {} (/build in the sandbox, working directory /build/work); {after}",
        a.name,
        shell.build_dir().display(),
    );
    let terminal = if std::io::stdin().is_terminal() {
        Terminal::Shared
    } else {
        Terminal::Detached
    };
    let argv: Vec<&str> = a.command.iter().map(String::as_str).collect();
    let mut cmd = shell.command(&argv, terminal)?;
    let mut child = cmd.spawn()?;
    let status = if terminal == Terminal::Shared {
        // Ctrl-C and Ctrl-\ at the terminal are for the shell, not for pybake (which would
        // take the sandbox down with it): ignored here while it runs, as system(3) does. The
        // child was started with the default actions.
        let ignored = ignore_interrupts();
        let status = child.wait();
        restore(ignored);
        status?
    } else {
        child.wait()?
    };
    drop(shell);
    Ok(exit_code(&status))
}

/// The exit code a shell reports for a child's status: its code, or 128 + the signal.
fn exit_code(status: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        _ => super::EXIT_BUILD_FAILED,
    }
}

type Handlers = [(libc::c_int, libc::sighandler_t); 2];

fn ignore_interrupts() -> Handlers {
    // SAFETY: signal(2) with SIG_IGN installs no handler code; the old dispositions are kept.
    unsafe { [libc::SIGINT, libc::SIGQUIT].map(|sig| (sig, libc::signal(sig, libc::SIG_IGN))) }
}

fn restore(handlers: Handlers) {
    for (sig, old) in handlers {
        // SAFETY: puts back the disposition signal(2) returned.
        unsafe {
            libc::signal(sig, old);
        }
    }
}
