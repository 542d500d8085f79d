//! Steps never run as the host's root. When pybake runs as root, bubblewrap is started as the
//! unprivileged build user ([`BUILD_UID`]:[`BUILD_GID`] on the host, uid 1000 inside the
//! sandbox), so a step holds no capability and owns nothing of the host's: a root-owned file it
//! can see is only as readable as its "other" permission bits say.
//!
//! bubblewrap sets the sandbox up as the user it runs as, so every directory it binds must be
//! reachable by that user, and a store under `/root` (mode 0700) is not. When one is not
//! ([`Reach`]), the child process, while still root, enters a private mount namespace, mounts a small tmpfs over
//! [`STAGE`] (the step gets a fresh `/tmp` from bubblewrap anyway) and bind-mounts there each
//! directory the sandbox needs; then it drops to the build user and executes bubblewrap on the
//! staged paths. None of this is visible outside the child.
//!
//! The pre-exec code runs between `fork` and `exec` of a multi-threaded process, so it only
//! makes system calls on data prepared before the fork: no allocation, no locks.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The host uid steps run as when pybake is root (as Nix's first build user, `nixbld1`, is
/// 30001). It needs no entry in the host's /etc/passwd.
pub const BUILD_UID: u32 = 30000;
/// The host gid steps run as when pybake is root.
pub const BUILD_GID: u32 = 30000;

/// Where staged directories appear in the child's private mount namespace.
const STAGE: &std::ffi::CStr = c"/tmp";

/// The build user, when pybake runs as root; `None` otherwise (bubblewrap then maps the sandbox
/// user to pybake's own uid).
pub fn for_this_process() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    (unsafe { libc::geteuid() } == 0).then_some((BUILD_UID, BUILD_GID))
}

/// Directories to stage for one child, and the user to become.
pub struct Staging {
    uid: u32,
    gid: u32,
    /// (host directory, staged path)
    binds: Vec<(CString, CString)>,
}

impl Staging {
    pub fn new(uid: u32, gid: u32) -> Self {
        Staging {
            uid,
            gid,
            binds: Vec::new(),
        }
    }

    /// Returns where the child will see the host directory `host`.
    pub fn stage(&mut self, host: &Path) -> io::Result<PathBuf> {
        let from = CString::new(host.as_os_str().as_bytes())
            .map_err(|_| io::Error::other(format!("{} contains NUL", host.display())))?;
        let staged = Path::new(std::ffi::OsStr::from_bytes(STAGE.to_bytes()))
            .join(self.binds.len().to_string());
        let to = CString::new(staged.as_os_str().as_bytes())
            .map_err(|_| io::Error::other("NUL in staged path"))?;
        self.binds.push((from, to));
        Ok(staged)
    }

    /// Makes `cmd`'s child stage the directories and drop to the build user before it execs.
    pub fn install(self, cmd: &mut Command) {
        // SAFETY: the closure only makes system calls on memory it owns or on its stack.
        unsafe {
            cmd.pre_exec(move || self.enter());
        }
    }

    /// Runs in the child, between fork (or clone, [`super::spawn`]) and exec.
    pub(super) fn enter(&self) -> io::Result<()> {
        let check = |rc: libc::c_int| {
            if rc >= 0 {
                Ok(rc)
            } else {
                Err(io::Error::last_os_error())
            }
        };
        // SAFETY: system calls on NUL-terminated strings owned by `self` or on the stack.
        unsafe {
            if !self.binds.is_empty() {
                self.stage_binds(check)?;
            }
            // The system calls, not libc's wrappers: in a child that shares pybake's memory
            // (super::spawn), those would signal pybake's threads to change their ids too.
            let raw = |rc: libc::c_long| check(rc as libc::c_int);
            raw(libc::syscall(
                libc::SYS_setgroups,
                0,
                std::ptr::null::<libc::gid_t>(),
            ))?;
            raw(libc::syscall(
                libc::SYS_setresgid,
                self.gid,
                self.gid,
                self.gid,
            ))?;
            raw(libc::syscall(
                libc::SYS_setresuid,
                self.uid,
                self.uid,
                self.uid,
            ))?;
        }
        Ok(())
    }

    /// Enters a private mount namespace with the staged directories bound under [`STAGE`].
    unsafe fn stage_binds(
        &self,
        check: impl Fn(libc::c_int) -> io::Result<libc::c_int>,
    ) -> io::Result<()> {
        // SAFETY: as in `enter`.
        unsafe {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            // Private: nothing mounted here propagates back to the host.
            check(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            // Opened by name in this namespace (a descriptor from before `unshare` names a mount
            // of the old namespace, which cannot be bound here), and before the tmpfs hides
            // whatever lies under the stage.
            let mut fds = [0 as libc::c_int; MAX_STAGED];
            if self.binds.len() > MAX_STAGED {
                return Err(io::Error::from_raw_os_error(libc::E2BIG));
            }
            for (i, (from, _)) in self.binds.iter().enumerate() {
                fds[i] = check(libc::open(
                    from.as_ptr(),
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                ))?;
            }
            check(libc::mount(
                c"pybake-stage".as_ptr(),
                STAGE.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                c"mode=0755,size=64k".as_ptr().cast(),
            ))?;
            for (i, (_, to)) in self.binds.iter().enumerate() {
                let mut buf = [0u8; 32];
                let fd_path = proc_fd_path(fds[i], &mut buf);
                check(libc::mkdir(to.as_ptr(), 0o755))?;
                check(libc::mount(
                    fd_path,
                    to.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
                libc::close(fds[i]);
            }
        }
        Ok(())
    }
}

/// Whether the build user can reach (search every directory above) host paths, remembered
/// per directory.
pub struct Reach {
    uid: u32,
    gid: u32,
    known: std::collections::HashMap<PathBuf, bool>,
}

impl Reach {
    pub fn new(uid: u32, gid: u32) -> Self {
        Reach {
            uid,
            gid,
            known: Default::default(),
        }
    }

    /// Whether `path`'s ancestors all let the build user search them.
    pub fn can_reach(&mut self, path: &Path) -> bool {
        path.ancestors().skip(1).all(|dir| {
            if let Some(ok) = self.known.get(dir) {
                return *ok;
            }
            let ok = fs_err::metadata(dir).is_ok_and(|m| {
                use std::os::unix::fs::MetadataExt;
                let bit = if m.uid() == self.uid {
                    0o100
                } else if m.gid() == self.gid {
                    0o010
                } else {
                    0o001
                };
                m.mode() & bit != 0
            });
            self.known.insert(dir.to_path_buf(), ok);
            ok
        })
    }
}

/// More directories than any build binds (its build directory, store view, `/etc` and inputs).
const MAX_STAGED: usize = 4096;

/// Writes "/proc/self/fd/N" NUL-terminated into `buf` without allocating.
fn proc_fd_path(fd: libc::c_int, buf: &mut [u8; 32]) -> *const libc::c_char {
    const PREFIX: &[u8] = b"/proc/self/fd/";
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 12];
    let mut n = fd.unsigned_abs();
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[PREFIX.len() + i] = digits[len - 1 - i];
    }
    buf[PREFIX.len() + len] = 0;
    buf.as_ptr().cast()
}

/// Gives the tree at `root` (links themselves, not their targets) to `uid`:`gid`.
pub fn chown_tree(root: &Path, uid: u32, gid: u32) -> io::Result<()> {
    for e in walkdir::WalkDir::new(root) {
        let e = e.map_err(|e| {
            let path = e.path().map(Path::to_path_buf).unwrap_or_default();
            io::Error::other(format!("walking {}: {e}", path.display()))
        })?;
        fs_err::os::unix::fs::lchown(e.path(), Some(uid), Some(gid))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fd_paths_are_written_without_allocating() {
        let mut buf = [0u8; 32];
        for fd in [0, 7, 10, 123, 4095] {
            let p = proc_fd_path(fd, &mut buf);
            // SAFETY: proc_fd_path NUL-terminates inside buf.
            let s = unsafe { std::ffi::CStr::from_ptr(p) };
            assert_eq!(s.to_str().unwrap(), format!("/proc/self/fd/{fd}"));
        }
    }
}
