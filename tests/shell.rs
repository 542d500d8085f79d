//! `pybake shell NAME [-- CMD...]`: NAME's build environment (sandbox, root, environment,
//! `$src`, dependencies) in a fresh or a kept build directory.

#![allow(clippy::disallowed_methods)] // tests may use std::fs; src uses fs-err (clippy.toml)

mod common;
use common::*;
use std::path::Path;

fn shell(p: &Project, args: &[&str]) -> Run {
    let mut all = vec!["shell"];
    all.extend(args);
    p.run(&all)
}

fn tmp_entries(p: &Project) -> Vec<String> {
    std::fs::read_dir(p.store().join(".pybake/tmp"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_command_runs_in_the_build_environment_with_sources_laid_out() {
    assert!(bwrap_works(), "bubblewrap works on this machine");
    let p = hello_project();
    let r = shell(
        &p,
        &["hello", "--", "sh", "-c", "echo $src; ls $src; pwd; id -u"],
    )
    .ok();
    assert_eq!(r.stdout, "/build/src\nhello.c\n/build/work\n1000\n");
    assert!(
        r.stderr.contains("build directory") && r.stderr.contains("removed on exit"),
        "{}",
        r.stderr
    );
    assert!(
        !tmp_entries(&p).iter().any(|e| e.starts_with("shell-")),
        "removed on exit: {:?}",
        tmp_entries(&p)
    );
}

#[test]
fn the_exit_status_of_the_command_is_pybakes() {
    let p = hello_project();
    assert_eq!(shell(&p, &["hello", "--", "sh", "-c", "exit 7"]).code, 7);
    assert_eq!(shell(&p, &["hello", "--", "true"]).code, 0);
}

#[test]
fn dependencies_are_realized_and_mounted_at_their_store_paths() {
    let p = hello_project();
    let r = shell(
        &p,
        &[
            "hello",
            "--",
            "sh",
            "-c",
            "echo $DEP_GREETING; ls $DEP_GREETING/bin; greet; echo $PATH",
        ],
    )
    .ok();
    let greeting = p.run(&["path", "greeting"]).ok().line();
    let name = Path::new(&greeting).file_name().unwrap().to_str().unwrap();
    assert!(Path::new(&greeting).join("bin/greet").is_file(), "realized");
    assert_eq!(
        r.stdout,
        format!("/pybake/store/{name}\ngreet\nhi\n/pybake/store/{name}/bin:/usr/bin:/bin\n")
    );
    // NAME itself is not built.
    let hello = p.run(&["path", "hello"]).ok().line();
    assert!(!Path::new(&hello).exists());
}

#[test]
fn keep_keeps_the_fresh_directory_after_the_shell() {
    let p = hello_project();
    let r = shell(
        &p,
        &[
            "--keep",
            "hello",
            "--",
            "sh",
            "-c",
            "echo made > $HOME/mark",
        ],
    )
    .ok();
    let kept: Vec<String> = tmp_entries(&p)
        .into_iter()
        .filter(|e| e.starts_with("shell-"))
        .collect();
    assert_eq!(kept.len(), 1, "{}", r.stderr);
    let dir = p.store().join(".pybake/tmp").join(&kept[0]);
    assert!(
        r.stderr.contains(&dir.display().to_string()),
        "{}",
        r.stderr
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("build/home/mark")).unwrap(),
        "made\n"
    );
    // A later realize does not take it for a leftover.
    p.run(&["realize", "greeting"]).ok();
    assert!(dir.join("build/home/mark").is_file());
}

#[test]
fn keep_failed_enters_the_kept_build_directory() {
    let p = Project::new();
    p.recipe(
        "bad",
        "name = \"bad\"\nversion = \"1\"\nsteps = [\"echo left > left-behind\", \"mkdir -p $out\", \"false\"]\n",
    );
    let r = p.run(&["realize", "--keep-failed", "bad"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let dir = r
        .stderr
        .lines()
        .find_map(|l| l.split("build directory kept at ").nth(1))
        .expect(&r.stderr)
        .trim()
        .to_string();
    let r = shell(
        &p,
        &[
            "bad",
            "--keep-failed",
            &dir,
            "--",
            "sh",
            "-c",
            "pwd; cat left-behind; ls $out",
        ],
    )
    .ok();
    assert_eq!(r.stdout, "/build/work\nleft\n");
    assert!(r.stderr.contains(&dir), "{}", r.stderr);
    assert!(
        Path::new(&dir).join("build/work/left-behind").is_file(),
        "still kept"
    );

    // Anything else is refused, naming what to pass.
    let elsewhere = tempfile::tempdir().unwrap();
    let r = shell(
        &p,
        &[
            "bad",
            "--keep-failed",
            elsewhere.path().to_str().unwrap(),
            "--",
            "true",
        ],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--keep-failed"), "{}", r.stderr);

    // A kept directory of an earlier derivation would give the old build in the new environment.
    p.recipe(
        "bad",
        "name = \"bad\"\nversion = \"1\"\nsteps = [\"echo left > left-behind\", \"true\"]\n",
    );
    let r = shell(&p, &["bad", "--keep-failed", &dir, "--", "true"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("was kept from a build of"),
        "{}",
        r.stderr
    );
}

#[test]
fn without_the_sandbox_the_shell_runs_in_the_build_directory_on_the_host() {
    let p = hello_project();
    let r = shell(
        &p,
        &[
            "--sandbox",
            "off",
            "hello",
            "--",
            "sh",
            "-c",
            "pwd; echo $src; ls $src; exit 5",
        ],
    );
    assert_eq!(r.code, 5, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    let tmp = p.store().canonicalize().unwrap().join(".pybake/tmp");
    let tmp = tmp.to_str().unwrap();
    assert_eq!(lines.len(), 3, "{}", r.stdout);
    assert!(
        lines[0].starts_with(tmp) && lines[0].ends_with("/build/work"),
        "{}",
        r.stdout
    );
    assert!(lines[1].ends_with("/build/src"), "{}", r.stdout);
    assert_eq!(lines[2], "hello.c");
}

#[test]
fn a_recipe_with_a_root_gets_no_shell_without_the_sandbox() {
    let p = Project::new();
    tiny_root(&p);
    p.recipe(
        "probe",
        "name = \"probe\"\nversion = \"1\"\nroot = \"tiny-root\"\nsteps = [\"mkdir -p $out\"]\n",
    );
    let r = shell(&p, &["--sandbox", "off", "probe", "--", "true"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("`probe` run on a root file system"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_recipe_with_a_root_gets_its_shell_on_the_root() {
    let p = Project::new();
    tiny_root(&p);
    p.recipe(
        "probe",
        "name = \"probe\"\nversion = \"1\"\nroot = \"tiny-root\"\nsteps = [\"mkdir -p $out\"]\n",
    );
    let r = shell(
        &p,
        &[
            "probe",
            "--",
            "sh",
            "-c",
            "if [ -e /usr/bin/bwrap ]; then echo visible; else echo absent; fi; id -un",
        ],
    )
    .ok();
    assert_eq!(r.stdout, "absent\npybake\n");
}

#[test]
fn without_a_terminal_the_shell_reads_commands_from_stdin() {
    use std::io::Write;
    let p = hello_project();
    let mut c = p.cmd(&["shell", "hello"]);
    c.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"ls $src\nexit 3\n")
        .unwrap();
    let r = Run::from(child.wait_with_output().unwrap());
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert_eq!(r.stdout, "hello.c\n");
}

#[test]
fn an_interactive_shell_gets_the_terminal() {
    // `script` runs pybake on a pseudo-terminal, as a user's terminal would.
    let p = hello_project();
    let bin = env!("CARGO_BIN_EXE_pybake");
    let mut c = std::process::Command::new("script");
    c.args(["-qec", &format!("{bin} shell hello"), "/dev/null"])
        .current_dir(p.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("PYBAKE_") {
            c.env_remove(k);
        }
    }
    let mut child = c.spawn().expect("script (util-linux) is installed");
    // Typed ahead: the terminal holds the line until the shell reads it. Input stays open until
    // the shell has exited (`script` would end the session at its end).
    let mut stdin = child.stdin.take().unwrap();
    use std::io::Write;
    stdin
        .write_all(
            b"[ -t 0 ] && echo on-a-$((1+1))-terminal; \
              { : > /dev/tty; } 2>/dev/null && echo controlling-$((2+2)); \
              echo \"uid=$(id -u)\"; exit 4\n",
        )
        .unwrap();
    let r = Run::from(child.wait_with_output().unwrap());
    drop(stdin);
    assert_eq!(r.code, 4, "{}\n{}", r.stdout, r.stderr);
    // The terminal echoes what is typed: look for what only the commands print.
    assert!(r.stdout.contains("on-a-2-terminal"), "{}", r.stdout);
    assert!(r.stdout.contains("uid=1000"), "{}", r.stdout);
    // Not in a session of its own: the terminal is the shell's controlling terminal, so job
    // control and Ctrl-C work.
    assert!(r.stdout.contains("controlling-4"), "{}", r.stdout);
}
