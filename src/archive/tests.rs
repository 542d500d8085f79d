#![allow(clippy::disallowed_methods)]

use std::io::Write as _;

use super::*;

/// Builds tar bytes entry by entry, writing header bytes directly so that the names
/// `tar::Builder` refuses (`..`, absolute) can be crafted.
pub(super) struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    pub(super) fn new() -> Self {
        Self(tar::Builder::new(Vec::new()))
    }

    pub(super) fn raw(
        mut self,
        kind: EntryType,
        name: &str,
        link: &str,
        mode: u32,
        data: &[u8],
    ) -> Self {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_link_name_literal(link).unwrap();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    pub(super) fn file(self, name: &str, data: &[u8]) -> Self {
        self.raw(EntryType::Regular, name, "", 0o644, data)
    }

    pub(super) fn exe(self, name: &str, data: &[u8]) -> Self {
        self.raw(EntryType::Regular, name, "", 0o700, data)
    }

    pub(super) fn dir(self, name: &str) -> Self {
        self.raw(EntryType::Directory, name, "", 0o555, b"")
    }

    pub(super) fn symlink(self, name: &str, target: &str) -> Self {
        self.raw(EntryType::Symlink, name, target, 0o777, b"")
    }

    pub(super) fn hardlink(self, name: &str, target: &str) -> Self {
        self.raw(EntryType::Link, name, target, 0o644, b"")
    }

    pub(super) fn bytes(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

/// A scratch tree: `dest/` to unpack into, `outside/` that must stay empty, and the archive.
pub(super) struct Scratch {
    pub(super) dir: tempfile::TempDir,
}

impl Scratch {
    pub(super) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs_err::create_dir(dir.path().join("outside")).unwrap();
        Self { dir }
    }
    pub(super) fn dest(&self) -> PathBuf {
        self.dir.path().join("dest")
    }
    pub(super) fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }
    /// Writes the archive under a hash-like name (no extension) and unpacks it.
    pub(super) fn unpack(&self, bytes: &[u8]) -> Result<(), ArchiveError> {
        let archive = self.dir.path().join("0123abcd");
        fs_err::write(&archive, bytes).unwrap();
        unpack(&archive, &self.dest())
    }
    /// The paths under `dir`, sorted; empty when `dir` does not exist.
    pub(super) fn listing(&self, dir: &Path) -> Vec<String> {
        if !dir.exists() {
            return Vec::new();
        }
        let mut out: Vec<String> = walkdir::WalkDir::new(dir)
            .min_depth(1)
            .into_iter()
            .map(|e| {
                let e = e.unwrap();
                e.path()
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        out.sort();
        out
    }
    /// Asserts the error is an unsafe entry naming `entry`, and that nothing was written
    /// outside `dest` nor left inside it.
    pub(super) fn assert_refused(
        &self,
        result: Result<(), ArchiveError>,
        entry: &str,
    ) -> UnsafeReason {
        let err = result.expect_err("unsafe archive was unpacked");
        let msg = err.to_string();
        assert!(msg.contains("0123abcd"), "{msg}");
        assert!(msg.contains(&format!("{entry:?}")), "{msg}");
        assert_eq!(self.listing(&self.outside()), Vec::<String>::new());
        assert_eq!(self.listing(&self.dest()), Vec::<String>::new());
        let names: Vec<_> = fs_err::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 3, "unexpected files beside dest: {names:?}");
        match err {
            ArchiveError::Unsafe { reason, .. } => reason,
            other => panic!("expected an unsafe-entry error, got {other:?}"),
        }
    }
}

pub(super) fn mode(path: &Path) -> u32 {
    fs_err::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

fn python_like() -> Vec<u8> {
    Tar::new()
        .dir("Python-3.11.2/")
        .dir("Python-3.11.2/Lib/")
        .file("Python-3.11.2/Lib/os.py", b"import sys\n")
        .exe("Python-3.11.2/configure", b"#!/bin/sh\n")
        .symlink("Python-3.11.2/Lib/link.py", "os.py")
        .hardlink("Python-3.11.2/Lib/hard.py", "Python-3.11.2/Lib/os.py")
        .bytes()
}

fn assert_python_like(s: &Scratch) {
    let d = s.dest();
    assert_eq!(
        s.listing(&d),
        [
            "Lib",
            "Lib/hard.py",
            "Lib/link.py",
            "Lib/os.py",
            "configure"
        ]
    );
    assert_eq!(fs_err::read(d.join("Lib/os.py")).unwrap(), b"import sys\n");
    assert_eq!(
        fs_err::read(d.join("Lib/link.py")).unwrap(),
        b"import sys\n"
    );
    assert_eq!(
        fs_err::read(d.join("Lib/hard.py")).unwrap(),
        b"import sys\n"
    );
    assert_eq!(mode(&d.join("Lib/os.py")), 0o644);
    assert_eq!(mode(&d.join("configure")), 0o755);
    assert_eq!(mode(&d.join("Lib")), 0o755);
}

#[test]
fn unpacks_every_compression_by_magic_and_strips_the_top_dir() {
    let tar = python_like();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let mut xz = xz2::write::XzEncoder::new(Vec::new(), 1);
    xz.write_all(&tar).unwrap();
    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    bz.write_all(&tar).unwrap();
    for bytes in [
        tar.clone(),
        gz.finish().unwrap(),
        xz.finish().unwrap(),
        bz.finish().unwrap(),
        zstd::encode_all(&tar[..], 1).unwrap(),
    ] {
        let s = Scratch::new();
        s.unpack(&bytes).unwrap();
        assert_python_like(&s);
    }
}

#[test]
fn keeps_layout_without_a_single_top_dir() {
    let s = Scratch::new();
    s.unpack(&Tar::new().file("a/x", b"1").file("b", b"2").bytes())
        .unwrap();
    assert_eq!(s.listing(&s.dest()), ["a", "a/x", "b"]);

    let s = Scratch::new();
    s.unpack(&Tar::new().file("only-file.txt", b"1").bytes())
        .unwrap();
    assert_eq!(s.listing(&s.dest()), ["only-file.txt"]);
}

#[test]
fn strips_with_dot_slash_prefix_and_ignores_pax_global_header() {
    let s = Scratch::new();
    let bytes = Tar::new()
        .raw(
            EntryType::XGlobalHeader,
            "pax_global_header",
            "",
            0o644,
            b"",
        )
        .dir("./")
        .file("./pkg-1.0/README", b"hi")
        .bytes();
    s.unpack(&bytes).unwrap();
    assert_eq!(s.listing(&s.dest()), ["README"]);
}

#[test]
fn later_entries_replace_earlier_files_and_links() {
    let s = Scratch::new();
    fs_err::write(s.outside().join("victim"), b"safe").unwrap();
    let victim = s.outside().join("victim");
    let bytes = Tar::new()
        .file("x/a", b"old")
        .file("x/a", b"new")
        .symlink("x/l", victim.to_str().unwrap())
        .file("x/l", b"replaced the link")
        .file("y", b"")
        .bytes();
    // The absolute symlink is replaced before the end, so nothing is left to check.
    s.unpack(&bytes).unwrap();
    assert_eq!(fs_err::read(s.dest().join("x/a")).unwrap(), b"new");
    assert_eq!(
        fs_err::read(s.dest().join("x/l")).unwrap(),
        b"replaced the link"
    );
    assert_eq!(fs_err::read(&victim).unwrap(), b"safe");
}

#[test]
fn refuses_parent_dir_components() {
    for name in ["../evil", "a/../../evil", "a/b/../../../evil"] {
        let s = Scratch::new();
        let reason = s.assert_refused(s.unpack(&Tar::new().file(name, b"x").bytes()), name);
        assert_eq!(reason, UnsafeReason::ParentDir);
    }
}

#[test]
fn refuses_absolute_paths() {
    let s = Scratch::new();
    let name = s.outside().join("evil");
    let name = name.to_str().unwrap();
    let reason = s.assert_refused(s.unpack(&Tar::new().file(name, b"x").bytes()), name);
    assert_eq!(reason, UnsafeReason::Absolute);
}

#[test]
fn refuses_symlinks_leading_outside() {
    let s = Scratch::new();
    let outside = s.outside();
    let cases = [
        ("pkg/abs", outside.to_str().unwrap().to_string()),
        ("pkg/up", "../..".to_string()),
        ("pkg/sub/up", "../../../outside".to_string()),
        ("pkg/mid", "a/../..".to_string()),
    ];
    for (name, target) in cases {
        let s = Scratch::new();
        let bytes = Tar::new()
            .file("pkg/a", b"")
            .symlink(name, &target)
            .file("other", b"")
            .bytes();
        let reason = s.assert_refused(s.unpack(&bytes), name);
        assert_eq!(reason, UnsafeReason::SymlinkEscapes { target });
    }
}

#[test]
fn symlink_check_uses_the_stripped_layout() {
    // Under `pkg/`, `..` stays inside only while `pkg/` is kept.
    let s = Scratch::new();
    let kept = Tar::new()
        .symlink("pkg/up", "..")
        .file("other", b"")
        .bytes();
    s.unpack(&kept).unwrap();
    assert_eq!(s.listing(&s.dest()), ["other", "pkg", "pkg/up"]);

    let s = Scratch::new();
    let stripped = Tar::new()
        .file("pkg/a", b"")
        .symlink("pkg/up", "..")
        .bytes();
    let reason = s.assert_refused(s.unpack(&stripped), "pkg/up");
    assert_eq!(
        reason,
        UnsafeReason::SymlinkEscapes {
            target: "..".into()
        }
    );
}

#[test]
fn refuses_a_dotdot_after_a_link_even_when_lexically_inside() {
    // `x/up -> ..` is fine alone, but `y/z/w -> ../../x/up/..` resolves (via the link) to the
    // parent of dest, although a lexical reading says `x`.
    let s = Scratch::new();
    let bytes = Tar::new()
        .symlink("x/up", "..")
        .symlink("y/z/w", "../../x/up/..")
        .bytes();
    let reason = s.assert_refused(s.unpack(&bytes), "y/z/w");
    assert!(matches!(reason, UnsafeReason::SymlinkEscapes { .. }));
}

#[test]
fn never_writes_through_a_symlink() {
    let s = Scratch::new();
    let outside = s.outside();
    let bytes = Tar::new()
        .symlink("a", outside.to_str().unwrap())
        .file("a/x", b"escaped")
        .bytes();
    let reason = s.assert_refused(s.unpack(&bytes), "a/x");
    assert_eq!(reason, UnsafeReason::ThroughSymlink { link: "a".into() });

    // Even a link that points inside is not followed.
    let s = Scratch::new();
    let bytes = Tar::new()
        .dir("d/")
        .symlink("e", "d")
        .file("e/x", b"")
        .bytes();
    let reason = s.assert_refused(s.unpack(&bytes), "e/x");
    assert_eq!(reason, UnsafeReason::ThroughSymlink { link: "e".into() });
}

#[test]
fn refuses_hardlinks_outside_or_to_links() {
    let s = Scratch::new();
    let victim = s.outside().join("victim");
    fs_err::write(&victim, b"secret").unwrap();
    let abs = victim.to_str().unwrap().to_string();
    let cases = [
        (
            "h",
            abs.clone(),
            UnsafeReason::HardlinkOutside { target: abs },
        ),
        (
            "h",
            "../outside/victim".to_string(),
            UnsafeReason::HardlinkOutside {
                target: "../outside/victim".into(),
            },
        ),
        (
            "h",
            "missing".to_string(),
            UnsafeReason::HardlinkNotFile {
                target: "missing".into(),
            },
        ),
        (
            "h",
            "deep/l".to_string(),
            UnsafeReason::HardlinkNotFile {
                target: "deep/l".into(),
            },
        ),
    ];
    for (name, target, expected) in cases {
        let s = Scratch::new();
        let bytes = Tar::new()
            .symlink("deep/l", "../x")
            .file("x", b"")
            .hardlink(name, &target)
            .bytes();
        assert_eq!(s.assert_refused(s.unpack(&bytes), name), expected);
    }
    assert_eq!(fs_err::read(&victim).unwrap(), b"secret");
}

#[test]
fn refuses_device_and_fifo_nodes() {
    for (kind, shown) in [
        (EntryType::Char, "character device"),
        (EntryType::Block, "block device"),
        (EntryType::Fifo, "fifo"),
    ] {
        let s = Scratch::new();
        let bytes = Tar::new().raw(kind, "pkg/node", "", 0o644, b"").bytes();
        let reason = s.assert_refused(s.unpack(&bytes), "pkg/node");
        assert_eq!(reason, UnsafeReason::Special { kind: shown });
    }
}

#[test]
fn refuses_sparse_files() {
    // A GNU sparse entry declares its size apart from the bytes it stores: this one stores none
    // and declares 256 MiB of zeros, and 1 TiB would cost no more bytes.
    let mut h = tar::Header::new_gnu();
    h.set_path("pkg/big").unwrap();
    h.set_entry_type(EntryType::GNUSparse);
    h.set_mode(0o644);
    h.set_size(0);
    let octal = |n: u64| {
        let mut field = [0u8; 12];
        field[..11].copy_from_slice(format!("{n:011o}").as_bytes());
        field
    };
    let gnu = h.as_gnu_mut().unwrap();
    gnu.sparse[0].offset = octal(256 << 20);
    gnu.sparse[0].numbytes = octal(0);
    gnu.realsize = octal(256 << 20);
    h.set_cksum();
    let mut tar = tar::Builder::new(Vec::new());
    tar.append(&h, &[][..]).unwrap();
    let s = Scratch::new();
    let reason = s.assert_refused(s.unpack(&tar.into_inner().unwrap()), "pkg/big");
    assert_eq!(
        reason,
        UnsafeReason::Special {
            kind: "sparse file"
        }
    );
}

#[test]
fn merges_into_existing_directories_but_never_replaces_files() {
    let s = Scratch::new();
    fs_err::create_dir_all(s.dest().join("lib")).unwrap();
    fs_err::write(s.dest().join("lib/b"), b"mine").unwrap();
    s.unpack(&Tar::new().file("lib/a", b"").file("top", b"").bytes())
        .unwrap();
    assert_eq!(s.listing(&s.dest()), ["lib", "lib/a", "lib/b", "top"]);

    let err = s
        .unpack(&Tar::new().file("new", b"").file("lib/b", b"theirs").bytes())
        .unwrap_err();
    let ArchiveError::Exists { path, .. } = &err else {
        panic!("expected Exists, got {err:?}");
    };
    assert_eq!(path, Path::new("lib/b"));
    assert_eq!(s.listing(&s.dest()), ["lib", "lib/a", "lib/b", "top"]);
    assert_eq!(fs_err::read(s.dest().join("lib/b")).unwrap(), b"mine");
}

#[test]
fn does_not_merge_through_a_symlink_already_in_dest() {
    let s = Scratch::new();
    fs_err::create_dir(s.dest()).unwrap();
    std::os::unix::fs::symlink(s.outside(), s.dest().join("lib")).unwrap();
    let err = s
        .unpack(&Tar::new().file("lib/a", b"").file("x", b"").bytes())
        .unwrap_err();
    assert!(matches!(err, ArchiveError::Exists { .. }), "{err:?}");
    assert_eq!(s.listing(&s.outside()), Vec::<String>::new());
}

#[test]
fn reports_corrupt_and_unsupported_archives() {
    let s = Scratch::new();
    let err = s.unpack(b"PK\x03\x04rest of a zip").unwrap_err();
    assert!(matches!(err, ArchiveError::Unsupported { .. }), "{err:?}");
    assert!(err.to_string().contains("zip"), "{err}");

    // A zstd frame cut short.
    let mut zst = zstd::encode_all(&python_like()[..], 1).unwrap();
    zst.truncate(zst.len() / 2);
    let err = s.unpack(&zst).unwrap_err();
    assert!(matches!(err, ArchiveError::Read { .. }), "{err:?}");
    assert_eq!(s.listing(&s.dest()), Vec::<String>::new());

    let mut bytes = python_like();
    bytes[0] ^= 0xff; // breaks the first header's checksum
    let err = s.unpack(&bytes).unwrap_err();
    assert!(matches!(err, ArchiveError::Read { .. }), "{err:?}");
    assert_eq!(s.listing(&s.dest()), Vec::<String>::new());
}

#[test]
fn recognises_archive_names() {
    for name in [
        "Python-3.11.2.tar.xz",
        "a.TGZ",
        "b.tar.bz2",
        "c.tar",
        "d.txz",
        "e.tar.zst",
        "f.tzst",
        "coreutils_9.1-1_amd64.deb",
    ] {
        assert!(looks_like_archive(name), "{name}");
    }
    for name in ["patch.diff", "setup.py", "tar", "x.gz", "x.zip"] {
        assert!(!looks_like_archive(name), "{name}");
    }
}
