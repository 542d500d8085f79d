//! Pinned URL sources, mirrors, offline use, import, and the lockfile, through the real binary.

#![allow(clippy::disallowed_methods)] // tests may use std::fs; src uses fs-err (clippy.toml)

mod common;
mod support;

use common::*;
use support::{Reply, Route, TestServer};

/// A .tar.gz with one top-level directory holding `hello.txt`.
fn tarball(text: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let mut h = tar::Header::new_gnu();
    h.set_size(text.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "pkg-1.0/hello.txt", text.as_bytes())
        .unwrap();
    b.into_inner().unwrap().finish().unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    pybake::hash::SourceHash::of(bytes).to_hex()
}

fn url_recipe(p: &Project, name: &str, url: &str, sha: &str, mirrors: &[String]) {
    let mirrors: Vec<String> = mirrors.iter().map(|m| format!("{m:?}")).collect();
    p.recipe(
        name,
        &format!(
            r#"name = "{name}"
version = "1"
steps = ["mkdir -p $out && cp $src/hello.txt $out/"]
[[sources]]
url = "{url}"
sha256 = "{sha}"
mirrors = [{}]
"#,
            mirrors.join(", ")
        ),
    );
}

#[test]
fn url_source_is_downloaded_once_and_shared() {
    let tgz = tarball("from the server\n");
    let server = TestServer::start([("/pkg-1.0.tar.gz", Route::body(tgz.clone()))]);
    let p = Project::new();
    let sha = sha256_hex(&tgz);
    url_recipe(&p, "a", &server.url("/pkg-1.0.tar.gz"), &sha, &[]);
    url_recipe(&p, "b", &server.url("/pkg-1.0.tar.gz"), &sha, &[]);
    let path = p.run(&["realize", "a"]).ok().line();
    assert_eq!(
        std::fs::read_to_string(format!("{path}/hello.txt")).unwrap(),
        "from the server\n"
    );
    p.run(&["realize", "b"]).ok();
    assert_eq!(
        server.hits("/pkg-1.0.tar.gz"),
        1,
        "one download for both recipes"
    );
    assert!(p.store().join(".pybake/sources").join(&sha).is_file());
}

#[test]
fn mismatch_moves_to_the_mirror_and_all_failures_are_listed() {
    let good = tarball("good\n");
    let server = TestServer::start([
        ("/bad.tar.gz", Route::body(tarball("evil\n"))),
        ("/good/pkg.tar.gz", Route::body(good.clone())),
        ("/missing.tar.gz", Route::status(404)),
    ]);
    let p = Project::new();
    let sha = sha256_hex(&good);
    url_recipe(
        &p,
        "a",
        &server.url("/bad.tar.gz"),
        &sha,
        &[server.url("/good/pkg.tar.gz")],
    );
    let path = p.run(&["realize", "a"]).ok().line();
    assert_eq!(
        std::fs::read_to_string(format!("{path}/hello.txt")).unwrap(),
        "good\n"
    );

    let p = Project::new();
    url_recipe(
        &p,
        "a",
        &server.url("/bad.tar.gz"),
        &sha,
        &[server.url("/missing.tar.gz")],
    );
    let r = p.run(&["realize", "a"]);
    assert_eq!(
        r.code, 2,
        "a pinned hash that does not match is the recipe's to fix"
    );
    assert!(
        r.stderr.contains(&server.url("/bad.tar.gz"))
            && r.stderr.contains(&server.url("/missing.tar.gz")),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains(&sha), "expected hash named: {}", r.stderr);
    assert!(r.stderr.contains("404"), "{}", r.stderr);
}

#[test]
fn mirror_scheme_user_mirrors_and_file_urls() {
    let tgz = tarball("mirrored\n");
    let sha = sha256_hex(&tgz);
    let server = TestServer::start([("/debian/pool/p/pkg-1.0.tar.gz", Route::body(tgz.clone()))]);
    let p = Project::new();
    url_recipe(
        &p,
        "a",
        "https://upstream.invalid/pkg-1.0.tar.gz",
        &sha,
        &["mirror://debian/pool/p/pkg-1.0.tar.gz".into()],
    );

    // No base for mirror://debian: the note says how to configure it.
    let r = p.run(&["realize", "a"]);
    assert_eq!(r.code, 2, "an unconfigured mirror is the user's to fix");
    assert!(r.stderr.contains("PYBAKE_MIRROR_DEBIAN"), "{}", r.stderr);

    let mut c = p.cmd(&["realize", "a"]);
    c.env("PYBAKE_MIRROR_DEBIAN", server.url("/debian"));
    let path = Run::from(c.output().unwrap()).ok().line();
    assert_eq!(
        std::fs::read_to_string(format!("{path}/hello.txt")).unwrap(),
        "mirrored\n"
    );

    // A user mirror directory (file://) serves the same hash to a fresh store, before upstream.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pkg-1.0.tar.gz"), &tgz).unwrap();
    let mut c = p.cmd(&["realize", "--store", "other-store", "a"]);
    c.env("PYBAKE_MIRRORS", format!("file://{}", dir.path().display()));
    Run::from(c.output().unwrap()).ok();
    assert_eq!(server.hits("/debian/pool/p/pkg-1.0.tar.gz"), 1);
}

#[test]
fn offline_import_and_fetch() {
    let tgz = tarball("imported\n");
    let sha = sha256_hex(&tgz);
    let server = TestServer::start([("/pkg-1.0.tar.gz", Route::body(tgz.clone()))]);
    let p = Project::new();
    url_recipe(&p, "a", &server.url("/pkg-1.0.tar.gz"), &sha, &[]);
    p.recipe(
        "b",
        "name = \"b\"\nversion = \"1\"\ndeps = [\"a\"]\nsteps = [\"mkdir $out\"]\n",
    );

    let r = p.run(&["realize", "--offline", "b"]);
    assert_eq!(r.code, 3, "offline without the source: the environment's");
    assert!(
        r.stderr.contains(&sha) && r.stderr.contains("pkg-1.0.tar.gz"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("pybake import"),
        "says how to provide it: {}",
        r.stderr
    );
    assert_eq!(server.total_hits(), 0, "offline touches no network");
    // The variable does the same, spelled as people spell it.
    for on in ["1", "yes", "true"] {
        let mut c = p.cmd(&["realize", "b"]);
        c.env("PYBAKE_OFFLINE", on);
        let r = Run::from(c.output().unwrap());
        assert_eq!(r.code, 3, "PYBAKE_OFFLINE={on}: {}", r.stderr);
    }
    assert_eq!(server.total_hits(), 0, "offline touches no network");

    let file = p.path().join("pkg-1.0.tar.gz");
    std::fs::write(&file, &tgz).unwrap();
    let out = p.run(&["import", file.to_str().unwrap()]).ok().stdout;
    assert!(out.contains(&format!("sha256:{sha}")), "{out}");
    p.run(&["realize", "--offline", "b"]).ok();
    assert_eq!(server.total_hits(), 0);

    // `fetch` downloads the closure's sources and builds nothing.
    let p2 = Project::new();
    url_recipe(&p2, "a", &server.url("/pkg-1.0.tar.gz"), &sha, &[]);
    p2.recipe(
        "b",
        "name = \"b\"\nversion = \"1\"\ndeps = [\"a\"]\nsteps = [\"mkdir $out\"]\n",
    );
    p2.run(&["fetch", "b"]).ok();
    assert_eq!(server.hits("/pkg-1.0.tar.gz"), 1);
    assert!(p2
        .run(&["plan", "b"])
        .ok()
        .stdout
        .lines()
        .all(|l| l.starts_with("build")));
    p2.run(&["realize", "--offline", "b"]).ok();
}

#[test]
fn unsafe_archive_is_refused_by_name() {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    h.set_mode(0o644);
    h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"../escape.txt");
    h.set_cksum();
    b.append(&h, &b"x\n"[..]).unwrap();
    let bytes = b.into_inner().unwrap();
    let p = Project::new();
    p.file("recipes/evil.tar", std::str::from_utf8(&bytes).unwrap());
    p.recipe("a", "name = \"a\"\nversion = \"1\"\nsteps = [\"mkdir $out\"]\n[[sources]]\npath = \"evil.tar\"\n");
    let r = p.run(&["realize", "a"]);
    assert_eq!(r.code, 2, "an unsafe archive is the recipe's to fix");
    assert!(
        r.stderr.contains("evil.tar") && r.stderr.contains("../escape.txt"),
        "{}",
        r.stderr
    );
    assert!(!p
        .store()
        .join(".pybake/tmp")
        .read_dir()
        .unwrap()
        .any(|_| true));
}

fn locked_project(server: &TestServer, tgz: &[u8]) -> Project {
    let p = Project::new();
    url_recipe(
        &p,
        "a",
        &server.url("/pkg-1.0.tar.gz"),
        &sha256_hex(tgz),
        &[],
    );
    p.recipe(
        "emsdk",
        "name = \"emsdk\"\nversion = \"3.1.69\"\nsteps = [\"mkdir $out\"]\n[provides]\nemscripten = \"3.1.69\"\n",
    );
    p.recipe(
        "app",
        r#"name = "app"
version = "1"
deps = ["a", "emsdk"]
steps = ["mkdir $out"]
[requires]
emscripten = { version = ">=3.1.8", reason = "emscripten before 3.1.8 has memory-corruption and resource-leak bugs" }
"#,
    );
    p
}

#[test]
fn lock_locked_and_update() {
    let tgz = tarball("locked\n");
    let server = TestServer::start([("/pkg-1.0.tar.gz", Route::body(tgz.clone()))]);
    let p = locked_project(&server, &tgz);
    p.run(&["lock"]).ok();
    let text = std::fs::read_to_string(p.path().join("lockfile.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["format"], 1);
    assert_eq!(v["recipes"]["a"]["sources"][0]["size"], tgz.len() as u64);
    assert_eq!(
        v["recipes"]["a"]["sources"][0]["sha256"],
        format!("sha256:{}", sha256_hex(&tgz))
    );
    assert_eq!(v["toolchains"]["emscripten"][0]["version"], "3.1.69");
    assert_eq!(
        v["toolchains"]["emscripten"][0]["constraints"][0]["version"],
        ">=3.1.8"
    );
    p.run(&["lock"]).ok();
    assert_eq!(
        std::fs::read_to_string(p.path().join("lockfile.json")).unwrap(),
        text,
        "stable"
    );

    p.run(&["realize", "--locked", "app"]).ok();

    // Drift: both edits are named, and nothing is built.
    p.recipe("emsdk", "name = \"emsdk\"\nversion = \"3.1.70\"\nsteps = [\"mkdir $out\"]\n[provides]\nemscripten = \"3.1.70\"\n");
    p.recipe(
        "other",
        "name = \"other\"\nversion = \"1\"\nsteps = [\"mkdir $out\"]\n",
    );
    let r = p.run(&["realize", "--locked", "--json", "app", "other"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("recipe `emsdk`: version 3.1.69 in the lockfile, 3.1.70"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("recipe `other` is not in the lockfile"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.is_empty());

    // --update changes only that entry.
    p.run(&["lock", "--update", "emsdk"]).ok();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.path().join("lockfile.json")).unwrap())
            .unwrap();
    assert_eq!(v["recipes"]["emsdk"]["version"], "3.1.70");
    assert!(
        v["recipes"].get("other").is_none(),
        "other entries untouched"
    );
    assert_eq!(v["toolchains"]["emscripten"][0]["version"], "3.1.70");
    let r = p.run(&["realize", "--locked", "app"]);
    assert_eq!(
        r.code, 2,
        "app's hash moved with its dependency: {}",
        r.stderr
    );
    assert!(
        r.stderr.contains("recipe `app`: derivation hash"),
        "{}",
        r.stderr
    );
}

#[test]
fn constraint_violation_is_refused_with_its_reason() {
    let tgz = tarball("x\n");
    let server = TestServer::start([("/pkg-1.0.tar.gz", Route::body(tgz.clone()))]);
    let p = locked_project(&server, &tgz);
    p.recipe("emsdk", "name = \"emsdk\"\nversion = \"3.1.6\"\nsteps = [\"mkdir $out\"]\n[provides]\nemscripten = \"3.1.6\"\n");
    for args in [&["lock"][..], &["realize", "app"][..]] {
        let r = p.run(args);
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert!(
            r.stderr.contains("requires emscripten >=3.1.8"),
            "{}",
            r.stderr
        );
        assert!(
            r.stderr.contains("provides emscripten 3.1.6"),
            "{}",
            r.stderr
        );
        assert!(r.stderr.contains("memory-corruption"), "{}", r.stderr);
        assert!(r.stderr.contains("recipes/app.toml:6"), "{}", r.stderr);
    }
    assert!(!p.path().join("lockfile.json").exists());
}

#[test]
fn unknown_lockfile_format_is_refused() {
    let p = hello_project();
    p.file("lockfile.json", "{\"format\": 7, \"recipes\": {}}\n");
    let r = p.run(&["realize", "--locked", "hello"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("format 7"), "{}", r.stderr);
}

#[test]
fn lock_records_an_unreachable_source_without_size_and_says_so() {
    let tgz = tarball("x\n");
    let p = Project::new();
    url_recipe(
        &p,
        "gone",
        &support::refused_url("/gone.tar.gz"),
        &sha256_hex(&tgz),
        &[],
    );
    let r = p.run(&["lock"]).ok();
    assert!(
        r.stderr.contains("warning") && r.stderr.contains("gone.tar.gz"),
        "{}",
        r.stderr
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.path().join("lockfile.json")).unwrap())
            .unwrap();
    let src = &v["recipes"]["gone"]["sources"][0];
    assert_eq!(src["sha256"], format!("sha256:{}", sha256_hex(&tgz)));
    assert!(src.get("size").is_none(), "{src}");
}

/// Sets the recorded size of recipe `name`'s first source in the project's lockfile.
fn set_locked_size(p: &Project, name: &str, size: u64) {
    let path = p.path().join("lockfile.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["recipes"][name]["sources"][0]["size"] = size.into();
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn entries(dir: &std::path::Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn a_body_larger_than_the_lockfile_size_is_cut_off() {
    let tgz = tarball("small\n");
    const FLOOD: u64 = 128 << 20;
    // `pybake lock` gets the real file; every later request a flood that starts with it.
    let server = TestServer::start([(
        "/pkg-1.0.tar.gz",
        Route(vec![
            Reply::Body(tgz.clone()),
            Reply::Flood {
                prefix: tgz.clone(),
                total: FLOOD,
                announce: false,
            },
        ]),
    )]);
    let p = Project::new();
    url_recipe(
        &p,
        "a",
        &server.url("/pkg-1.0.tar.gz"),
        &sha256_hex(&tgz),
        &[],
    );
    p.run(&["lock"]).ok();

    let r = p.run(&["realize", "--store", "fresh", "a"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let expected = format!(
        "{}: sent more than the {} bytes the lockfile records for this source",
        server.url("/pkg-1.0.tar.gz"),
        tgz.len()
    );
    assert!(
        r.stderr.contains(&expected),
        "{expected:?} not in:\n{}",
        r.stderr
    );
    assert_eq!(server.hits("/pkg-1.0.tar.gz"), 2, "not retried");
    let sent = server.bytes_sent("/pkg-1.0.tar.gz");
    assert!(sent < FLOOD / 4, "the flood was read: {sent} bytes sent");
    let fresh = p.path().join("fresh/.pybake");
    assert_eq!(entries(&fresh.join("tmp")), Vec::<String>::new());
    assert_eq!(entries(&fresh.join("sources")), Vec::<String>::new());
}

#[test]
fn a_wrong_lockfile_size_is_reported_and_lock_update_fixes_it() {
    let tgz = tarball("sized\n");
    let len = tgz.len() as u64;
    let server = TestServer::start([("/pkg-1.0.tar.gz", Route::body(tgz.clone()))]);
    let p = Project::new();
    url_recipe(
        &p,
        "a",
        &server.url("/pkg-1.0.tar.gz"),
        &sha256_hex(&tgz),
        &[],
    );
    p.run(&["lock"]).ok();

    // Recorded too large: the download is verified by its sha256, so it is used, with a warning.
    set_locked_size(&p, "a", len + 100);
    let r = p.run(&["realize", "--store", "s1", "a"]).ok();
    for needle in [
        format!("lockfile records {} bytes", len + 100),
        format!("has {len} bytes"),
        "pybake lock --update a".to_string(),
    ] {
        assert!(
            r.stderr.contains(&needle),
            "{needle:?} not in:\n{}",
            r.stderr
        );
    }

    // Recorded too small: the right file is refused by its Content-Length, and the message says
    // how to repair the lockfile.
    set_locked_size(&p, "a", len - 1);
    let r = p.run(&["realize", "--store", "s2", "a"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    for needle in [
        format!(
            "{}: is {len} bytes, more than the {} bytes the lockfile records for this source",
            server.url("/pkg-1.0.tar.gz"),
            len - 1
        ),
        "pybake lock --update a".to_string(),
    ] {
        assert!(
            r.stderr.contains(&needle),
            "{needle:?} not in:\n{}",
            r.stderr
        );
    }

    p.run(&["lock", "--update", "a"]).ok();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.path().join("lockfile.json")).unwrap())
            .unwrap();
    assert_eq!(v["recipes"]["a"]["sources"][0]["size"], len);
    let r = p.run(&["realize", "--store", "s2", "a"]).ok();
    assert!(!r.stderr.contains("warning"), "{}", r.stderr);
}

#[test]
fn low_speed_limit_comes_from_the_environment() {
    let tgz = tarball("slow\n");
    let trickle = Reply::Drip {
        body: tgz.clone(),
        chunk: 1,
        every: std::time::Duration::from_millis(50),
    };
    let server = TestServer::start([(
        "/pkg-1.0.tar.gz",
        Route::fail_first(1, trickle, Reply::Body(tgz.clone())),
    )]);
    let p = Project::new();
    url_recipe(
        &p,
        "a",
        &server.url("/pkg-1.0.tar.gz"),
        &sha256_hex(&tgz),
        &[],
    );
    let mut c = p.cmd(&["realize", "a"]);
    c.env("PYBAKE_LOW_SPEED_LIMIT", "1000")
        .env("PYBAKE_LOW_SPEED_TIME", "1");
    let r = Run::from(c.output().unwrap()).ok();
    let expected = format!(
        "{}: timed out: less than 1000 bytes/s over 1 s; retrying",
        server.url("/pkg-1.0.tar.gz")
    );
    assert!(
        r.stderr.contains(&expected),
        "{expected:?} not in:\n{}",
        r.stderr
    );
    assert_eq!(server.hits("/pkg-1.0.tar.gz"), 2);
    assert!(server.bytes_sent("/pkg-1.0.tar.gz") < 2 * tgz.len() as u64);

    let mut c = p.cmd(&["realize", "a"]);
    c.env("PYBAKE_LOW_SPEED_TIME", "30s");
    let r = Run::from(c.output().unwrap());
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("PYBAKE_LOW_SPEED_TIME") && r.stderr.contains("30s"),
        "{}",
        r.stderr
    );
}
