//! Realize, caching, rebuilds on change, and the query commands.

#![allow(clippy::disallowed_methods)] // tests may use std::fs; src uses fs-err (clippy.toml)

mod common;
use common::*;

#[test]
fn realize_builds_then_is_cached() {
    let p = hello_project();
    let r = p.run(&["realize", "hello"]).ok();
    let path = r.line();
    assert_eq!(
        r.stdout.lines().count(),
        1,
        "only the store path on stdout: {}",
        r.stdout
    );
    assert!(path.starts_with(p.store().canonicalize().unwrap().to_str().unwrap()));
    assert!(path.ends_with("-hello-1.0"), "{path}");
    let out = std::process::Command::new(format!("{path}/bin/hello"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    assert_eq!(
        std::fs::read_to_string(format!("{path}/greeting.txt")).unwrap(),
        "hi\n"
    );

    assert_eq!(
        p.realize_statuses(&["hello"]),
        pairs(&[("hello", "cached")]),
        "a valid output needs nothing below it"
    );
}

#[test]
fn editing_a_recipe_rebuilds_it_and_its_dependents_only() {
    let p = hello_project();
    p.recipe(
        "other",
        "name = \"other\"\nversion = \"1\"\nsteps = [\"mkdir $out\"]\n",
    );
    p.realize_statuses(&["hello", "other"]);
    let before = p.run(&["path", "hello"]).ok().line();

    // Comments, whitespace and key order change nothing.
    p.recipe(
        "greeting",
        r#"# a comment
version   = "1"
name = "greeting"
steps = [
  "mkdir -p $out/bin",
  "printf '#!/bin/sh\\necho %s\\n' \"$GREETING\" > $out/bin/greet && chmod +x $out/bin/greet",
]

[env]
GREETING = "hi"   # same value
"#,
    );
    assert_eq!(p.run(&["path", "hello"]).ok().line(), before);
    assert_eq!(
        p.realize_statuses(&["hello", "other"]),
        pairs(&[("hello", "cached"), ("other", "cached")])
    );

    // An env change in the dependency rebuilds it and its dependent, not `other`.
    p.recipe(
        "greeting",
        r#"name = "greeting"
version = "1"
steps = [
  "mkdir -p $out/bin",
  "printf '#!/bin/sh\\necho %s\\n' \"$GREETING\" > $out/bin/greet && chmod +x $out/bin/greet",
]
[env]
GREETING = "ho"
"#,
    );
    assert_ne!(p.run(&["path", "hello"]).ok().line(), before);
    assert_eq!(
        p.realize_statuses(&["hello", "other"]),
        pairs(&[
            ("greeting", "built"),
            ("hello", "built"),
            ("other", "cached")
        ])
    );
    let path = p.run(&["path", "hello"]).ok().line();
    assert_eq!(
        std::fs::read_to_string(format!("{path}/greeting.txt")).unwrap(),
        "ho\n"
    );

    // A source byte changes the hash of its recipe only.
    p.file(
        "recipes/hello-src/hello.c",
        "#include <stdio.h>\nint main(void){puts(\"hello!\");return 0;}\n",
    );
    assert_eq!(
        p.realize_statuses(&["hello"]),
        pairs(&[("greeting", "cached"), ("hello", "built")]),
    );
}

#[test]
fn json_summary_has_name_path_status_seconds() {
    let p = hello_project();
    let r = p.run(&["realize", "--json", "hello"]).ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let rows = v["results"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert!(row["path"]
            .as_str()
            .unwrap()
            .contains(row["name"].as_str().unwrap()));
        assert_eq!(row["status"], "built");
        assert!(row["seconds"].as_f64().unwrap() >= 0.0);
    }
}

#[test]
fn plan_path_log_and_graph() {
    let p = hello_project();
    let plan = p.run(&["plan", "hello"]).ok().stdout;
    let lines: Vec<&str> = plan.lines().collect();
    assert_eq!(lines.len(), 2, "{plan}");
    assert!(
        lines[0].starts_with("build ") && lines[0].ends_with("-greeting-1"),
        "{plan}"
    );
    assert!(
        lines[1].starts_with("build ") && lines[1].ends_with("-hello-1.0"),
        "{plan}"
    );

    let path = p.run(&["path", "hello"]).ok().line();
    let log = p.run(&["log", "hello"]);
    assert_eq!(log.code, 1, "no log before a build");
    assert!(
        log.stderr.contains("pybake realize hello"),
        "{}",
        log.stderr
    );

    assert_eq!(p.run(&["realize", "hello"]).ok().line(), path);
    let log = p.run(&["log", "hello"]).ok().stdout;
    assert!(
        log.contains("step 1/3: cc -O2 -o hello $src/hello.c"),
        "{log}"
    );
    assert!(p.run(&["plan", "hello"]).ok().stdout.starts_with("cached "));

    let dot = p.run(&["graph"]).ok().stdout;
    assert!(dot.starts_with("digraph"), "{dot}");
    assert!(dot.contains("\"hello\" -> \"greeting\""), "{dot}");
}

#[test]
fn help_explains_each_command() {
    let p = Project::new();
    let top = p.run(&["--help"]).ok().stdout;
    for cmd in ["realize", "plan", "path", "log", "graph"] {
        assert!(top.contains(cmd), "{top}");
        let h = p.run(&[cmd, "--help"]).ok().stdout;
        assert!(h.contains("Usage: pybake"), "{h}");
    }
    let h = p.run(&["realize", "--help"]).ok().stdout;
    for flag in [
        "--jobs",
        "--keep-going",
        "--keep-failed",
        "--json",
        "--sandbox",
        "--store",
        "--recipes",
    ] {
        assert!(h.contains(flag), "realize --help lacks {flag}");
    }
}

#[test]
fn unknown_target_is_a_user_error() {
    let p = hello_project();
    let r = p.run(&["realize", "helo"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("did you mean `hello`"), "{}", r.stderr);
    assert!(r.stdout.is_empty());
}

#[test]
fn extends_shares_one_definition_between_flavours() {
    let p = Project::new();
    p.recipe(
        "app-browser",
        r#"name = "app-browser"
version = "1"
steps = ["mkdir -p $out", "echo \"target=$TARGET opt=$OPT\" > $out/flavour"]
[env]
TARGET = "browser"
OPT = "-O2"
"#,
    );
    p.recipe(
        "app-node",
        "name = \"app-node\"\nextends = \"app-browser\"\n[env]\nTARGET = \"node\"\n",
    );
    let r = p.run(&["realize", "app-browser", "app-node"]).ok();
    let paths: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(paths.len(), 2);
    assert_eq!(
        std::fs::read_to_string(format!("{}/flavour", paths[0])).unwrap(),
        "target=browser opt=-O2\n"
    );
    assert_eq!(
        std::fs::read_to_string(format!("{}/flavour", paths[1])).unwrap(),
        "target=node opt=-O2\n"
    );
    // A change to the shared definition reaches both flavours.
    p.recipe(
        "app-browser",
        r#"name = "app-browser"
version = "1"
steps = ["mkdir -p $out", "echo \"target=$TARGET opt=$OPT!\" > $out/flavour"]
[env]
TARGET = "browser"
OPT = "-O2"
"#,
    );
    assert_eq!(
        p.realize_statuses(&["app-browser", "app-node"]),
        pairs(&[("app-browser", "built"), ("app-node", "built")])
    );
}

#[test]
fn check_rebuilds_and_reports_identical_or_the_differing_files() {
    let p = hello_project();
    p.recipe(
        "stamp",
        "name = \"stamp\"\nversion = \"1\"\nsteps = [\"mkdir -p $out && echo same > $out/same && date +%s%N > $out/when\"]\n",
    );
    let path = p.run(&["realize", "hello"]).ok().line();
    let r = p.run(&["realize", "--check", "hello"]).ok();
    assert_eq!(r.line(), path, "still prints the path");
    assert!(r.stderr.contains("check hello: identical"), "{}", r.stderr);

    p.run(&["realize", "stamp"]).ok();
    let r = p.run(&["realize", "--check", "stamp"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("check stamp: NOT reproducible: 1 path(s) differ"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("\n  when\n"), "{}", r.stderr);
    let r = p.run(&["realize", "--check", "--keep-failed", "stamp"]);
    assert_eq!(r.code, 1);
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains("rebuilt output is kept at "))
        .expect(&r.stderr);
    let kept = line.split("kept at ").nth(1).unwrap();
    assert!(std::path::Path::new(kept).join("when").is_file(), "{kept}");
    // The stored output is untouched by a check.
    assert!(p.run(&["plan", "stamp"]).ok().stdout.starts_with("cached"));
}

#[test]
fn a_plain_log_has_a_heartbeat_and_ends_with_a_summary() {
    let p = hello_project();
    p.recipe(
        "slow",
        "name = \"slow\"\nversion = \"1\"\ndeps = [\"greeting\"]\nsteps = [\"sleep 1.2\", \"mkdir $out\"]\n",
    );
    let mut c = p.cmd(&["realize", "--sandbox", "off", "slow"]);
    c.env("PYBAKE_HEARTBEAT", "0.4");
    let r = Run::from(c.output().unwrap()).ok();
    assert!(
        r.stderr
            .contains("pybake: still building slow (step 1/2: sleep 1.2, "),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("pybake: summary: 2 built, 0 substituted, 0 cached, 0 failed, 0 skipped"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("pybake: slowest: slow 1s, greeting "),
        "{}",
        r.stderr
    );
}

#[test]
fn remove_references_to_drops_a_build_tool_from_the_runtime_closure() {
    let p = hello_project();
    p.recipe(
        "uses",
        "name = \"uses\"\nversion = \"1\"\ndeps = [\"greeting\"]\nremove-references-to = [\"greeting\"]\nsteps = [\"mkdir $out && echo \\\"built with $DEP_GREETING/bin/greet\\\" > $out/config\"]\n",
    );
    let path = p.run(&["realize", "uses"]).ok().line();
    let meta = meta_of(&p.store(), &path);
    assert_eq!(meta["references"], serde_json::json!([]), "{meta}");
    let config = std::fs::read_to_string(format!("{path}/config")).unwrap();
    assert!(
        config.contains(&format!("/{}-greeting-1/bin/greet", "e".repeat(32))),
        "{config}"
    );
    // Without the field, the same output references greeting.
    p.recipe(
        "keeps",
        "name = \"keeps\"\nversion = \"1\"\ndeps = [\"greeting\"]\nsteps = [\"mkdir $out && echo \\\"built with $DEP_GREETING/bin/greet\\\" > $out/config\"]\n",
    );
    let path = p.run(&["realize", "keeps"]).ok().line();
    let refs = meta_of(&p.store(), &path)["references"].clone();
    assert_eq!(refs.as_array().unwrap().len(), 1, "{refs}");
    // Only a dependency can be named.
    p.recipe(
        "bad",
        "name = \"bad\"\nversion = \"1\"\nremove-references-to = [\"greeting\"]\nsteps = [\"mkdir $out\"]\n",
    );
    let r = p.run(&["plan", "bad"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("bad.toml:3") && r.stderr.contains("is not in `deps`"),
        "{}",
        r.stderr
    );
}

#[test]
fn hash_references_lists_the_outputs_a_path_refers_to() {
    let p = Project::new();
    p.recipe(
        "a",
        "name = \"a\"\nversion = \"1\"\nsteps = [\"mkdir -p $out && echo a > $out/x\"]\n",
    );
    p.recipe(
        "b",
        "name = \"b\"\nversion = \"1\"\ndeps = [\"a\"]\nsteps = [\"mkdir -p $out && echo $DEP_A > $out/uses-a\"]\n",
    );
    let b = p.run(&["realize", "--sandbox", "off", "b"]).ok().line();
    let a = p.run(&["path", "a"]).ok().line();
    let plain = p.run(&["hash", &b]).ok().stdout;
    let r = p.run(&["hash", "--references", &b]).ok();
    // The same hash, then the referenced output, by store name.
    let a_name = std::path::Path::new(&a)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(r.stdout, format!("{plain}  {a_name}\n"), "{}", r.stdout);
    // An output of the store that nothing mentions is not listed.
    let r = p.run(&["hash", "--references", &a]).ok();
    assert_eq!(r.stdout.lines().count(), 1, "{}", r.stdout);
}
