//! `cargo bench --bench cache_query`: how long a plan's query of 1000 narinfo files takes against
//! a stock nginx on loopback, with `get_many` (concurrent) and with one `get` after another (as
//! Nix did, nix#5118). Prints the figures; it asserts nothing (timings are not pass/fail).

#![allow(clippy::disallowed_methods)] // tests may use std::fs; src uses fs-err (clippy.toml)

#[allow(dead_code)]
#[path = "../tests/support/servers.rs"]
mod servers;

use std::time::{Duration, Instant};

use pybake::cache::open_cache;

const KEYS: usize = 1000;
const RUNS: usize = 5;

fn main() {
    let nginx = servers::Nginx::start();
    let root = nginx.root().join("cache");
    std::fs::create_dir_all(&root).unwrap();
    let keys: Vec<String> = (0..KEYS).map(|i| format!("{i:032x}.narinfo")).collect();
    for key in &keys {
        // About the size of a real narinfo.
        let text = format!(
            "StoreName: {key}\n{}",
            "X-Padding: 0123456789abcdef\n".repeat(20)
        );
        std::fs::write(root.join(key), text).unwrap();
    }
    let cache = open_cache(&nginx.url("/cache")).unwrap();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();

    let concurrent = time(|| {
        let got = cache.get_many(&refs, 64 * 1024);
        assert!(got.iter().all(|r| matches!(r, Ok(Some(_)))));
    });
    let sequential = time(|| {
        for key in &refs {
            assert!(cache.get(key, 64 * 1024).unwrap().is_some());
        }
    });
    println!("query of {KEYS} narinfo files from nginx on loopback, best / median of {RUNS} runs:");
    report("get_many (16 at a time)", &concurrent);
    report("get, one after another", &sequential);
    println!(
        "ratio: {:.1}x faster concurrently (medians)",
        sequential[RUNS / 2].as_secs_f64() / concurrent[RUNS / 2].as_secs_f64()
    );
}

/// The times of RUNS runs after one warm-up, sorted.
fn time(mut f: impl FnMut()) -> Vec<Duration> {
    f();
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times
}

fn report(what: &str, times: &[Duration]) {
    println!(
        "  {what:<26} {:>8.1} ms / {:>8.1} ms",
        times[0].as_secs_f64() * 1e3,
        times[RUNS / 2].as_secs_f64() * 1e3
    );
}
