//! Helpers for end-to-end tests: a temporary project with recipes, and the real binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("recipes")).expect("recipes dir");
        Project { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn store(&self) -> PathBuf {
        self.path().join("cache")
    }

    /// Writes `recipes/<name>.toml`.
    pub fn recipe(&self, name: &str, text: &str) -> &Self {
        self.file(&format!("recipes/{name}.toml"), text)
    }

    pub fn file(&self, rel: &str, text: &str) -> &Self {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        self
    }

    /// The binary with the project as working directory and no PYBAKE_* variables from outside.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_pybake"));
        c.current_dir(self.path()).args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("PYBAKE_") {
                c.env_remove(k);
            }
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.cmd(args).output().expect("run pybake"))
    }

    /// [`Project::run`] with the sandbox made by `sandbox_impl` (one of [`SANDBOX_IMPLS`]).
    pub fn run_with(&self, sandbox_impl: &str, args: &[&str]) -> Run {
        let mut c = self.cmd(args);
        c.env("PYBAKE_SANDBOX_IMPL", sandbox_impl);
        Run::from(c.output().expect("run pybake"))
    }

    /// `realize --json NAMES`, asserting success; returns (name, status) pairs.
    pub fn realize_statuses(&self, names: &[&str]) -> Vec<(String, String)> {
        let mut args = vec!["realize", "--json"];
        args.extend(names);
        let r = self.run(&args);
        assert_eq!(r.code, 0, "realize failed: {}", r.stderr);
        statuses(&r.stdout)
    }
}

/// The metadata JSON of the output named by its store path (as `realize` prints it).
pub fn meta_of(store: &Path, store_path: &str) -> serde_json::Value {
    let name = store_path.rsplit('/').next().unwrap();
    let bytes = std::fs::read(store.join(".pybake/meta").join(format!("{name}.json"))).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

pub fn statuses(json: &str) -> Vec<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(json).expect("json summary");
    v["results"]
        .as_array()
        .expect("results array")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

pub fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn line(&self) -> String {
        self.stdout.trim().to_string()
    }
}

/// Whether bubblewrap works on this machine (the sandboxed tests need it).
/// What can make a step's sandbox (`PYBAKE_SANDBOX_IMPL`): pybake itself (as root, the
/// default) and bubblewrap. Sandbox tests run against both.
pub const SANDBOX_IMPLS: [&str; 2] = ["pybake", "bubblewrap"];

/// The first process of a step's sandbox under `sandbox_impl`, as `/proc/1/comm` names it:
/// proof that the implementation asked for is the one that ran.
pub fn sandbox_init(sandbox_impl: &str) -> &'static str {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the sandbox tests run as root, as CI does (pybake's own sandbox is root's)"
    );
    match sandbox_impl {
        "pybake" => "pybake\n",
        _ => "bwrap\n",
    }
}

pub fn bwrap_works() -> bool {
    Command::new("bwrap")
        .args([
            "--unshare-all",
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "true",
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A two-recipe project: `hello` (a tiny C program) depending on `greeting` (a shell script).
pub fn hello_project() -> Project {
    let p = Project::new();
    p.file(
        "recipes/hello-src/hello.c",
        "#include <stdio.h>\nint main(void){puts(\"hello\");return 0;}\n",
    );
    p.recipe(
        "greeting",
        r#"name = "greeting"
version = "1"
steps = [
  "mkdir -p $out/bin",
  "printf '#!/bin/sh\\necho %s\\n' \"$GREETING\" > $out/bin/greet && chmod +x $out/bin/greet",
]
[env]
GREETING = "hi"
"#,
    );
    p.recipe(
        "hello",
        r#"name = "hello"
version = "1.0"
deps = ["greeting"]
steps = [
  "cc -O2 -o hello $src/hello.c",
  "mkdir -p $out/bin && cp hello $out/bin/",
  "greet > $out/greeting.txt",
]
[[sources]]
path = "hello-src"
"#,
    );
    p
}

/// Adds `tiny-root`: a root file system with no steps, made of the host's static busybox
/// (`/bin/busybox`, from the Debian package busybox-static) and a build user, so that tests can
/// build on a root without downloading anything.
pub fn tiny_root(p: &Project) {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "the tests need a static busybox at /bin/busybox (scripts/install-deps installs busybox-static)"
    );
    let root = p.path().join("recipes/tiny-root-src");
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::copy(busybox, root.join("usr/bin/busybox")).unwrap();
    let list = Command::new(busybox).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", root.join("usr/bin").join(applet)).unwrap();
        }
    }
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\npybake:x:1000:1000::/build/home:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\npybake:x:1000:\n").unwrap();
    p.recipe(
        "tiny-root",
        "name = \"tiny-root\"\nversion = \"1\"\n[[sources]]\npath = \"tiny-root-src\"\n",
    );
}
