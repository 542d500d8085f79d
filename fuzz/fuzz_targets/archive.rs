//! The archive unpacker, `archive::unpack(file, dest)`, checked after every input against the
//! invariants of src/archive/mod.rs.
//!
//! Input: one mode byte, then the payload. Bits 0-1 of the mode byte choose how the payload
//! becomes the archive file: 0 as is (any format `unpack` detects: tar, gzip, xz, bzip2, deb),
//! 1/2/3 compressed here with gzip/xz/bzip2, so that mutations of a raw tar reach the tar parser
//! instead of dying in a compression header. Bit 2 pre-populates `dest` the way an earlier source
//! would: a directory `pre/` (an archive may merge into it), a file `pre.txt`, and a symlink
//! `lnk -> ../outside` (which the archive must not write through).
//!
//! Layout, in one temp dir for the whole run: `in.archive` (the archive file), `root/dest`
//! (emptied and re-made for each input) and the canary `root/outside`. After each input:
//! - nothing outside `dest` was created, removed or changed (`root` and `outside`, bytes, modes,
//!   inodes and link counts);
//! - on error, `dest` is exactly as before;
//! - on success, what `dest` held before is unchanged (directories may gain entries);
//! - `dest` holds only directories, regular files and symlinks, with modes 0755/0644 (no
//!   set-id bits), and no hard link shared with a file outside `dest`;
//! - the new files hold no more bytes than the tar stream (when its length is known);
//! - every symlink in `dest` resolves (following every link on the way, and treating a missing
//!   component as a directory that might be created later) to a path inside `dest`. Paths that go
//!   through the pre-existing `lnk` are exempt: that escape was there before.
#![no_main]
#![allow(clippy::disallowed_methods)] // a harness may use std::fs (fuzz_target! does); pybake itself uses fs-err

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

/// Written bytes per file are capped so that an archive that expands enormously (a bomb, or a
/// sparse entry) fails with EFBIG instead of filling the disk of the machine running the fuzzer.
const MAX_FILE_SIZE: u64 = 64 << 20;

struct Workspace {
    archive: PathBuf,
    root: PathBuf,
    dest: PathBuf,
    outside_snapshot: Tree,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(PathBuf),
    Special,
}

#[derive(Debug, Clone, PartialEq)]
struct Node {
    kind: Kind,
    size: u64,
    mode: u32,
    ino: u64,
    nlink: u64,
}

/// Relative path -> node, for everything below a directory (not following symlinks).
type Tree = BTreeMap<PathBuf, Node>;

fn snapshot(top: &Path, skip: &[&Path], content: bool) -> Tree {
    let mut tree = Tree::new();
    let mut todo = vec![top.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("read_dir entry").path();
            if skip.contains(&path.as_path()) {
                continue;
            }
            let node = node(&path, content);
            if node.kind == Kind::Dir {
                todo.push(path.clone());
            }
            tree.insert(
                path.strip_prefix(top).expect("below top").to_path_buf(),
                node,
            );
        }
    }
    tree
}

fn node(path: &Path, content: bool) -> Node {
    let m = std::fs::symlink_metadata(path).expect("lstat");
    let t = m.file_type();
    let kind = if t.is_dir() {
        Kind::Dir
    } else if t.is_file() {
        Kind::File(if content {
            std::fs::read(path).expect("read")
        } else {
            Vec::new()
        })
    } else if t.is_symlink() {
        Kind::Symlink(std::fs::read_link(path).expect("readlink"))
    } else {
        Kind::Special
    };
    Node {
        kind,
        size: m.len(),
        mode: m.permissions().mode() & 0o7777,
        ino: m.ino(),
        nlink: m.nlink(),
    }
}

fn workspace() -> &'static Workspace {
    static WS: OnceLock<Workspace> = OnceLock::new();
    WS.get_or_init(|| {
        limit_file_size();
        let tmp = tempfile::Builder::new()
            .prefix("pybake-fuzz-archive-")
            .tempdir()
            .expect("temp dir")
            .keep()
            .canonicalize()
            .expect("canonical temp dir");
        let root = tmp.join("root");
        let outside = root.join("outside");
        std::fs::create_dir_all(outside.join("dir")).expect("canary");
        std::fs::write(outside.join("secret.txt"), "canary\n").expect("canary");
        std::fs::write(outside.join("dir/f"), "canary f\n").expect("canary");
        std::os::unix::fs::symlink("secret.txt", outside.join("link")).expect("canary");
        let dest = root.join("dest");
        let archive = tmp.join("in.archive");
        // While an input runs dest exists, and counts in root's link count.
        std::fs::create_dir(&dest).expect("dest");
        let outside_snapshot = snapshot(&tmp, &[&archive, &dest], true);
        std::fs::remove_dir(&dest).expect("dest");
        Workspace {
            outside_snapshot,
            archive,
            root,
            dest,
        }
    })
}

fn limit_file_size() {
    // SAFETY: plain libc calls with valid arguments; ignoring SIGXFSZ turns an over-long write
    // into an EFBIG error instead of killing the process.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let lim = libc::rlimit {
            rlim_cur: MAX_FILE_SIZE,
            rlim_max: MAX_FILE_SIZE,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0, "setrlimit");
    }
}

fn populate(dest: &Path) {
    std::fs::create_dir_all(dest.join("pre")).expect("pre");
    std::fs::write(dest.join("pre/kept.txt"), "kept\n").expect("pre");
    std::fs::write(dest.join("pre.txt"), "pre\n").expect("pre");
    std::os::unix::fs::symlink("../outside", dest.join("lnk")).expect("pre");
}

fn write_archive(path: &Path, mode: u8, payload: &[u8]) {
    let file = std::fs::File::create(path).expect("create archive");
    match mode & 3 {
        0 => {
            let mut f = file;
            f.write_all(payload).expect("write archive");
        }
        1 => {
            let mut w = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
            w.write_all(payload).expect("gzip");
            w.finish().expect("gzip");
        }
        2 => {
            // Preset 0: a small dictionary keeps the encoder cheap to set up for every input.
            let mut w = xz2::write::XzEncoder::new(file, 0);
            w.write_all(payload).expect("xz");
            w.finish().expect("xz");
        }
        _ => {
            let mut w = bzip2::write::BzEncoder::new(file, bzip2::Compression::fast());
            w.write_all(payload).expect("bzip2");
            w.finish().expect("bzip2");
        }
    }
}

/// The length of the tar stream when it is known without decompressing: the payload itself
/// when it is wrapped here or is a plain tar.
fn tar_len(mode: u8, payload: &[u8]) -> Option<u64> {
    let compressed = [&[0x1f, 0x8b][..], b"\xfd7zXZ\0", b"BZh", b"!<arch>\n"]
        .iter()
        .any(|magic| payload.starts_with(magic));
    (mode & 3 != 0 || !compressed).then_some(payload.len() as u64)
}

#[derive(Debug, PartialEq)]
enum Resolved {
    At(PathBuf),
    /// Through a link that was in `dest` before the unpack.
    Exempt,
    /// More than 40 links on the way: the kernel gives ELOOP, so it leads nowhere.
    Loop,
}

/// Follows the absolute `path` as the kernel would, every link on the way included, but carries
/// on lexically past a missing component (or a file), as if it were a directory created later:
/// a dangling link must not point outside either.
fn resolve(path: &Path, exempt: &[PathBuf]) -> Resolved {
    let mut done = PathBuf::from("/");
    let mut todo: VecDeque<OsString> = VecDeque::new();
    let push_front = |todo: &mut VecDeque<OsString>, p: &Path| {
        let comps: Vec<OsString> = p
            .components()
            .map(|c| c.as_os_str().to_os_string())
            .collect();
        for c in comps.into_iter().rev() {
            todo.push_front(c);
        }
    };
    push_front(&mut todo, path);
    let mut hops = 0;
    while let Some(c) = todo.pop_front() {
        match Path::new(&c).components().next() {
            Some(Component::RootDir) => done = PathBuf::from("/"),
            Some(Component::CurDir) | None => {}
            Some(Component::ParentDir) => {
                done.pop();
            }
            Some(Component::Normal(name)) => {
                let next = done.join(name);
                if exempt.contains(&next) {
                    return Resolved::Exempt;
                }
                match std::fs::symlink_metadata(&next) {
                    Ok(m) if m.file_type().is_symlink() => {
                        hops += 1;
                        if hops > 40 {
                            return Resolved::Loop;
                        }
                        let target = std::fs::read_link(&next).expect("readlink");
                        push_front(&mut todo, &target);
                    }
                    _ => done = next,
                }
            }
            Some(Component::Prefix(_)) => unreachable!("no prefixes on unix"),
        }
    }
    Resolved::At(done)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, payload)) = data.split_first() else {
        return;
    };
    let ws = workspace();
    let populated = mode & 4 != 0;
    std::fs::create_dir(&ws.dest).expect("create dest");
    if populated {
        populate(&ws.dest);
    }
    let before = snapshot(&ws.dest, &[], true);
    write_archive(&ws.archive, mode, payload);

    let result = pybake::archive::unpack(&ws.archive, &ws.dest);
    if let Err(e) = &result {
        let _ = e.to_string();
    }

    let tmp = ws.root.parent().expect("root has a parent");
    assert_eq!(
        snapshot(tmp, &[&ws.archive, &ws.dest], true),
        ws.outside_snapshot,
        "something outside dest changed (result: {result:?})"
    );
    assert_eq!(node(&ws.dest, false).kind, Kind::Dir, "dest was replaced");

    // New files are not read: an archive may hold large ones.
    let after = snapshot(&ws.dest, &[], false);
    match &result {
        Err(_) => assert_eq!(
            snapshot(&ws.dest, &[], true),
            before,
            "a failed unpack changed dest ({result:?})"
        ),
        Ok(()) => {
            for (path, old) in &before {
                assert!(after.contains_key(path), "{path:?} vanished from dest");
                let new = node(&ws.dest.join(path), old.kind != Kind::Dir);
                if old.kind == Kind::Dir {
                    // Merged into: only the link count may change.
                    assert_eq!(
                        (&new.kind, new.ino),
                        (&Kind::Dir, old.ino),
                        "{path:?} replaced"
                    );
                } else {
                    assert_eq!(&new, old, "{path:?} changed");
                }
            }
            // The staging directory must be gone (unless the archive itself has such a name).
            let named_like_staging = data
                .windows(b".pybake-unpack-".len())
                .any(|w| w == b".pybake-unpack-");
            if !named_like_staging {
                for path in after.keys() {
                    assert!(
                        !path.to_string_lossy().starts_with(".pybake-unpack-"),
                        "staging directory {path:?} left in dest"
                    );
                }
            }
        }
    }

    let exempt = if populated {
        vec![ws.dest.join("lnk")]
    } else {
        Vec::new()
    };
    let mut links_by_inode: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for (path, node) in &after {
        let new = !before.contains_key(path);
        match &node.kind {
            Kind::Special => panic!("special file {path:?} in dest"),
            Kind::Dir if new => assert_eq!(node.mode, 0o755, "mode of {path:?}"),
            Kind::File(_) => {
                if new {
                    assert!(
                        node.mode == 0o644 || node.mode == 0o755,
                        "mode {:o} of {path:?}",
                        node.mode
                    );
                }
                let e = links_by_inode.entry(node.ino).or_insert((node.nlink, 0));
                e.1 += 1;
            }
            Kind::Symlink(_) if new => match resolve(&ws.dest.join(path), &exempt) {
                Resolved::At(p) => assert!(
                    p.starts_with(&ws.dest),
                    "symlink {path:?} resolves to {p:?}, outside dest"
                ),
                Resolved::Exempt | Resolved::Loop => {}
            },
            _ => {}
        }
    }
    // Every byte unpacked comes from the tar stream (a sparse entry could declare terabytes).
    if let Some(tar_len) = tar_len(mode, payload) {
        let unpacked: u64 = after
            .iter()
            .filter(|(path, n)| matches!(n.kind, Kind::File(_)) && !before.contains_key(*path))
            .map(|(_, n)| (n.ino, n.size))
            .collect::<BTreeMap<_, _>>()
            .values()
            .sum();
        assert!(
            unpacked <= tar_len,
            "{unpacked} bytes unpacked from a {tar_len}-byte tar"
        );
    }
    for (ino, (nlink, seen)) in links_by_inode {
        assert_eq!(
            nlink, seen,
            "inode {ino} has {nlink} links but only {seen} are in dest: one is outside"
        );
    }

    std::fs::remove_dir_all(&ws.dest).expect("clean dest");
});
