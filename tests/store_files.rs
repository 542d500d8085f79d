//! What the store leaves on disk: orphaned temporaries removed once nobody holds them, modes that
//! let other users read a store, and outputs that share no inode with files outside them.

#![allow(clippy::disallowed_methods)] // tests may use std::fs; src uses fs-err (clippy.toml)

mod common;
use common::*;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

fn tmp_entries(p: &Project) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p.store().join(".pybake/tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

fn wait_for(path: &Path) {
    let t = Instant::now();
    while !path.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{path:?} never appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A recipe whose second step signals `started` and then waits until `release` exists.
fn waiting_recipe(version: &str, started: &Path, release: &Path) -> String {
    format!(
        r#"name = "slow"
version = "{version}"
steps = [
  "mkdir -p $out && head -c 100000 /dev/zero > $out/half",
  "touch {started}; while [ ! -e {release} ]; do sleep 0.05; done",
  "echo done > $out/done",
]
"#,
        started = started.display(),
        release = release.display(),
    )
}

/// Starts `realize --sandbox off slow` and returns once its waiting step runs.
fn start_slow(p: &Project, version: &str, markers: &Path) -> (Child, PathBuf) {
    let started = markers.join(format!("started-{version}"));
    let release = markers.join("release");
    p.recipe("slow", &waiting_recipe(version, &started, &release));
    let child = p
        .cmd(&["realize", "--sandbox", "off", "slow"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&started);
    (child, release)
}

#[test]
fn build_dir_of_a_killed_build_whose_recipe_changed_is_removed() {
    let p = Project::new();
    let markers = tempfile::tempdir().unwrap();
    let (mut child, release) = start_slow(&p, "1", markers.path());
    child.kill().unwrap(); // SIGKILL: nothing of pybake's runs to clean up
    child.wait().unwrap();
    let orphans = tmp_entries(&p);
    assert_eq!(
        orphans.len(),
        1,
        "the killed build's directory: {orphans:?}"
    );
    assert!(orphans[0].starts_with("slot-"), "{orphans:?}");

    // The recipe changes, so no build of the old store name will ever clean it up.
    std::fs::write(&release, "").unwrap();
    p.recipe(
        "slow",
        "name = \"slow\"\nversion = \"2\"\nsteps = [\"mkdir $out\"]\n",
    );
    p.run(&["realize", "--sandbox", "off", "slow"]).ok();
    assert_eq!(tmp_entries(&p), Vec::<String>::new());
}

#[test]
fn a_running_build_keeps_its_directory_during_another_realize() {
    let p = Project::new();
    p.recipe(
        "quick",
        "name = \"quick\"\nversion = \"1\"\nsteps = [\"mkdir $out\"]\n",
    );
    let markers = tempfile::tempdir().unwrap();
    let (child, release) = start_slow(&p, "1", markers.path());
    let running = tmp_entries(&p);
    assert_eq!(running.len(), 1, "{running:?}");

    p.run(&["realize", "--sandbox", "off", "quick"]).ok();
    assert_eq!(tmp_entries(&p), running, "the live build's directory stays");

    std::fs::write(&release, "").unwrap();
    let r = Run::from(child.wait_with_output().unwrap()).ok();
    assert_eq!(
        std::fs::read_to_string(Path::new(&r.line()).join("done")).unwrap(),
        "done\n"
    );
    assert_eq!(tmp_entries(&p), Vec::<String>::new());
}

#[test]
fn a_kept_failed_build_survives_other_realizes() {
    let p = Project::new();
    p.recipe(
        "bad",
        "name = \"bad\"\nversion = \"1\"\nsteps = [\"mkdir $out\", \"exit 3\"]\n",
    );
    p.recipe(
        "quick",
        "name = \"quick\"\nversion = \"1\"\nsteps = [\"mkdir $out\"]\n",
    );
    let r = p.run(&["realize", "--sandbox", "off", "--keep-failed", "bad"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let kept = tmp_entries(&p);
    assert_eq!(kept.len(), 1, "{kept:?}");
    p.run(&["realize", "--sandbox", "off", "quick"]).ok();
    assert_eq!(tmp_entries(&p), kept, "--keep-failed asked to keep it");
}

#[test]
fn stale_partial_downloads_and_metadata_temps_go_locked_ones_stay() {
    let p = Project::new();
    p.recipe(
        "quick",
        "name = \"quick\"\nversion = \"1\"\nsteps = [\"mkdir $out\"]\n",
    );
    p.run(&["realize", "--sandbox", "off", "quick"]).ok();
    let (tmp, meta) = (
        p.store().join(".pybake/tmp"),
        p.store().join(".pybake/meta"),
    );
    let stale = [
        tmp.join("fetch-AbC123"),
        tmp.join("import-XyZ789"),
        tmp.join(".tmpQwErTy"),
    ];
    for f in &stale {
        std::fs::write(f, "partial").unwrap();
    }
    // A live writer holds a lock on its temp file, as pybake's downloads and metadata writes do.
    let live: Vec<(PathBuf, std::fs::File)> = [tmp.join("fetch-live12"), tmp.join(".tmpLive12")]
        .into_iter()
        .map(|path| {
            std::fs::write(&path, "in progress").unwrap();
            let f = std::fs::File::open(&path).unwrap();
            f.lock().unwrap();
            (path, f)
        })
        .collect();
    // Something pybake does not know is left alone.
    std::fs::write(tmp.join("notes.txt"), "mine").unwrap();

    let r = p.run(&["realize", "--sandbox", "off", "quick"]).ok();
    for f in &stale {
        assert!(!f.exists(), "{f:?} should be removed\n{}", r.stderr);
    }
    for (path, _) in &live {
        assert!(path.exists(), "{path:?} is held by a live writer");
    }
    assert!(tmp.join("notes.txt").exists());

    // Where earlier versions wrote metadata temporaries: `pybake gc` looks there.
    let old = meta.join(".tmpOlder1");
    std::fs::write(&old, "partial").unwrap();
    p.run(&["realize", "--sandbox", "off", "quick"]).ok();
    assert!(old.exists(), "a realize lists .pybake/tmp only");
    p.run(&["gc"]).ok();
    assert!(!old.exists(), "gc removes it");
}

#[test]
fn metadata_logs_and_store_directories_are_readable_by_others() {
    let p = Project::new();
    p.recipe(
        "tool",
        "name = \"tool\"\nversion = \"1\"\nsteps = [\"mkdir -p $out/bin && echo x > $out/bin/t && chmod 700 $out/bin/t && echo y > $out/data\"]\n",
    );
    // A restrictive umask (as root's often is) must not make the store private.
    let mut cmd = std::process::Command::new("sh");
    cmd.current_dir(p.path())
        .arg("-c")
        .arg("umask 077 && exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_pybake"))
        .args(["realize", "--sandbox", "off", "tool"]);
    let r = Run::from(cmd.output().unwrap()).ok();
    let out = PathBuf::from(r.line());
    let name = out.file_name().unwrap().to_str().unwrap().to_string();
    let store = p.store();

    for dir in [
        "",
        ".pybake",
        ".pybake/meta",
        ".pybake/logs",
        ".pybake/sources",
    ] {
        assert_eq!(mode(&store.join(dir)), 0o755, "store directory `{dir}`");
    }
    assert_eq!(
        mode(&store.join(format!(".pybake/meta/{name}.json"))),
        0o644
    );
    assert_eq!(mode(&store.join(format!(".pybake/logs/{name}.log"))), 0o644);
    assert_eq!(mode(&out), 0o555);
    assert_eq!(mode(&out.join("bin")), 0o555);
    assert_eq!(mode(&out.join("bin/t")), 0o555);
    assert_eq!(mode(&out.join("data")), 0o444);
}

#[test]
fn a_host_file_hardlinked_into_out_is_copied_and_left_alone() {
    let p = Project::new();
    let host = tempfile::tempdir().unwrap();
    let file = host.path().join("config.txt");
    std::fs::write(&file, "host v1\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    p.recipe(
        "linked",
        &format!(
            r#"name = "linked"
version = "1"
steps = [
  "mkdir -p $out/a $out/b",
  "ln {file} $out/a/config.txt && ln $out/a/config.txt $out/b/config.txt",
  "echo inside > $out/a/own && ln $out/a/own $out/b/own",
]
"#,
            file = file.display()
        ),
    );
    let out = PathBuf::from(
        p.run(&["realize", "--sandbox", "off", "linked"])
            .ok()
            .line(),
    );

    assert_eq!(mode(&file), 0o640, "the host file keeps its mode");
    assert_eq!(std::fs::metadata(&file).unwrap().nlink(), 1);
    let host_ino = std::fs::metadata(&file).unwrap().ino();
    let ino = |rel: &str| std::fs::metadata(out.join(rel)).unwrap().ino();
    assert_ne!(ino("a/config.txt"), host_ino);
    assert_ne!(ino("b/config.txt"), host_ino);
    assert_eq!(mode(&out.join("a/config.txt")), 0o444);

    std::fs::write(&file, "host v2\n").unwrap();
    for rel in ["a/config.txt", "b/config.txt"] {
        assert_eq!(std::fs::read_to_string(out.join(rel)).unwrap(), "host v1\n");
    }
    assert_eq!(
        ino("a/own"),
        ino("b/own"),
        "links inside the output may stay"
    );
    let meta = meta_of(&p.store(), out.to_str().unwrap());
    let hashed = p
        .run(&["hash", out.to_str().unwrap()])
        .ok()
        .line()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(meta["output_hash"].as_str().unwrap(), hashed);
}
