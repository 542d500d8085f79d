use std::io::Write as _;
use std::os::unix::fs::MetadataExt;

use tar::EntryType;

use super::super::tests::{mode, Scratch, Tar};
use super::super::{unpack, ArchiveError, DebProblem, UnsafeReason};
use super::*;

/// An `ar` archive of `members`, as dpkg-deb writes it (names padded with spaces, odd sizes
/// padded with a newline).
fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = AR_MAGIC.to_vec();
    for (name, data) in members {
        let header = format!(
            "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            0,
            0,
            0,
            100644,
            data.len()
        );
        assert_eq!(header.len(), 60);
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn xz(bytes: &[u8]) -> Vec<u8> {
    let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn bz2(bytes: &[u8]) -> Vec<u8> {
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn control(package: &str) -> Vec<u8> {
    let text = format!("Package: {package}\nVersion: 1.0-1\nArchitecture: amd64\n");
    gz(&Tar::new()
        .dir("./")
        .file("./control", text.as_bytes())
        .bytes())
}

/// A .deb of `package` whose data.tar (xz-compressed, as Debian's are) is `data`.
fn deb(package: &str, data: Vec<u8>) -> Vec<u8> {
    ar(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar.gz", &control(package)),
        ("data.tar.xz", &xz(&data)),
    ])
}

impl Scratch {
    /// Unpacks a .deb named like the store names sources (by hash, no extension).
    fn unpack_deb(&self, name: &str, bytes: &[u8]) -> Result<(), ArchiveError> {
        let archive = self.dir.path().join(name);
        fs_err::write(&archive, bytes).unwrap();
        unpack(&archive, &self.dest())
    }

    fn target(&self, rel: &str) -> String {
        fs_err::read_link(self.dest().join(rel))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    fn read(&self, rel: &str) -> String {
        String::from_utf8(fs_err::read(self.dest().join(rel)).unwrap()).unwrap()
    }
}

fn libc_like() -> Vec<u8> {
    Tar::new()
        .dir("./")
        .dir("./bin/")
        .exe("./bin/x", b"x")
        .raw(EntryType::Regular, "./bin/suid", "", 0o4755, b"s")
        .hardlink("./bin/hx", "./bin/x")
        .dir("./etc/")
        .file("./etc/conf", b"c")
        .symlink("./bin/conf", "../etc/conf")
        .dir("./etc/alternatives/")
        .symlink("./etc/alternatives/awk", "/usr/bin/y")
        .dir("./lib/")
        .dir("./lib/x86_64-linux-gnu/")
        .file("./lib/x86_64-linux-gnu/ld.so", b"ld")
        .dir("./lib64/")
        .symlink("./lib64/ld-abs.so", "/lib/x86_64-linux-gnu/ld.so")
        .symlink("./lib64/ld-rel.so", "../lib/x86_64-linux-gnu/ld.so")
        .dir("./sbin/")
        .dir("./usr/")
        .dir("./usr/bin/")
        .file("./usr/bin/y", b"y")
        .symlink("./usr/bin/awk", "/etc/alternatives/awk")
        .symlink("./usr/bin/via-bin", "../../bin/x")
        .symlink("./usr/bin/rel", "y")
        .bytes()
}

#[test]
fn places_entries_into_merged_usr_with_compat_links_and_relative_targets() {
    let s = Scratch::new();
    s.unpack_deb("0123abcd", &deb("libc", libc_like())).unwrap();
    assert_eq!(
        s.listing(&s.dest()),
        [
            "bin",
            "etc",
            "etc/alternatives",
            "etc/alternatives/awk",
            "etc/conf",
            "lib",
            "lib64",
            "sbin",
            "usr",
            "usr/bin",
            "usr/bin/awk",
            "usr/bin/conf",
            "usr/bin/hx",
            "usr/bin/rel",
            "usr/bin/suid",
            "usr/bin/via-bin",
            "usr/bin/x",
            "usr/bin/y",
            "usr/lib",
            "usr/lib/x86_64-linux-gnu",
            "usr/lib/x86_64-linux-gnu/ld.so",
            "usr/lib64",
            "usr/lib64/ld-abs.so",
            "usr/lib64/ld-rel.so",
            "usr/sbin",
        ]
    );
    for (link, target) in [
        ("bin", "usr/bin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
        ("sbin", "usr/sbin"),
        // absolute targets, rewritten from the link's final place
        ("usr/lib64/ld-abs.so", "../lib/x86_64-linux-gnu/ld.so"),
        ("etc/alternatives/awk", "../../usr/bin/y"),
        ("usr/bin/awk", "../../etc/alternatives/awk"),
        // a relative target that already resolves right is kept
        ("usr/lib64/ld-rel.so", "../lib/x86_64-linux-gnu/ld.so"),
        ("usr/bin/rel", "y"),
        // moved from bin/: `../etc` meant the root's etc, not usr/etc
        ("usr/bin/conf", "../../etc/conf"),
        // through bin/, which is now usr/bin itself
        ("usr/bin/via-bin", "x"),
    ] {
        assert_eq!(s.target(link), target, "{link}");
    }
    for (path, content) in [
        ("lib64/ld-abs.so", "ld"),
        ("lib64/ld-rel.so", "ld"),
        ("bin/x", "x"),
        ("usr/bin/awk", "y"),
        ("bin/conf", "c"),
        ("usr/bin/via-bin", "x"),
    ] {
        assert_eq!(s.read(path), content, "{path}");
    }
    let meta = |p: &str| fs_err::metadata(s.dest().join(p)).unwrap();
    assert_eq!(meta("usr/bin/hx").ino(), meta("usr/bin/x").ino());
    assert_eq!(mode(&s.dest().join("usr/bin/x")), 0o755);
    assert_eq!(mode(&s.dest().join("usr/bin/suid")), 0o755);
    assert_eq!(mode(&s.dest().join("usr/bin/y")), 0o644);
    assert_eq!(s.listing(&s.outside()), Vec::<String>::new());
}

#[test]
fn unpacks_data_tar_in_every_compression_and_never_strips() {
    // A package holding only usr/ keeps it: no top-level directory is stripped.
    let tar = Tar::new()
        .dir("./")
        .dir("./usr/")
        .file("./usr/share/doc/p/copyright", b"(c)")
        .bytes();
    for (name, data) in [
        ("data.tar", tar.clone()),
        ("data.tar.gz", gz(&tar)),
        ("data.tar.xz", xz(&tar)),
        ("data.tar.zst", zstd::encode_all(&tar[..], 3).unwrap()),
        ("data.tar.bz2", bz2(&tar)),
    ] {
        let s = Scratch::new();
        let control =
            zstd::encode_all(&Tar::new().file("control", b"Package: p\n").bytes()[..], 1).unwrap();
        let bytes = ar(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.zst", &control),
            (name, &data),
        ]);
        s.unpack_deb("0123abcd", &bytes).unwrap();
        assert_eq!(
            s.listing(&s.dest()),
            [
                "usr",
                "usr/share",
                "usr/share/doc",
                "usr/share/doc/p",
                "usr/share/doc/p/copyright"
            ],
            "{name}"
        );
    }
}

fn package_a() -> Vec<u8> {
    let data = Tar::new()
        .dir("./")
        .dir("./bin/")
        .exe("./bin/a", b"a")
        .symlink("./bin", "usr/bin") // a package's own compat link is skipped
        .dir("./usr/share/doc/a/")
        .file("./usr/share/doc/a/copyright", b"a")
        .file("./lib/x86_64-linux-gnu/liba.so", b"a")
        .bytes();
    deb("a", data)
}

fn package_b() -> Vec<u8> {
    let data = Tar::new()
        .dir("./")
        .exe("./bin/b", b"b")
        .symlink("./usr/bin/to-a", "/bin/a")
        .file("./usr/share/doc/b/copyright", b"b")
        .file("./sbin/sb", b"b")
        .bytes();
    deb("b", data)
}

fn tree(s: &Scratch) -> Vec<(String, String)> {
    s.listing(&s.dest())
        .into_iter()
        .map(|p| {
            let full = s.dest().join(&p);
            let what = match fs_err::read_link(&full) {
                Ok(t) => format!("-> {}", t.display()),
                Err(_) if full.is_dir() => "dir".into(),
                Err(_) => s.read(&p),
            };
            (p, what)
        })
        .collect()
}

#[test]
fn packages_compose_in_one_dest_in_either_order() {
    let ab = Scratch::new();
    ab.unpack_deb("0123abcd", &package_a()).unwrap();
    ab.unpack_deb("4567cdef", &package_b()).unwrap();
    let ba = Scratch::new();
    ba.unpack_deb("4567cdef", &package_b()).unwrap();
    ba.unpack_deb("0123abcd", &package_a()).unwrap();
    let expected: Vec<(String, String)> = [
        ("bin", "-> usr/bin"),
        ("lib", "-> usr/lib"),
        ("sbin", "-> usr/sbin"),
        ("usr", "dir"),
        ("usr/bin", "dir"),
        ("usr/bin/a", "a"),
        ("usr/bin/b", "b"),
        ("usr/bin/to-a", "-> a"),
        ("usr/lib", "dir"),
        ("usr/lib/x86_64-linux-gnu", "dir"),
        ("usr/lib/x86_64-linux-gnu/liba.so", "a"),
        ("usr/sbin", "dir"),
        ("usr/sbin/sb", "b"),
        ("usr/share", "dir"),
        ("usr/share/doc", "dir"),
        ("usr/share/doc/a", "dir"),
        ("usr/share/doc/a/copyright", "a"),
        ("usr/share/doc/b", "dir"),
        ("usr/share/doc/b/copyright", "b"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(tree(&ab), expected);
    assert_eq!(tree(&ba), expected);
}

#[test]
fn two_packages_shipping_one_path_conflict_and_nothing_moves() {
    for (b, path) in [
        // bin/same of package a is usr/bin/same
        (
            Tar::new()
                .file("./usr/share/b/new", b"b")
                .file("./usr/bin/same", b"b"),
            "usr/bin/same",
        ),
        // an identical link is a conflict too, as for dpkg
        (
            Tar::new()
                .file("./usr/share/b/new", b"b")
                .symlink("./bin/link", "same"),
            "usr/bin/link",
        ),
    ] {
        let s = Scratch::new();
        let a = Tar::new()
            .exe("./bin/same", b"a")
            .symlink("./bin/link", "same")
            .bytes();
        s.unpack_deb("0123abcd", &deb("a", a)).unwrap();
        let before = tree(&s);
        let err = s.unpack_deb("4567cdef", &deb("b", b.bytes())).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(path) && msg.contains("b 1.0-1") && msg.contains("4567cdef"),
            "{msg}"
        );
        let ArchiveError::PackageConflict { path: p, .. } = err else {
            panic!("expected a package conflict, got {err:?}");
        };
        assert_eq!(p, Path::new(path));
        assert_eq!(tree(&s), before);
    }
}

#[test]
fn a_compat_link_place_taken_by_something_else_is_a_conflict() {
    let s = Scratch::new();
    fs_err::create_dir_all(s.dest().join("bin")).unwrap();
    let err = s.unpack_deb("0123abcd", &package_a()).unwrap_err();
    let ArchiveError::PackageConflict { path, .. } = &err else {
        panic!("expected a package conflict, got {err:?}");
    };
    assert_eq!(path, Path::new("bin"));
    assert_eq!(s.listing(&s.dest()), ["bin"]);
}

#[test]
fn refuses_hostile_entries() {
    let s = Scratch::new();
    let outside = s.outside().join("evil");
    let outside = outside.to_str().unwrap();
    let cases: Vec<(Tar, &str, UnsafeReason)> = vec![
        (
            Tar::new().file("./bin/../../evil", b""),
            "./bin/../../evil",
            UnsafeReason::ParentDir,
        ),
        (
            Tar::new().file(outside, b""),
            outside,
            UnsafeReason::Absolute,
        ),
        (
            Tar::new().symlink("./usr/lib/up", "../../.."),
            "./usr/lib/up",
            UnsafeReason::SymlinkEscapes {
                target: "../../..".into(),
            },
        ),
        // one `..` more than lib64/ is deep, although usr/lib64/ is deeper
        (
            Tar::new().symlink("./lib64/up", "../../x"),
            "./lib64/up",
            UnsafeReason::SymlinkEscapes {
                target: "../../x".into(),
            },
        ),
        (
            Tar::new().symlink("./usr/bin/x", "/usr/../../x"),
            "./usr/bin/x",
            UnsafeReason::SymlinkEscapes {
                target: "/usr/../../x".into(),
            },
        ),
        (
            Tar::new().symlink("./usr/bin/x", "a/../../.."),
            "./usr/bin/x",
            UnsafeReason::SymlinkEscapes {
                target: "a/../../..".into(),
            },
        ),
        (
            Tar::new().raw(EntryType::Char, "./dev/null", "", 0o644, b""),
            "./dev/null",
            UnsafeReason::Special {
                kind: "character device",
            },
        ),
        (
            Tar::new().hardlink("./usr/bin/h", "../outside/victim"),
            "./usr/bin/h",
            UnsafeReason::HardlinkOutside {
                target: "../outside/victim".into(),
            },
        ),
        (
            Tar::new().file("./bin/x", b"1").file("./usr/bin/x", b"2"),
            "./usr/bin/x",
            UnsafeReason::Duplicate {
                path: "usr/bin/x".into(),
            },
        ),
        (
            Tar::new()
                .symlink("./usr/bin/l", "/etc")
                .file("./bin/l/passwd", b""),
            "./bin/l/passwd",
            UnsafeReason::ThroughSymlink {
                link: "usr/bin/l".into(),
            },
        ),
    ];
    for (tar, entry, expected) in cases {
        let s = Scratch::new();
        let bytes = deb("evil", tar.file("./usr/share/ok", b"").bytes());
        let reason = s.assert_refused(s.unpack_deb("0123abcd", &bytes), entry);
        assert_eq!(reason, expected, "{entry}");
    }
}

#[test]
fn never_writes_through_a_link_an_earlier_package_made() {
    // Each first package is harmless alone; the second one tries to write through its link.
    let cases = [
        (
            ("./usr/lib/evil", "/etc"),
            Tar::new().file("./usr/lib/evil/passwd", b"x"),
            "usr/lib/evil",
        ),
        (
            ("./usr/lib/up", "../.."),
            Tar::new().file("./lib/up/etc/passwd", b"x"),
            "usr/lib/up",
        ),
        (("./usr", "/"), Tar::new().file("./bin/x", b"x"), "usr"),
        (
            ("./usr/share/doc", "/tmp"),
            Tar::new().file("./usr/share/doc/x", b"x"),
            "usr/share/doc",
        ),
    ];
    for ((link, target), second, conflict) in cases {
        let s = Scratch::new();
        let first = Tar::new().dir("./etc/").dir("./tmp/").symlink(link, target);
        s.unpack_deb("0123abcd", &deb("a", first.bytes())).unwrap();
        let before = tree(&s);
        let err = s
            .unpack_deb("4567cdef", &deb("b", second.bytes()))
            .unwrap_err();
        let ArchiveError::PackageConflict { path, .. } = &err else {
            panic!("expected a package conflict, got {err:?}");
        };
        assert_eq!(path, Path::new(conflict));
        assert_eq!(tree(&s), before, "{conflict}");
        assert_eq!(s.listing(&s.outside()), Vec::<String>::new());
    }
}

#[test]
fn hard_links_only_to_files_of_the_same_package() {
    let s = Scratch::new();
    s.unpack_deb("0123abcd", &package_a()).unwrap();
    let b = Tar::new().hardlink("./usr/bin/h", "./bin/a").bytes();
    let err = s.unpack_deb("4567cdef", &deb("b", b)).unwrap_err();
    assert!(
        matches!(
            &err,
            ArchiveError::Unsafe {
                reason: UnsafeReason::HardlinkNotFile { .. },
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn reports_corrupt_and_truncated_containers() {
    let good = deb("p", Tar::new().file("./usr/x", b"x").bytes());
    let data_start = good.windows(11).position(|w| w == b"data.tar.xz").unwrap() + 60;
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("cut in a header", good[..8 + 30].to_vec()),
        ("cut in data.tar", good[..good.len() - 20].to_vec()),
        ("cut in the xz stream", {
            // shorten the member consistently, so only the compressed stream is cut
            let mut b = good[..data_start - 60].to_vec();
            let data = &good[data_start..];
            let data = &data[..data.len() / 2];
            b.extend_from_slice(
                format!(
                    "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                    "data.tar.xz",
                    0,
                    0,
                    0,
                    100644,
                    data.len()
                )
                .as_bytes(),
            );
            b.extend_from_slice(data);
            b
        }),
    ];
    let mut bad_magic = good.clone();
    bad_magic[8 + 58] = b'X';
    cases.push(("bad header end", bad_magic));
    let mut bad_size = good.clone();
    bad_size[8 + 48] = b'z';
    cases.push(("bad size", bad_size));
    cases.push((
        "version 3",
        ar(&[
            ("debian-binary", b"3.0\n"),
            ("control.tar", b""),
            ("data.tar", b""),
        ]),
    ));
    cases.push((
        "no data",
        ar(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.gz", &control("p")),
        ]),
    ));
    cases.push((
        "unknown member",
        ar(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.gz", &control("p")),
            ("evil.tar", b""),
            ("data.tar", b""),
        ]),
    ));
    cases.push((
        "no control file",
        ar(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar", &Tar::new().file("./md5sums", b"").bytes()),
            ("data.tar", &Tar::new().file("./x", b"").bytes()),
        ]),
    ));
    for (what, bytes) in cases {
        let s = Scratch::new();
        let err = s.unpack_deb("0123abcd", &bytes).unwrap_err();
        assert!(
            matches!(err, ArchiveError::Deb { .. } | ArchiveError::Read { .. }),
            "{what}: {err:?}"
        );
        assert!(err.to_string().contains("0123abcd"), "{what}: {err}");
        assert_eq!(s.listing(&s.dest()), Vec::<String>::new(), "{what}");
    }

    // An ar archive that is not a package is not unpacked at all.
    let s = Scratch::new();
    let err = s
        .unpack_deb("0123abcd", &ar(&[("libfoo.o", b"\x7fELF")]))
        .unwrap_err();
    assert!(matches!(err, ArchiveError::Unsupported { .. }), "{err:?}");

    let s = Scratch::new();
    let err = s
        .unpack_deb(
            "0123abcd",
            &ar(&[
                ("debian-binary", b"3.0\n"),
                ("control.tar", b""),
                ("data.tar", b""),
            ]),
        )
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ArchiveError::Deb {
                problem: DebProblem::Version(v),
                ..
            } if v == "3.0"
        ),
        "{err:?}"
    );
}

#[test]
fn rewrites_link_targets_lexically() {
    let c = |s: &str| -> Vec<OsString> { s.split('/').map(OsString::from).collect() };
    let t = |s: &str| Link::Target(PathBuf::from(s));
    assert_eq!(
        link(&c("lib64/ld.so"), Path::new("/lib/x/ld.so")),
        t("../lib/x/ld.so")
    );
    assert_eq!(link(&c("usr/lib/x"), Path::new("/")), t("../.."));
    assert_eq!(link(&c("usr/lib/x"), Path::new("/lib")), t("."));
    assert_eq!(link(&c("usr/lib/x"), Path::new("/usr/lib/")), t("."));
    assert_eq!(link(&c("x"), Path::new("/")), t("."));
    assert_eq!(link(&c("bin/sh"), Path::new("dash")), t("dash"));
    assert_eq!(link(&c("bin"), Path::new("usr/bin")), Link::Compat);
    assert_eq!(link(&c("lib64"), Path::new("/usr/lib64")), Link::Compat);
    assert_eq!(link(&c("bin"), Path::new("/usr/sbin")), t("sbin"));
    assert_eq!(link(&c("usr/x"), Path::new("/..")), Link::Escapes);
    assert_eq!(link(&c("x"), Path::new("..")), Link::Escapes);
}
