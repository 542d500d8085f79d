//! `pybake explain NAME` and `realize --explain`: why a recipe's current derivation is not the
//! one built last time, down to the input that changed, across dependencies in one line.

#![allow(clippy::disallowed_methods)] // tests may use std::fs; src uses fs-err (clippy.toml)

mod common;
use common::*;

/// `explain NAME`'s output, asserting success.
fn explain(p: &Project, name: &str) -> String {
    p.run(&["explain", name]).ok().stdout
}

/// The line of `text` containing `needle`, or a failure showing `text`.
fn line_with<'a>(text: &'a str, needle: &str) -> &'a str {
    text.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
}

fn one(name: &str, steps: &[&str], extra: &str) -> String {
    let steps: Vec<String> = steps.iter().map(|s| format!("{s:?}")).collect();
    format!(
        "name = \"{name}\"\nversion = \"1\"\nsteps = [{}]\n{extra}\n",
        steps.join(", ")
    )
}

#[test]
fn never_built_then_up_to_date() {
    let p = hello_project();
    let out = explain(&p, "hello");
    assert!(out.starts_with("hello: never built in this store"), "{out}");
    let path = p.run(&["realize", "hello"]).ok().line();
    let out = explain(&p, "hello");
    let name = path.rsplit('/').next().unwrap();
    assert_eq!(
        out,
        format!("hello: up to date ({name} is in the store)\n"),
        "{out}"
    );
    // What the store keeps: the record of the inputs (in the metadata) and the last build per
    // recipe.
    let record = p.store().join(".pybake/meta").join(format!("{name}.json"));
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    let json = &meta["inputs"];
    assert_eq!(json["scheme"], "pybake-drv-v2", "{json}");
    assert_eq!(json["name"], "hello", "{json}");
    assert!(
        json["deps"]["greeting"]["store_name"]
            .as_str()
            .unwrap()
            .ends_with("-greeting-1"),
        "{json}"
    );
    assert_eq!(json["sources"][0]["file"], "hello-src", "{json}");
    let built = std::fs::read_to_string(p.store().join(".pybake/built.log")).unwrap();
    assert!(built.ends_with(&format!("hello {name}\n")), "{built}");
    use std::os::unix::fs::PermissionsExt;
    for f in [record, p.store().join(".pybake/built.log")] {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "{f:?}");
    }
}

#[test]
fn a_changed_step_is_named_with_its_old_and_new_text() {
    let p = Project::new();
    p.recipe("a", &one("a", &["mkdir -p $out", "echo one > $out/x"], ""));
    p.run(&["realize", "a"]).ok();
    p.recipe("a", &one("a", &["mkdir -p $out", "echo two > $out/x"], ""));
    let out = explain(&p, "a");
    assert!(out.starts_with("a: "), "{out}");
    assert!(out.contains("differs from the last build"), "{out}");
    line_with(
        &out,
        r#"steps[1] changed: "echo one > $out/x" -> "echo two > $out/x""#,
    );
    assert_eq!(out.lines().count(), 2, "one change: {out}");
}

#[test]
fn a_record_an_older_pybake_wrote_beside_the_metadata_is_read_and_collected() {
    let p = Project::new();
    p.recipe("a", &one("a", &["mkdir -p $out", "echo one > $out/x"], ""));
    let path = p.run(&["realize", "--no-root", "a"]).ok().line();
    let name = path.rsplit('/').next().unwrap().to_string();
    // As versions before records moved into the metadata left it.
    let meta_path = p.store().join(".pybake/meta").join(format!("{name}.json"));
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    let record = meta.as_object_mut().unwrap().remove("inputs").unwrap();
    std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
    let drv_dir = p.store().join(".pybake/drv");
    std::fs::create_dir_all(&drv_dir).unwrap();
    let legacy = drv_dir.join(format!("{name}.json"));
    std::fs::write(&legacy, serde_json::to_vec(&record).unwrap()).unwrap();

    p.recipe("a", &one("a", &["mkdir -p $out", "echo two > $out/x"], ""));
    let out = explain(&p, "a");
    line_with(
        &out,
        r#"steps[1] changed: "echo one > $out/x" -> "echo two > $out/x""#,
    );
    // Not a root: gc removes the output, and its record with it.
    p.run(&["gc"]).ok();
    assert!(!std::path::Path::new(&path).exists());
    assert!(!legacy.exists(), "gc left {legacy:?}");
}

#[test]
fn a_changed_env_variable_is_named() {
    let p = hello_project();
    p.run(&["realize", "greeting"]).ok();
    let text = std::fs::read_to_string(p.path().join("recipes/greeting.toml")).unwrap();
    p.recipe(
        "greeting",
        &text.replace("GREETING = \"hi\"", "GREETING = \"ho\""),
    );
    let out = explain(&p, "greeting");
    line_with(&out, r#"env.GREETING changed: "hi" -> "ho""#);
}

#[test]
fn a_changed_file_of_a_path_source_is_named_with_both_hashes() {
    let p = hello_project();
    p.run(&["realize", "hello"]).ok();
    let hash = |p: &Project| {
        let out = p.run(&["hash", "recipes/hello-src"]).ok().stdout;
        out.split_whitespace().next().unwrap().to_string()
    };
    let old = hash(&p);
    p.file(
        "recipes/hello-src/hello.c",
        "#include <stdio.h>\nint main(void){puts(\"hello!\");return 0;}\n",
    );
    let new = hash(&p);
    assert_ne!(old, new);
    let out = explain(&p, "hello");
    line_with(&out, &format!("source hello-src changed ({old} -> {new})"));
}

#[test]
fn a_changed_dependency_names_the_root_cause_in_one_line() {
    let p = hello_project();
    p.run(&["realize", "hello"]).ok();
    let text = std::fs::read_to_string(p.path().join("recipes/greeting.toml")).unwrap();
    p.recipe(
        "greeting",
        &text.replace("\"mkdir -p $out/bin\"", "\"mkdir -p $out/bin $out/share\""),
    );
    let out = explain(&p, "hello");
    let line = line_with(&out, "dependency greeting changed");
    assert!(
        line.contains(
            r#"dependency greeting changed because its steps[0] changed: "mkdir -p $out/bin" -> "mkdir -p $out/bin $out/share""#
        ),
        "{out}"
    );
    assert_eq!(
        out.lines().count(),
        2,
        "hello's own inputs are unchanged: {out}"
    );
}

#[test]
fn the_chain_is_followed_two_levels_deep() {
    let p = Project::new();
    p.recipe("c", &one("c", &["mkdir -p $out"], "[env]\nLEVEL = \"1\"\n"));
    p.recipe("b", &one("b", &["mkdir -p $out"], "deps = [\"c\"]"));
    p.recipe("a", &one("a", &["mkdir -p $out"], "deps = [\"b\"]"));
    p.run(&["realize", "a"]).ok();
    p.recipe("c", &one("c", &["mkdir -p $out"], "[env]\nLEVEL = \"2\"\n"));
    let out = explain(&p, "a");
    line_with(
        &out,
        r#"dependency b changed because its dependency c changed because its env.LEVEL changed: "1" -> "2""#,
    );
}

#[test]
fn a_changed_root_is_followed_like_a_dependency() {
    let p = Project::new();
    tiny_root(&p);
    p.recipe(
        "probe",
        &one("probe", &["mkdir -p $out"], "root = \"tiny-root\""),
    );
    p.run(&["realize", "probe"]).ok();
    let before = p.run(&["hash", "recipes/tiny-root-src"]).ok().stdout;
    p.file("recipes/tiny-root-src/etc/hosts", "127.0.0.1 localhost\n");
    let after = p.run(&["hash", "recipes/tiny-root-src"]).ok().stdout;
    let first = |s: &str| s.split_whitespace().next().unwrap().to_string();
    let out = explain(&p, "probe");
    line_with(
        &out,
        &format!(
            "root tiny-root changed because its source tiny-root-src changed ({} -> {})",
            first(&before),
            first(&after)
        ),
    );
}

#[test]
fn realize_explain_explains_each_derivation_before_building_it() {
    let p = hello_project();
    p.run(&["realize", "hello"]).ok();
    let text = std::fs::read_to_string(p.path().join("recipes/greeting.toml")).unwrap();
    p.recipe(
        "greeting",
        &text.replace("GREETING = \"hi\"", "GREETING = \"ho\""),
    );
    let r = p.run(&["realize", "--explain", "hello"]).ok();
    let err = &r.stderr;
    let at = |needle: &str| {
        err.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{err}"))
    };
    let greeting = at(r#"env.GREETING changed: "hi" -> "ho""#);
    let hello = at(r#"dependency greeting changed because its env.GREETING changed: "hi" -> "ho""#);
    let building = at("building greeting");
    assert!(greeting < building && hello < building, "{err}");
    assert!(r.stdout.trim().ends_with("-hello-1.0"), "{}", r.stdout);
    // Built now: nothing left to explain.
    let r = p.run(&["realize", "--explain", "hello"]).ok();
    assert!(!r.stderr.contains("changed"), "{}", r.stderr);
    assert_eq!(explain(&p, "greeting").lines().count(), 1);
    assert!(explain(&p, "hello").contains("up to date"));
}
