//! Failing steps, --keep-failed, --keep-going, -j, SIGKILL in mid-build, and concurrent realizes.

#![allow(clippy::disallowed_methods)] // tests may use std::fs; src uses fs-err (clippy.toml)

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
    let gate = tempfile::tempdir().unwrap();
    let (started, go) = (gate.path().join("started"), gate.path().join("go"));
    // `shared` waits until the test opens the gate, so the two runs overlap for certain.
    p.recipe(
        "shared",
        &format!(
            "name = \"shared\"\nversion = \"1\"\nsteps = [\"touch {}; while [ ! -e {} ]; do sleep 0.02; done\", \"mkdir $out && date +%s%N > $out/stamp\"]\n",
            started.display(),
            go.display()
        ),
    );
    p.recipe(
        "top",
        "name = \"top\"\nversion = \"1\"\ndeps = [\"shared\"]\nsteps = [\"mkdir $out\"]\n",
    );
    let spawn = |target: &str| {
        p.cmd(&["realize", "--sandbox", "off", "--json", target])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = spawn("shared");
    let t = Instant::now();
    while !started.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "shared never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The second run reports `building shared` before it waits for the output's lock.
    let mut b = spawn("top");
    let mut b_err = std::io::BufReader::new(b.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut b_err, &mut line).unwrap();
        assert!(n > 0, "the second run ended early: {seen}");
        seen.push_str(&line);
        if line.contains("building shared") {
            break;
        }
    }
    // Both runs now want `shared`: one builds it, the other waits for its lock.
    std::fs::write(&go, "").unwrap();
    let ra = Run::from(a.wait_with_output().unwrap()).ok();
    let rest = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut b_err, &mut s).unwrap();
        s
    });
    let rb = Run::from(b.wait_with_output().unwrap());
    seen.push_str(&rest.join().unwrap());
    assert_eq!(rb.code, 0, "{seen}");
    let all: Vec<(String, String)> = statuses(&ra.stdout)
        .into_iter()
        .chain(statuses(&rb.stdout))
        .filter(|(n, _)| n == "shared")
        .collect();
    assert_eq!(
        all,
        pairs(&[("shared", "built"), ("shared", "cached")]),
        "shared is built once; the run that waited finds it in the store"
    );
}

/// Processes whose command line contains `tag`, other than ones we know are unrelated.
fn processes_with(tag: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .chars()
            .all(|c| c.is_ascii_digit())
        {
            continue;
        }
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        // A process that is already dead (a zombie) has an empty cmdline.
        if cmd.contains(tag) {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            found.push(format!("{cmd} [stat: {stat}]"));
        }
    }
    found
}

fn wait_until_gone(tag: &str) -> Vec<String> {
    let t = Instant::now();
    loop {
        let left = processes_with(tag);
        // Generous: the machine may be loaded; a regression leaves them running for minutes.
        if left.is_empty() || t.elapsed() > Duration::from_secs(30) {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A recipe whose step starts a tree of processes: a background child, a grandchild that
/// outlives its parent shell, and one in a session of its own, all with `tag` in their command
/// lines; it touches `started` once they run.
fn process_tree_project(tag: &str, started: &std::path::Path) -> Project {
    let p = Project::new();
    p.recipe(
        "tree",
        &format!(
            r#"name = "tree"
version = "1"
steps = [
  "mkdir -p $out",
  "sh -c 'sleep {tag}1' & sh -c '(sleep {tag}2 &) ; sleep {tag}3' & setsid sh -c 'sleep {tag}4' & sleep 0.2; touch {started}; wait",
]
"#,
            started = started.display()
        ),
    );
    p
}

#[test]
fn killing_pybake_kills_every_process_of_an_unsandboxed_step() {
    let signals = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGKILL];
    let cases = SUPERVISORS
        .iter()
        .flat_map(|s| signals.iter().map(move |sig| (*s, *sig)));
    for (i, (supervisor, sig)) in cases.enumerate() {
        // A tag no other test or process uses: `sleep` takes it as a long duration.
        let tag = format!("9{}{}7", std::process::id() % 1000, i);
        let marker = tempfile::tempdir().unwrap();
        let started = marker.path().join("started");
        let p = process_tree_project(&tag, &started);
        let mut cmd = supervised(p.cmd(&["realize", "--sandbox", "off", "tree"]), supervisor);
        // pybake dies of these signals by their default action, but a signal ignored where the
        // tests were started (`nohup`, or `&` without job control) stays ignored in pybake.
        use std::os::unix::process::CommandExt;
        unsafe {
            cmd.pre_exec(|| {
                for s in [libc::SIGINT, libc::SIGHUP, libc::SIGTERM] {
                    libc::signal(s, libc::SIG_DFL);
                }
                Ok(())
            });
        }
        let mut child = cmd.stderr(std::process::Stdio::null()).spawn().unwrap();
        let t = Instant::now();
        while !started.exists() {
            assert!(t.elapsed() < Duration::from_secs(30), "step never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!processes_with(&tag).is_empty(), "the step's processes run");
        unsafe { libc::kill(child.id() as i32, sig) };
        let t = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if t.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                panic!("{supervisor:?} supervisor: pybake still runs 30 s after signal {sig}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let left = wait_until_gone(&tag);
        assert!(
            left.is_empty(),
            "{supervisor:?} supervisor, signal {sig}: processes left running: {left:?}"
        );
    }
}

/// The two ways an unsandboxed step is supervised: as root a PID namespace of its own (the
/// default), otherwise a supervisor process (forced here by the variable, so that root tests
/// both).
const SUPERVISORS: [Option<&str>; 2] = [None, Some("process")];

fn supervised(mut c: std::process::Command, supervisor: Option<&str>) -> std::process::Command {
    if let Some(s) = supervisor {
        c.env("PYBAKE_SUPERVISOR", s);
    }
    c
}

#[test]
fn a_step_that_leaves_processes_behind_has_them_killed_when_it_ends() {
    for (i, supervisor) in SUPERVISORS.into_iter().enumerate() {
        let tag = format!("8{}{i}7", std::process::id() % 1000);
        let p = Project::new();
        p.recipe(
            "daemon",
            &format!(
                "name = \"daemon\"\nversion = \"1\"\nsteps = [\"sleep {tag} > /dev/null 2>&1 &\", \"setsid sleep {tag}1 > /dev/null 2>&1 &\", \"mkdir -p $out\"]\n"
            ),
        );
        let mut c = supervised(
            p.cmd(&["realize", "--sandbox", "off", "daemon"]),
            supervisor,
        );
        Run::from(c.output().unwrap()).ok();
        let left = wait_until_gone(&tag);
        assert!(
            left.is_empty(),
            "{supervisor:?} supervisor: processes left running: {left:?}"
        );
    }
}

#[test]
fn a_step_killed_by_a_signal_is_reported_as_such() {
    let p = Project::new();
    p.recipe(
        "selfkill",
        "name = \"selfkill\"\nversion = \"1\"\nsteps = [\"kill -9 $$\"]\n",
    );
    // The supervisor of an unsandboxed step dies the way the step did.
    for supervisor in SUPERVISORS {
        let mut c = supervised(
            p.cmd(&["realize", "--sandbox", "off", "selfkill"]),
            supervisor,
        );
        let r = Run::from(c.output().unwrap());
        assert_eq!(r.code, 1, "{supervisor:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("failed with signal 9, SIGKILL"),
            "{supervisor:?}: {}",
            r.stderr
        );
    }
    // pybake's own sandbox reports the signal itself.
    let r = p.run_with("pybake", &["realize", "--sandbox", "on", "selfkill"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("failed with signal 9, SIGKILL"),
        "{}",
        r.stderr
    );
    // bubblewrap, like a shell, reports a killed process as 128 + the signal: named too.
    assert!(bwrap_works(), "bubblewrap must work on this machine");
    let r = p.run_with("bubblewrap", &["realize", "--sandbox", "on", "selfkill"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "exit code 137 (128 + 9: a process of the step was killed by signal 9, SIGKILL"
        ),
        "{}",
        r.stderr
    );
}

#[test]
fn a_closed_stderr_neither_hangs_nor_crashes_a_build() {
    let p = hello_project();
    // Both pipes closed before pybake writes anything, as `pybake realize 2>&1 | head -0` does.
    let mut child = p
        .cmd(&["realize", "--sandbox", "off", "hello"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    drop(child.stderr.take());
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("pybake hangs when its output is closed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_ne!(status.code(), Some(101), "a panic: {status:?}");
    // The build itself went through: the output is in the store.
    let r = p.run(&["realize", "--json", "hello"]).ok();
    assert!(
        statuses(&r.stdout).iter().all(|(_, s)| s == "cached"),
        "{}",
        r.stdout
    );
}
