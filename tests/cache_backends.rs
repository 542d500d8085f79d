//! One suite of cache-backend tests run against every backend (`suite!` below instantiates it
//! per backend), on real servers started here: a temp directory, Debian's nginx with WebDAV PUT,
//! and s3s-fs (an S3 server that checks signatures). Then each backend's own failure classes,
//! with the fault-injecting server of `support::http` where a real server cannot misbehave.

#![allow(clippy::disallowed_methods)] // tests may use std::fs; src uses fs-err (clippy.toml)

mod support;

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use pybake::cache::s3::S3Cache;
use pybake::cache::{open_cache, Body, CacheBackend, CacheError};
use support::servers::{Nginx, S3Server, NGINX_USER};
use support::{refused_url, Reply, Route, TestServer};

/// A backend under test and what keeps its server (or directory) alive.
struct Fixture {
    cache: Box<dyn CacheBackend>,
    _server: Box<dyn std::any::Any>,
}

fn dir_fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("cache")).unwrap();
    let url = format!("file://{}/cache", dir.path().display());
    Fixture {
        cache: open_cache(&url).unwrap(),
        _server: Box::new(dir),
    }
}

fn nginx_fixture() -> Fixture {
    let nginx = Nginx::start();
    Fixture {
        cache: open_cache(&nginx.url("/cache")).unwrap(),
        _server: Box::new(nginx),
    }
}

fn s3_fixture() -> Fixture {
    let s3 = S3Server::start("cache");
    let cache = S3Cache::new(&s3.url("cache", "pybake"), S3Server::good_env()).unwrap();
    Fixture {
        cache: Box::new(cache),
        _server: Box::new(s3),
    }
}

macro_rules! suite {
    ($backend:ident, $fixture:ident: $($test:ident),* $(,)?) => {
        mod $backend {
            $(
                #[test]
                fn $test() {
                    super::$test(&*super::$fixture().cache)
                }
            )*
        }
    };
}

macro_rules! suite_for_every_backend {
    ($($test:ident),* $(,)?) => {
        suite!(dir, dir_fixture: $($test),*);
        suite!(nginx, nginx_fixture: $($test),*);
        suite!(s3, s3_fixture: $($test),*);
    };
}

suite_for_every_backend!(
    round_trip,
    absent_keys_are_none,
    overwrite_replaces,
    empty_object,
    invalid_keys_are_refused,
    get_refuses_more_than_its_limit,
    large_bodies_stream_with_bounded_memory,
    readers_never_see_a_partial_put,
    get_many_answers_in_order,
    put_of_a_missing_file_is_local,
    failed_put_keeps_the_old_object,
);

fn round_trip(cache: &dyn CacheBackend) {
    let info = b"StoreDir: /pybake/store\nFormat: 1\nPriority: 40\n";
    cache
        .put("pybake-cache-info", Body::Bytes(info))
        .expect("put");
    assert_eq!(
        cache.get("pybake-cache-info", 1024).unwrap().as_deref(),
        Some(&info[..])
    );
    assert!(cache.exists("pybake-cache-info").unwrap());

    // Nested keys: directories (or prefixes) appear as needed.
    let archive = b"not really zstd".to_vec();
    cache
        .put("nar/0123abcd.nar.zst", Body::Bytes(&archive))
        .unwrap();
    let mut read = Vec::new();
    cache
        .open("nar/0123abcd.nar.zst")
        .unwrap()
        .expect("present")
        .read_to_end(&mut read)
        .unwrap();
    assert_eq!(read, archive);
    assert!(cache.exists("nar/0123abcd.nar.zst").unwrap());

    // Store names may hold '+', and logs are named after them.
    let log = "log/0123456789abcdef0123456789abcdef-libstdc++-12.zst";
    cache.put(log, Body::Bytes(b"log")).unwrap();
    assert_eq!(cache.get(log, 10).unwrap().as_deref(), Some(&b"log"[..]));
    assert!(!cache
        .exists("log/0123456789abcdef0123456789abcdef-libstdc-12.zst")
        .unwrap());
}

fn absent_keys_are_none(cache: &dyn CacheBackend) {
    assert_eq!(cache.get("0123.narinfo", 1024).unwrap(), None);
    assert!(cache.open("nar/x.nar.zst").unwrap().is_none());
    assert!(!cache.exists("log/x.zst").unwrap());
    // Next to an existing key, in an existing directory.
    cache.put("log/a.zst", Body::Bytes(b"a")).unwrap();
    assert_eq!(cache.get("log/b.zst", 1024).unwrap(), None);
    assert!(cache.open("log/b.zst").unwrap().is_none());
    assert!(!cache.exists("log/b.zst").unwrap());
}

fn overwrite_replaces(cache: &dyn CacheBackend) {
    cache.put("k.narinfo", Body::Bytes(b"first")).unwrap();
    cache
        .put("k.narinfo", Body::Bytes(b"second, longer"))
        .unwrap();
    assert_eq!(
        cache.get("k.narinfo", 100).unwrap().as_deref(),
        Some(&b"second, longer"[..])
    );
    cache.put("k.narinfo", Body::Bytes(b"3")).unwrap();
    let mut read = Vec::new();
    cache
        .open("k.narinfo")
        .unwrap()
        .unwrap()
        .read_to_end(&mut read)
        .unwrap();
    assert_eq!(read, b"3");
}

fn empty_object(cache: &dyn CacheBackend) {
    cache.put("empty", Body::Bytes(b"")).unwrap();
    assert_eq!(cache.get("empty", 0).unwrap(), Some(Vec::new()));
    assert!(cache.exists("empty").unwrap());
    let mut read = Vec::new();
    cache
        .open("empty")
        .unwrap()
        .unwrap()
        .read_to_end(&mut read)
        .unwrap();
    assert!(read.is_empty());
}

const BAD_KEYS: &[&str] = &[
    "",
    "/etc/passwd",
    "../escape",
    "nar/../../escape",
    "a//b",
    "a/",
    "./a",
    ".tmp-1",
    "nar/.hidden",
    "a b",
    "a?b=c",
    "a#b",
    "a:b",
    "é",
    "a%2F..",
    "a\\..\\b",
    "a\0b",
];

fn invalid_keys_are_refused(cache: &dyn CacheBackend) {
    for key in BAD_KEYS {
        let is_bad = |r: Result<(), CacheError>| matches!(r, Err(CacheError::BadKey { .. }));
        assert!(is_bad(cache.put(key, Body::Bytes(b"x"))), "put {key:?}");
        assert!(is_bad(cache.get(key, 10).map(drop)), "get {key:?}");
        assert!(is_bad(cache.open(key).map(drop)), "open {key:?}");
        assert!(is_bad(cache.exists(key).map(drop)), "exists {key:?}");
        let many = cache.get_many(&[key], 10);
        assert!(is_bad(many.into_iter().next().unwrap().map(drop)));
    }
    // Nothing was written: the cache has no key at all yet.
    assert!(!cache.exists("escape").unwrap());
}

fn get_refuses_more_than_its_limit(cache: &dyn CacheBackend) {
    let body = vec![b'n'; 1000];
    cache.put("big.narinfo", Body::Bytes(&body)).unwrap();
    assert!(matches!(
        cache.get("big.narinfo", 999),
        Err(CacheError::TooLarge { limit: 999, .. })
    ));
    assert_eq!(cache.get("big.narinfo", 1000).unwrap(), Some(body));
}

/// Bodies this large are streamed through files and readers, never held whole.
const LARGE: u64 = 64 << 20;

/// Large-body tests run one at a time so that each one's peak memory is its own.
static ONE_LARGE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn large_bodies_stream_with_bounded_memory(cache: &dyn CacheBackend) {
    let _one = ONE_LARGE_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("archive");
    let written = write_pseudo_random(&file, LARGE, 1);

    let growth = peak_rss_growth(|| {
        cache
            .put("nar/large.nar.zst", Body::File(&file))
            .expect("put");
        let reader = cache.open("nar/large.nar.zst").unwrap().expect("present");
        assert_eq!(sum_reader(reader), written);
        assert_eq!(written.1, LARGE);
    });
    assert!(cache.exists("nar/large.nar.zst").unwrap());
    // Streaming needs a few buffers (S3: up to three 8 MiB parts); a backend that held the
    // whole body would need more than this.
    assert!(
        growth < LARGE * 3 / 4,
        "peak memory grew by {} MiB moving a {} MiB body",
        growth >> 20,
        LARGE >> 20
    );
}

fn readers_never_see_a_partial_put(cache: &dyn CacheBackend) {
    let _one = ONE_LARGE_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let size = 12 << 20; // more than one S3 part
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let versions = [
        write_pseudo_random(&a, size, 2),
        write_pseudo_random(&b, size, 3),
    ];
    cache.put("nar/x.nar.zst", Body::File(&a)).unwrap();
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for path in [&b, &a, &b] {
                cache.put("nar/x.nar.zst", Body::File(path)).unwrap();
            }
            done.store(true, Ordering::SeqCst);
        });
        let mut reads = 0;
        while !done.load(Ordering::SeqCst) || reads == 0 {
            let reader = cache.open("nar/x.nar.zst").unwrap().expect("never absent");
            let got = sum_reader(reader);
            assert!(versions.contains(&got), "read a mix of two puts: {got:?}");
            reads += 1;
        }
    });
}

fn get_many_answers_in_order(cache: &dyn CacheBackend) {
    let present: Vec<String> = (0..150).map(|i| format!("{i:032x}.narinfo")).collect();
    for key in &present {
        cache.put(key, Body::Bytes(key.as_bytes())).unwrap();
    }
    // Present and absent keys interleaved.
    let keys: Vec<String> = (0..300)
        .map(|i| match i % 2 {
            0 => present[i / 2].clone(),
            _ => format!("{:032x}.narinfo", 1000 + i),
        })
        .collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let results = cache.get_many(&refs, 1024);
    assert_eq!(results.len(), keys.len());
    for (key, result) in keys.iter().zip(results) {
        let got = result.unwrap_or_else(|e| panic!("{key}: {e}"));
        match present.contains(key) {
            true => assert_eq!(got.as_deref(), Some(key.as_bytes()), "{key}"),
            false => assert_eq!(got, None, "{key}"),
        }
    }
    assert!(cache.get_many(&[], 1).is_empty());
}

fn put_of_a_missing_file_is_local(cache: &dyn CacheBackend) {
    let missing = Path::new("/nonexistent/pybake/archive");
    match cache.put("nar/m.nar.zst", Body::File(missing)) {
        Err(CacheError::Local { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected a local error, got {other:?}"),
    }
    assert!(!cache.exists("nar/m.nar.zst").unwrap());
}

fn failed_put_keeps_the_old_object(cache: &dyn CacheBackend) {
    cache.put("k.narinfo", Body::Bytes(b"old")).unwrap();
    // A directory opens, has a size, and fails on the first read: a body that breaks midway.
    let dir = tempfile::tempdir().unwrap();
    match cache.put("k.narinfo", Body::File(dir.path())) {
        Err(CacheError::Local { path, .. }) => assert_eq!(path, dir.path()),
        other => panic!("expected a local error, got {other:?}"),
    }
    assert_eq!(
        cache.get("k.narinfo", 10).unwrap().as_deref(),
        Some(&b"old"[..])
    );
}

// ---- the directory backend ----

#[test]
fn dir_never_follows_a_symlink_out_of_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let (root, outside) = (dir.path().join("cache"), dir.path().join("outside"));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), "secret").unwrap();
    std::os::unix::fs::symlink(&outside, root.join("nar")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), root.join("x.narinfo")).unwrap();
    let cache = open_cache(&format!("file://{}", root.display())).unwrap();

    let refused = |r: Result<(), CacheError>| matches!(r, Err(CacheError::Protocol { .. }));
    for key in ["nar/secret", "x.narinfo"] {
        assert!(refused(cache.get(key, 100).map(drop)), "get {key}");
        assert!(refused(cache.open(key).map(drop)), "open {key}");
        assert!(refused(cache.exists(key).map(drop)), "exists {key}");
    }
    // A put never writes through the linked directory...
    assert!(refused(cache.put("nar/new", Body::Bytes(b"x"))));
    assert!(!outside.join("new").exists());
    // ...and replaces a linked file instead of writing to its target.
    cache.put("x.narinfo", Body::Bytes(b"mine")).unwrap();
    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"secret");
    assert_eq!(std::fs::read(root.join("x.narinfo")).unwrap(), b"mine");
    assert!(!root.join("x.narinfo").is_symlink());
}

#[test]
fn dir_refuses_special_files_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.narinfo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    std::fs::create_dir(dir.path().join("sub.narinfo")).unwrap();
    let cache = open_cache(&format!("file://{}", dir.path().display())).unwrap();
    for key in ["fifo.narinfo", "sub.narinfo"] {
        assert!(
            matches!(cache.get(key, 10), Err(CacheError::Protocol { .. })),
            "{key}"
        );
    }
}

#[test]
fn dir_missing_root_is_unreachable_until_a_put_creates_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("not/yet");
    let cache = open_cache(&format!("file://{}", root.display())).unwrap();
    assert!(matches!(
        cache.get("a", 10),
        Err(CacheError::Unreachable { .. })
    ));
    assert!(matches!(
        cache.exists("a"),
        Err(CacheError::Unreachable { .. })
    ));
    cache.put("nar/a", Body::Bytes(b"a")).unwrap();
    assert_eq!(cache.get("nar/a", 10).unwrap(), Some(b"a".to_vec()));
}

#[test]
fn dir_put_leaves_only_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open_cache(&format!("file://{}", dir.path().display())).unwrap();
    cache.put("nar/a.nar.zst", Body::Bytes(b"a")).unwrap();
    cache.put("nar/a.nar.zst", Body::Bytes(b"b")).unwrap();
    assert!(cache
        .put("nar/b", Body::File(Path::new("/nonexistent")))
        .is_err());
    assert_eq!(list(&dir.path().join("nar")), ["a.nar.zst"]);
}

// ---- HTTP ----

#[test]
fn http_401_and_403_are_unauthorized_not_misses() {
    let nginx = Nginx::start();
    std::fs::create_dir_all(nginx.root().join("auth")).unwrap();
    std::fs::write(nginx.root().join("auth/k.narinfo"), "k").unwrap();
    std::fs::create_dir_all(nginx.root().join("ro")).unwrap();
    std::fs::write(nginx.root().join("ro/k.narinfo"), "k").unwrap();

    // No password, or a wrong one: 401 for every operation.
    let port_url = nginx.url("");
    let wrong = port_url.replace("http://", "http://ci:wrong@") + "/auth";
    for url in [nginx.url("/auth"), wrong] {
        let cache = open_cache(&url).unwrap();
        assert_unauthorized(&*cache, "k.narinfo");
        assert_unauthorized(&*cache, "absent.narinfo");
    }
    // The right password, given in the URL, is basic auth; it is masked in messages.
    let url = port_url.replace(
        "http://",
        &format!("http://{}:{}@", NGINX_USER.0, NGINX_USER.1),
    ) + "/auth";
    let cache = open_cache(&url).unwrap();
    assert!(cache.url().contains("ci:***@") && !cache.url().contains(NGINX_USER.1));
    assert_eq!(cache.get("k.narinfo", 10).unwrap(), Some(b"k".to_vec()));
    cache.put("new.narinfo", Body::Bytes(b"n")).unwrap();
    assert_eq!(cache.get("new.narinfo", 10).unwrap(), Some(b"n".to_vec()));

    // Read-only location: reads work, a put is denied (403).
    let cache = open_cache(&nginx.url("/ro")).unwrap();
    assert_eq!(cache.get("k.narinfo", 10).unwrap(), Some(b"k".to_vec()));
    assert!(matches!(
        cache.put("k.narinfo", Body::Bytes(b"x")),
        Err(CacheError::Unauthorized { .. })
    ));
}

#[test]
fn http_large_put_denied_is_unauthorized() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("archive");
    write_pseudo_random(&file, 8 << 20, 4);
    for path in ["/auth", "/ro"] {
        let cache = open_cache(&nginx.url(path)).unwrap();
        match cache.put("nar/big", Body::File(&file)) {
            Err(CacheError::Unauthorized { .. }) => {}
            other => panic!("{path}: expected Unauthorized, got {other:?}"),
        }
    }
}

fn assert_unauthorized(cache: &dyn CacheBackend, key: &str) {
    let denied = |r: Result<(), CacheError>| matches!(r, Err(CacheError::Unauthorized { .. }));
    assert!(denied(cache.get(key, 10).map(drop)), "get {key}");
    assert!(denied(cache.open(key).map(drop)), "open {key}");
    assert!(denied(cache.exists(key).map(drop)), "exists {key}");
    assert!(denied(cache.put(key, Body::Bytes(b"x"))), "put {key}");
}

#[test]
fn http_denials_are_not_retried() {
    let server = TestServer::start([("/c/a", Route::status(401)), ("/c/b", Route::status(403))]);
    let cache = open_cache(&server.url("/c")).unwrap();
    for key in ["a", "b"] {
        assert_unauthorized(&*cache, key);
        assert_eq!(server.hits(&format!("/c/{key}")), 4, "one request per call");
    }
}

#[test]
fn http_server_errors_are_retried_then_transient() {
    let nginx = Nginx::start();
    let cache = open_cache(&nginx.url("/broken")).unwrap();
    match cache.get("k.narinfo", 10) {
        Err(CacheError::Transient { tries, .. }) => assert_eq!(tries, 4),
        other => panic!("expected Transient, got {other:?}"),
    }

    let server = TestServer::start([
        ("/c/503", Route::status(503)),
        ("/c/reset", Route::always(Reply::Close)),
    ]);
    let cache = open_cache(&server.url("/c")).unwrap();
    for key in ["503", "reset"] {
        assert!(
            matches!(
                cache.get(key, 10),
                Err(CacheError::Transient { tries: 4, .. })
            ),
            "{key}"
        );
        assert_eq!(server.hits(&format!("/c/{key}")), 4, "{key}");
    }
    assert!(matches!(
        cache.put("503", Body::Bytes(b"x")),
        Err(CacheError::Transient { .. })
    ));
    assert_eq!(server.hits("/c/503"), 8);
}

#[test]
fn http_retries_recover_from_passing_failures() {
    let body = b"narinfo".to_vec();
    let server = TestServer::start([
        (
            "/c/get",
            Route::fail_first(2, Reply::Status(500), Reply::Body(body.clone())),
        ),
        (
            "/c/open",
            Route::fail_first(1, Reply::Close, Reply::Body(body.clone())),
        ),
        (
            "/c/put",
            Route::fail_first(2, Reply::Status(502), Reply::Status(201)),
        ),
    ]);
    let cache = open_cache(&server.url("/c")).unwrap();
    assert_eq!(cache.get("get", 100).unwrap(), Some(body.clone()));
    assert_eq!(server.hits("/c/get"), 3);
    let mut read = Vec::new();
    cache
        .open("open")
        .unwrap()
        .unwrap()
        .read_to_end(&mut read)
        .unwrap();
    assert_eq!(read, body);
    assert_eq!(server.hits("/c/open"), 2);
    // The body is a file, read again from the start for each try.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, vec![7u8; 100_000]).unwrap();
    cache.put("put", Body::File(&file)).unwrap();
    assert_eq!(server.hits("/c/put"), 3);
}

#[test]
fn http_refused_connection_is_unreachable() {
    let cache = open_cache(&refused_url("/cache")).unwrap();
    assert!(matches!(
        cache.get("k", 10),
        Err(CacheError::Unreachable { .. })
    ));
    assert!(matches!(
        cache.put("k", Body::Bytes(b"x")),
        Err(CacheError::Unreachable { .. })
    ));
    // A query of many keys gives up after the first.
    let results = cache.get_many(&["a", "b", "c", "d"], 10);
    assert!(results
        .iter()
        .all(|r| matches!(r, Err(CacheError::Unreachable { .. }))));
}

#[test]
fn http_unexpected_answers_are_protocol_errors() {
    let server = TestServer::start([
        ("/c/teapot", Route::status(418)),
        ("/c/nodav", Route::status(405)),
    ]);
    let cache = open_cache(&server.url("/c")).unwrap();
    assert!(matches!(
        cache.get("teapot", 10),
        Err(CacheError::Protocol { .. })
    ));
    assert!(matches!(
        cache.put("nodav", Body::Bytes(b"x")),
        Err(CacheError::Protocol { .. })
    ));
    assert_eq!(server.hits("/c/nodav"), 1);
}

#[test]
fn http_get_stops_at_its_limit_announced_or_not() {
    let flood = |announce| {
        Route::always(Reply::Flood {
            prefix: Vec::new(),
            total: 50 << 20,
            announce,
        })
    };
    let server = TestServer::start([("/c/told", flood(true)), ("/c/untold", flood(false))]);
    let cache = open_cache(&server.url("/c")).unwrap();
    for key in ["told", "untold"] {
        assert!(
            matches!(cache.get(key, 1000), Err(CacheError::TooLarge { .. })),
            "{key}"
        );
        assert!(
            server.bytes_sent(&format!("/c/{key}")) < 10 << 20,
            "{key}: read far past the limit"
        );
    }
}

// ---- S3 ----

#[test]
fn s3_wrong_credentials_are_unauthorized() {
    let s3 = S3Server::start("cache");
    let good = S3Cache::new(&s3.url("cache", "p"), S3Server::good_env()).unwrap();
    good.put("k.narinfo", Body::Bytes(b"k")).unwrap();
    for env in [
        S3Server::env(S3Server::ACCESS_KEY, "wrong-secret"),
        S3Server::env("unknown-key", S3Server::SECRET_KEY),
    ] {
        let cache = S3Cache::new(&s3.url("cache", "p"), env).unwrap();
        assert_unauthorized(&cache, "k.narinfo");
        assert_unauthorized(&cache, "absent.narinfo");
    }
    assert_eq!(good.get("k.narinfo", 10).unwrap(), Some(b"k".to_vec()));
}

#[test]
fn s3_large_put_with_wrong_credentials_is_unauthorized() {
    let s3 = S3Server::start("cache");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("archive");
    write_pseudo_random(&file, 20 << 20, 5);
    let cache = S3Cache::new(
        &s3.url("cache", "p"),
        S3Server::env(S3Server::ACCESS_KEY, "wrong"),
    )
    .unwrap();
    assert!(matches!(
        cache.put("nar/big", Body::File(&file)),
        Err(CacheError::Unauthorized { .. })
    ));
}

#[test]
fn s3_unreachable_endpoint() {
    let endpoint = refused_url("");
    let url = format!("s3://cache/p?endpoint={endpoint}&region=us-east-1");
    let cache = S3Cache::new(&url, S3Server::good_env()).unwrap();
    assert!(matches!(
        cache.get("k", 10),
        Err(CacheError::Unreachable { .. })
    ));
    assert!(matches!(
        cache.put("k", Body::Bytes(b"x")),
        Err(CacheError::Unreachable { .. })
    ));
}

#[test]
fn s3_objects_live_under_the_prefix() {
    let s3 = S3Server::start("cache");
    let cache = S3Cache::new(&s3.url("cache", "ci/pybake"), S3Server::good_env()).unwrap();
    cache.put("nar/a.nar.zst", Body::Bytes(b"a")).unwrap();
    assert_eq!(
        std::fs::read(s3.bucket_dir("cache").join("ci/pybake/nar/a.nar.zst")).unwrap(),
        b"a"
    );
}

#[test]
fn open_cache_chooses_the_backend_by_scheme() {
    let dir = tempfile::tempdir().unwrap();
    let file = open_cache(&format!("file://{}/", dir.path().display())).unwrap();
    assert_eq!(file.url(), format!("file://{}", dir.path().display()));
    let http = open_cache("https://cache.example/pybake/").unwrap();
    assert_eq!(http.url(), "https://cache.example/pybake");
    let s3 = "s3://bucket/prefix?endpoint=http://127.0.0.1:1&region=us-east-1";
    assert_eq!(open_cache(s3).unwrap().url(), s3);
    for bad in [
        "ftp://x/y",
        "cache",
        "s3://b/p?priority=1",
        "file://relative",
    ] {
        assert!(
            matches!(open_cache(bad), Err(CacheError::BadUrl { .. })),
            "{bad}"
        );
    }
}

// ---- helpers ----

fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// An order-sensitive checksum of a byte stream (cheap in debug builds, unlike sha256; enough to
/// tell two test bodies and any splice of them apart).
#[derive(Default)]
struct Sum {
    acc: u64,
    len: u64,
    tail: Vec<u8>,
}

impl Sum {
    fn update(&mut self, mut bytes: &[u8]) {
        // Whole 8-byte words only, whatever the read sizes.
        if !self.tail.is_empty() {
            let take = (8 - self.tail.len()).min(bytes.len());
            self.tail.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.tail.len() == 8 {
                let word = u64::from_le_bytes(self.tail[..].try_into().unwrap());
                self.word(word);
                self.tail.clear();
            }
        }
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.word(u64::from_le_bytes(w.try_into().unwrap()));
        }
        self.tail.extend_from_slice(words.remainder());
    }

    fn word(&mut self, w: u64) {
        self.acc = (self.acc.rotate_left(7) ^ w).wrapping_mul(0x100_0000_01b3);
        self.len += 8;
    }

    fn finish(mut self) -> (u64, u64) {
        let tail = std::mem::take(&mut self.tail);
        let len = self.len + tail.len() as u64;
        for b in tail {
            self.acc = (self.acc.rotate_left(7) ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        (self.acc, len)
    }
}

/// Writes `len` pseudo-random bytes (a seeded xorshift: incompressible, reproducible) to `path`
/// a MiB at a time; returns their checksum and length.
fn write_pseudo_random(path: &Path, len: u64, seed: u64) -> (u64, u64) {
    let mut file = io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut sum = Sum::default();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for word in buf.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes()[..word.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        file.write_all(&buf[..n]).unwrap();
        sum.update(&buf[..n]);
        left -= n as u64;
    }
    file.flush().unwrap();
    sum.finish()
}

/// Checksum and length of everything `reader` gives, read 64 KiB at a time.
fn sum_reader(mut reader: Box<dyn Read + Send>) -> (u64, u64) {
    let mut sum = Sum::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        sum.update(&buf[..n]);
    }
    sum.finish()
}

/// How far this process's peak resident memory rose above its resident memory while `f` ran
/// (Linux: VmHWM, reset through /proc/self/clear_refs).
fn peak_rss_growth(f: impl FnOnce()) -> u64 {
    let before = status_kib("VmRSS");
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
    f();
    status_kib("VmHWM").saturating_sub(before) * 1024
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}
