//! Garbage collection and queries through the real binary: roots recorded by `realize`, `gc`
//! (with `--dry-run`, `--runtime-only`, `--no-wait`), `gc-root`, and `why-depends`.

#![allow(clippy::disallowed_methods)] // tests may use std::fs; src uses fs-err (clippy.toml)

mod common;
use common::*;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn exists(p: &str) -> bool {
    Path::new(p).exists()
}

/// The store name of a store path as `realize` prints it.
fn name_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap()
}

fn meta_file(p: &Project, path: &str) -> PathBuf {
    p.store()
        .join(".pybake/meta")
        .join(format!("{}.json", name_of(path)))
}

fn log_file(p: &Project, path: &str) -> PathBuf {
    p.store()
        .join(".pybake/logs")
        .join(format!("{}.log", name_of(path)))
}

fn realize(p: &Project, extra: &[&str], name: &str) -> String {
    let mut args = vec!["realize", "--sandbox", "off"];
    args.extend(extra);
    args.push(name);
    p.run(&args).ok().line()
}

/// `tool` (a build-time dependency nothing mentions), `lib` (mentioned by app's output) and
/// `app` at `version`, whose output is 100 kB plus a file naming lib's path.
fn app_project(p: &Project, version: &str) {
    p.recipe(
        "tool",
        "name = \"tool\"\nversion = \"1\"\nsteps = [\"mkdir -p $out/bin && printf '#!/bin/sh\\necho tool\\n' > $out/bin/tool && chmod +x $out/bin/tool\"]\n",
    );
    p.recipe(
        "lib",
        "name = \"lib\"\nversion = \"1\"\nsteps = [\"mkdir -p $out && echo lib > $out/lib.txt\"]\n",
    );
    set_app_version(p, version);
}

fn set_app_version(p: &Project, version: &str) {
    p.recipe(
        "app",
        &format!(
            r#"name = "app"
version = "{version}"
deps = ["tool", "lib"]
steps = [
  "mkdir -p $out && tool > $out/tool-said && echo $DEP_LIB > $out/uses-lib",
  "head -c 100000 /dev/zero > $out/data",
]
"#
        ),
    );
}

/// The paths of app, lib and tool as realized now.
fn paths(p: &Project) -> (String, String, String) {
    let line = |name: &str| p.run(&["path", name]).ok().line();
    (line("app"), line("lib"), line("tool"))
}

#[test]
fn gc_removes_the_old_version_and_keeps_the_current_closure() {
    let p = Project::new();
    app_project(&p, "1");
    let old = realize(&p, &[], "app");
    set_app_version(&p, "2");
    let new = realize(&p, &[], "app");
    assert_ne!(old, new);
    let (_, lib, tool) = paths(&p);

    let r = p.run(&["gc"]).ok();
    assert!(!exists(&old), "the old version goes\n{}", r.stdout);
    assert!(!meta_file(&p, &old).exists(), "with its metadata");
    assert!(!log_file(&p, &old).exists(), "and its log");
    assert!(r.stdout.contains(&old), "{}", r.stdout);
    let last = r.stdout.lines().last().unwrap();
    assert!(last.starts_with("freed "), "{last}");
    for kept in [&new, &lib, &tool] {
        assert!(
            exists(kept),
            "{kept} is in the root's closure\n{}",
            r.stdout
        );
        assert!(meta_file(&p, kept).exists());
        assert!(!r.stdout.contains(kept.as_str()), "{}", r.stdout);
    }
    assert!(log_file(&p, &new).exists(), "the root's log stays");

    // The build-time dependency stays by default, and goes with --runtime-only.
    let r = p.run(&["gc", "--runtime-only"]).ok();
    assert!(!exists(&tool), "tool is a build-time dependency only");
    assert!(r.stdout.contains(&tool), "{}", r.stdout);
    assert!(exists(&new) && exists(&lib), "the runtime closure stays");
    // Nothing was rebuilt: app is still valid.
    assert_eq!(
        p.realize_statuses(&["--sandbox", "off", "app"]),
        pairs(&[("app", "cached")])
    );
}

#[test]
fn dry_run_lists_what_would_go_with_sizes_and_removes_nothing() {
    let p = Project::new();
    app_project(&p, "1");
    let old = realize(&p, &[], "app");
    set_app_version(&p, "2");
    realize(&p, &[], "app");
    let junk = p.store().join("0123456789abcdef0123456789abcdef-junk-1");
    std::fs::create_dir(&junk).unwrap();

    let r = p.run(&["gc", "--dry-run"]).ok();
    let line = r
        .stdout
        .lines()
        .find(|l| l.ends_with(&old))
        .unwrap_or_else(|| panic!("{old} listed:\n{}", r.stdout));
    // 100 kB of data, plus a few bytes of other files, metadata and log.
    assert!(line.trim_start().starts_with("9"), "{line}");
    assert!(line.contains(" KiB "), "{line}");
    assert!(
        r.stdout
            .lines()
            .any(|l| l.contains(&format!("{}  (incomplete", junk.display()))),
        "an output without metadata is listed too:\n{}",
        r.stdout
    );
    let last = r.stdout.lines().last().unwrap();
    assert!(
        last.starts_with("would free ") && last.contains("KiB") && last.contains("2 outputs"),
        "{last}"
    );
    assert!(exists(&old) && meta_file(&p, &old).exists() && log_file(&p, &old).exists());
    assert!(junk.exists());

    p.run(&["gc"]).ok();
    assert!(!exists(&old) && !junk.exists());
    let r = p.run(&["gc", "--dry-run"]).ok();
    assert_eq!(r.stdout.trim(), "would free 0 B: 0 outputs, 0 sources");
}

#[test]
fn realize_no_root_leaves_nothing_rooted() {
    let p = Project::new();
    p.recipe(
        "x",
        "name = \"x\"\nversion = \"1\"\nsteps = [\"mkdir $out\"]\n",
    );
    let x = realize(&p, &["--no-root"], "x");
    assert_eq!(p.run(&["gc-root", "list"]).ok().stdout, "");
    let r = p.run(&["gc"]).ok();
    assert!(!exists(&x), "{}", r.stdout);
    assert!(r.stderr.contains("no GC roots"), "{}", r.stderr);

    let x = realize(&p, &[], "x");
    let listed = p.run(&["gc-root", "list"]).ok().stdout;
    assert!(
        listed.starts_with("x ") && listed.contains(&x),
        "a plain realize roots x: {listed}"
    );
    p.run(&["gc"]).ok();
    assert!(exists(&x));

    p.run(&["gc-root", "remove", "x"]).ok();
    assert_eq!(p.run(&["gc-root", "list"]).ok().stdout, "");
    p.run(&["gc"]).ok();
    assert!(!exists(&x));
    let r = p.run(&["gc-root", "add", "x"]);
    assert_eq!(r.code, 1, "x is not in the store: {}", r.stderr);
    assert!(r.stderr.contains("pybake realize x"), "{}", r.stderr);
}

#[test]
fn projects_sharing_a_store_keep_separate_roots() {
    let (one, two) = (Project::new(), Project::new());
    let store = one.store();
    let store_arg = store.to_str().unwrap();
    let x = |p: &Project, version: &str| {
        p.recipe(
            "x",
            &format!("name = \"x\"\nversion = \"{version}\"\nsteps = [\"mkdir $out\"]\n"),
        );
        realize(p, &["--store", store_arg], "x")
    };
    let one_v1 = x(&one, "1");
    let two_v2 = x(&two, "2");
    one.run(&["gc"]).ok();
    assert!(
        exists(&one_v1) && exists(&two_v2),
        "each project's root holds"
    );

    let one_v3 = x(&one, "3");
    two.run(&["--store", store_arg, "gc"]).ok();
    assert!(!exists(&one_v1), "replaced by one's newer root");
    assert!(exists(&two_v2) && exists(&one_v3));
    let listed = one.run(&["gc-root", "list"]).ok().stdout;
    assert_eq!(listed.lines().count(), 2, "{listed}");

    // A deleted checkout's roots go with it.
    std::fs::remove_dir_all(two.path().join("recipes")).unwrap();
    let r = one.run(&["gc"]).ok();
    assert!(r.stderr.contains("is gone"), "{}", r.stderr);
    assert!(!exists(&two_v2) && exists(&one_v3));
    assert_eq!(one.run(&["gc-root", "list"]).ok().stdout.lines().count(), 1);
}

/// A step that signals `started` and waits until `release` exists.
fn wait_step(started: &Path, release: &Path) -> String {
    format!(
        "touch {}; while [ ! -e {} ]; do sleep 0.05; done",
        started.display(),
        release.display()
    )
}

fn wait_for(path: &Path) {
    let t = Instant::now();
    while !path.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{path:?} never appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn gc_waits_for_a_running_realize_or_refuses_with_no_wait() {
    let p = Project::new();
    p.recipe(
        "lib",
        "name = \"lib\"\nversion = \"1\"\nsteps = [\"mkdir -p $out && echo lib > $out/lib.txt\"]\n",
    );
    p.recipe(
        "junk",
        "name = \"junk\"\nversion = \"1\"\nsteps = [\"mkdir $out\"]\n",
    );
    // Valid but unrooted: what a running realize of app counts on finding.
    let lib = realize(&p, &["--no-root"], "lib");
    let junk = realize(&p, &["--no-root"], "junk");
    let markers = tempfile::tempdir().unwrap();
    let (started, release) = (
        markers.path().join("started"),
        markers.path().join("release"),
    );
    p.recipe(
        "app",
        &format!(
            r#"name = "app"
version = "1"
deps = ["lib"]
steps = [
  "{}",
  "mkdir -p $out && cat $DEP_LIB/lib.txt > $out/copy && echo $DEP_LIB > $out/uses-lib",
]
"#,
            wait_step(&started, &release)
        ),
    );
    let app = p
        .cmd(&["realize", "--sandbox", "off", "app"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&started);

    let r = p.run(&["gc", "--no-wait"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("realize"), "{}", r.stderr);
    assert!(exists(&lib) && exists(&junk), "--no-wait removed nothing");

    let mut gc = p
        .cmd(&["gc"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(gc.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = stderr.read_line(&mut line).unwrap();
        assert!(n > 0, "gc ended without saying it waits:\n{seen}");
        seen.push_str(&line);
        if line.contains("waiting") {
            break;
        }
    }
    assert!(seen.contains("realize"), "{seen}");
    assert!(gc.try_wait().unwrap().is_none(), "gc waits");
    assert!(exists(&lib) && exists(&junk));

    std::fs::write(&release, "").unwrap();
    let app = Run::from(app.wait_with_output().unwrap()).ok();
    let gc = Run::from(gc.wait_with_output().unwrap()).ok();
    assert_eq!(
        std::fs::read_to_string(Path::new(&app.line()).join("copy")).unwrap(),
        "lib\n"
    );
    assert!(exists(&lib), "lib is in the new root's closure");
    assert!(!exists(&junk), "gc ran after the realize:\n{}", gc.stdout);
}

/// `a -> b -> c`: each output names the next one's path in one file; `a` also has a
/// build-time dependency `t` that its output does not mention.
fn chain(p: &Project) {
    p.recipe(
        "c",
        "name = \"c\"\nversion = \"1\"\nsteps = [\"mkdir -p $out && echo c > $out/c.txt\"]\n",
    );
    p.recipe(
        "t",
        "name = \"t\"\nversion = \"1\"\nsteps = [\"mkdir -p $out && echo t > $out/t.txt\"]\n",
    );
    p.recipe(
        "b",
        "name = \"b\"\nversion = \"1\"\ndeps = [\"c\"]\nsteps = [\"mkdir -p $out/share $out/bin && echo b > $out/bin/b && echo $DEP_C/c.txt > $out/share/b.conf\"]\n",
    );
    p.recipe(
        "a",
        "name = \"a\"\nversion = \"1\"\ndeps = [\"b\", \"t\"]\nsteps = [\"mkdir -p $out/etc && cat $DEP_T/t.txt > $out/t-copy && echo uses $DEP_B/bin/b > $out/etc/a.conf\"]\n",
    );
}

fn why_depends_prints_the_chain(sandbox: &str) {
    let p = Project::new();
    chain(&p);
    let a = p.run(&["realize", "--sandbox", sandbox, "a"]).ok().line();
    let (b, c) = (
        p.run(&["path", "b"]).ok().line(),
        p.run(&["path", "c"]).ok().line(),
    );
    let r = p.run(&["why-depends", "a", "c"]).ok();
    let expected = format!(
        "{a}\n  etc/a.conf mentions {}\n{b}\n  share/b.conf mentions {}\n{c}\n",
        name_of(&b),
        name_of(&c)
    );
    assert_eq!(r.stdout, expected);

    let r = p.run(&["why-depends", "a", "t"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.stdout, "");
    assert!(
        r.stderr.contains("does not depend on `t`") && r.stderr.contains("build-time dependency"),
        "{}",
        r.stderr
    );
    let t = p.run(&["path", "t"]).ok().line();
    let r = p.run(&["why-depends", "--build", "a", "t"]).ok();
    assert_eq!(
        r.stdout,
        format!(
            "{a}\n  built with {} (build dependency)\n{t}\n",
            name_of(&t)
        )
    );
    let r = p.run(&["why-depends", "c", "a"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("does not depend on `a`") && !r.stderr.contains("build-time"),
        "{}",
        r.stderr
    );
}

#[test]
fn why_depends_prints_a_two_hop_chain_without_the_sandbox() {
    why_depends_prints_the_chain("off");
}

#[test]
fn why_depends_prints_a_two_hop_chain_in_the_sandbox() {
    assert!(bwrap_works(), "bubblewrap must work on this machine");
    why_depends_prints_the_chain("on");
}

#[test]
fn why_depends_on_an_unbuilt_recipe_says_to_realize_it() {
    let p = Project::new();
    chain(&p);
    let r = p.run(&["why-depends", "a", "c"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("pybake realize a"), "{}", r.stderr);
}

/// `s` at `version`, built from the source pinned by `sha` (imported, so offline).
fn source_recipe(p: &Project, version: &str, sha: &str) {
    p.recipe(
        "s",
        &format!(
            r#"name = "s"
version = "{version}"
steps = ["mkdir -p $out && cp $src/data.txt $out/"]
[[sources]]
url = "https://example.invalid/data.txt"
sha256 = "{sha}"
"#
        ),
    );
}

fn import(p: &Project, text: &str) -> PathBuf {
    let file = p.path().join("import.txt");
    std::fs::write(&file, text).unwrap();
    let out = p.run(&["import", file.to_str().unwrap()]).ok().stdout;
    let hex = out
        .split_whitespace()
        .next()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    p.store().join(".pybake/sources").join(hex)
}

#[test]
fn sources_of_collected_outputs_go_those_of_kept_outputs_stay() {
    let p = Project::new();
    let old_src = import(&p, "old data\n");
    let new_src = import(&p, "new data\n");
    let unused = import(&p, "never used\n");
    let hex = |s: &Path| s.file_name().unwrap().to_str().unwrap().to_string();
    source_recipe(&p, "1", &hex(&old_src));
    let old = realize(&p, &["--offline"], "s");
    source_recipe(&p, "2", &hex(&new_src));
    let new = realize(&p, &["--offline"], "s");

    let r = p.run(&["gc", "--dry-run"]).ok();
    assert!(r.stdout.contains(old_src.to_str().unwrap()), "{}", r.stdout);
    assert!(old_src.exists());

    let r = p.run(&["gc"]).ok();
    assert!(!exists(&old));
    assert!(
        !old_src.exists(),
        "only the collected output used it\n{}",
        r.stdout
    );
    assert!(!unused.exists(), "no output uses it");
    assert!(new_src.exists(), "the kept output was built from it");
    assert!(exists(&new));
    let last = r.stdout.lines().last().unwrap();
    assert!(last.contains("1 output, 2 sources"), "{last}");
    // The kept source is enough to build s again offline.
    let meta = meta_of(&p.store(), &new);
    assert_eq!(
        meta["sources"][0].as_str().unwrap(),
        format!("sha256:{}", hex(&new_src))
    );
}
