//! Snapshots of what the CLI prints for people (insta, as uv does): errors with the offending
//! line and a caret, and plans. Temporary paths and hashes are masked, so the snapshots hold on
//! every machine; a change of wording shows up as a reviewable diff in tests/snapshots/.

#![allow(clippy::disallowed_methods)] // tests may use std::fs; src uses fs-err (clippy.toml)

mod common;
use common::*;

/// The output with the project's temporary directory and store hashes masked.
fn masked(p: &Project, text: &str) -> String {
    let dir = p.path().display().to_string();
    let mut out = text.replace(&dir, "[PROJECT]");
    // 32-hex store-name hash parts and 64-hex digests.
    let mut masked = String::new();
    let mut run = String::new();
    for c in out.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_hexdigit() && !c.is_ascii_uppercase() {
            run.push(c);
            continue;
        }
        match run.len() {
            32 => masked.push_str("[HASH32]"),
            64 => masked.push_str("[HASH64]"),
            _ => masked.push_str(&run),
        }
        run.clear();
        masked.push(c);
    }
    masked.pop();
    out = masked;
    out
}

fn error_of(p: &Project, args: &[&str]) -> String {
    let r = p.run(args);
    assert_ne!(r.code, 0, "{}", r.stderr);
    format!("exit code {}\n{}", r.code, masked(p, &r.stderr))
}

#[test]
fn missing_dependency_points_at_it() {
    let p = hello_project();
    p.recipe(
        "hello",
        "name = \"hello\"\nversion = \"1.0\"\ndeps = [\"greting\"]\nsteps = [\"true\"]\n",
    );
    insta::assert_snapshot!(error_of(&p, &["plan", "hello"]));
}

#[test]
fn bad_value_points_at_it() {
    let p = Project::new();
    p.recipe("a", "name = \"a\"\nversion = \"1 0\"\nsteps = [\"true\"]\n");
    insta::assert_snapshot!(error_of(&p, &["plan", "a"]));
}

#[test]
fn syntax_error_points_at_it() {
    let p = Project::new();
    p.recipe("a", "name = \"a\"\nversion = \"1\"\nsteps = [1]\n");
    insta::assert_snapshot!(error_of(&p, &["plan", "a"]));
}

#[test]
fn invalid_utf8_points_at_the_first_bad_byte() {
    let p = Project::new();
    std::fs::write(
        p.path().join("recipes/a.toml"),
        b"name = \"a\"\nversion = \"1\"\n# caf\xe9 au lait\n",
    )
    .unwrap();
    insta::assert_snapshot!(error_of(&p, &["plan", "a"]));
}

#[test]
fn a_lockfile_that_does_not_parse_points_at_it() {
    let p = Project::new();
    p.recipe(
        "a",
        "name = \"a\"\nversion = \"1\"\nsteps = [\"mkdir $out\"]\n",
    );
    p.file(
        "lockfile.json",
        "{\n  \"format\": 1,\n  \"platform\": x86\n}\n",
    );
    insta::assert_snapshot!(error_of(&p, &["realize", "--locked", "a"]));
}

#[test]
fn plan_lists_what_builds_and_what_is_cached() {
    let p = hello_project();
    p.run(&["realize", "greeting"]).ok();
    let r = p.run(&["plan", "hello"]).ok();
    insta::assert_snapshot!(masked(&p, &r.stdout));
}
