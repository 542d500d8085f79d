//! Failing steps, --keep-failed, --keep-going, -j, SIGKILL in mid-build, and concurrent realizes.

mod common;
use common::*;

use std::time::{Duration, Instant};

fn store_outputs(p: &Project) -> Vec<String> {
    match std::fs::read_dir(p.store()) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect(),
        Err(_) => vec![],
    }
}

fn failing_project() -> Project {
    let p = Project::new();
    p.recipe(
        "bad",
        r#"name = "bad"
version = "1"
steps = [
  "mkdir -p $out && echo partial > $out/partial",
  "echo compiling widget.c; echo 'widget.c:3: error: expected ;' >&2; exit 3",
  "echo never",
]
"#,
    );
    p.recipe(
        "after",
        "name = \"after\"\nversion = \"1\"\ndeps = [\"bad\"]\nsteps = [\"mkdir $out\"]\n",
    );
    p.recipe(
        "fine",
        "name = \"fine\"\nversion = \"1\"\nsteps = [\"mkdir $out\"]\n",
    );
    p
}

#[test]
fn failing_step_is_reported_and_adds_nothing() {
    let p = failing_project();
    let r = p.run(&["realize", "bad"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stdout.is_empty());
    let e = &r.stderr;
    assert!(
        e.contains("recipe `bad`: step 2/3 failed with exit code 3"),
        "{e}"
    );
    assert!(e.contains("exit 3"), "the step text: {e}");
    assert!(
        e.contains("widget.c:3: error: expected ;"),
        "the log's last lines: {e}"
    );
    let log_line = e
        .lines()
        .find(|l| l.contains("full log: "))
        .expect("log path");
    let log = log_line
        .split("full log: ")
        .nth(1)
        .unwrap()
        .trim_end_matches(" ---");
    assert!(std::fs::read_to_string(log)
        .unwrap()
        .contains("compiling widget.c"));
    assert!(
        store_outputs(&p).is_empty(),
        "nothing added: {:?}",
        store_outputs(&p)
    );
    let tmp: Vec<_> = std::fs::read_dir(p.store().join(".pybake/tmp"))
        .unwrap()
        .collect();
    assert!(tmp.is_empty(), "build directory removed");
}

#[test]
fn keep_failed_keeps_the_build_directory() {
    let p = failing_project();
    let r = p.run(&["realize", "--keep-failed", "bad"]);
    assert_eq!(r.code, 1);
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains("build directory kept at "))
        .expect(&r.stderr);
    let dir = line.split("kept at ").nth(1).unwrap().trim();
    assert!(
        std::path::Path::new(dir).join("build/work").is_dir(),
        "{dir}"
    );
    assert!(store_outputs(&p).is_empty());
}

#[test]
fn keep_going_builds_what_does_not_depend_on_the_failure() {
    let p = failing_project();
    let r = p.run(&[
        "realize",
        "--json",
        "-j",
        "1",
        "--keep-going",
        "bad",
        "after",
        "fine",
    ]);
    assert_eq!(r.code, 1);
    let mut s = statuses(&r.stdout);
    s.sort();
    assert_eq!(
        s,
        pairs(&[("after", "skipped"), ("bad", "failed"), ("fine", "built")])
    );

    let p = failing_project();
    let r = p.run(&["realize", "--json", "-j", "1", "bad", "fine"]);
    assert_eq!(r.code, 1);
    let s = statuses(&r.stdout);
    assert_eq!(
        s,
        pairs(&[("bad", "failed"), ("fine", "skipped")]),
        "stops at the first failure"
    );
}

#[test]
fn jobs_run_recipes_in_parallel() {
    // Each of the two recipes waits for the other to start: only a parallel run finishes both.
    let p = Project::new();
    let meet = tempfile::tempdir().unwrap();
    for (me, other) in [("left", "right"), ("right", "left")] {
        p.recipe(
            me,
            &format!(
                r#"name = "{me}"
version = "1"
steps = ["touch {dir}/{me}; i=0; while [ ! -e {dir}/{other} ]; do i=$((i+1)); [ $i -lt 300 ] || exit 1; sleep 0.1; done; mkdir $out"]
"#,
                dir = meet.path().display()
            ),
        );
    }
    let r = p.run(&["realize", "--sandbox", "off", "-j", "2", "left", "right"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.lines().count(), 2);
}

#[test]
fn sigkill_mid_step_leaves_no_store_path_and_next_realize_builds() {
    let p = Project::new();
    let marker = tempfile::tempdir().unwrap();
    let started = marker.path().join("started");
    p.recipe(
        "slow",
        &format!(
            r#"name = "slow"
version = "1"
steps = ["mkdir -p $out && echo half > $out/half", "touch {started}; [ -e {started}.again ] || sleep 60", "echo done > $out/done"]
"#,
            started = started.display()
        ),
    );
    let mut child = p
        .cmd(&["realize", "--sandbox", "off", "slow"])
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !started.exists() {
        assert!(t.elapsed() < Duration::from_secs(30), "step never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(store_outputs(&p).is_empty(), "{:?}", store_outputs(&p));

    std::fs::write(marker.path().join("started.again"), "").unwrap();
    let path = p.run(&["realize", "--sandbox", "off", "slow"]).ok().line();
    assert_eq!(
        std::fs::read_to_string(format!("{path}/done")).unwrap(),
        "done\n"
    );
    let leftovers: Vec<_> = std::fs::read_dir(p.store().join(".pybake/tmp"))
        .unwrap()
        .collect();
    assert!(
        leftovers.is_empty(),
        "stale build directory cleaned: {leftovers:?}"
    );
}

#[test]
fn concurrent_realizes_share_one_build() {
    let p = Project::new();
    p.recipe(
        "shared",
        "name = \"shared\"\nversion = \"1\"\nsteps = [\"sleep 1\", \"mkdir $out && date +%s%N > $out/stamp\"]\n",
    );
    p.recipe(
        "top",
        "name = \"top\"\nversion = \"1\"\ndeps = [\"shared\"]\nsteps = [\"mkdir $out\"]\n",
    );
    let a = p
        .cmd(&["realize", "--json", "shared"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let b = p
        .cmd(&["realize", "--json", "top"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ra = Run::from(a.wait_with_output().unwrap()).ok();
    let rb = Run::from(b.wait_with_output().unwrap()).ok();
    let all: Vec<(String, String)> = statuses(&ra.stdout)
        .into_iter()
        .chain(statuses(&rb.stdout))
        .filter(|(n, _)| n == "shared")
        .collect();
    let built = all.iter().filter(|(_, s)| s == "built").count();
    assert_eq!(built, 1, "shared is built exactly once: {all:?}");
    assert!(
        all.iter().all(|(_, s)| s == "built" || s == "cached"),
        "{all:?}"
    );
}
