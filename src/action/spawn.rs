//! Starting a build step's process without copying pybake's memory.
//!
//! `fork` of pybake, a multi-threaded process, costs page-table copies, copy-on-write faults in
//! every thread afterwards and TLB shootdowns: with three forks per step it was a fifth of the
//! time of a graph of small builds. So, as `posix_spawn` does, the processes here share
//! pybake's memory until the step's `execve`, each on a stack of its own. Three ways:
//! - [`Spawn::start`] (bubblewrap): S, made by `clone(CLONE_VM | CLONE_VFORK)` (the build
//!   thread waits until S has exec'd), leads a process group of its own, dies with the build
//!   thread (`PR_SET_PDEATHSIG`), sets up stdio, the working directory and signals, stages the
//!   sandbox's directories and becomes the build user when pybake is root
//!   ([`super::build_user::Staging`]), and execs.
//! - [`Spawn::start_in_pid_namespace`] (an unsandboxed step as root; see [`super::supervise`]
//!   for why it gets a namespace): G, made by `clone(CLONE_VM | CLONE_NEWPID)`, is pid 1 of a
//!   new namespace and pybake's child. It dies with pybake's build thread, reaps everything in
//!   the namespace and ends as soon as S, which it makes as above, does; the kernel then kills
//!   whatever is left in it.
//! - [`Spawn::start_in_sandbox`] (pybake's own sandbox as root; see [`super::namespaces`]): G,
//!   made by `clone(CLONE_VM)` into new mount, PID, network, IPC, UTS and cgroup namespaces,
//!   sets the sandbox up before it makes S as above; S drops its privileges before it execs.
//!
//! G and S run in pybake's address space, so they only call async-signal-safe functions on data
//! prepared before the clone, never allocate, and never return into Rust code of pybake's. G
//! reports S's wait status through a pipe (pid 1 cannot die by a signal it sends itself); an exec
//! that fails reports its `errno` through another, closed on exec, as `std::process` does.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};

use super::build_user::Staging;
use super::namespaces::{self, Plan, Stage};
use super::supervise::close_all_but;

/// Each stack (G's and S's): they run a few libc calls only.
const STACK: usize = 256 * 1024;
const PAGE: usize = 4096;

/// A step's program, arguments, environment and working directory, as C strings, ready for
/// `execve`.
pub struct Spawn {
    program: CString,
    // Owned here; the pointer arrays below point into them.
    _strings: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    cwd: Option<CString>,
}

/// What G and S read; lives in the spawning thread's frame until S has exec'd.
#[repr(C)]
struct Shared {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    /// Null: stay in pybake's directory.
    cwd: *const libc::c_char,
    stdio: [RawFd; 3],
    status_wr: RawFd,
    exec_err_wr: RawFd,
    parent_pidfd: RawFd,
    s_stack_top: *mut libc::c_void,
    /// Direct mode only: pybake's pid (S checks it is still its parent) and what to stage
    /// (null: nothing).
    parent: libc::pid_t,
    staging: *const Staging,
    /// pybake's own sandbox only (null otherwise): what G sets up, and the pipes on which G
    /// says it has entered its user namespace and pybake says it has mapped G's ids.
    plan: *const Plan,
    ready_wr: RawFd,
    mapped_rd: RawFd,
}

/// The started step: S itself, or G, pid 1 of the step's namespace.
pub struct Child {
    pid: libc::pid_t,
    /// G's report of S's status (PID namespace only).
    status_rd: Option<OwnedFd>,
    /// G's stack must outlive G (PID namespace only).
    _stacks: Option<Stacks>,
    status: Option<ExitStatus>,
}

fn c_string(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} holds a NUL byte", s.to_string_lossy()),
        )
    })
}

impl Spawn {
    /// The program, arguments, working directory and environment of `cmd`, which must have a
    /// cleared environment (only variables set on it are passed).
    pub fn from_command(cmd: &Command) -> io::Result<Spawn> {
        let program = c_string(cmd.get_program())?;
        let mut strings = vec![program.clone()];
        for a in cmd.get_args() {
            strings.push(c_string(a)?);
        }
        let argc = strings.len();
        for (k, v) in cmd.get_envs() {
            if let Some(v) = v {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                strings.push(c_string(OsStr::from_bytes(&kv))?);
            }
        }
        let cwd = match cmd.get_current_dir() {
            Some(d) => Some(c_string(d.as_os_str())?),
            None => None,
        };
        let ptrs: Vec<*const libc::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        let mut argv = ptrs[..argc].to_vec();
        argv.push(std::ptr::null());
        let mut envp = ptrs[argc..].to_vec();
        envp.push(std::ptr::null());
        Ok(Spawn {
            program,
            _strings: strings,
            argv,
            envp,
            cwd,
        })
    }

    fn shared(
        &self,
        stdio: [RawFd; 3],
        status_wr: RawFd,
        exec_err_wr: RawFd,
        s_stack_top: *mut libc::c_void,
    ) -> Shared {
        Shared {
            program: self.program.as_ptr(),
            argv: self.argv.as_ptr(),
            envp: self.envp.as_ptr(),
            cwd: self.cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            stdio,
            status_wr,
            exec_err_wr,
            parent_pidfd: -1,
            s_stack_top,
            // SAFETY: getpid has no preconditions.
            parent: unsafe { libc::getpid() },
            staging: std::ptr::null(),
            plan: std::ptr::null(),
            ready_wr: -1,
            mapped_rd: -1,
        }
    }

    /// Starts the step with `stdio` as its standard input, output and error, in a process group
    /// of its own; with `staging`, staged and as the build user.
    pub fn start(&self, stdio: [RawFd; 3], staging: Option<&Staging>) -> io::Result<Child> {
        let (err_rd, err_wr) = pipe()?;
        let stacks = Stacks::new()?;
        let mut shared = self.shared(stdio, -1, err_wr.as_raw_fd(), stacks.top(1));
        shared.staging = staging.map_or(std::ptr::null(), |s| s as *const Staging);
        let old = block_all_signals();
        // SAFETY: S only reads `shared` and runs on its own stack; this thread waits (vfork)
        // until S has exec'd or exited, so both outlive its use of them.
        let pid = unsafe {
            libc::clone(
                s_main,
                stacks.top(1),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                (&shared as *const Shared).cast_mut().cast(),
            )
        };
        let clone_err = io::Error::last_os_error();
        restore_signals(&old);
        if pid < 0 {
            return Err(clone_err);
        }
        drop(err_wr);
        let child = Child {
            pid,
            status_rd: None,
            _stacks: None,
            status: None,
        };
        child.once_execed(&err_rd)
    }

    /// Starts the step with `stdio` as its standard input, output and error, in a PID
    /// namespace of its own.
    pub fn start_in_pid_namespace(&self, stdio: [RawFd; 3]) -> io::Result<Child> {
        let (status_rd, status_wr) = pipe()?;
        let (err_rd, err_wr) = pipe()?;
        // Lets G tell, after asking to die with its parent, that the parent is still there.
        // SAFETY: pidfd_open with our own pid and no flags.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
        // SAFETY: a non-negative return is a new descriptor we own.
        let parent_pidfd = (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) });
        let stacks = Stacks::new()?;
        let mut shared = self.shared(
            stdio,
            status_wr.as_raw_fd(),
            err_wr.as_raw_fd(),
            stacks.top(1),
        );
        shared.parent_pidfd = parent_pidfd.as_ref().map_or(-1, |f| f.as_raw_fd());
        // G is not S's parent process's child: S leaves the pid check and group to G.
        shared.parent = 0;
        // G and S start with every signal blocked, so no handler of pybake's runs in them.
        let old = block_all_signals();
        // SAFETY: g_main only reads `shared`, which outlives S's exec (we wait for it below),
        // and runs on its own stack, which lives as long as the returned NsChild.
        let pid = unsafe {
            libc::clone(
                g_main,
                stacks.top(0),
                libc::CLONE_VM | libc::CLONE_NEWPID | libc::SIGCHLD,
                (&shared as *const Shared).cast_mut().cast(),
            )
        };
        let clone_err = io::Error::last_os_error();
        restore_signals(&old);
        if pid < 0 {
            return Err(clone_err);
        }
        drop((status_wr, err_wr));
        let child = Child {
            pid,
            status_rd: Some(status_rd),
            _stacks: Some(stacks),
            status: None,
        };
        // End of file once S has exec'd and G has closed its copy.
        child.once_execed(&err_rd)
    }
    /// Starts the step with `stdio` as its standard input, output and error, in the sandbox
    /// `plan` describes (see [`super::namespaces`]): G is pid 1 of the step's namespaces.
    pub fn start_in_sandbox(&self, stdio: [RawFd; 3], plan: &Plan) -> io::Result<Child> {
        let (status_rd, status_wr) = pipe()?;
        let (err_rd, err_wr) = pipe()?;
        let (ready_rd, ready_wr) = pipe()?;
        let (mapped_rd, mapped_wr) = pipe()?;
        // SAFETY: pidfd_open with our own pid and no flags.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
        // SAFETY: a non-negative return is a new descriptor we own.
        let parent_pidfd = (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) });
        let stacks = Stacks::new()?;
        let mut shared = self.shared(
            stdio,
            status_wr.as_raw_fd(),
            err_wr.as_raw_fd(),
            stacks.top(1),
        );
        shared.parent_pidfd = parent_pidfd.as_ref().map_or(-1, |f| f.as_raw_fd());
        shared.parent = 0;
        // G enters the step's directory itself, inside the new root.
        shared.cwd = std::ptr::null();
        shared.plan = plan;
        shared.ready_wr = ready_wr.as_raw_fd();
        shared.mapped_rd = mapped_rd.as_raw_fd();
        let old = block_all_signals();
        // SAFETY: as in start_in_pid_namespace; `plan` outlives G's use of it as `shared` does
        // (G reads it only before S execs, and we wait for that below).
        let pid = unsafe {
            libc::clone(
                g_main,
                stacks.top(0),
                libc::CLONE_VM
                    | libc::CLONE_NEWNS
                    | libc::CLONE_NEWPID
                    | libc::CLONE_NEWNET
                    | libc::CLONE_NEWIPC
                    | libc::CLONE_NEWUTS
                    | libc::CLONE_NEWCGROUP
                    | libc::SIGCHLD,
                (&shared as *const Shared).cast_mut().cast(),
            )
        };
        let clone_err = io::Error::last_os_error();
        restore_signals(&old);
        if pid < 0 {
            return Err(clone_err);
        }
        drop((status_wr, err_wr, ready_wr, mapped_rd));
        let child = Child {
            pid,
            status_rd: Some(status_rd),
            _stacks: Some(stacks),
            status: None,
        };
        // G says it is in its user namespace (one byte), or fails (end of file; it wrote why
        // on the error pipe).
        let mut byte = [0u8; 1];
        if read_full(&ready_rd, &mut byte)? == 1 {
            for (file, text) in plan.id_maps() {
                let path = format!("/proc/{pid}/{file}");
                if let Err(e) = fs_err::write(&path, text) {
                    let mut child = child;
                    child.kill();
                    let _ = child.wait();
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot map the step's user ids: {e}"),
                    ));
                }
            }
            // SAFETY: writing one byte from a stack value to our own pipe.
            unsafe { libc::write(mapped_wr.as_raw_fd(), byte.as_ptr().cast(), 1) };
        }
        drop(mapped_wr);
        child.once_execed_described(&err_rd, Some(plan))
    }
}

impl Child {
    /// The started child once its exec-error pipe `err_rd` reaches end of file (the step
    /// exec'd), or the `errno` S reported there (it could not).
    fn once_execed(self, err_rd: &OwnedFd) -> io::Result<Child> {
        self.once_execed_described(err_rd, None)
    }

    /// As [`Child::once_execed`]; in pybake's own sandbox G may also report, with the `errno`,
    /// where its set-up failed, which `plan` puts in words.
    fn once_execed_described(mut self, err_rd: &OwnedFd, plan: Option<&Plan>) -> io::Result<Child> {
        let mut report = [0u8; 12];
        let read = read_full(err_rd, &mut report);
        let word = |i: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&report[4 * i..4 * i + 4]);
            w
        };
        match read {
            Ok(0) => Ok(self),
            Ok(n) => {
                let _ = self.wait();
                let errno = i32::from_ne_bytes(word(0));
                let e = io::Error::from_raw_os_error(errno);
                match (n, plan) {
                    (12, Some(plan)) => {
                        let stage = Stage::from_u32(u32::from_ne_bytes(word(1)));
                        let what = plan.describe_failure(stage, u32::from_ne_bytes(word(2)));
                        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
                    }
                    _ => Err(e),
                }
            }
            Err(e) => {
                self.kill();
                Err(e)
            }
        }
    }

    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// The step's status once G has ended (S's status as G reported it, or, if G was killed
    /// before S ended, G's).
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.reap(libc::WNOHANG)
    }

    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(s) = self.reap(0)? {
                return Ok(s);
            }
        }
    }

    /// Kills the step's process group (bubblewrap's death ends its sandbox; G's, its
    /// namespace).
    pub fn kill(&mut self) {
        if self.status.is_none() {
            // SAFETY: our unreaped child, so its pid is not reused yet; it leads its group.
            unsafe {
                libc::kill(-self.pid, libc::SIGKILL);
                libc::kill(self.pid, libc::SIGKILL);
            }
        }
    }

    fn reap(&mut self, flags: libc::c_int) -> io::Result<Option<ExitStatus>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        let mut g_status = 0;
        // SAFETY: waitpid on our own child with a valid pointer. __WALL: G's exit signal is
        // SIGCHLD, but say so anyway.
        let r = unsafe { libc::waitpid(self.pid, &mut g_status, flags | libc::__WALL) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(None)
            } else {
                Err(e)
            };
        }
        if r == 0 {
            return Ok(None);
        }
        let mut word = [0u8; 4];
        let raw = match self.status_rd.as_ref().map(|fd| read_full(fd, &mut word)) {
            Some(Ok(4)) => i32::from_ne_bytes(word),
            _ => g_status,
        };
        let status = ExitStatus::from_raw(raw);
        self.status = Some(status);
        Ok(Some(status))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.kill();
            let _ = self.wait();
        }
        // Only now, with G gone, may its stack go (the fields drop after this).
    }
}

/// G and S's stacks: one mapping, each with a guard page below it.
struct Stacks {
    base: *mut libc::c_void,
    len: usize,
}

impl Stacks {
    fn new() -> io::Result<Stacks> {
        let len = 2 * (STACK + PAGE);
        // SAFETY: a fresh anonymous private mapping.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stacks = Stacks { base, len };
        for i in 0..2 {
            // SAFETY: the guard page lies inside the mapping just made.
            let guard = unsafe { base.cast::<u8>().add(i * (STACK + PAGE)) };
            if unsafe { libc::mprotect(guard.cast(), PAGE, libc::PROT_NONE) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(stacks)
    }

    /// The top of stack `i` (stacks grow down), 16-byte aligned.
    fn top(&self, i: usize) -> *mut libc::c_void {
        // SAFETY: inside the mapping: each stack is a guard page and STACK bytes.
        unsafe { self.base.cast::<u8>().add((i + 1) * (STACK + PAGE)).cast() }
    }
}

impl Drop for Stacks {
    fn drop(&mut self) {
        // SAFETY: our own mapping, no longer used (NsChild's drop waited for G).
        unsafe { libc::munmap(self.base, self.len) };
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: a valid array of two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 made both; we own them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Reads until `buf` is full or end of file; how much was read.
fn read_full(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        // SAFETY: reading into the unfilled rest of `buf`.
        let r = unsafe { libc::read(fd.as_raw_fd(), buf[n..].as_mut_ptr().cast(), buf.len() - n) };
        match r {
            0 => break,
            r if r > 0 => n += r as usize,
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(n)
}

fn block_all_signals() -> libc::sigset_t {
    // SAFETY: sigfillset initialises `all`; pthread_sigmask stores the old mask in `old`.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        old
    }
}

fn restore_signals(old: &libc::sigset_t) {
    // SAFETY: a mask returned by pthread_sigmask.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old, std::ptr::null_mut()) };
}

/// G: pid 1 of the new namespace. Async-signal-safe calls only (see the module docs).
extern "C" fn g_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the spawning thread's `Shared`, alive until S has exec'd and we have
    // closed our copy of the exec-error pipe; everything used after that is copied first.
    unsafe {
        let shared = &*(arg as *const Shared);
        let status_wr = shared.status_wr;
        libc::setpgid(0, 0);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        // The parent may have died before the prctl: then nobody waits for the step.
        if shared.parent_pidfd >= 0 {
            let mut pfd = libc::pollfd {
                fd: shared.parent_pidfd,
                events: libc::POLLIN,
                revents: 0,
            };
            if libc::poll(&mut pfd, 1, 0) > 0 && pfd.revents & libc::POLLIN != 0 {
                libc::_exit(128 + libc::SIGKILL);
            }
        }
        if !shared.plan.is_null() {
            sandbox_g(shared);
        }
        let s = libc::clone(
            s_main,
            shared.s_stack_top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            arg,
        );
        if s < 0 {
            let errno = *libc::__errno_location();
            libc::write(shared.exec_err_wr, (&errno as *const i32).cast(), 4);
            libc::_exit(127);
        }
        // S has exec'd (or failed and written why): drop every descriptor but the report's,
        // the exec-error pipe included, so that pybake reads its end of file.
        close_all_but(status_wr);
        let mut status = 0;
        loop {
            let r = libc::waitpid(-1, &mut status, libc::__WALL);
            if r == s {
                break;
            }
            if r < 0 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(127);
            }
        }
        libc::write(status_wr, (&status as *const libc::c_int).cast(), 4);
        libc::_exit(0)
    }
}

/// G's part of pybake's own sandbox (see [`super::namespaces`]); on failure it reports where and
/// why on the exec-error pipe and exits.
unsafe fn sandbox_g(shared: &Shared) {
    // SAFETY: system calls on the plan, which lives until S has exec'd, and on stack values.
    unsafe {
        let plan = &*shared.plan;
        let fail = |f: namespaces::Failure| -> ! {
            let report: [u32; 3] = [f.errno as u32, f.stage as u32, f.index];
            libc::write(shared.exec_err_wr, report.as_ptr().cast(), 12);
            libc::_exit(127)
        };
        if let Err(f) = namespaces::set_up_root(plan) {
            fail(f);
        }
        let byte = [1u8];
        libc::write(shared.ready_wr, byte.as_ptr().cast(), 1);
        let mut got = [0u8];
        if libc::read(shared.mapped_rd, got.as_mut_ptr().cast(), 1) != 1 {
            fail(namespaces::Failure {
                stage: Stage::Mapped,
                index: 0,
                errno: libc::ECHILD,
            });
        }
        if let Err(f) = namespaces::close_user_namespaces(plan) {
            fail(f);
        }
    }
}

/// S: becomes the step. Async-signal-safe calls only.
extern "C" fn s_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: as in g_main; G is suspended (vfork) until we exec or exit.
    unsafe {
        let shared = &*(arg as *const Shared);
        let fail = |shared: &Shared| -> ! {
            let errno = *libc::__errno_location();
            libc::write(shared.exec_err_wr, (&errno as *const i32).cast(), 4);
            libc::_exit(127)
        };
        if shared.parent != 0 {
            // Direct mode: a group of our own, and death with the build thread (which waits
            // for our exec, so it is alive unless pybake was killed meanwhile).
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            if libc::getppid() != shared.parent {
                libc::_exit(128 + libc::SIGKILL);
            }
        }
        for (target, fd) in shared.stdio.iter().enumerate() {
            let target = target as RawFd;
            if *fd == target {
                if libc::fcntl(target, libc::F_SETFD, 0) != 0 {
                    fail(shared);
                }
            } else if libc::dup2(*fd, target) < 0 {
                fail(shared);
            }
        }
        if !shared.cwd.is_null() && libc::chdir(shared.cwd) != 0 {
            fail(shared);
        }
        if !shared.staging.is_null() && (*shared.staging).enter().is_err() {
            fail(shared);
        }
        if !shared.plan.is_null()
            && namespaces::become_step_user((*shared.plan).new_session).is_err()
        {
            fail(shared);
        }
        // What std::process does for a child: default SIGPIPE (Rust ignores it), nothing
        // blocked. Handlers go at exec by themselves.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(shared.program, shared.argv, shared.envp);
        fail(shared)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use super::*;

    fn run(script: &str, dir: &std::path::Path) -> io::Result<ExitStatus> {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", script])
            .env_clear()
            .env("PATH", "/usr/bin:/bin");
        cmd.current_dir(dir);
        let null = std::fs::File::open("/dev/null").unwrap();
        let out = std::fs::File::create(dir.join("out")).unwrap();
        let stdio = [null.as_raw_fd(), out.as_raw_fd(), out.as_raw_fd()];
        Spawn::from_command(&cmd)?
            .start_in_pid_namespace(stdio)?
            .wait()
    }

    // Tests run as root (as CI does): a PID namespace needs it.
    #[test]
    fn a_step_ends_as_its_shell_did_and_takes_its_namespace_with_it() {
        let t = tempfile::tempdir().unwrap();
        let s = run("echo $$ in $(pwd); echo $A; exit 3", t.path()).unwrap();
        assert_eq!(s.code(), Some(3));
        let out = std::fs::read_to_string(t.path().join("out")).unwrap();
        // pid 2: G is 1; the directory, and nothing of pybake's environment.
        assert_eq!(out, format!("2 in {}\n\n", t.path().display()));

        let s = run("kill -TERM $$", t.path()).unwrap();
        assert_eq!(s.signal(), Some(libc::SIGTERM));

        // A daemon the step leaves behind dies with it.
        let s = run(
            "setsid sh -c 'sleep 30; touch survived' >/dev/null 2>&1 & sleep 0.1",
            t.path(),
        )
        .unwrap();
        assert!(s.success());
        std::thread::sleep(std::time::Duration::from_millis(300));
        let sleepers = std::process::Command::new("pgrep")
            .args(["-f", "sleep 30; touch survived"])
            .output()
            .unwrap();
        assert!(sleepers.stdout.is_empty(), "left running: {sleepers:?}");
    }

    #[test]
    fn a_program_that_cannot_start_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("/nonexistent/program");
        cmd.env_clear().current_dir(t.path());
        let e = Spawn::from_command(&cmd)
            .unwrap()
            .start_in_pid_namespace([0, 1, 2])
            .err()
            .unwrap();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let e = Spawn::from_command(&cmd)
            .unwrap()
            .start([0, 1, 2], None)
            .err()
            .unwrap();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let mut cmd = Command::new("/bin/true");
        cmd.env_clear().current_dir(t.path().join("missing"));
        for in_namespace in [true, false] {
            let spawn = Spawn::from_command(&cmd).unwrap();
            let started = if in_namespace {
                spawn.start_in_pid_namespace([0, 1, 2])
            } else {
                spawn.start([0, 1, 2], None)
            };
            assert_eq!(started.err().unwrap().kind(), io::ErrorKind::NotFound);
        }
    }

    // As root (as CI runs the tests): pybake's own sandbox is root's.
    #[test]
    fn a_sandbox_that_cannot_be_set_up_says_what_failed() {
        use crate::action::sandbox::{Mounts, System};
        let t = tempfile::tempdir().unwrap();
        let dirs = ["build/work", "store", "etc", "newroot"].map(|d| t.path().join(d));
        for d in &dirs {
            std::fs::create_dir_all(d).unwrap();
        }
        crate::action::sandbox::write_etc(&dirs[2]).unwrap();
        let missing = t.path().join("no-such-dependency");
        let m = Mounts {
            build_dir: &t.path().join("build"),
            store_view: &dirs[1],
            root: None,
            etc_dir: &dirs[2],
            new_root: &dirs[3],
            inputs: vec![(missing.clone(), "dep".into())],
        };
        let system = System::Host {
            etc: dirs[2].clone(),
        };
        let plan = Plan::new(&m, &system, "work", (30000, 30000), true).unwrap();
        let mut cmd = Command::new("/bin/true");
        cmd.env_clear();
        let e = Spawn::from_command(&cmd)
            .unwrap()
            .start_in_sandbox([0, 1, 2], &plan)
            .err()
            .expect("a missing dependency cannot be bound");
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        assert_eq!(
            e.to_string(),
            format!(
                "cannot bind {} at {}/pybake/store/dep: No such file or directory (os error 2)",
                missing.display(),
                dirs[3].display()
            )
        );
        // Nothing of it is left mounted on the host.
        assert_eq!(std::fs::read_dir(&dirs[3]).unwrap().count(), 0);

        // A link where a dependency's mount point goes (a step could leave one in the store
        // view) is refused, not followed by the host's root.
        let dep = t.path().join("dep");
        std::fs::create_dir(&dep).unwrap();
        // (The first attempt made the mount point: a file, as its source was none.)
        std::fs::remove_file(dirs[1].join("dep")).unwrap();
        std::os::unix::fs::symlink("/etc", dirs[1].join("dep")).unwrap();
        let m = Mounts {
            inputs: vec![(dep, "dep".into())],
            ..m
        };
        let plan = Plan::new(&m, &system, "work", (30000, 30000), true).unwrap();
        let e = Spawn::from_command(&cmd)
            .unwrap()
            .start_in_sandbox([0, 1, 2], &plan)
            .err()
            .expect("a link as a mount point is refused");
        assert!(
            e.to_string().starts_with(&format!(
                "cannot make the directory {}/pybake/store/dep: File exists",
                dirs[3].display()
            )),
            "{e}"
        );
    }

    #[test]
    fn a_direct_step_leads_its_own_process_group() {
        let t = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "ps -o pid=,pgid= -p $$ > out"])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .current_dir(t.path());
        let mut child = Spawn::from_command(&cmd)
            .unwrap()
            .start([0, 1, 2], None)
            .unwrap();
        assert!(child.wait().unwrap().success());
        let out = std::fs::read_to_string(t.path().join("out")).unwrap();
        let ids: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(
            ids,
            [child.id().to_string(), child.id().to_string()],
            "{out}"
        );
    }
}
