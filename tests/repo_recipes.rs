//! The project's own recipes and lockfile: they parse, satisfy their constraints, and the
//! committed lockfile pins exactly what the committed recipes say (what `realize --locked` in
//! CI relies on). No network: nothing here fetches or builds.

#![allow(clippy::disallowed_methods)] // tests may use std::fs; src uses fs-err (clippy.toml)

mod common;
use common::*;

fn repo() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn pybake(p: &Project, args: &[&str]) -> Run {
    let recipes = repo().join("recipes");
    let lock = repo().join("lockfile.json");
    let mut all = vec![
        "--recipes",
        recipes.to_str().unwrap(),
        "--lockfile",
        lock.to_str().unwrap(),
    ];
    all.extend(args);
    p.run(&all)
}

#[test]
fn committed_lockfile_pins_the_committed_recipes() {
    let p = Project::new();
    let lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("lockfile.json")).unwrap())
            .unwrap();
    let recipes = lock["recipes"].as_object().unwrap();
    for name in [
        "emsdk",
        "binaryen",
        "build-python",
        "zlib",
        "bzip2",
        "cpython-browser",
        "cpython-node",
    ] {
        let entry = recipes
            .get(name)
            .unwrap_or_else(|| panic!("{name} is locked"));
        let path = pybake(&p, &["path", name]).ok().line();
        let store_name = path.rsplit('/').next().unwrap();
        let locked = entry["drv_hash"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:");
        assert_eq!(
            &store_name[..32],
            &locked[..32],
            "{name}: lockfile.json is stale: run `pybake lock` and commit it"
        );
    }
    let emscripten = &lock["toolchains"]["emscripten"];
    let used = emscripten
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["provided_by"] == "emsdk")
        .expect("the emscripten the graph uses is pinned");
    let v = semver::Version::parse(used["version"].as_str().unwrap()).unwrap();
    assert!(v >= semver::Version::new(3, 1, 8), "{v}");
    assert_eq!(used["constraints"][0]["version"], ">=3.1.8");
}

#[test]
fn bookworms_emscripten_3_1_6_is_refused() {
    let p = Project::new();
    for e in walkdir::WalkDir::new(repo().join("recipes")) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(repo()).unwrap();
        let to = p.path().join(rel);
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&to).unwrap();
        } else if e.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path()).unwrap(), &to).unwrap();
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
    let f = p.path().join("recipes/emsdk-debian.toml");
    let text = std::fs::read_to_string(&f).unwrap();
    assert!(text.contains("emscripten = \"3.1.69\""));
    std::fs::write(
        &f,
        text.replace("emscripten = \"3.1.69\"", "emscripten = \"3.1.6\""),
    )
    .unwrap();
    let r = p.run(&["--offline", "lock"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("requires emscripten >=3.1.8"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("memory corruption"), "{}", r.stderr);
    let r = p.run(&["plan", "cpython-node"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}
