//! A static file server for outputs that run in a browser (`pybake serve`).
//!
//! It sends what CPython's Tools/wasm/wasm_webserver.py sends: `application/wasm` for `.wasm`,
//! and the cross-origin isolation headers (COOP `same-origin`, COEP `require-corp`) without
//! which browsers withhold SharedArrayBuffer, which the page's stdin needs. GET and HEAD only;
//! paths outside the served directory are refused.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};

/// Content type by file extension.
pub fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" | "py" => "text/plain; charset=utf-8",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        _ => "application/octet-stream",
    }
}

/// The file a request path names under `root`, or `None` if it escapes or does not exist.
fn resolve(root: &Path, target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next().unwrap_or("/");
    let decoded = percent_decode(path)?;
    let rel = Path::new(decoded.trim_start_matches('/'));
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return None;
    }
    let mut full = root.join(rel);
    if full.is_dir() {
        full = full.join("index.html");
    }
    full.is_file().then_some(full)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn respond(stream: &mut TcpStream, root: &Path) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // Drain the headers; nothing in them changes the answer.
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut parts = request.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let common = "Cross-Origin-Opener-Policy: same-origin\r\nCross-Origin-Embedder-Policy: require-corp\r\nCache-Control: no-cache\r\nConnection: close\r\n";
    if method != "GET" && method != "HEAD" {
        let body = "only GET and HEAD\n";
        return write!(
            stream,
            "HTTP/1.1 405 Method Not Allowed\r\n{common}Allow: GET, HEAD\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    }
    match resolve(root, target) {
        Some(file) => {
            let data = fs_err::read(&file)?;
            write!(
                stream,
                "HTTP/1.1 200 OK\r\n{common}Content-Type: {}\r\nContent-Length: {}\r\n\r\n",
                content_type(&file),
                data.len()
            )?;
            if method == "GET" {
                stream.write_all(&data)?;
            }
            Ok(())
        }
        None => {
            let body = "not found\n";
            write!(
                stream,
                "HTTP/1.1 404 Not Found\r\n{common}Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        }
    }
}

/// Serves `root` on `listener` until the process ends, one thread per connection.
pub fn serve(listener: TcpListener, root: PathBuf) -> std::io::Result<()> {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let root = root.clone();
        std::thread::spawn(move || {
            let _ = respond(&mut stream, &root);
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use super::*;

    #[test]
    fn refuses_escapes_and_maps_types() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("python.wasm"), b"\0asm").unwrap();
        assert!(resolve(t.path(), "/python.wasm").is_some());
        assert!(resolve(t.path(), "/../etc/passwd").is_none());
        assert!(resolve(t.path(), "/%2e%2e/etc/passwd").is_none());
        assert!(resolve(t.path(), "/missing").is_none());
        assert_eq!(content_type(Path::new("python.wasm")), "application/wasm");
    }
}
