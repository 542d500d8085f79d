//! Without the sandbox, a step runs under a supervisor, so that nothing it started outlives it
//! or pybake. (Inside bubblewrap the PID namespace does this: when bubblewrap dies, the kernel
//! kills every process in it.)
//!
//! The supervisor is pybake itself, started as `pybake __supervise PARENT -- PROGRAM ARGS...`:
//! - it is a child subreaper, so processes the step orphans (a `make -j` tree whose shell died,
//!   a daemon that double-forked) become its children rather than init's;
//! - it asks for SIGTERM when its parent (pybake's build thread) dies, by any signal, SIGKILL
//!   included, and checks after asking that the parent is still `PARENT`;
//! - it runs the step in a process group of its own and, when the step exits or a signal arrives,
//!   kills that group and then every remaining child until none is left;
//! - it ends the way the step did: the same exit code, or death by the same signal.
//!
//! pybake cancels a supervised step by sending the supervisor SIGTERM.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// The hidden subcommand that runs the supervisor.
pub const SUBCOMMAND: &str = "__supervise";

/// A command that runs `program args` under a supervisor whose parent is this process.
pub fn command(program: &str, args: &[&str]) -> Command {
    // /proc/self/exe is this very binary even if the file was replaced since it started.
    let mut c = Command::new("/proc/self/exe");
    c.arg(SUBCOMMAND)
        .arg(std::process::id().to_string())
        .arg("--")
        .arg(program)
        .args(args);
    c
}

/// The supervisor's main function: returns the exit code, or does not return when the step died
/// by a signal (the supervisor then dies by the same signal).
pub fn run(parent: i32, program: &OsString, args: &[OsString]) -> i32 {
    // SAFETY: prctl and getppid with plain integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0);
        if libc::getppid() != parent {
            return 128 + libc::SIGTERM;
        }
    }
    let set = watched_signals();
    // Blocked before the step starts, so that no signal is lost before the wait (the child's
    // mask is reset by Command).
    // SAFETY: a valid, initialised signal set.
    unsafe {
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let child = Command::new(program).args(args).process_group(0).spawn();
    let step = match child {
        Ok(c) => c.id() as libc::pid_t,
        Err(e) => {
            eprintln!("pybake: cannot start {}: {e}", Path::new(program).display());
            return 127;
        }
    };
    loop {
        // SAFETY: a valid signal set; a null siginfo pointer is allowed.
        let sig = unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
        if sig == libc::SIGCHLD {
            if let Some(status) = reap(step) {
                kill_all(step);
                end_like(status);
            }
        } else if sig > 0 {
            kill_all(step);
            die_by(sig);
        }
    }
}

fn watched_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set before sigaddset touches it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Reaps every child that has exited; returns the step's wait status once it has.
fn reap(step: libc::pid_t) -> Option<libc::c_int> {
    let mut found = None;
    loop {
        let mut status = 0;
        // SAFETY: a valid pointer to an int.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return found;
        }
        if pid == step {
            found = Some(status);
        }
    }
}

/// Kills the step's process group, then every child left (orphans adopted by this subreaper,
/// which may have left the group), until there are none.
fn kill_all(step: libc::pid_t) {
    // SAFETY: kill and waitpid with plain arguments; a stale pid at worst yields ESRCH.
    unsafe {
        libc::kill(-step, libc::SIGKILL);
        loop {
            let kids = children();
            if kids.is_empty() {
                // Reap what is left without blocking; an empty list means no live child.
                while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {}
                return;
            }
            for k in &kids {
                libc::kill(-*k, libc::SIGKILL);
                libc::kill(*k, libc::SIGKILL);
            }
            // Each killed child's own children are adopted by us when it dies: wait for one,
            // then look again.
            libc::waitpid(-1, std::ptr::null_mut(), 0);
        }
    }
}

/// This process's live children (zombies excluded), from /proc.
fn children() -> Vec<libc::pid_t> {
    let me = std::process::id();
    let listed = std::fs::read_to_string(format!("/proc/{me}/task/{me}/children"));
    let candidates: Vec<libc::pid_t> = match listed {
        Ok(text) => text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
        // Kernels without CONFIG_PROC_CHILDREN: every process whose parent is us.
        Err(_) => scan_proc_for_children(me as libc::pid_t),
    };
    candidates.into_iter().filter(|p| !is_zombie(*p)).collect()
}

fn stat_fields(pid: libc::pid_t) -> Option<(char, libc::pid_t)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    Some((state, ppid))
}

fn is_zombie(pid: libc::pid_t) -> bool {
    matches!(stat_fields(pid), Some(('Z', _)) | None)
}

fn scan_proc_for_children(me: libc::pid_t) -> Vec<libc::pid_t> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|p| matches!(stat_fields(*p), Some((_, ppid)) if ppid == me))
        .collect()
}

fn end_like(status: libc::c_int) -> ! {
    if libc::WIFSIGNALED(status) {
        die_by(libc::WTERMSIG(status));
    }
    std::process::exit(libc::WEXITSTATUS(status))
}

/// Dies by `sig` (without a core dump), so the parent sees what the step saw.
fn die_by(sig: libc::c_int) -> ! {
    // SAFETY: plain system calls on this process.
    unsafe {
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::kill(libc::getpid(), sig);
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    std::process::exit(128 + sig)
}
