//! Build roots: a recipe's steps run on another recipe's output as `/`, and nothing of the
//! host's file system; a recipe without steps has its sources as its output.

#![allow(clippy::disallowed_methods)] // tests may use std::fs; src uses fs-err (clippy.toml)

mod common;
use common::*;
use std::path::Path;

fn rooted_project() -> Project {
    let p = Project::new();
    tiny_root(&p);
    p.recipe(
        "probe",
        r#"name = "probe"
version = "1"
root = "tiny-root"
steps = [
  "mkdir -p $out",
  "if [ -e /usr/bin/bwrap ]; then echo visible; else echo absent; fi > $out/host-usr",
  "if cat /etc/shadow > /dev/null 2>&1; then echo readable; else echo unreadable; fi > $out/shadow",
  "ls / | tr '\n' ' ' > $out/top",
  "id -un > $out/user",
  "echo $PATH > $out/path",
]
"#,
    );
    p
}

fn read(path: &str, f: &str) -> String {
    std::fs::read_to_string(format!("{path}/{f}")).unwrap()
}

#[test]
fn a_rooted_step_sees_the_root_and_nothing_of_the_host() {
    assert!(
        Path::new("/usr/bin/bwrap").exists(),
        "bubblewrap is installed"
    );
    for sandbox_impl in SANDBOX_IMPLS {
        let p = rooted_project();
        let path = p.run_with(sandbox_impl, &["realize", "probe"]).ok().line();
        assert_eq!(read(&path, "host-usr"), "absent\n");
        assert_eq!(read(&path, "shadow"), "unreadable\n");
        assert_eq!(read(&path, "user"), "pybake\n", "the root's /etc/passwd");
        // The root's own entries plus what pybake mounts.
        assert_eq!(read(&path, "top"), "bin build dev etc proc pybake tmp usr ");
        let meta = meta_of(&p.store(), &path);
        assert!(
            meta["root"].as_str().unwrap().ends_with("-tiny-root-1"),
            "{meta}"
        );
        assert_eq!(meta["host_build"], false, "{meta}");
        assert_eq!(meta["sandboxed"], true, "{meta}");
    }
}

#[test]
fn a_recipe_without_steps_has_its_sources_as_output() {
    let p = rooted_project();
    let path = p.run(&["realize", "tiny-root"]).ok().line();
    assert!(Path::new(&path).join("usr/bin/busybox").is_file());
    assert_eq!(
        std::fs::read_link(Path::new(&path).join("bin")).unwrap(),
        Path::new("usr/bin")
    );
    let meta = meta_of(&p.store(), &path);
    assert_eq!(
        meta["host_build"], false,
        "runs nothing on the host: {meta}"
    );
}

#[test]
fn changing_the_root_rebuilds_what_runs_on_it() {
    let p = rooted_project();
    let before = p.run(&["path", "probe"]).ok().line();
    p.file("recipes/tiny-root-src/etc/hosts", "127.0.0.1 localhost\n");
    let after = p.run(&["path", "probe"]).ok().line();
    assert_ne!(
        before, after,
        "the root's derivation hash is part of probe's"
    );
    let statuses = p.realize_statuses(&["probe"]);
    assert_eq!(
        statuses,
        pairs(&[("tiny-root", "built"), ("probe", "built")])
    );
}

#[test]
fn a_host_build_is_marked_with_the_host_identity() {
    let p = Project::new();
    p.recipe(
        "host",
        "name = \"host\"\nversion = \"1\"\nsteps = [\"mkdir -p $out\"]\n",
    );
    let path = p.run(&["realize", "host"]).ok().line();
    let meta = meta_of(&p.store(), &path);
    assert_eq!(meta["host_build"], true, "{meta}");
    let os = std::fs::read_to_string("/etc/os-release").unwrap();
    let field = |k: &str| {
        os.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(|v| v.trim_matches('"').to_string())
    };
    let expected = format!("{} {}", field("ID").unwrap(), field("VERSION_ID").unwrap());
    assert_eq!(meta["host"], expected.as_str(), "{meta}");
    assert!(meta["root"].is_null(), "{meta}");
}

#[test]
fn a_rooted_recipe_without_bubblewrap_is_refused_not_built_on_the_host() {
    let p = rooted_project();
    for (args, env) in [
        (vec!["realize", "probe"], Some("/nonexistent/bwrap")),
        (vec!["realize", "--sandbox", "off", "probe"], None),
    ] {
        let mut c = p.cmd(&args);
        if let Some(b) = env {
            c.env("PYBAKE_BWRAP", b);
        }
        let r = Run::from(c.output().unwrap());
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("`probe` run on a root file system")
                && r.stderr.contains("install the Debian package `bubblewrap`"),
            "{}",
            r.stderr
        );
        assert!(!r.stderr.contains("building probe"), "{}", r.stderr);
    }
    // The root itself runs nothing, so it needs no sandbox.
    let mut c = p.cmd(&["realize", "tiny-root"]);
    c.env("PYBAKE_BWRAP", "/nonexistent/bwrap");
    Run::from(c.output().unwrap()).ok();
}

#[test]
fn the_root_is_a_dependency_in_plans_and_graphs() {
    let p = rooted_project();
    let plan = p.run(&["plan", "probe"]).ok().stdout;
    let lines: Vec<&str> = plan.lines().collect();
    assert_eq!(lines.len(), 2, "{plan}");
    assert!(
        lines[0].ends_with("-tiny-root-1") && lines[1].ends_with("-probe-1"),
        "{plan}"
    );
    let dot = p.run(&["graph", "probe"]).ok().stdout;
    assert!(
        dot.contains("\"probe\" -> \"tiny-root\" [style=dashed, label=\"root\"]"),
        "{dot}"
    );
    p.recipe(
        "bad",
        "name = \"bad\"\nversion = \"1\"\nroot = \"tiny-rot\"\nsteps = [\"true\"]\n",
    );
    let r = p.run(&["plan", "bad"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("bad.toml:3") && r.stderr.contains("did you mean `tiny-root`"),
        "{}",
        r.stderr
    );
}
