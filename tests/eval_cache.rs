//! The evaluation cache (docs/store.md, "The evaluation cache"): a no-op realize skips reading
//! the recipes while nothing it read has changed, and never answers for changed recipes.

#![allow(clippy::disallowed_methods)] // tests may use std::fs; src uses fs-err (clippy.toml)

mod common;
use common::*;

const NOTE: &str = "not evaluated again";

fn leaf(step: &str) -> String {
    format!(
        "name = \"leaf\"\nversion = \"1\"\nsteps = [\"mkdir -p $out && echo {step} > $out/x\"]\n"
    )
}

fn top() -> &'static str {
    "name = \"top\"\nversion = \"1\"\ndeps = [\"leaf\"]\nsteps = [\"mkdir -p $out && cat $DEP_LEAF/x > $out/x\"]\n"
}

/// A project whose recipe files are older than the cache's racy window (files changed less
/// than two seconds before an evaluation are never remembered).
fn settled_project() -> Project {
    let p = Project::new();
    p.recipe("leaf", &leaf("one")).recipe("top", top());
    std::thread::sleep(std::time::Duration::from_millis(2100));
    p
}

fn realize(p: &Project, args: &[&str]) -> Run {
    let mut all = vec!["realize", "--sandbox", "off"];
    all.extend(args);
    p.run(&all)
}

fn entries(p: &Project) -> usize {
    std::fs::read_dir(p.store().join(".pybake/evals")).map_or(0, |d| d.count())
}

#[test]
fn an_unchanged_project_is_not_evaluated_again_and_an_edit_is_seen() {
    let p = settled_project();
    let first = realize(&p, &["top"]).ok();
    assert!(!first.stderr.contains(NOTE), "{}", first.stderr);
    assert_eq!(entries(&p), 1, "the realize remembered its evaluation");

    let again = realize(&p, &["top"]).ok();
    assert_eq!(again.stdout, first.stdout, "the same path");
    assert!(again.stderr.contains(NOTE), "{}", again.stderr);
    assert!(
        again.stderr.contains("0 to build, 1 cached"),
        "{}",
        again.stderr
    );

    // An edit of a dependency's recipe, right after: same size, a moment later.
    p.recipe("leaf", &leaf("two"));
    let edited = realize(&p, &["top"]).ok();
    assert!(!edited.stderr.contains(NOTE), "{}", edited.stderr);
    assert_ne!(edited.stdout, first.stdout, "the edit gives a new output");
    assert_eq!(
        std::fs::read_to_string(format!("{}/x", edited.line())).unwrap(),
        "two\n"
    );
}

#[test]
fn a_recipe_added_to_the_directory_is_seen() {
    let p = settled_project();
    realize(&p, &["top"]).ok();
    assert_eq!(entries(&p), 1);
    // A second recipe of the same name makes the directory invalid: the realize must say so.
    p.recipe("leaf-copy", &leaf("one"));
    let r = realize(&p, &["top"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("leaf"), "{}", r.stderr);
}

#[test]
fn a_removed_output_is_built_again() {
    let p = settled_project();
    let first = realize(&p, &["top"]).ok();
    let path = first.line();
    // Removed by hand (gc keeps it: it is a root), metadata too, as from a damaged store.
    let name = path.rsplit('/').next().unwrap().to_string();
    std::process::Command::new("chmod")
        .args(["-R", "u+w", &path])
        .status()
        .unwrap();
    std::fs::remove_dir_all(&path).unwrap();
    std::fs::remove_file(p.store().join(".pybake/meta").join(format!("{name}.json"))).unwrap();
    let again = realize(&p, &["top"]).ok();
    assert!(!again.stderr.contains(NOTE), "{}", again.stderr);
    assert_eq!(again.stdout, first.stdout);
    assert!(again.stderr.contains("1 to build"), "{}", again.stderr);
}

#[test]
fn freshly_written_recipes_are_not_remembered() {
    let p = Project::new();
    p.recipe("leaf", &leaf("one")).recipe("top", top());
    realize(&p, &["top"]).ok();
    let again = realize(&p, &["top"]).ok();
    // Written within the racy window of the first evaluation: a later edit in the same clock
    // tick could leave the stamps as they are.
    assert!(!again.stderr.contains(NOTE), "{}", again.stderr);
    assert_eq!(entries(&p), 0);
}

#[test]
fn options_that_need_the_derivations_evaluate() {
    let p = settled_project();
    realize(&p, &["top"]).ok();
    realize(&p, &["top"]).ok();
    for extra in [&["--json"][..], &["--explain"], &["--check"]] {
        let mut args = extra.to_vec();
        args.push("top");
        let r = realize(&p, &args).ok();
        assert!(!r.stderr.contains(NOTE), "{extra:?}: {}", r.stderr);
    }
}

#[test]
fn gc_forgets_every_evaluation() {
    let p = settled_project();
    realize(&p, &["top"]).ok();
    assert_eq!(entries(&p), 1);
    p.run(&["gc"]).ok();
    assert_eq!(entries(&p), 0);
    let r = realize(&p, &["top"]).ok();
    assert!(!r.stderr.contains(NOTE), "{}", r.stderr);
}
