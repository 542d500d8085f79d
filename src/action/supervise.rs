//! Without the sandbox, a step runs under a supervisor, so that nothing it started outlives it
//! or pybake. (Inside bubblewrap the PID namespace does this: when bubblewrap dies, the kernel
//! kills every process in it.)
//!
//! When pybake is root, the step gets a PID namespace of its own too, with no exec to pay for:
//! the child pybake forks (C) enters a new PID namespace and forks its init (G, pid 1 there),
//! which forks the step (S, pid 2, which execs the shell). G reaps everything in the namespace
//! and ends as soon as S does; the kernel then kills whatever is left in it, daemons and
//! `setsid` escapees included. C dies with pybake's build thread (`PR_SET_PDEATHSIG`), G with
//! C, and the namespace with G; C ends the way S did. C and G only make system calls (they run
//! between fork and exec of a multi-threaded process).
//!
//! Otherwise (a user without the right to make a PID namespace) the supervisor is pybake
//! itself, started as `pybake __supervise PARENT -- PROGRAM ARGS...`:
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

/// Whether steps get a PID namespace of their own rather than the supervisor process: when
/// pybake is root, unless `PYBAKE_SUPERVISOR=process` asks for the other way (the tests cover
/// both as root).
pub fn uses_pid_namespace() -> bool {
    let forced = std::env::var_os("PYBAKE_SUPERVISOR").is_some_and(|v| v == "process");
    // SAFETY: geteuid has no preconditions.
    (unsafe { libc::geteuid() }) == 0 && !forced
}

/// A command that runs `program args` under a supervisor whose parent is this process. (A
/// build step as root is started by [`super::pidns`] instead, from this command's program,
/// arguments, environment and directory; `pybake shell` uses this one.)
pub fn command(program: &str, args: &[&str]) -> Command {
    if uses_pid_namespace() {
        let mut c = Command::new(program);
        c.args(args);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure only makes system calls (see `in_pid_namespace`).
        unsafe {
            c.pre_exec(move || in_pid_namespace(parent));
        }
        return c;
    }
    // /proc/self/exe is this very binary even if the file was replaced since it started.
    let mut c = Command::new("/proc/self/exe");
    c.arg(SUBCOMMAND)
        .arg(std::process::id().to_string())
        .arg("--")
        .arg(program)
        .args(args);
    c
}

/// Runs in C, the child of `Command::spawn`, before its exec: returns `Ok` only in S (which then
/// execs the step); C and G end with `_exit` and never return.
fn in_pid_namespace(parent: libc::pid_t) -> std::io::Result<()> {
    let fail = || std::io::Error::last_os_error();
    // SAFETY: system calls only, on this process's own descriptors and memory.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if libc::getppid() != parent {
            libc::_exit(128 + libc::SIGKILL);
        }
        if libc::unshare(libc::CLONE_NEWPID) != 0 {
            return Err(fail());
        }
        // G reports S's wait status through this pipe (an exit code cannot carry a signal: the
        // namespace's init cannot kill itself with one).
        let mut fds = [0 as libc::c_int; 2];
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(fail());
        }
        let (rd, wr) = (fds[0], fds[1]);
        let g = libc::fork();
        if g < 0 {
            return Err(fail());
        }
        if g == 0 {
            // G, pid 1 of the new namespace.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            libc::close(rd);
            let s = libc::fork();
            if s < 0 {
                libc::_exit(127);
            }
            if s == 0 {
                libc::close(wr);
                return Ok(());
            }
            // Command's exec-error pipe goes too, so that pybake sees S's exec as C's.
            close_all_but(wr);
            let status = wait_for(s, true);
            libc::write(wr, (&status as *const libc::c_int).cast(), 4);
            libc::_exit(0);
        }
        // C.
        libc::close(wr);
        close_all_but(rd);
        let g_status = wait_for(g, false);
        let mut status: libc::c_int = 0;
        let n = libc::read(rd, (&mut status as *mut libc::c_int).cast(), 4);
        // Without a report, G was killed before S ended: C ends the way G did.
        exit_like(if n == 4 { status } else { g_status })
    }
}

/// Waits for `pid`; with `reap_all`, also reaps every other child that ends meanwhile (as the
/// namespace's init must). Its wait status.
unsafe fn wait_for(pid: libc::pid_t, reap_all: bool) -> libc::c_int {
    let mut status = 0;
    loop {
        let r = libc::waitpid(if reap_all { -1 } else { pid }, &mut status, 0);
        if r == pid {
            return status;
        }
        if r < 0 && *libc::__errno_location() != libc::EINTR {
            libc::_exit(127);
        }
    }
}

/// Closes every descriptor from 3 up but `keep`.
pub(super) unsafe fn close_all_but(keep: libc::c_int) {
    const CLOSE_RANGE: libc::c_long = 436;
    let all = libc::c_uint::MAX;
    let k = keep as libc::c_uint;
    let ok = (k <= 3 || libc::syscall(CLOSE_RANGE, 3 as libc::c_uint, k - 1, 0) == 0)
        && libc::syscall(CLOSE_RANGE, k + 1, all, 0) == 0;
    if !ok {
        // Kernels before 5.9.
        for fd in 3..4096 {
            if fd != keep {
                libc::close(fd);
            }
        }
    }
}

/// Ends this process as `status` says its child ended, with system calls only (it also runs
/// between fork and exec, see `in_pid_namespace`).
unsafe fn exit_like(status: libc::c_int) -> ! {
    if libc::WIFSIGNALED(status) {
        die_by(libc::WTERMSIG(status));
    }
    libc::_exit(libc::WEXITSTATUS(status))
}

/// Dies by `sig` (without a core dump), so the parent sees what the step saw. System calls
/// only.
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
        libc::_exit(128 + sig)
    }
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
            use std::io::Write;
            let shown = Path::new(program).display();
            let _ = writeln!(std::io::stderr(), "pybake: cannot start {shown}: {e}");
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
///
/// "None" is what `waitpid` says (`ECHILD`), not an empty `children` list: that list can miss
/// a child while the kernel changes the family (proc(5)), and a supervisor that ended while
/// the step's shell was still dying let that shell's orphans go to init instead of to it.
fn kill_all(step: libc::pid_t) {
    // SAFETY: kill, waitpid and nanosleep with plain arguments; a stale pid at worst yields
    // ESRCH.
    unsafe {
        libc::kill(-step, libc::SIGKILL);
        loop {
            // Each killed child's own children are adopted by us when it dies, and are listed
            // (and killed) on a later round.
            for k in children() {
                libc::kill(-k, libc::SIGKILL);
                libc::kill(k, libc::SIGKILL);
            }
            let r = libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG);
            if r > 0 {
                continue;
            }
            if r < 0 {
                if *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                // ECHILD: no child left, living or dead.
                return;
            }
            // Children live on (killed, not yet dead, or not listed yet): a moment for them.
            let pause = libc::timespec {
                tv_sec: 0,
                tv_nsec: 2_000_000,
            };
            libc::nanosleep(&pause, std::ptr::null_mut());
        }
    }
}

/// This process's live children (zombies excluded), from /proc.
fn children() -> Vec<libc::pid_t> {
    let me = std::process::id();
    let listed = fs_err::read_to_string(format!("/proc/{me}/task/{me}/children"));
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
    let text = fs_err::read_to_string(format!("/proc/{pid}/stat")).ok()?;
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
    let Ok(dir) = fs_err::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|p| matches!(stat_fields(*p), Some((_, ppid)) if ppid == me))
        .collect()
}

fn end_like(status: libc::c_int) -> ! {
    // SAFETY: system calls only.
    unsafe { exit_like(status) }
}
