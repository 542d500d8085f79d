#![allow(clippy::disallowed_methods)]

use super::*;

fn write(dir: &Path, file: &str, text: &str) {
    std::fs::write(dir.join(file), text).unwrap();
}

fn load_err(files: &[(&str, &str)]) -> String {
    let t = tempfile::tempdir().unwrap();
    for (f, text) in files {
        write(t.path(), f, text);
    }
    RecipeSet::load(t.path()).unwrap_err().to_string()
}

#[test]
fn extends_overrides_and_merges_env() {
    let t = tempfile::tempdir().unwrap();
    write(
        t.path(),
        "base.toml",
        "name = \"base\"\nversion = \"1\"\nsteps = [\"echo $FLAVOUR\"]\n[env]\nFLAVOUR = \"a\"\nKEEP = \"k\"\n",
    );
    write(
        t.path(),
        "child.toml",
        "name = \"child\"\nextends = \"base\"\n[env]\nFLAVOUR = \"b\"\n",
    );
    let set = RecipeSet::load(t.path()).unwrap();
    let child = set.get("child").unwrap();
    assert_eq!(child.version, "1");
    assert_eq!(child.steps, vec!["echo $FLAVOUR".to_string()]);
    assert_eq!(child.env["FLAVOUR"], "b");
    assert_eq!(child.env["KEEP"], "k");
}

#[test]
fn unknown_field_names_file_and_line() {
    let e = load_err(&[("a.toml", "name = \"a\"\nversion = \"1\"\nstep = []\n")]);
    assert!(e.contains("a.toml:3"), "{e}");
    assert!(e.contains("unknown field `step`"), "{e}");
}

#[test]
fn duplicate_names_are_refused() {
    let e = load_err(&[
        ("a.toml", "name = \"x\"\nversion = \"1\"\n"),
        ("b.toml", "name = \"x\"\nversion = \"1\"\n"),
    ]);
    assert!(
        e.contains("b.toml:1") && e.contains("defined twice") && e.contains("a.toml"),
        "{e}"
    );
}

#[test]
fn reserved_env_is_refused() {
    let e = load_err(&[(
        "a.toml",
        "name = \"a\"\nversion = \"1\"\n[env]\nPATH = \"/x\"\n",
    )]);
    assert!(e.contains("a.toml:4") && e.contains("`PATH`"), "{e}");
}

#[test]
fn url_source_needs_sha256() {
    let e = load_err(&[(
        "a.toml",
        "name = \"a\"\nversion = \"1\"\n[[sources]]\nurl = \"https://example.org/a.tar.gz\"\n",
    )]);
    assert!(e.contains("needs `sha256"), "{e}");
}

#[test]
fn extends_cycle_is_reported() {
    let e = load_err(&[
        ("a.toml", "name = \"a\"\nextends = \"b\"\n"),
        ("b.toml", "name = \"b\"\nextends = \"a\"\nversion = \"1\"\n"),
    ]);
    assert!(e.contains("a -> b -> a"), "{e}");
}

#[test]
fn lenient_versions() {
    assert_eq!(
        parse_lenient_version("120"),
        Some(semver::Version::new(120, 0, 0))
    );
    assert_eq!(
        parse_lenient_version("3.11"),
        Some(semver::Version::new(3, 11, 0))
    );
    assert_eq!(
        parse_lenient_version("3.1.69"),
        Some(semver::Version::new(3, 1, 69))
    );
    assert_eq!(parse_lenient_version("x"), None);
}

#[test]
fn name_and_version_must_fit_in_a_store_name() {
    let max = crate::store::MAX_NAME_VERSION_LEN;
    let t = tempfile::tempdir().unwrap();
    let recipe = |name: &str| format!("name = \"{name}\"\nversion = \"1.0\"\n");
    write(t.path(), "a.toml", &recipe(&"n".repeat(max - 3)));
    RecipeSet::load(t.path()).unwrap();
    write(t.path(), "a.toml", &recipe(&"n".repeat(max - 2)));
    let e = RecipeSet::load(t.path()).unwrap_err().to_string();
    assert!(e.contains("a.toml:1"), "{e}");
    assert!(
        e.contains(&format!("{} bytes", max + 1)) && e.contains(&format!("at most {max} bytes")),
        "{e}"
    );
}

fn with_path_source(t: &Path, path: &str) -> Result<RecipeSet, RecipeError> {
    write(
        t,
        "a.toml",
        &format!("name = \"a\"\nversion = \"1\"\n[[sources]]\npath = {path:?}\n"),
    );
    RecipeSet::load(t)
}

#[test]
fn path_sources_stay_inside_the_recipe_directory() {
    let top = tempfile::tempdir().unwrap();
    let dir = top.path().join("recipes");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(top.path().join("secret"), "s").unwrap();
    std::os::unix::fs::symlink("../secret", dir.join("out-link")).unwrap();
    std::os::unix::fs::symlink("src", dir.join("in-link")).unwrap();
    let secret = top.path().join("secret");
    for bad in [
        "../secret",
        secret.to_str().unwrap(),
        "out-link",
        "src/../../secret",
    ] {
        let e = with_path_source(&dir, bad).unwrap_err();
        assert!(matches!(e, RecipeError::BadValue { .. }), "{bad}: {e}");
        let e = e.to_string();
        assert!(e.contains("a.toml:3"), "{e}");
        assert!(e.contains("outside the recipe directory"), "{e}");
        assert!(e.contains("pybake import") && e.contains("file://"), "{e}");
    }
    // A link inside is replaced by what it points to, so nothing later goes through it.
    let set = with_path_source(&dir, "in-link").unwrap();
    assert_eq!(
        set.get("a").unwrap().sources[0].origin,
        Origin::Local {
            path: dir.join("src")
        }
    );
}

#[test]
fn only_regular_files_are_read_as_recipes() {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join("d.toml")).unwrap();
    let e = RecipeSet::load(t.path()).unwrap_err();
    assert!(matches!(e, RecipeError::NotAFile { .. }), "{e}");
    assert!(e.to_string().contains("d.toml is a directory"), "{e}");
}

#[test]
fn texts_load_like_files() {
    let t = tempfile::tempdir().unwrap();
    let files = [
        (
            "a.toml",
            "name = \"a\"\nversion = \"1\"\nsteps = [\"true\"]\n",
        ),
        ("b.toml", "name = \"b\"\nextends = \"a\"\ndeps = [\"a\"]\n"),
    ];
    for (f, text) in files {
        write(t.path(), f, text);
    }
    let texts = files
        .iter()
        .map(|(f, text)| (t.path().join(f), text.to_string()))
        .collect();
    let from_texts = RecipeSet::from_texts(t.path(), texts).unwrap();
    assert_eq!(
        from_texts.recipes,
        RecipeSet::load(t.path()).unwrap().recipes
    );

    let bad = vec![(
        t.path().join("c.toml"),
        "name = \"c\"\nversion = [\n".into(),
    )];
    let e = RecipeSet::from_texts(t.path(), bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("c.toml:2: unclosed array"), "{e}");
}
