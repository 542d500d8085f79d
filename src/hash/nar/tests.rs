#![allow(clippy::disallowed_methods)]

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use super::*;
use crate::hash::tree;

/// The tree of the worked example in docs/binary-cache.md: a file, an executable in a nested
/// directory, an empty directory, an empty file (whose name extends the directory's: `empty`
/// sorts before `empty-file`) and a symlink.
fn example_tree(dir: &Path) {
    std::fs::create_dir(dir).unwrap();
    std::fs::write(dir.join("README"), "hi\n").unwrap();
    std::fs::create_dir(dir.join("bin")).unwrap();
    std::fs::write(dir.join("bin/hello"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(dir.join("bin/hello"), Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(dir.join("empty")).unwrap();
    std::fs::write(dir.join("empty-file"), "").unwrap();
    symlink("bin/hello", dir.join("link")).unwrap();
}

const DOC: &str = include_str!("../../../docs/binary-cache.md");

/// The archive bytes listed in the doc's example table: the backquoted hex of the first column
/// of each row between the `nar-example` markers.
fn doc_bytes() -> Vec<u8> {
    let section = DOC
        .split("<!-- nar-example:start -->")
        .nth(1)
        .and_then(|s| s.split("<!-- nar-example:end -->").next())
        .expect("docs/binary-cache.md has the nar-example section");
    let mut hex_text = String::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cell = row.split('`').nth(1).unwrap();
        hex_text.extend(cell.chars().filter(|c| !c.is_whitespace()));
    }
    hex::decode(hex_text).expect("hex bytes in the table")
}

/// The `NarHash` and `NarSize` lines the doc gives for the example.
fn doc_field(key: &str) -> String {
    let prefix = format!("{key}: ");
    DOC.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("docs/binary-cache.md has a `{key}:` line"))
        .to_string()
}

fn write_to_vec(root: &Path) -> (Vec<u8>, NarHash, u64) {
    let mut out = Vec::new();
    let (hash, size) = write_nar(root, &mut out).unwrap();
    (out, hash, size)
}

#[test]
fn known_answer_matches_the_documented_bytes_and_hash() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("tree");
    example_tree(&root);
    let (bytes, hash, size) = write_to_vec(&root);
    assert_eq!(hex::encode(&bytes), hex::encode(doc_bytes()));
    assert_eq!(size, bytes.len() as u64);
    assert_eq!(hash, NarHash::of(&bytes));
    assert_eq!(hash.to_string(), doc_field("NarHash"));
    assert_eq!(size.to_string(), doc_field("NarSize"));
    assert_eq!(
        hash.to_string(),
        "sha256:69de3c2f29d96d917f12da6a792487f36413bd6a849d9e812944c6fa52905c22"
    );
}

/// The Python encoder in tests/fixtures was written from the spec alone; both readings of the
/// spec must agree byte for byte, on the example and on a larger, messier tree.
#[test]
fn independent_python_encoder_agrees() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("tree");
    example_tree(&root);
    std::fs::create_dir_all(root.join("a/b.c/d")).unwrap();
    std::fs::write(root.join("a/b.c/d/big"), vec![7u8; 3 * CHUNK + 11]).unwrap();
    std::fs::write(root.join("a/b"), "sorted between a/b.c? no: a/b < a/b.c").unwrap();
    symlink("/pybake/store/abs target", root.join("a/abs")).unwrap();
    std::fs::write(root.join("a/é"), "utf-8 name").unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/nar-reference.py"
    );
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(&root)
        .output()
        .expect("python3 runs (it is a test dependency, see .ci)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (bytes, hash, size) = write_to_vec(&root);
    assert!(bytes == out.stdout, "Rust and Python archives differ");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("{hash} {size}")
    );
}

#[test]
fn round_trip_preserves_the_tree_hash_and_the_archive() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("tree");
    example_tree(&root);
    std::fs::write(root.join("bin/big"), vec![1u8; 2 * CHUNK + 3]).unwrap();
    let (bytes, hash, size) = write_to_vec(&root);

    let dest = t.path().join("unpacked");
    let got = unpack_nar(&mut &bytes[..], &dest, &NarLimits::new(size)).unwrap();
    assert_eq!(got, (hash, size));
    assert_eq!(
        tree::hash_path(&root).unwrap(),
        tree::hash_path(&dest).unwrap()
    );
    assert_eq!(write_to_vec(&dest).1, hash);
    let mode = |p: &str| {
        std::fs::symlink_metadata(dest.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(
        [mode(""), mode("README"), mode("bin"), mode("bin/hello")],
        [0o755, 0o644, 0o755, 0o755]
    );
}

#[test]
fn writer_never_holds_a_file_whole() {
    /// Records the largest single write.
    struct Largest(usize);
    impl Write for Largest {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 = self.0.max(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("big"), vec![0u8; 8 * CHUNK]).unwrap();
    let mut w = Largest(0);
    write_nar(t.path(), &mut w).unwrap();
    assert!(w.0 <= CHUNK, "a write of {} bytes", w.0);
}

#[test]
fn writer_refuses_special_files_and_a_root_that_is_not_a_directory() {
    let t = tempfile::tempdir().unwrap();
    let socket = t.path().join("socket");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let err = write_nar(t.path(), &mut io::sink()).unwrap_err();
    assert!(matches!(err, NarError::SpecialFile { path } if path == socket));
    drop(listener);
    std::fs::remove_file(&socket).unwrap();
    std::fs::write(t.path().join("f"), "x").unwrap();
    let err = write_nar(&t.path().join("f"), &mut io::sink()).unwrap_err();
    assert!(matches!(err, NarError::RootNotDirectory { .. }));
}

/// A node of a hand-made archive: any bytes, in any order, to build hostile streams.
enum N<'a> {
    F(&'a [u8]),
    L(&'a [u8]),
    D(Vec<(&'a [u8], N<'a>)>),
}

fn enc(node: &N, out: &mut Vec<u8>) {
    match node {
        N::F(data) => {
            out.push(b'f');
            out.extend((data.len() as u64).to_le_bytes());
            out.extend(*data);
        }
        N::L(target) => {
            out.push(b'l');
            out.extend((target.len() as u64).to_le_bytes());
            out.extend(*target);
        }
        N::D(entries) => {
            out.push(b'd');
            out.extend((entries.len() as u64).to_le_bytes());
            for (name, child) in entries {
                out.extend((name.len() as u64).to_le_bytes());
                out.extend(*name);
                enc(child, out);
            }
        }
    }
}

fn nar(root: N) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    enc(&root, &mut out);
    out
}

/// Unpacks `bytes` into `<tmp>/parent/dest`, next to a victim directory, and checks that the
/// failure left nothing behind: `parent` holds only the victim, which is untouched.
fn refused(bytes: &[u8], limits: NarLimits) -> NarError {
    let t = tempfile::tempdir().unwrap();
    let parent = t.path().join("parent");
    std::fs::create_dir_all(parent.join("victim")).unwrap();
    let dest = parent.join("dest");
    let err = unpack_nar(&mut &bytes[..], &dest, &limits).unwrap_err();
    let left: Vec<_> = std::fs::read_dir(&parent)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["victim"], "{err}");
    assert_eq!(std::fs::read_dir(parent.join("victim")).unwrap().count(), 0);
    err
}

fn reason(bytes: &[u8]) -> Invalid {
    match refused(bytes, NarLimits::new(1 << 20)) {
        NarError::Invalid { reason, .. } => reason,
        other => panic!("not an invalid archive: {other}"),
    }
}

fn ok_dir<'a>() -> N<'a> {
    N::D(vec![(b"a", N::F(b"data"))])
}

#[test]
fn refuses_bad_magic() {
    let mut bytes = nar(ok_dir());
    bytes[11] = b'2';
    assert_eq!(reason(&bytes), Invalid::BadMagic);
    assert_eq!(reason(b"pyb"), Invalid::BadMagic);
}

#[test]
fn refuses_an_unknown_tag() {
    let mut bytes = nar(ok_dir());
    let at = MAGIC.len() + 1 + 8 + 8 + 1;
    assert_eq!(bytes[at], b'f');
    bytes[at] = b'h';
    assert_eq!(reason(&bytes), Invalid::UnknownTag(b'h'));
}

#[test]
fn refuses_a_root_that_is_not_a_directory() {
    assert_eq!(reason(&nar(N::F(b"x"))), Invalid::RootNotDirectory);
}

#[test]
fn refuses_unsorted_names() {
    let bytes = nar(N::D(vec![(b"b", N::F(b"")), (b"a", N::F(b""))]));
    assert!(
        matches!(reason(&bytes), Invalid::Unsorted { previous, name } if previous == "b" && name == "a")
    );
}

#[test]
fn refuses_duplicate_names() {
    let bytes = nar(N::D(vec![(b"a", N::F(b"1")), (b"a", N::F(b"2"))]));
    assert_eq!(reason(&bytes), Invalid::Duplicate { name: "a".into() });
}

/// Were the second entry honoured, `lib/x` would land in the link's target.
#[test]
fn refuses_a_directory_entry_named_like_an_earlier_symlink() {
    let t = tempfile::tempdir().unwrap();
    let target = t.path().to_str().unwrap().as_bytes();
    let bytes = nar(N::D(vec![
        (b"lib", N::L(target)),
        (b"lib", N::D(vec![(b"x", N::F(b"pwned"))])),
    ]));
    assert_eq!(reason(&bytes), Invalid::Duplicate { name: "lib".into() });
    assert!(!t.path().join("x").exists());
}

#[test]
fn refuses_invalid_names() {
    for (name, problem) in [
        (&b".."[..], "is `.` or `..`"),
        (b".", "is `.` or `..`"),
        (b"a/b", "contains `/`"),
        (b"/etc", "contains `/`"),
        (b"a\0b", "contains NUL"),
        (b"", "is empty"),
        (b"\xff", "is not valid UTF-8"),
    ] {
        let bytes = nar(N::D(vec![(name, N::F(b"x"))]));
        match reason(&bytes) {
            Invalid::BadName { problem: p, .. } => assert_eq!(p, problem, "{name:?}"),
            other => panic!("{name:?}: {other}"),
        }
    }
    let long = vec![b'a'; 256];
    let bytes = nar(N::D(vec![(&long, N::F(b"x"))]));
    assert!(matches!(reason(&bytes), Invalid::BadName { .. }));
}

#[test]
fn refuses_invalid_symlink_targets() {
    for target in [&b""[..], b"a\0b", b"\xfe"] {
        let bytes = nar(N::D(vec![(b"l", N::L(target))]));
        assert!(matches!(reason(&bytes), Invalid::BadTarget { .. }));
    }
}

#[test]
fn refuses_a_stream_truncated_in_the_middle_of_a_file() {
    let bytes = nar(N::D(vec![
        (b"a", N::F(b"first")),
        (b"b", N::F(&[9u8; 1000])),
    ]));
    for cut in [bytes.len() - 1, bytes.len() - 500, MAGIC.len() + 3] {
        assert_eq!(reason(&bytes[..cut]), Invalid::Truncated, "cut at {cut}");
    }
}

#[test]
fn refuses_trailing_garbage() {
    let mut bytes = nar(ok_dir());
    bytes.push(0);
    assert_eq!(reason(&bytes), Invalid::TrailingData);
}

#[test]
fn refuses_more_than_the_size_limit_before_writing_it() {
    let bytes = nar(N::D(vec![(b"a", N::F(&[1u8; 100]))]));
    let limit = bytes.len() as u64 - 1;
    match refused(&bytes, NarLimits::new(limit)) {
        NarError::Invalid { reason, .. } => assert_eq!(reason, Invalid::TooLarge { limit }),
        other => panic!("{other}"),
    }
    // A declared size beyond the limit fails at once, not after reading (or writing) it.
    let mut huge = MAGIC.to_vec();
    huge.extend(b"d\x01\0\0\0\0\0\0\0\x01\0\0\0\0\0\0\0af");
    huge.extend(u64::MAX.to_le_bytes());
    assert!(matches!(reason(&huge), Invalid::TooLarge { .. }));
}

#[test]
fn refuses_a_depth_bomb() {
    let mut node = N::F(b"deep");
    for _ in 0..MAX_DEPTH + 1 {
        node = N::D(vec![(b"d", node)]);
    }
    let bytes = nar(node);
    assert_eq!(reason(&bytes), Invalid::TooDeep { limit: MAX_DEPTH });
}

#[test]
fn accepts_exactly_the_maximum_depth() {
    let mut node = N::F(b"deep");
    for _ in 0..MAX_DEPTH - 1 {
        node = N::D(vec![(b"d", node)]);
    }
    let bytes = nar(N::D(vec![(b"d", node)]));
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("dest");
    unpack_nar(&mut &bytes[..], &dest, &NarLimits::new(1 << 20)).unwrap();
    let mut p = dest.clone();
    for _ in 0..MAX_DEPTH - 1 {
        p.push("d");
    }
    assert_eq!(std::fs::read(p.join("d")).unwrap(), b"deep");
}

#[test]
fn refuses_an_existing_destination_and_leaves_it_alone() {
    let t = tempfile::tempdir().unwrap();
    let bytes = nar(ok_dir());
    std::fs::write(t.path().join("keep"), "mine").unwrap();
    let err = unpack_nar(&mut &bytes[..], t.path(), &NarLimits::new(1 << 20)).unwrap_err();
    assert!(matches!(err, NarError::DestExists { .. }));
    assert_eq!(std::fs::read(t.path().join("keep")).unwrap(), b"mine");
    let link = t.path().join("link");
    symlink(t.path().join("elsewhere"), &link).unwrap();
    let err = unpack_nar(&mut &bytes[..], &link, &NarLimits::new(1 << 20)).unwrap_err();
    assert!(matches!(err, NarError::DestExists { .. }));
    assert!(!t.path().join("elsewhere").exists());
}
