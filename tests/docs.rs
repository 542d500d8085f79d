//! The worked examples in docs/ run as written: every ```lang file=PATH block is written into a
//! fresh project, then every `$ command` of the ```console blocks runs with `pybake` on PATH and
//! its output is compared with the lines shown (`…` matches anything).

#![allow(clippy::disallowed_methods)] // tests may use std::fs; src uses fs-err (clippy.toml)

mod common;
use common::*;

struct Doc {
    files: Vec<(String, String)>,
    commands: Vec<(String, Vec<String>)>,
}

fn parse(text: &str) -> Doc {
    let mut doc = Doc {
        files: vec![],
        commands: vec![],
    };
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let body: Vec<&str> = lines
            .by_ref()
            .take_while(|l| !l.starts_with("```"))
            .collect();
        if let Some(file) = info
            .split_whitespace()
            .find_map(|w| w.strip_prefix("file="))
        {
            doc.files.push((file.to_string(), body.join("\n") + "\n"));
        } else if info.trim() == "console" {
            for l in body {
                match l.strip_prefix("$ ") {
                    Some(cmd) => doc.commands.push((cmd.to_string(), vec![])),
                    None => doc
                        .commands
                        .last_mut()
                        .expect("output after a command")
                        .1
                        .push(l.to_string()),
                }
            }
        }
    }
    doc
}

fn matches(expected: &str, actual: &str) -> bool {
    let parts: Vec<&str> = expected.split('…').collect();
    let mut rest = actual;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            let Some(at) = rest.find(part) else {
                return false;
            };
            rest = &rest[at + part.len()..];
        }
    }
    rest.is_empty()
}

fn run_doc(name: &str) {
    let text =
        std::fs::read_to_string(format!("{}/docs/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let doc = parse(&text);
    assert!(
        !doc.files.is_empty() && !doc.commands.is_empty(),
        "{name} has an example"
    );
    let p = Project::new();
    for (file, body) in &doc.files {
        p.file(file, body);
    }
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_pybake"))
        .parent()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for (cmd, expected) in &doc.commands {
        let mut c = std::process::Command::new("sh");
        c.args(["-c", cmd]).current_dir(p.path()).env("PATH", &path);
        for (k, _) in std::env::vars() {
            if k.starts_with("PYBAKE_") {
                c.env_remove(k);
            }
        }
        let out = c.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: `{cmd}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let actual: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            actual.len(),
            expected.len(),
            "{name}: `{cmd}` printed {stdout}"
        );
        for (e, a) in expected.iter().zip(&actual) {
            assert!(matches(e, a), "{name}: `{cmd}`: expected {e:?}, got {a:?}");
        }
    }
}

#[test]
fn wildcard_matching() {
    assert!(matches(
        "/…/cache/…-hello-1.0",
        "/tmp/x/cache/abc-hello-1.0"
    ));
    assert!(!matches(
        "/…/cache/…-hello-1.0",
        "/tmp/x/cache/abc-hello-2.0"
    ));
    assert!(matches("exact", "exact"));
    assert!(!matches("exact", "exactly"));
}

#[test]
fn recipes_md_example_runs() {
    run_doc("recipes.md");
}

#[test]
fn store_md_example_runs() {
    run_doc("store.md");
}

#[test]
fn lockfile_md_example_runs() {
    run_doc("lockfile.md");
}

#[test]
fn binary_cache_md_example_runs() {
    run_doc("binary-cache.md");
}

#[test]
fn debugging_md_example_runs() {
    run_doc("debugging.md");
}

#[test]
fn config_md_example_runs() {
    run_doc("config.md");
}
