//! What a recipe cannot reach: sources are laid out without writing through symlinks, `path`
//! sources stay inside the recipe directory, names fit the store, and only regular files are
//! read as recipes. A "host" directory in the test's own temp dir stands for the host outside.

#![allow(clippy::disallowed_methods)] // tests may use std::fs; src uses fs-err (clippy.toml)

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

/// An empty directory outside the recipe directory, standing for the host.
fn host_dir(p: &Project) -> PathBuf {
    let host = p.path().join("host");
    std::fs::create_dir_all(&host).unwrap();
    host
}

/// Everything under `dir`, as relative paths (empty: nothing was written there).
fn contents(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = walk(dir)
        .into_iter()
        .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
        .collect();
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.symlink_metadata().unwrap().is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

/// `recipes/<dir>/` holding `lnk -> host`, for a first source to leave in `$src`.
fn link_source(p: &Project, dir: &str, name: &str, host: &Path) {
    std::fs::create_dir_all(p.path().join("recipes").join(dir)).unwrap();
    symlink(host, p.path().join("recipes").join(dir).join(name)).unwrap();
}

/// Asserts a refused layout: exit 2, the recipe and its file:line named, nothing on the host.
fn assert_refused(r: &Run, at: &str, host: &Path) {
    assert_eq!(r.code, 2, "stderr:\n{}", r.stderr);
    assert!(r.stderr.contains("recipe `a`"), "stderr:\n{}", r.stderr);
    assert!(
        r.stderr.contains(at),
        "expected {at} in stderr:\n{}",
        r.stderr
    );
    assert!(r.stderr.contains("symlink"), "stderr:\n{}", r.stderr);
    assert_eq!(contents(host), Vec::<String>::new(), "written on the host");
}

#[test]
fn dest_through_a_symlink_left_by_an_earlier_source_is_refused() {
    let p = Project::new();
    let host = host_dir(&p);
    link_source(&p, "links", "lnk", &host);
    p.file("recipes/payload/evil.txt", "planted\n");
    p.recipe(
        "a",
        r#"name = "a"
version = "1"
steps = ["mkdir -p $out"]
[[sources]]
path = "links"
[[sources]]
path = "payload"
dest = "lnk/deeper"
"#,
    );
    let r = p.run(&["realize", "--sandbox", "off", "a"]);
    assert_refused(&r, "a.toml:6", &host);
}

/// A .tar.gz with one top-level directory holding `evil.txt`.
fn tarball() -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let mut h = tar::Header::new_gnu();
    h.set_size(8);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "pkg-1.0/evil.txt", &b"planted\n"[..])
        .unwrap();
    b.into_inner().unwrap().finish().unwrap()
}

#[test]
fn archive_unpacked_at_a_symlink_dest_is_refused() {
    let p = Project::new();
    let host = host_dir(&p);
    link_source(&p, "links", "lnk", &host);
    let tgz = tarball();
    let archive = p.path().join("pkg-1.0.tar.gz");
    std::fs::write(&archive, &tgz).unwrap();
    p.recipe(
        "a",
        &format!(
            r#"name = "a"
version = "1"
steps = ["mkdir -p $out"]
[[sources]]
path = "links"
[[sources]]
url = "file://{}"
sha256 = "{}"
dest = "lnk"
"#,
            archive.display(),
            pybake::hash::SourceHash::of(&tgz).to_hex()
        ),
    );
    let r = p.run(&["realize", "--sandbox", "off", "a"]);
    assert_refused(&r, "a.toml:6", &host);
}

#[test]
fn plain_file_copied_into_a_symlink_dest_is_refused() {
    let p = Project::new();
    let host = host_dir(&p);
    link_source(&p, "links", "lnk", &host);
    p.file("recipes/evil.txt", "planted\n");
    p.recipe(
        "a",
        r#"name = "a"
version = "1"
steps = ["mkdir -p $out"]
[[sources]]
path = "links"
[[sources]]
path = "evil.txt"
dest = "lnk"
"#,
    );
    let r = p.run(&["realize", "--sandbox", "off", "a"]);
    assert_refused(&r, "a.toml:6", &host);
}

#[test]
fn directory_merged_through_a_symlinked_subdirectory_is_refused() {
    // Both sources go to `$src`; the second has a real `sub/` where the first left a link.
    let p = Project::new();
    let host = host_dir(&p);
    link_source(&p, "links", "sub", &host);
    p.file("recipes/payload/sub/evil.txt", "planted\n");
    p.recipe(
        "a",
        r#"name = "a"
version = "1"
steps = ["mkdir -p $out"]
[[sources]]
path = "links"
[[sources]]
path = "payload"
"#,
    );
    let r = p.run(&["realize", "--sandbox", "off", "a"]);
    assert_refused(&r, "a.toml:6", &host);
}

#[test]
fn file_copied_onto_a_symlink_is_refused() {
    // The first source leaves `evil.txt -> host/evil.txt` (dangling); copying a file of that
    // name must not follow it.
    let p = Project::new();
    let host = host_dir(&p);
    link_source(&p, "links", "evil.txt", &host.join("evil.txt"));
    p.file("recipes/files/evil.txt", "planted\n");
    p.recipe(
        "a",
        r#"name = "a"
version = "1"
steps = ["mkdir -p $out"]
[[sources]]
path = "links"
[[sources]]
path = "files/evil.txt"
"#,
    );
    let r = p.run(&["realize", "--sandbox", "off", "a"]);
    assert_eq!(r.code, 2, "stderr:\n{}", r.stderr);
    assert_eq!(contents(&host), Vec::<String>::new(), "written on the host");
}

#[test]
fn symlinks_in_a_path_source_are_copied_as_links() {
    let p = Project::new();
    let host = host_dir(&p);
    link_source(&p, "links", "lnk", &host);
    p.file("recipes/payload/ok.txt", "fine\n");
    p.recipe(
        "a",
        r#"name = "a"
version = "1"
steps = ["mkdir -p $out && readlink $src/lnk > $out/target && cat $src/deeper/ok.txt > $out/ok"]
[[sources]]
path = "links"
[[sources]]
path = "payload"
dest = "deeper"
"#,
    );
    let out = p.run(&["realize", "--sandbox", "off", "a"]).ok().line();
    let read = |f: &str| std::fs::read_to_string(Path::new(&out).join(f)).unwrap();
    assert_eq!(read("target").trim(), host.display().to_string());
    assert_eq!(read("ok"), "fine\n");
}

/// A recipe `a` with one `path` source, loaded with `plan`.
fn plan_with_path(p: &Project, path: &str) -> Run {
    p.recipe(
        "a",
        &format!("name = \"a\"\nversion = \"1\"\nsteps = [\"mkdir -p $out\"]\n[[sources]]\npath = {path:?}\n"),
    );
    p.run(&["plan", "a"])
}

fn assert_outside(r: &Run) {
    assert_eq!(r.code, 2, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("a.toml:4"), "stderr:\n{}", r.stderr);
    assert!(
        r.stderr.contains("outside the recipe directory"),
        "stderr:\n{}",
        r.stderr
    );
    assert!(r.stderr.contains("pybake import"), "stderr:\n{}", r.stderr);
    assert!(r.stderr.contains("file://"), "stderr:\n{}", r.stderr);
}

#[test]
fn path_source_with_dotdot_out_of_the_recipe_directory_is_refused() {
    let p = Project::new();
    p.file("outside/secret.txt", "secret\n");
    assert_outside(&plan_with_path(&p, "../outside"));
    assert_outside(&plan_with_path(&p, "../outside/secret.txt"));
}

#[test]
fn absolute_path_source_is_refused() {
    let p = Project::new();
    p.file("outside/secret.txt", "secret\n");
    let abs = p.path().join("outside/secret.txt");
    assert_outside(&plan_with_path(&p, abs.to_str().unwrap()));
    assert_outside(&plan_with_path(&p, "/proc/self/environ"));
}

#[test]
fn path_source_through_a_symlink_out_of_the_recipe_directory_is_refused() {
    let p = Project::new();
    p.file("outside/secret.txt", "secret\n");
    symlink(p.path().join("outside"), p.path().join("recipes/escape")).unwrap();
    // Both a path through a link to a directory outside and the link itself.
    assert_outside(&plan_with_path(&p, "escape/secret.txt"));
    assert_outside(&plan_with_path(&p, "escape"));
}

#[test]
fn path_source_through_a_symlink_inside_the_recipe_directory_is_allowed() {
    let p = hello_project();
    symlink("hello-src", p.path().join("recipes/alias")).unwrap();
    plan_with_path(&p, "alias").ok();
    plan_with_path(&p, "alias/hello.c").ok();
}

fn recipe_named(p: &Project, name: &str, version: &str) {
    p.recipe(
        "long",
        &format!("name = \"{name}\"\nversion = \"{version}\"\nsteps = [\"mkdir -p $out\"]\n"),
    );
}

#[test]
fn name_and_version_too_long_for_the_store_is_a_recipe_error() {
    let p = Project::new();
    let max = pybake::store::MAX_NAME_VERSION_LEN;
    let (name, version) = ("n".repeat(200), "1.".repeat(20) + "0");
    assert!(name.len() + version.len() > max);
    recipe_named(&p, &name, &version);
    let r = p.run(&["realize", "--sandbox", "off", &name]);
    assert_eq!(r.code, 2, "stderr:\n{}", r.stderr);
    assert!(r.stderr.contains("long.toml:1"), "stderr:\n{}", r.stderr);
    let total = name.len() + version.len();
    assert!(
        r.stderr.contains(&format!("{total} bytes")) && r.stderr.contains(&format!("{max} bytes")),
        "stderr:\n{}",
        r.stderr
    );
}

#[test]
fn longest_allowed_name_and_version_build_and_check() {
    let p = Project::new();
    let max = pybake::store::MAX_NAME_VERSION_LEN;
    let name = "n".repeat(max - 1);
    recipe_named(&p, &name, "1");
    p.run(&["realize", "--sandbox", "off", &name]).ok();
    p.run(&["realize", "--sandbox", "off", "--check", &name])
        .ok();
    // One byte more is refused.
    recipe_named(&p, &name, "12");
    assert_eq!(p.run(&["plan", &name]).code, 2);
}

/// Runs `pybake plan NAME`, killing it if it has not finished within a minute.
fn plan_with_deadline(p: &Project, name: &str) -> Run {
    let mut child = p
        .cmd(&["plan", name])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("pybake plan did not finish within a minute");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Run::from(child.wait_with_output().unwrap())
}

fn assert_not_a_file(r: &Run, file: &str) {
    assert_eq!(r.code, 2, "stderr:\n{}", r.stderr);
    assert!(
        r.stderr.contains(file) && r.stderr.contains("not a regular file"),
        "stderr:\n{}",
        r.stderr
    );
}

#[test]
fn fifo_named_toml_is_an_error_not_a_hang() {
    let p = hello_project();
    let fifo = p.path().join("recipes/evil.toml");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string; mkfifo(3) only creates the node.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    assert_not_a_file(&plan_with_deadline(&p, "hello"), "evil.toml");
}

#[test]
fn directory_socket_and_dangling_symlink_named_toml_are_errors() {
    let p = hello_project();
    std::fs::create_dir(p.path().join("recipes/dir.toml")).unwrap();
    assert_not_a_file(&plan_with_deadline(&p, "hello"), "dir.toml");
    std::fs::remove_dir(p.path().join("recipes/dir.toml")).unwrap();

    let _socket =
        std::os::unix::net::UnixListener::bind(p.path().join("recipes/sock.toml")).unwrap();
    assert_not_a_file(&plan_with_deadline(&p, "hello"), "sock.toml");
    std::fs::remove_file(p.path().join("recipes/sock.toml")).unwrap();

    // A symlink is judged by what it points to.
    symlink("hello-src", p.path().join("recipes/linkdir.toml")).unwrap();
    assert_not_a_file(&plan_with_deadline(&p, "hello"), "linkdir.toml");
}

#[test]
fn symlink_to_a_regular_recipe_file_is_read() {
    let p = hello_project();
    p.file(
        "recipes/more/other.txt",
        "name = \"other\"\nversion = \"1\"\nsteps = [\"mkdir -p $out\"]\n",
    );
    symlink("more/other.txt", p.path().join("recipes/other.toml")).unwrap();
    plan_with_deadline(&p, "other").ok();
}

#[test]
fn recipes_md_states_the_name_and_version_limit() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/recipes.md")).unwrap();
    let limit = format!("at most {} bytes", pybake::store::MAX_NAME_VERSION_LEN);
    assert!(doc.contains(&limit), "docs/recipes.md should say {limit:?}");
}
