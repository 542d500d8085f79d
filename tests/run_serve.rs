//! `pybake run` and `pybake serve`.

#![allow(clippy::disallowed_methods)] // tests may use std::fs; src uses fs-err (clippy.toml)

mod common;
use common::*;

use std::io::{BufRead, BufReader, Read, Write};

fn web_project() -> Project {
    let p = Project::new();
    p.recipe(
        "page",
        r#"name = "page"
version = "1"
run = 'echo "args: $*"; cat "$out/python.html"'
steps = [
  "mkdir -p $out && echo '<h1>hi</h1>' > $out/python.html && printf '\\000asm' > $out/python.wasm",
]
"#,
    );
    p
}

#[test]
fn run_realizes_and_passes_arguments() {
    let p = web_project();
    let r = p.run(&["run", "page", "--", "-c", "print(1+1)"]).ok();
    assert_eq!(r.stdout, "args: -c print(1+1)\n<h1>hi</h1>\n");
    p.recipe(
        "norun",
        "name = \"norun\"\nversion = \"1\"\nsteps = [\"mkdir $out\"]\n",
    );
    let r = p.run(&["run", "norun"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("has no `run` field"), "{}", r.stderr);
}

fn get(addr: &str, path: &str) -> (String, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    (
        String::from_utf8_lossy(&all[..split]).into_owned(),
        all[split + 4..].to_vec(),
    )
}

#[test]
fn serve_sends_wasm_with_cross_origin_isolation() {
    let p = web_project();
    let mut child = p
        .cmd(&["serve", "page", "--port", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().to_string();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/python.html"),
        "{url}"
    );
    let addr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();

    let (head, body) = get(&addr, "/python.wasm");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("Content-Type: application/wasm"), "{head}");
    assert!(
        head.contains("Cross-Origin-Opener-Policy: same-origin"),
        "{head}"
    );
    assert!(
        head.contains("Cross-Origin-Embedder-Policy: require-corp"),
        "{head}"
    );
    assert_eq!(body, b"\0asm");
    let (head, _) = get(&addr, "/../../etc/passwd");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    child.kill().unwrap();
    child.wait().unwrap();
}
