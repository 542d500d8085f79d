use super::*;
use crate::hash::{DrvHash, FileHash, NarHash, OutputHash};

fn name(n: &str, v: &str) -> StoreName {
    StoreName::new(&DrvHash::of(n.as_bytes()), n, v)
}

/// The seed of RFC 8032's first test vector (see keys.rs), as the example's cache key.
fn example_key() -> SecretKey {
    let seed = hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
        .unwrap()
        .try_into()
        .unwrap();
    SecretKey::from_seed("cache.example.org-1", seed).unwrap()
}

/// The narinfo of docs/binary-cache.md's example: the example tree's real archive hash, size and
/// tree hash; illustrative derivation and file hashes.
fn example() -> NarInfo {
    let mut info = NarInfo {
        store_name: name("hello", "1.0"),
        drv_hash: DrvHash::of(b"hello"),
        output_hash: "sha256:0929ca0acc29276f0d75047ad1ec087d071c4ad7ccf12593e7b44a1bbd1872e7"
            .parse()
            .unwrap(),
        compression: Compression::Zstd,
        file_hash: FileHash::of(b"the compressed archive"),
        file_size: 150,
        nar_hash: "sha256:69de3c2f29d96d917f12da6a792487f36413bd6a849d9e812944c6fa52905c22"
            .parse()
            .unwrap(),
        nar_size: 187,
        references: vec![name("zlib", "1.3"), name("libc", "2.36")],
        root: Some(name("debian-base", "12")),
        host_build: None,
        sigs: vec![],
    };
    info.sign(&example_key());
    info
}

const DOC: &str = include_str!("../../../docs/binary-cache.md");

fn doc_example() -> &'static str {
    DOC.split("<!-- narinfo-example:start -->")
        .nth(1)
        .and_then(|s| s.split("<!-- narinfo-example:end -->").next())
        .and_then(|s| s.split("```text\n").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("docs/binary-cache.md has the narinfo example")
}

#[test]
fn known_answer_rendering_is_the_documented_one() {
    let info = example();
    assert_eq!(info.render(), doc_example());
    assert_eq!(
        info.fingerprint(),
        format!(
            "pybake-1;{};{};187;{},{}",
            info.store_name,
            info.nar_hash,
            // Sorted by the whole store name, hash part first.
            name("zlib", "1.3"),
            name("libc", "2.36")
        )
    );
}

#[test]
fn round_trip() {
    let mut info = example();
    info.references.sort();
    let part = hash_part(&info.store_name).to_string();
    assert_eq!(
        NarInfo::parse(info.render().as_bytes(), &part).unwrap(),
        info
    );

    let mut bare = info.clone();
    bare.references.clear();
    bare.root = None;
    bare.host_build = Some("debian 12".into());
    bare.sigs.clear();
    let text = bare.render();
    assert!(
        text.contains("\nReferences:\nHostBuild: debian 12\n"),
        "{text}"
    );
    assert_eq!(NarInfo::parse(text.as_bytes(), &part).unwrap(), bare);
    assert_eq!(narinfo_key(&info.store_name), format!("{part}.narinfo"));
}

#[test]
fn new_takes_what_the_metadata_says() {
    let mut meta = Meta::new(
        &name("hello", "1.0"),
        DrvHash::of(b"hello"),
        OutputHash::of(b"out"),
    );
    meta.references = vec![name("zlib", "1.3")];
    meta.host_build = true;
    meta.host = "debian 12".into();
    let info = NarInfo::new(&meta, (FileHash::of(b"f"), 10), (NarHash::of(b"n"), 20));
    assert_eq!(
        (&info.store_name, info.drv_hash, info.output_hash),
        (&meta.store_name, meta.drv_hash, meta.output_hash)
    );
    assert_eq!((info.file_size, info.nar_size), (10, 20));
    assert_eq!(info.references, meta.references);
    assert_eq!(info.root, None);
    assert_eq!(info.host_build.as_deref(), Some("debian 12"));
    assert!(info.sigs.is_empty());
    let part = hash_part(&info.store_name).to_string();
    assert_eq!(
        NarInfo::parse(info.render().as_bytes(), &part).unwrap(),
        info
    );
}

#[test]
fn signature_verifies_with_rotated_keys_and_fails_when_altered() {
    let old = SecretKey::from_seed("cache-1", [1; 32]).unwrap();
    let new = SecretKey::from_seed("cache-2", [2; 32]).unwrap();
    let trusted = TrustedKeys::new(vec![old.public(), new.public()]);
    let mut info = example();
    info.sigs.clear();
    assert_eq!(info.verify(&trusted), Err(SigError::NoSignature));
    info.sign(&new);
    assert_eq!(info.verify(&trusted), Ok("cache-2"));
    // The documented example is signed by a key this client does not trust.
    assert_eq!(
        example().verify(&trusted),
        Err(SigError::Untrusted {
            keys: vec!["cache.example.org-1".into()]
        })
    );
    // Re-parsed from text, the signature still verifies.
    let part = hash_part(&info.store_name).to_string();
    let parsed = NarInfo::parse(info.render().as_bytes(), &part).unwrap();
    assert_eq!(parsed.verify(&trusted), Ok("cache-2"));

    let text = info.render();
    let altered = text.replace(
        &info.nar_hash.to_string(),
        &NarHash::of(b"other bytes").to_string(),
    );
    let altered = NarInfo::parse(altered.as_bytes(), &part).unwrap();
    assert_eq!(
        altered.verify(&trusted),
        Err(SigError::Bad {
            key: "cache-2".into()
        })
    );
    let mut fewer_refs = info.clone();
    fewer_refs.references.pop();
    assert!(fewer_refs.verify(&trusted).is_err());
    let mut bigger = info.clone();
    bigger.nar_size += 1;
    assert!(bigger.verify(&trusted).is_err());
}

#[test]
fn signing_again_with_a_key_replaces_its_signature() {
    let mut info = example();
    info.sign(&example_key());
    assert_eq!(info.sigs.len(), 1);
    info.sign(&SecretKey::from_seed("b", [5; 32]).unwrap());
    assert_eq!(info.sigs.len(), 2);
}

/// The example's text with `edit` applied, parsed.
fn parse_edited(edit: impl Fn(&str) -> String) -> Result<NarInfo, NarInfoError> {
    let info = example();
    let text = edit(&info.render());
    NarInfo::parse(text.as_bytes(), hash_part(&info.store_name))
}

fn replace_line(key: &str, line: &str) -> impl Fn(&str) -> String {
    let (key, line) = (format!("{key}:"), line.to_string());
    move |text: &str| {
        text.lines()
            .map(|l| {
                if l.starts_with(&key) {
                    line.clone()
                } else {
                    l.to_string()
                }
            })
            .map(|l| l + "\n")
            .collect()
    }
}

fn line_problem(r: Result<NarInfo, NarInfoError>) -> LineProblem {
    match r {
        Err(NarInfoError::Line { problem, .. }) => problem,
        other => panic!("expected a line error, got {other:?}"),
    }
}

#[test]
fn refuses_oversized_non_utf8_and_unterminated_text() {
    let pad = format!("X-Pad: {}\n", "a".repeat(MAX_NARINFO_SIZE));
    assert!(matches!(
        parse_edited(|t| format!("{t}{pad}")),
        Err(NarInfoError::TooLarge { .. })
    ));
    let info = example();
    let mut bytes = info.render().into_bytes();
    bytes.extend(b"X-Bin: \xff\n");
    assert!(matches!(
        NarInfo::parse(&bytes, hash_part(&info.store_name)),
        Err(NarInfoError::NotUtf8 { line: 13 })
    ));
    assert!(matches!(
        parse_edited(|t| t.trim_end().to_string()),
        Err(NarInfoError::NoFinalNewline)
    ));
}

#[test]
fn refuses_malformed_lines() {
    for line in [
        "FileSize 150",
        "FileSize:150",
        "FileSize:  150",
        "FileSize: 150 ",
        "FileSize: 150\r",
        "FileSize: 1\t50",
    ] {
        let r = parse_edited(replace_line("FileSize", line));
        assert!(
            matches!(line_problem(r), LineProblem::Syntax | LineProblem::Control),
            "{line:?}"
        );
    }
    let r = parse_edited(|t| format!("{t}\n"));
    assert!(matches!(line_problem(r), LineProblem::Syntax));
}

#[test]
fn refuses_unknown_and_repeated_keys_but_ignores_x_keys() {
    assert!(matches!(
        line_problem(parse_edited(|t| format!("{t}Deriver: x\n"))),
        LineProblem::UnknownKey(k) if k == "Deriver"
    ));
    assert!(matches!(
        line_problem(parse_edited(|t| format!("{t}NarSize: 187\n"))),
        LineProblem::Duplicate("NarSize")
    ));
    assert!(matches!(
        line_problem(parse_edited(|t| format!("{t}Root: {}\n", name("r", "1")))),
        LineProblem::Duplicate("Root")
    ));
    assert_eq!(
        parse_edited(|t| format!("{t}X-Built-By: ci 42\n")).unwrap(),
        example()
    );
    let second = SecretKey::from_seed("b", [5; 32]).unwrap();
    let mut two = example();
    two.sign(&second);
    assert_eq!(
        parse_edited(|t| format!("{t}Sig: {}\n", two.sigs[1])).unwrap(),
        two
    );
}

#[test]
fn refuses_bad_digests_sizes_and_compression() {
    let hex = NarHash::of(b"x").to_hex();
    for (key, line) in [
        ("DrvHash", "DrvHash: sha256:abc".to_string()),
        ("NarHash", format!("NarHash: {hex}")),
        ("FileHash", format!("FileHash: md5:{hex}")),
        (
            "OutputHash",
            format!("OutputHash: sha256:{}", hex.to_uppercase()),
        ),
    ] {
        assert!(
            matches!(
                line_problem(parse_edited(replace_line(key, &line))),
                LineProblem::Digest { .. }
            ),
            "{line}"
        );
    }
    for value in ["012", "+1", "-1", "1e3", "", "18446744073709551616", "1 2"] {
        assert!(
            matches!(
                line_problem(parse_edited(replace_line(
                    "NarSize",
                    &format!("NarSize: {value}")
                ))),
                LineProblem::Size { .. } | LineProblem::Control
            ),
            "{value:?}"
        );
    }
    assert!(matches!(
        line_problem(parse_edited(replace_line("Compression", "Compression: xz"))),
        LineProblem::Compression(c) if c == "xz"
    ));
}

#[test]
fn refuses_invalid_store_names() {
    let good = name("hello", "1.0").to_string();
    let hash = &good[..32];
    for bad in [
        "../../etc/passwd".to_string(),
        format!("{hash}-a/b"),
        format!("{hash}-"),
        format!("{}-x", &hash[..31]),
        format!("{}-x", hash.to_uppercase()),
        format!("{hash}-a\\b"),
        format!("{hash}-{}", "n".repeat(crate::store::MAX_STORE_NAME_LEN)),
    ] {
        for key in ["References", "Root"] {
            let r = parse_edited(replace_line(key, &format!("{key}: {bad}")));
            assert!(
                matches!(line_problem(r), LineProblem::StoreName { .. }),
                "{key}: {bad}"
            );
        }
    }
    let r = parse_edited(replace_line("StoreName", "StoreName: ../x"));
    assert!(matches!(line_problem(r), LineProblem::StoreName { .. }));
}

#[test]
fn refuses_unsorted_or_repeated_references() {
    let (a, b) = (name("zlib", "1.3"), name("libc", "2.36"));
    assert!(a < b);
    for refs in [format!("{b} {a}"), format!("{a} {a}"), format!("{a}  {b}")] {
        let r = parse_edited(replace_line("References", &format!("References: {refs}")));
        assert!(
            matches!(
                line_problem(r),
                LineProblem::ReferenceOrder { .. } | LineProblem::StoreName { .. }
            ),
            "{refs}"
        );
    }
}

#[test]
fn refuses_bad_signatures_and_empty_host() {
    let r = parse_edited(|t| format!("{t}Sig: k:AAAA\n"));
    assert!(matches!(line_problem(r), LineProblem::Sig(_)));
    let r = parse_edited(|t| format!("{t}Sig: no-colon\n"));
    assert!(matches!(line_problem(r), LineProblem::Sig(_)));
    let r = parse_edited(|t| format!("{t}HostBuild:\n"));
    assert!(matches!(line_problem(r), LineProblem::EmptyHost));
}

#[test]
fn refuses_missing_keys() {
    for key in [
        "StoreName",
        "DrvHash",
        "OutputHash",
        "URL",
        "Compression",
        "FileHash",
        "FileSize",
        "NarHash",
        "NarSize",
        "References",
    ] {
        let r = parse_edited(|t| {
            t.lines()
                .filter(|l| !l.starts_with(&format!("{key}:")))
                .map(|l| format!("{l}\n"))
                .collect()
        });
        assert!(
            matches!(r, Err(NarInfoError::Missing { key: k }) if k == key),
            "{key}: {r:?}"
        );
    }
}

#[test]
fn refuses_any_url_but_the_file_hash_s() {
    let info = example();
    let hex = info.file_hash.to_hex();
    for url in [
        format!("nar/{}.nar.zst", NarHash::of(b"other").to_hex()),
        format!("nar/{hex}.nar.xz"),
        format!("nar/../{hex}.nar.zst"),
        format!("/nar/{hex}.nar.zst"),
        format!("https://evil.example/nar/{hex}.nar.zst"),
        format!("nar/{}.nar.zst", hex.to_uppercase()),
    ] {
        let r = parse_edited(replace_line("URL", &format!("URL: {url}")));
        assert!(matches!(r, Err(NarInfoError::Url { .. })), "{url}");
    }
}

#[test]
fn refuses_an_entry_for_another_output() {
    let info = example();
    let other = name("other", "1");
    let r = NarInfo::parse(info.render().as_bytes(), hash_part(&other));
    assert!(matches!(r, Err(NarInfoError::WrongName { .. })));
    // StoreName whose hash part is not DrvHash's.
    let r = parse_edited(replace_line(
        "DrvHash",
        &format!("DrvHash: {}", DrvHash::of(b"not hello")),
    ));
    assert!(matches!(r, Err(NarInfoError::DrvHashMismatch { .. })));
}
