//! The build environment: cleared, rebuilt from a documented list, sandboxed when possible.

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
fn probe(sandbox: &str, bwrap: Option<&str>) -> (Project, String, Run) {
    let p = env_project();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let text = std::fs::read_to_string(p.path().join("recipes/probe.toml")).unwrap();
    p.recipe("probe", &text.replace("@PORT@", &port));
    let mut cmd = p.cmd(&["realize", "--sandbox", sandbox, "probe"]);
    cmd.env("PYBAKE_TEST_SECRET", "leaked")
        .env("CFLAGS", "-Dleaked");
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
    if !bwrap_works() {
        // The unsandboxed test below covers this machine; .ci/run installs bubblewrap.
        eprintln!(
            "bubblewrap does not work here; see unsandboxed_build_warns_and_records_host_paths"
        );
        assert!(
            std::env::var("CI").is_err(),
            "CI must have a working bubblewrap"
        );
        return;
    }
    let (p, path, r) = probe("on", None);
    assert_eq!(r.code, 0, "{}", r.stderr);
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
    let (p, path, r) = probe("auto", Some("/nonexistent/bwrap"));
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
    let (_p, _path, r) = probe("on", Some("/nonexistent/bwrap"));
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
