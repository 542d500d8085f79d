//! Recipe errors: each names the file and line, exits 2, and builds nothing.

#![allow(clippy::disallowed_methods)] // tests may use std::fs; src uses fs-err (clippy.toml)

mod common;
use common::*;

/// Realizes the broken recipe `a` together with a good one whose step leaves a mark outside
/// the store: the error must stop everything before any build starts.
fn error_of(p: &Project) -> String {
    let mark = p.path().join("good-ran");
    p.recipe(
        "good",
        &format!(
            "name = \"good\"\nversion = \"1\"\nsteps = [\"touch {}\", \"mkdir $out\"]\n",
            mark.display()
        ),
    );
    let r = p.run(&["realize", "--sandbox", "off", "good", "a"]);
    assert_eq!(r.code, 2, "stderr: {}", r.stderr);
    assert!(r.stdout.is_empty());
    assert!(!mark.exists(), "nothing is built after a recipe error");
    r.stderr
}

#[test]
fn unknown_field() {
    let p = Project::new();
    p.recipe("a", "name = \"a\"\nversion = \"1\"\nstpes = []\n");
    let e = error_of(&p);
    assert!(
        e.contains("recipes/a.toml:3") && e.contains("unknown field `stpes`"),
        "{e}"
    );
}

#[test]
fn bad_value() {
    let p = Project::new();
    p.recipe(
        "a",
        "name = \"a\"\nversion = \"1\"\nsteps = \"not a list\"\n",
    );
    let e = error_of(&p);
    assert!(e.contains("recipes/a.toml:3"), "{e}");

    p.recipe("a", "name = \"a\"\nversion = \"1 0\"\n");
    let e = error_of(&p);
    assert!(
        e.contains("recipes/a.toml:2") && e.contains("bad value for `version`"),
        "{e}"
    );
}

#[test]
fn missing_dependency() {
    let p = Project::new();
    p.recipe(
        "a",
        "name = \"a\"\nversion = \"1\"\ndeps = [\n  \"b\",\n  \"nope\",\n]\n",
    );
    p.recipe("b", "name = \"b\"\nversion = \"1\"\n");
    let e = error_of(&p);
    assert!(
        e.contains("recipes/a.toml:5") && e.contains("depends on `nope`"),
        "{e}"
    );
}

#[test]
fn duplicate_name() {
    let p = Project::new();
    p.recipe("a", "name = \"a\"\nversion = \"1\"\n");
    p.recipe("z", "# copy\nname = \"a\"\nversion = \"2\"\n");
    let e = error_of(&p);
    assert!(
        e.contains("recipes/z.toml:2") && e.contains("defined twice") && e.contains("a.toml"),
        "{e}"
    );
}

#[test]
fn dependency_cycle_is_printed() {
    let p = Project::new();
    p.recipe("a", "name = \"a\"\nversion = \"1\"\ndeps = [\"b\"]\n");
    p.recipe("b", "name = \"b\"\nversion = \"1\"\ndeps = [\"a\"]\n");
    let e = error_of(&p);
    assert!(e.contains("dependency cycle: a -> b -> a"), "{e}");
    assert!(e.contains("recipes/a.toml:3"), "{e}");
}

#[test]
fn bad_arguments_exit_2() {
    let p = Project::new();
    assert_eq!(p.run(&["realize"]).code, 2);
    assert_eq!(p.run(&["realize", "-j", "many", "a"]).code, 2);
    assert_eq!(p.run(&["frobnicate"]).code, 2);
}
