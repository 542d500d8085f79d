//! pybake's own sandbox for build steps when it runs as root: the namespaces and mounts
//! bubblewrap would make for the step ([`super::sandbox`]), made by pybake's process G
//! ([`super::spawn`]) without starting bubblewrap.
//!
//! Why: bubblewrap costs more per step than the step's own work in a graph of small builds. It
//! unmounts twice while setting up (each unmount waits for an RCU grace period, which the
//! kernel serialises across all CPUs), reads `/proc/self/mountinfo` after every read-only
//! bind, and is one more program to load per step. Measured with 1000 one-line steps, two at a
//! time: bubblewrap alone 4.0 s (`bench/run`), the same namespaces and mounts made by one small
//! C program 2.2 s, `make` without any 1.25 s.
//!
//! What the step gets is what bubblewrap gives it (the isolation tests run against both):
//! new user, mount, PID, network (loopback only, up), IPC, UTS (host name `pybake`) and cgroup
//! namespaces; a tmpfs `/` owned by the step's user, with the recipe's root or the host's
//! `/usr` bound read-only, `/dev` with the six usual devices and a private `devpts`, a fresh
//! `/proc` and `/tmp`, the build directory and the store view bound read-write and the
//! dependency closure read-only; the step runs as uid/gid [`super::sandbox::SANDBOX_UID`]
//! (the build user on the host), in a new session, with no capabilities (bounding and ambient
//! sets emptied), `no_new_privs`, and cannot create user namespaces.
//!
//! The order is what makes this safe to do as root:
//! 1. G is cloned into new mount, PID, network, IPC, UTS and cgroup namespaces, all owned by
//!    the host's user namespace: G is still the host's root there, so it can reach every
//!    path it binds (a store under `/root` too), and nothing inside can change a mount later.
//!    Its mounts are private: nothing propagates back to the host.
//! 2. G mounts the new root on an empty directory of the build's, binds and mounts what the
//!    step sees ([`Plan`]), makes it `/` (`pivot_root`) and detaches the host's tree.
//! 3. G drops its supplementary groups and enters a new user namespace, which owns none of the
//!    other namespaces: G's capabilities there reach nothing but that namespace itself.
//!    pybake's build thread (host root) maps the sandbox's uid and gid to the build user. G
//!    then sets that namespace's `max_user_namespaces` to 0, so no process of the step can make
//!    another user namespace.
//! 4. S, the step's process, drops every capability, becomes the sandbox user and execs.
//!
//! G stays pid 1 of the namespaces while the step runs. The step's processes cannot reach it:
//! they are another user (the build user, G is the host's root), without capabilities, so
//! neither signals, `ptrace` nor `/proc/1/{mem,fd,root}` are theirs, and the kernel kills the
//! whole namespace when G ends (when the step's shell does, or with pybake's build thread).
//!
//! G runs between clone and exec of a multi-threaded process, sharing pybake's memory: the
//! plan is made of C strings prepared beforehand, and G and S only make system calls.

use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::sandbox::{Mounts, RootEntry, System};
use super::sandbox::{BUILD_DIR, HOST_ETC, SANDBOX_UID};
use crate::store::CANONICAL_STORE;

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const READ_ONLY: u64 = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
const WRITABLE: u64 = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;

/// The devices bubblewrap's `--dev` binds from the host.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// One thing G does to the new root before it becomes `/`. Paths are host paths under the
/// directory the new root is mounted on.
#[derive(Debug)]
enum Op {
    Mkdir(CString),
    /// An empty file to bind a file onto.
    Touch(CString),
    Symlink {
        target: CString,
        at: CString,
    },
    /// A recursive bind mount, then `attrs` on it and everything under it.
    Bind {
        from: CString,
        to: CString,
        attrs: u64,
    },
    Mount {
        fstype: &'static CStr,
        to: CString,
        flags: libc::c_ulong,
        data: CString,
    },
    /// Given to the step's user (on the host, the build user).
    Chown(CString),
}

/// Where in G's work a failure happened, reported to pybake with the `errno` (see
/// [`Plan::describe_failure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(super) enum Stage {
    Private = 1,
    RootTmpfs = 2,
    /// Followed by the index of the [`Op`].
    Operation = 3,
    PivotRoot = 4,
    Hostname = 5,
    Loopback = 6,
    Groups = 7,
    UserNamespace = 8,
    /// pybake's build thread did not map the ids (it reports its own error).
    Mapped = 9,
    NoUserNamespaces = 10,
    Chdir = 11,
}

impl Stage {
    pub(super) fn from_u32(n: u32) -> Option<Stage> {
        use Stage::*;
        [
            Private,
            RootTmpfs,
            Operation,
            PivotRoot,
            Hostname,
            Loopback,
            Groups,
            UserNamespace,
            Mapped,
            NoUserNamespaces,
            Chdir,
        ]
        .into_iter()
        .find(|s| *s as u32 == n)
    }
}

/// Everything G and S need, prepared before the clone.
#[derive(Debug)]
pub struct Plan {
    /// The empty host directory the new root's tmpfs is mounted on (in G's namespace only).
    new_root: CString,
    root_tmpfs_data: CString,
    ops: Vec<Op>,
    /// The step's working directory inside the sandbox.
    cwd: CString,
    /// The host uid and gid the sandbox's user is.
    host_ids: (u32, u32),
    /// Whether S starts a new session (no controlling terminal).
    pub(super) new_session: bool,
}

fn c(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} holds a NUL byte", path.display()),
        )
    })
}

fn c_str(s: &str) -> io::Result<CString> {
    c(Path::new(s))
}

/// Builds the op list, with `at` paths inside the sandbox turned into host paths under the new
/// root.
struct Builder {
    new_root: PathBuf,
    ops: Vec<Op>,
    tmpfs_owner: String,
}

impl Builder {
    fn at(&self, inside: &str) -> io::Result<CString> {
        c(&self.new_root.join(inside.trim_start_matches('/')))
    }

    fn mkdir(&mut self, inside: &str) -> io::Result<()> {
        let at = self.at(inside)?;
        self.ops.push(Op::Mkdir(at));
        Ok(())
    }

    /// `--ro-bind`/`--bind`: a directory or file of the host at `inside`.
    fn bind(&mut self, from: &Path, inside: &str, attrs: u64) -> io::Result<()> {
        let to = self.at(inside)?;
        if from.is_dir() {
            self.ops.push(Op::Mkdir(to.clone()));
        } else {
            self.ops.push(Op::Touch(to.clone()));
        }
        self.ops.push(Op::Bind {
            from: c(from)?,
            to,
            attrs,
        });
        Ok(())
    }

    fn symlink(&mut self, target: &Path, inside: &str) -> io::Result<()> {
        let at = self.at(inside)?;
        self.ops.push(Op::Symlink {
            target: c(target)?,
            at,
        });
        Ok(())
    }

    fn tmpfs(&mut self, inside: &str, flags: libc::c_ulong) -> io::Result<()> {
        self.mkdir(inside)?;
        let to = self.at(inside)?;
        let data = c_str(&format!("mode=0755,{}", self.tmpfs_owner))?;
        self.ops.push(Op::Mount {
            fstype: c"tmpfs",
            to,
            flags,
            data,
        });
        Ok(())
    }

    /// bubblewrap's `--dev /dev`.
    fn dev(&mut self) -> io::Result<()> {
        self.tmpfs("/dev", libc::MS_NOSUID | libc::MS_NODEV)?;
        for d in DEVICES {
            let to = self.at(&format!("/dev/{d}"))?;
            self.ops.push(Op::Touch(to.clone()));
            self.ops.push(Op::Bind {
                from: c_str(&format!("/dev/{d}"))?,
                to,
                attrs: MOUNT_ATTR_NOSUID,
            });
        }
        for (name, target) in [
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
            ("fd", "/proc/self/fd"),
            ("core", "/proc/kcore"),
            ("ptmx", "pts/ptmx"),
        ] {
            self.symlink(Path::new(target), &format!("/dev/{name}"))?;
        }
        self.mkdir("/dev/pts")?;
        let to = self.at("/dev/pts")?;
        self.ops.push(Op::Mount {
            fstype: c"devpts",
            to,
            flags: libc::MS_NOSUID | libc::MS_NOEXEC,
            data: c_str("newinstance,ptmxmode=0666,mode=620")?,
        });
        self.mkdir("/dev/shm")?;
        let shm = self.at("/dev/shm")?;
        self.ops.push(Op::Chown(shm));
        Ok(())
    }

    /// bubblewrap's `--proc /proc`, with the parts of it that could change the kernel read-only
    /// as bubblewrap makes them (`/proc/sys` stays writable until G has limited user
    /// namespaces through it; a step cannot write it anyway: its files belong to the host's
    /// root or need capabilities in the sandbox's user namespace).
    fn proc(&mut self) -> io::Result<()> {
        self.mkdir("/proc")?;
        let to = self.at("/proc")?;
        self.ops.push(Op::Mount {
            fstype: c"proc",
            to,
            flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            data: CString::default(),
        });
        for sub in ["sysrq-trigger", "irq", "bus"] {
            let to = self.at(&format!("/proc/{sub}"))?;
            // Its own path in the new proc, which exists once that is mounted; bound onto
            // itself only when the host has it (kernels without sysrq or a bus directory).
            if Path::new("/proc").join(sub).exists() {
                self.ops.push(Op::Bind {
                    from: to.clone(),
                    to,
                    attrs: READ_ONLY | MOUNT_ATTR_NOSUID,
                });
            }
        }
        Ok(())
    }
}

impl Plan {
    /// The plan of a step that runs with `m`'s mounts in `BUILD_DIR/cwd_rel`, as `host_ids`
    /// (the build user's uid and gid). `m.new_root` must be an empty directory.
    pub(super) fn new(
        m: &Mounts,
        system: &System,
        cwd_rel: &str,
        host_ids: (u32, u32),
        new_session: bool,
    ) -> io::Result<Plan> {
        let new_root = m.new_root.to_path_buf();
        let (uid, gid) = host_ids;
        let tmpfs_owner = format!("uid={uid},gid={gid}");
        let mut b = Builder {
            new_root: new_root.clone(),
            ops: Vec::new(),
            tmpfs_owner: tmpfs_owner.clone(),
        };
        match system {
            System::Root { entries, seen } => {
                for (name, kind) in entries {
                    let at = format!("/{name}");
                    match kind {
                        RootEntry::Link(target) => b.symlink(target, &at)?,
                        RootEntry::Dir => {
                            b.mkdir(&at)?;
                            let to = b.at(&at)?;
                            b.ops.push(Op::Bind {
                                from: c(&seen.join(name))?,
                                to,
                                attrs: READ_ONLY,
                            });
                        }
                        RootEntry::File => {
                            let to = b.at(&at)?;
                            b.ops.push(Op::Touch(to.clone()));
                            b.ops.push(Op::Bind {
                                from: c(&seen.join(name))?,
                                to,
                                attrs: READ_ONLY,
                            });
                        }
                    }
                }
            }
            System::Host { etc } => {
                b.bind(Path::new("/usr"), "/usr", READ_ONLY)?;
                for top in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
                    match fs_err::read_link(top) {
                        Ok(target) => b.symlink(&target, top)?,
                        Err(_) if Path::new(top).is_dir() => {
                            b.bind(Path::new(top), top, READ_ONLY)?
                        }
                        Err(_) => {}
                    }
                }
                b.mkdir("/etc")?;
                for f in ["passwd", "group", "hosts"] {
                    b.bind(&etc.join(f), &format!("/etc/{f}"), READ_ONLY)?;
                }
                for host in HOST_ETC {
                    // --ro-bind-try: only what the host has.
                    if Path::new(host).exists() {
                        b.bind(Path::new(host), host, READ_ONLY)?;
                    }
                }
            }
        }
        b.dev()?;
        b.proc()?;
        b.tmpfs("/tmp", libc::MS_NOSUID | libc::MS_NODEV)?;
        b.bind(m.build_dir, BUILD_DIR, WRITABLE)?;
        b.mkdir("/pybake")?;
        b.bind(m.store_view, CANONICAL_STORE, WRITABLE)?;
        for (host, name) in &m.inputs {
            b.bind(host, &format!("{CANONICAL_STORE}/{name}"), READ_ONLY)?;
        }
        Ok(Plan {
            new_root: c(&new_root)?,
            root_tmpfs_data: c_str(&format!("mode=0755,{tmpfs_owner}"))?,
            ops: b.ops,
            cwd: c_str(&format!("{BUILD_DIR}/{cwd_rel}"))?,
            host_ids,
            new_session,
        })
    }

    /// What pybake's build thread writes to G's `/proc/PID/{setgroups,uid_map,gid_map}`.
    pub(super) fn id_maps(&self) -> [(&'static str, String); 3] {
        let (uid, gid) = self.host_ids;
        [
            ("setgroups", "deny".to_string()),
            ("uid_map", format!("{SANDBOX_UID} {uid} 1\n")),
            ("gid_map", format!("{SANDBOX_UID} {gid} 1\n")),
        ]
    }

    /// A failure G reported, in words.
    pub(super) fn describe_failure(&self, stage: Option<Stage>, index: u32) -> String {
        let root = self.new_root.to_string_lossy();
        match stage {
            Some(Stage::Private) => "cannot make the step's mount namespace private".into(),
            Some(Stage::RootTmpfs) => format!("cannot mount the step's root (a tmpfs) on {root}"),
            Some(Stage::Operation) => match self.ops.get(index as usize) {
                Some(op) => describe_op(op),
                None => format!("operation {index} of the step's sandbox failed"),
            },
            Some(Stage::PivotRoot) => format!("cannot make {root} the step's root (pivot_root)"),
            Some(Stage::Hostname) => "cannot set the step's host name".into(),
            Some(Stage::Loopback) => "cannot bring up the step's loopback interface".into(),
            Some(Stage::Groups) => "cannot drop the step's supplementary groups".into(),
            Some(Stage::UserNamespace) => "cannot make the step's user namespace".into(),
            Some(Stage::Mapped) => "the step's user ids were not mapped".into(),
            Some(Stage::NoUserNamespaces) => {
                "cannot forbid user namespaces inside the step's sandbox".into()
            }
            Some(Stage::Chdir) => format!(
                "cannot enter the step's directory {}",
                self.cwd.to_string_lossy()
            ),
            None => "the step's sandbox failed".into(),
        }
    }
}

fn describe_op(op: &Op) -> String {
    let s = |c: &CString| c.to_string_lossy().into_owned();
    match op {
        Op::Mkdir(p) => format!("cannot make the directory {}", s(p)),
        Op::Touch(p) => format!("cannot make the file {}", s(p)),
        Op::Symlink { target, at } => {
            format!("cannot make the symbolic link {} -> {}", s(at), s(target))
        }
        Op::Bind { from, to, .. } => format!("cannot bind {} at {}", s(from), s(to)),
        Op::Mount { fstype, to, .. } => {
            format!("cannot mount a {} at {}", fstype.to_string_lossy(), s(to))
        }
        Op::Chown(p) => format!("cannot give {} to the build user", s(p)),
    }
}

/// A failure inside G: where, and the `errno`.
pub(super) struct Failure {
    pub stage: Stage,
    pub index: u32,
    pub errno: i32,
}

fn errno() -> i32 {
    // SAFETY: reading the calling thread's errno.
    unsafe { *libc::__errno_location() }
}

fn check(rc: libc::c_long, stage: Stage, index: u32) -> Result<(), Failure> {
    if rc < 0 {
        Err(Failure {
            stage,
            index,
            errno: errno(),
        })
    } else {
        Ok(())
    }
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// The `ifreq` of `SIOCGIFFLAGS`/`SIOCSIFFLAGS`: a name and the flags, padded to the union's
/// size.
#[repr(C)]
struct IfreqFlags {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Step 2 of the module docs, in G (pid 1 of the new namespaces, still the host's root).
/// System calls only.
///
/// # Safety
/// Only in G, right after the clone of [`super::spawn`].
pub(super) unsafe fn set_up_root(plan: &Plan) -> Result<(), Failure> {
    use Stage::*;
    let none = std::ptr::null::<libc::c_char>();
    // SAFETY: system calls on NUL-terminated strings the plan owns, and on stack values.
    unsafe {
        let rc = libc::mount(
            none,
            c"/".as_ptr(),
            none,
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        );
        check(rc.into(), Private, 0)?;
        let rc = libc::mount(
            c"tmpfs".as_ptr(),
            plan.new_root.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            plan.root_tmpfs_data.as_ptr().cast(),
        );
        check(rc.into(), RootTmpfs, 0)?;
        for (i, op) in plan.ops.iter().enumerate() {
            let i = i as u32;
            let rc: libc::c_long = match op {
                Op::Mkdir(p) => {
                    let rc = libc::mkdir(p.as_ptr(), 0o755);
                    // A mount point in the store view may be there already (pybake lends
                    // spare ones, and an earlier step of the build had them). It must be a
                    // directory, not a link a step left to have the host's root bind
                    // something elsewhere.
                    if rc < 0 && errno() == libc::EEXIST {
                        let mut st: libc::stat = std::mem::zeroed();
                        if libc::lstat(p.as_ptr(), &mut st) == 0
                            && st.st_mode & libc::S_IFMT == libc::S_IFDIR
                        {
                            0
                        } else {
                            *libc::__errno_location() = libc::EEXIST;
                            -1
                        }
                    } else {
                        rc.into()
                    }
                }
                Op::Touch(p) => {
                    let fd = libc::open(
                        p.as_ptr(),
                        libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                        0o444,
                    );
                    if fd >= 0 {
                        libc::close(fd);
                    }
                    fd.into()
                }
                Op::Symlink { target, at } => libc::symlink(target.as_ptr(), at.as_ptr()).into(),
                Op::Bind { from, to, attrs } => {
                    let rc = libc::mount(
                        from.as_ptr(),
                        to.as_ptr(),
                        none,
                        libc::MS_BIND | libc::MS_REC,
                        std::ptr::null(),
                    );
                    check(rc.into(), Operation, i)?;
                    let attr = MountAttr {
                        attr_set: *attrs,
                        attr_clr: 0,
                        propagation: 0,
                        userns_fd: 0,
                    };
                    libc::syscall(
                        libc::SYS_mount_setattr,
                        libc::AT_FDCWD,
                        to.as_ptr(),
                        libc::AT_RECURSIVE as libc::c_uint,
                        &attr as *const MountAttr,
                        std::mem::size_of::<MountAttr>(),
                    )
                }
                Op::Mount {
                    fstype,
                    to,
                    flags,
                    data,
                } => libc::mount(
                    fstype.as_ptr(),
                    to.as_ptr(),
                    fstype.as_ptr(),
                    *flags,
                    data.as_ptr().cast(),
                )
                .into(),
                Op::Chown(p) => libc::lchown(p.as_ptr(), plan.host_ids.0, plan.host_ids.1).into(),
            };
            check(rc, Operation, i)?;
        }
        check(libc::chdir(plan.new_root.as_ptr()).into(), PivotRoot, 0)?;
        let dot = c".".as_ptr();
        check(libc::syscall(libc::SYS_pivot_root, dot, dot), PivotRoot, 0)?;
        // The host's tree, now under the new root, goes.
        check(libc::umount2(dot, libc::MNT_DETACH).into(), PivotRoot, 0)?;
        check(libc::chdir(c"/".as_ptr()).into(), PivotRoot, 0)?;
        let name = b"pybake";
        check(
            libc::sethostname(name.as_ptr().cast(), name.len()).into(),
            Hostname,
            0,
        )?;
        loopback_up()?;
        // The raw system call: glibc's setgroups would ask pybake's threads to change theirs.
        check(
            libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()),
            Groups,
            0,
        )?;
        check(libc::unshare(libc::CLONE_NEWUSER).into(), UserNamespace, 0)?;
    }
    Ok(())
}

/// Brings up `lo`, as bubblewrap does: a step may listen on 127.0.0.1.
unsafe fn loopback_up() -> Result<(), Failure> {
    // SAFETY: a socket and two ioctls on a stack value of the size they expect.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        check(fd.into(), Stage::Loopback, 0)?;
        let mut req = IfreqFlags {
            name: [0; 16],
            flags: 0,
            _pad: [0; 22],
        };
        req.name[..2].copy_from_slice(b"lo");
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req as *mut IfreqFlags);
        if rc == 0 {
            req.flags |= libc::IFF_UP as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req as *const IfreqFlags);
        }
        let e = errno();
        libc::close(fd);
        if rc < 0 {
            return Err(Failure {
                stage: Stage::Loopback,
                index: 0,
                errno: e,
            });
        }
    }
    Ok(())
}

/// Step 3's end, in G once its ids are mapped: no user namespaces below this one, and the
/// step's directory.
///
/// # Safety
/// Only in G, after [`set_up_root`] and the mapping.
pub(super) unsafe fn close_user_namespaces(plan: &Plan) -> Result<(), Failure> {
    // SAFETY: system calls on the plan's strings and a static one.
    unsafe {
        let fd = libc::open(
            c"/proc/sys/user/max_user_namespaces".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        check(fd.into(), Stage::NoUserNamespaces, 0)?;
        let rc = libc::write(fd, b"0\n".as_ptr().cast(), 2);
        let e = errno();
        libc::close(fd);
        if rc != 2 {
            return Err(Failure {
                stage: Stage::NoUserNamespaces,
                index: 0,
                errno: e,
            });
        }
        check(libc::chdir(plan.cwd.as_ptr()).into(), Stage::Chdir, 0)?;
    }
    Ok(())
}

/// Step 4, in S before it execs: the sandbox's user, nothing privileged left. System calls only
/// (raw ones where glibc would involve pybake's threads).
///
/// # Safety
/// Only in S.
pub(super) unsafe fn become_step_user(new_session: bool) -> io::Result<()> {
    let ok = |rc: libc::c_long| {
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    let id = libc::c_long::from(SANDBOX_UID as i32);
    // SAFETY: system calls with integer arguments and stack values.
    unsafe {
        if new_session {
            ok(libc::setsid().into())?;
        }
        // While S still has CAP_SETPCAP: every capability out of the bounding set, so none
        // comes back through an exec.
        for cap in 0..=63 {
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno() != libc::EINVAL {
                return Err(io::Error::last_os_error());
            }
        }
        ok(libc::syscall(libc::SYS_setresgid, id, id, id))?;
        ok(libc::syscall(libc::SYS_setresuid, id, id, id))?;
        // S was nobody in the namespace, so changing ids kept its capabilities: drop them.
        #[repr(C)]
        struct Header {
            version: u32,
            pid: libc::c_int,
        }
        #[repr(C)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let header = Header {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let data = [
            Data {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            },
            Data {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            },
        ];
        ok(libc::syscall(
            libc::SYS_capset,
            &header as *const Header,
            data.as_ptr(),
        ))?;
        ok(libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
        .into())?;
        ok(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0).into())?;
        // Nothing of pybake's but stdio reaches the step, whatever pybake inherited.
        const CLOSE_RANGE_CLOEXEC: libc::c_uint = 4;
        ok(libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_described_by_what_failed() {
        let plan = Plan {
            new_root: c"/t/newroot".into(),
            root_tmpfs_data: CString::default(),
            ops: vec![Op::Bind {
                from: c"/usr".into(),
                to: c"/t/newroot/usr".into(),
                attrs: READ_ONLY,
            }],
            cwd: c"/build/work".into(),
            host_ids: (30000, 30000),
            new_session: true,
        };
        assert_eq!(
            plan.describe_failure(Some(Stage::Operation), 0),
            "cannot bind /usr at /t/newroot/usr"
        );
        assert_eq!(
            plan.describe_failure(Stage::from_u32(11), 0),
            "cannot enter the step's directory /build/work"
        );
        assert_eq!(plan.id_maps()[1], ("uid_map", "1000 30000 1\n".to_string()));
    }
}
