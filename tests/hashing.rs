//! Derivation hashes do not depend on where the checkout or the store lives.

#![allow(clippy::disallowed_methods)] // tests may use std::fs; src uses fs-err (clippy.toml)

mod common;
use common::*;

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for e in walkdir::WalkDir::new(from) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(from).unwrap();
        let target = to.join(rel);
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

#[test]
fn two_checkouts_at_different_paths_agree() {
    let a = hello_project();
    let b_root = tempfile::tempdir().unwrap();
    let b_dir = b_root.path().join("deeper/elsewhere/checkout");
    copy_dir(&a.path().join("recipes"), &b_dir.join("recipes"));

    let ra = a.run(&["realize", "hello"]).ok().line();
    let mut cmd = a.cmd(&["realize", "hello"]);
    cmd.current_dir(&b_dir);
    let rb = Run::from(cmd.output().unwrap()).ok().line();
    assert_ne!(ra, rb, "different stores");
    let name = |p: &str| p.rsplit('/').next().unwrap().to_string();
    assert_eq!(name(&ra), name(&rb), "same store name from both checkouts");

    // The outputs are the same bytes, too (the sandbox hides both locations).
    assert!(
        bwrap_works(),
        "bubblewrap must work on this machine (scripts/install-deps installs it)"
    );
    let meta = |store: &std::path::Path, n: &str| {
        let m: serde_json::Value = serde_json::from_slice(
            &std::fs::read(store.join(".pybake/meta").join(format!("{n}.json"))).unwrap(),
        )
        .unwrap();
        m["output_hash"].as_str().unwrap().to_string()
    };
    assert_eq!(
        meta(&a.store(), &name(&ra)),
        meta(&b_dir.join("cache"), &name(&rb))
    );
}

#[test]
fn store_flag_and_env_choose_the_store() {
    let p = hello_project();
    let other = tempfile::tempdir().unwrap();
    let s = other.path().join("s1");
    let r = p
        .run(&["realize", "--store", s.to_str().unwrap(), "greeting"])
        .ok();
    assert!(
        r.line()
            .starts_with(s.canonicalize().unwrap().to_str().unwrap()),
        "{}",
        r.stdout
    );

    let s2 = other.path().join("s2");
    let mut cmd = p.cmd(&["realize", "greeting"]);
    cmd.env("PYBAKE_STORE", &s2);
    let r = Run::from(cmd.output().unwrap()).ok();
    assert!(
        r.line()
            .starts_with(s2.canonicalize().unwrap().to_str().unwrap()),
        "{}",
        r.stdout
    );
    assert!(
        !p.store().join(".pybake/meta").exists()
            || std::fs::read_dir(p.store().join(".pybake/meta"))
                .unwrap()
                .count()
                == 0
    );
}

#[test]
fn outputs_are_read_only_and_have_metadata() {
    use std::os::unix::fs::PermissionsExt;
    let p = hello_project();
    let path = p.run(&["realize", "hello"]).ok().line();
    let mode = |f: &str| {
        std::fs::metadata(format!("{path}/{f}"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("bin/hello"), 0o555);
    assert_eq!(mode("greeting.txt"), 0o444);
    assert_eq!(mode("bin"), 0o555);

    let name = path.rsplit('/').next().unwrap();
    let meta = meta_of(&p.store(), name);
    assert!(meta["drv_hash"]
        .as_str()
        .unwrap()
        .starts_with(&format!("sha256:{}", &name[..32])));
    assert!(meta["output_hash"].as_str().unwrap().starts_with("sha256:"));
    assert!(p
        .store()
        .join(".pybake/logs")
        .join(format!("{name}.log"))
        .is_file());
}
