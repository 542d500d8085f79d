//! The build environment: cleared, rebuilt from a documented list, sandboxed when possible.

#![allow(clippy::disallowed_methods)] // tests may use std::fs; src uses fs-err (clippy.toml)

mod common;
use common::*;

fn env_project() -> Project {
    let p = hello_project();
    p.recipe(
        "probe",
        r#"name = "probe"
version = "1"
deps = ["greeting"]
steps = [
  "mkdir -p $out",
  "env | sort > $out/env",
  "pwd > $out/pwd",
  "echo $DEP_GREETING > $out/dep-path",
  "if touch $DEP_GREETING/intruder 2>/dev/null; then echo writable; else echo read-only; fi > $out/dep-store",
  "if python3 -c 'import socket,sys; socket.create_connection((\"127.0.0.1\", int(sys.argv[1])), 2)' $PORT 2>/dev/null; then echo reachable; else echo isolated; fi > $out/net",
]
[env]
PORT = "@PORT@"
"#,
    );
    p
}

fn read(path: &str, f: &str) -> String {
    std::fs::read_to_string(format!("{path}/{f}")).unwrap()
}

/// Realizes `probe` with a host variable exported and a loopback listener open.
fn probe(sandbox: &str, bwrap: Option<&str>, sandbox_impl: &str) -> (Project, String, Run) {
    let p = env_project();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let text = std::fs::read_to_string(p.path().join("recipes/probe.toml")).unwrap();
    p.recipe("probe", &text.replace("@PORT@", &port));
    let mut cmd = p.cmd(&["realize", "--sandbox", sandbox, "probe"]);
    cmd.env("PYBAKE_TEST_SECRET", "leaked")
        .env("CFLAGS", "-Dleaked")
        .env("PYBAKE_SANDBOX_IMPL", sandbox_impl);
    if let Some(b) = bwrap {
        cmd.env("PYBAKE_BWRAP", b);
    }
    let r = Run::from(cmd.output().unwrap());
    let path = r.line();
    (p, path, r)
}

fn assert_documented_env(env: &str) {
    let names: Vec<&str> = env.lines().map(|l| l.split('=').next().unwrap()).collect();
    for n in &names {
        assert!(
            [
                "DEP_GREETING",
                "HOME",
                "LC_ALL",
                "PATH",
                "PORT",
                "PWD",
                "PYBAKE_JOBS",
                "SOURCE_DATE_EPOCH",
                "TMPDIR",
                "TZ",
                "out",
                "src",
                "SHLVL",
                "OLDPWD",
                "_"
            ]
            .contains(n),
            "unexpected variable {n} in the build environment:\n{env}"
        );
    }
    assert!(!env.contains("leaked"), "{env}");
    assert!(
        env.contains("TZ=UTC\n")
            && env.contains("LC_ALL=C\n")
            && env.contains("SOURCE_DATE_EPOCH=315532800\n"),
        "{env}"
    );
}

#[test]
fn sandboxed_build_sees_canonical_paths_no_network_and_a_read_only_store() {
    for sandbox_impl in SANDBOX_IMPLS {
        sees_canonical_paths_no_network_and_a_read_only_store(sandbox_impl);
    }
}

fn sees_canonical_paths_no_network_and_a_read_only_store(sandbox_impl: &str) {
    assert!(
        bwrap_works(),
        "bubblewrap must work on this machine (scripts/install-deps installs it)"
    );
    let (p, path, r) = probe("on", None, sandbox_impl);
    assert_eq!(r.code, 0, "{sandbox_impl}: {}", r.stderr);
    assert!(
        !r.stderr.contains("without network isolation"),
        "{}",
        r.stderr
    );
    let env = read(&path, "env");
    assert_documented_env(&env);
    let name = path.rsplit('/').next().unwrap();
    assert!(
        env.contains(&format!("out=/pybake/store/{name}\n")),
        "{env}"
    );
    assert!(
        env.contains("src=/build/src\n") && env.contains("HOME=/build/home\n"),
        "{env}"
    );
    assert!(read(&path, "dep-path").starts_with("/pybake/store/"));
    assert!(
        env.contains("PATH=/pybake/store/") && env.contains("-greeting-1/bin:/usr/bin:/bin\n"),
        "{env}"
    );
    assert_eq!(read(&path, "pwd"), "/build/work\n");
    assert_eq!(read(&path, "net"), "isolated\n");
    assert_eq!(read(&path, "dep-store"), "read-only\n");

    // Reference scanning: the output mentions greeting's path, so it references it.
    let meta = meta_of(&p.store(), name);
    let refs = meta["references"].as_array().unwrap();
    assert_eq!(refs.len(), 1, "{meta}");
    assert!(refs[0].as_str().unwrap().ends_with("-greeting-1"));
    assert_eq!(meta["sandboxed"], true);
    assert!(meta["host_paths"].as_object().unwrap().is_empty(), "{meta}");
}

#[test]
fn unsandboxed_build_warns_and_records_host_paths() {
    let (p, path, r) = probe("auto", Some("/nonexistent/bwrap"), "pybake");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stderr.matches("without network isolation").count(),
        1,
        "warned once: {}",
        r.stderr
    );
    let env = read(&path, "env");
    assert_documented_env(&env);
    assert_eq!(
        read(&path, "net"),
        "reachable\n",
        "no isolation without bwrap"
    );

    let name = path.rsplit('/').next().unwrap();
    let meta = meta_of(&p.store(), name);
    assert_eq!(meta["sandboxed"], false);
    let host = meta["host_paths"].as_object().unwrap();
    assert!(!host.is_empty(), "host-specific paths recorded: {meta}");
    assert!(
        meta["references"][0]
            .as_str()
            .unwrap()
            .ends_with("-greeting-1"),
        "{meta}"
    );
}

#[test]
fn sandbox_on_fails_clearly_without_bwrap() {
    let (_p, _path, r) = probe("on", Some("/nonexistent/bwrap"), "pybake");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("bubblewrap"), "{}", r.stderr);
}

#[test]
fn sources_have_the_fixed_mtime_whenever_they_were_unpacked() {
    let p = hello_project();
    p.recipe(
        "mtimes",
        "name = \"mtimes\"\nversion = \"1\"\nsteps = [\"mkdir -p $out && stat -c '%Y %n' $src $src/hello.c > $out/mtimes\"]\n[[sources]]\npath = \"hello-src\"\n",
    );
    let path = p
        .run(&["realize", "--sandbox", "off", "mtimes"])
        .ok()
        .line();
    let text = std::fs::read_to_string(format!("{path}/mtimes")).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.lines().all(|l| l.starts_with("315532800 ")), "{text}");
}

/// A step that looks for ways out: host secrets, host sysctls, capabilities, user namespaces.
fn escape_probe() -> Project {
    let p = Project::new();
    p.recipe(
        "escape",
        r#"name = "escape"
version = "1"
steps = [
  "mkdir -p $out",
  "if cat /etc/shadow > /dev/null 2>&1; then echo readable; else echo unreadable; fi > $out/shadow",
  "if echo 1 > /proc/sys/vm/drop_caches 2>/dev/null; then echo written; else echo refused; fi > $out/sysctl",
  "grep ^CapEff /proc/self/status > $out/caps",
  "id -u > $out/uid; id -g > $out/gid; id -un > $out/user",
  "ls /etc > $out/etc",
  "if unshare -U true 2>/dev/null; then echo created; else echo refused; fi > $out/userns",
  "touch $out/owned-by-step",
  "cat /proc/1/comm > $out/init",
  "python3 -c 'import socket; s = socket.create_server((\"127.0.0.1\", 0)); socket.create_connection(s.getsockname()); print(\"up\")' > $out/loopback",
]
"#,
    );
    p
}

#[test]
fn a_sandboxed_step_is_unprivileged_and_sees_no_host_secrets() {
    assert!(
        bwrap_works(),
        "bubblewrap must work on this machine (scripts/install-deps installs it)"
    );
    for sandbox_impl in SANDBOX_IMPLS {
        let p = escape_probe();
        let path = p
            .run_with(sandbox_impl, &["realize", "--sandbox", "on", "escape"])
            .ok()
            .line();
        assert_eq!(read(&path, "init"), sandbox_init(sandbox_impl));
        assert_eq!(read(&path, "loopback"), "up\n", "a loopback of its own, up");
        assert_eq!(read(&path, "shadow"), "unreadable\n");
        assert_eq!(read(&path, "sysctl"), "refused\n");
        assert_eq!(read(&path, "caps"), "CapEff:\t0000000000000000\n");
        assert_eq!(read(&path, "uid"), "1000\n");
        assert_eq!(read(&path, "gid"), "1000\n");
        assert_eq!(read(&path, "user"), "pybake\n");
        assert_eq!(read(&path, "userns"), "refused\n");
        // Only pybake's own files and the few host files a tool chain reads.
        let etc: Vec<String> = read(&path, "etc").lines().map(String::from).collect();
        let allowed = [
            "alternatives",
            "group",
            "hosts",
            "ld.so.cache",
            "ld.so.conf",
            "ld.so.conf.d",
            "passwd",
        ];
        assert!(etc.iter().all(|e| allowed.contains(&e.as_str())), "{etc:?}");
        assert!(etc.contains(&"passwd".to_string()), "{etc:?}");
        // Stored outputs belong to whoever runs pybake, whoever the step ran as.
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(format!("{path}/owned-by-step")).unwrap();
        assert_eq!(meta.uid(), unsafe { libc::geteuid() });
    }
}

#[test]
fn as_root_a_step_runs_as_the_unprivileged_build_user_on_the_host() {
    // The host uid is only visible from outside: a failed build's kept directory holds what
    // the step wrote, owned by the user it ran as.
    assert!(bwrap_works(), "bubblewrap must work on this machine");
    let p = Project::new();
    p.recipe(
        "fails",
        "name = \"fails\"\nversion = \"1\"\nsteps = [\"touch /build/work/made-by-step\", \"false\"]\n",
    );
    for sandbox_impl in SANDBOX_IMPLS {
        let r = p.run_with(
            sandbox_impl,
            &["realize", "--sandbox", "on", "--keep-failed", "fails"],
        );
        assert_eq!(r.code, 1, "{}", r.stderr);
        let kept = r
            .stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix("build directory kept at "))
            .expect("kept directory named")
            .to_string();
        use std::os::unix::fs::MetadataExt;
        let owner = std::fs::metadata(format!("{kept}/build/work/made-by-step"))
            .unwrap()
            .uid();
        let me = unsafe { libc::geteuid() };
        if me == 0 {
            assert_eq!(
                owner, 30000,
                "root's steps run as the build user, uid 30000"
            );
        } else {
            assert_eq!(owner, me, "a user's steps run as that user");
        }
    }
}

/// Builds reuse build directories (docs/store.md), so a build must not see what an earlier one
/// left in its `$HOME`, `$TMPDIR`, work directory, `$src` or store view, nor a mode it changed.
#[test]
fn a_build_sees_nothing_an_earlier_build_left_in_its_directory() {
    for (sandbox, sandbox_impl) in [("off", "pybake"), ("on", "pybake"), ("on", "bubblewrap")] {
        let p = Project::new();
        p.recipe(
            "dirty",
            r#"name = "dirty"
version = "1"
steps = [
  "mkdir -p $out && stat -c %a $HOME $TMPDIR . $src > $out/modes",
  "echo x > $HOME/left && echo x > $TMPDIR/left && echo x > left && echo x > $src/left",
  "mkdir $HOME/sub && chmod 0500 $HOME/sub",
  "chmod 0700 $HOME $TMPDIR",
  "mkdir $(dirname $out)/stray",
]
"#,
        );
        p.recipe(
            "clean",
            r#"name = "clean"
version = "1"
deps = ["dirty"]
steps = [
  "mkdir -p $out && stat -c %a $HOME $TMPDIR . $src > $out/modes",
  "ls -A $HOME $TMPDIR . $src > $out/entries",
  "ls -A $(dirname $out) | grep -v -e dirty -e clean > $out/store-view || true",
]
"#,
        );
        let out = p
            .run_with(
                sandbox_impl,
                &["realize", "-j", "1", "--sandbox", sandbox, "clean"],
            )
            .ok()
            .line();
        let dirty = p.run(&["path", "dirty"]).ok().line();
        assert_eq!(
            read(&out, "modes"),
            read(&dirty, "modes"),
            "sandbox {sandbox}: a fresh build directory's modes"
        );
        let entries = read(&out, "entries");
        assert!(!entries.contains("left"), "sandbox {sandbox}: {entries}");
        assert!(!entries.contains("sub"), "sandbox {sandbox}: {entries}");
        assert_eq!(read(&out, "store-view"), "", "sandbox {sandbox}");
    }
}

/// As root, bubblewrap runs as the build user. A store that user can reach is bound as it is;
/// one it cannot (here: inside a 0700 directory, like /root) is staged first (src/action/
/// build_user.rs). Both build, as the same unprivileged user.
#[test]
fn a_store_the_build_user_can_or_cannot_reach_builds_the_same() {
    use std::os::unix::fs::PermissionsExt;
    let mut seen = Vec::new();
    for (mode, sandbox_impl) in [0o755, 0o700]
        .into_iter()
        .flat_map(|m| SANDBOX_IMPLS.map(|i| (m, i)))
    {
        let p = Project::new();
        std::fs::set_permissions(p.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        p.recipe(
            "who",
            r#"name = "who"
version = "1"
steps = ["mkdir -p $out && id -u > $out/uid && stat -c %a /build > $out/build-mode"]
"#,
        );
        let out = p
            .run_with(sandbox_impl, &["realize", "--sandbox", "on", "who"])
            .ok()
            .line();
        seen.push((read(&out, "uid"), read(&out, "build-mode")));
    }
    assert!(seen.iter().all(|s| *s == seen[0]), "{seen:?}");
    assert_eq!(seen[0].0, "1000\n", "{seen:?}");
}

#[test]
fn an_unknown_sandbox_implementation_is_a_user_error() {
    let p = escape_probe();
    let r = p.run_with("bwrap", &["realize", "--sandbox", "on", "escape"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("PYBAKE_SANDBOX_IMPL is `bwrap`, which names no sandbox"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("`pybake`"), "{}", r.stderr);
}
