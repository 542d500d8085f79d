//! The fetch library against a misbehaving loopback HTTP server (`support::http`).

#![allow(clippy::disallowed_methods)] // tests may use std::fs; src uses fs-err (clippy.toml)

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pybake::fetch::{self, Attempt, Failure, FetchConfig, FetchError, Source, Timeout};
use pybake::hash::SourceHash;
use support::{refused_url, Reply, Route, TestServer};

const DATA: &[u8] = b"pretend this is Python-3.11.2.tar.xz\n";

fn sha() -> SourceHash {
    SourceHash::of(DATA)
}

/// A store (`sources/`, `tmp/`) in a temp dir.
struct Store {
    dir: tempfile::TempDir,
}

impl Store {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn sources(&self) -> PathBuf {
        self.dir.path().join("sources")
    }
    fn tmp(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }
    fn fetch(&self, cfg: &FetchConfig, urls: &[String]) -> Result<PathBuf, FetchError> {
        let src = Source {
            recipe: "python",
            urls,
            sha256: sha(),
        };
        fetch::fetch(
            cfg,
            &self.sources(),
            &self.tmp(),
            &src,
            &pybake::progress::Silent,
        )
    }
    fn entries(dir: &Path) -> Vec<String> {
        match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
    /// Asserts the fetch stored exactly DATA under its hash.
    fn assert_stored(&self, result: Result<PathBuf, FetchError>) {
        let path = result.unwrap_or_else(|e| panic!("fetch failed: {e}"));
        assert_eq!(path, self.sources().join(sha().to_hex()));
        assert_eq!(std::fs::read(&path).unwrap(), DATA);
        assert_eq!(Self::entries(&self.sources()), [sha().to_hex()]);
        assert_eq!(
            Self::entries(&self.tmp()),
            Vec::<String>::new(),
            "temp left"
        );
    }
    /// Asserts nothing was stored and no temp file was left.
    fn assert_empty(&self) {
        assert_eq!(Self::entries(&self.sources()), Vec::<String>::new());
        assert_eq!(Self::entries(&self.tmp()), Vec::<String>::new());
    }
}

/// Fast retries and short timeouts for tests.
fn test_cfg() -> FetchConfig {
    FetchConfig {
        retries: 3,
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        ..FetchConfig::default()
    }
}

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

#[test]
fn retries_transient_failures_then_succeeds() {
    let server = TestServer::start([
        (
            "/500.tar.xz",
            Route::fail_first(3, Reply::Status(500), Reply::Body(DATA.into())),
        ),
        (
            "/close.tar.xz",
            Route::fail_first(2, Reply::Close, Reply::Body(DATA.into())),
        ),
    ]);
    let store = Store::new();
    store.assert_stored(store.fetch(&test_cfg(), &[server.url("/500.tar.xz")]));
    assert_eq!(server.hits("/500.tar.xz"), 4);

    let store = Store::new();
    store.assert_stored(store.fetch(&test_cfg(), &[server.url("/close.tar.xz")]));
    assert_eq!(server.hits("/close.tar.xz"), 3);
}

#[test]
fn gives_up_on_a_candidate_after_the_configured_retries() {
    let server = TestServer::start([(
        "/flaky.tar.xz",
        Route::fail_first(9, Reply::Status(503), Reply::Body(DATA.into())),
    )]);
    let store = Store::new();
    let cfg = FetchConfig {
        retries: 2,
        ..test_cfg()
    };
    let err = store
        .fetch(&cfg, &[server.url("/flaky.tar.xz")])
        .unwrap_err();
    assert_eq!(server.hits("/flaky.tar.xz"), 3);
    let msg = err.to_string();
    assert!(
        msg.contains("HTTP status 503 Service Unavailable (3 tries)"),
        "{msg}"
    );
    store.assert_empty();
}

#[test]
fn short_body_is_retried() {
    let short = Reply::Short {
        body: DATA.into(),
        sent: DATA.len() / 2,
    };
    let server = TestServer::start([(
        "/short.tar.xz",
        Route::fail_first(1, short, Reply::Body(DATA.into())),
    )]);
    let store = Store::new();
    store.assert_stored(store.fetch(&test_cfg(), &[server.url("/short.tar.xz")]));
    assert_eq!(server.hits("/short.tar.xz"), 2);
}

#[test]
fn stalled_response_times_out_and_is_retried() {
    let server = TestServer::start([(
        "/stall.tar.xz",
        Route::fail_first(
            1,
            Reply::Stall(Duration::from_secs(10)),
            Reply::Body(DATA.into()),
        ),
    )]);
    let store = Store::new();
    let cfg = FetchConfig {
        read_timeout: Duration::from_millis(300),
        ..test_cfg()
    };
    let started = Instant::now();
    store.assert_stored(store.fetch(&cfg, &[server.url("/stall.tar.xz")]));
    assert_eq!(server.hits("/stall.tar.xz"), 2);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn mismatch_moves_on_to_the_next_mirror_without_retrying() {
    let server = TestServer::start([
        ("/bad/x.tar.xz", Route::body(b"tampered".to_vec())),
        ("/good/x.tar.xz", Route::body(DATA)),
    ]);
    let store = Store::new();
    let urls = [server.url("/bad/x.tar.xz"), server.url("/good/x.tar.xz")];
    store.assert_stored(store.fetch(&test_cfg(), &urls));
    assert_eq!(server.hits("/bad/x.tar.xz"), 1);
    assert_eq!(server.hits("/good/x.tar.xz"), 1);
}

#[test]
fn not_found_upstream_falls_back_to_a_recipe_mirror() {
    let server = TestServer::start([
        ("/gone/x.tar.xz", Route::status(404)),
        ("/mirror/x.tar.xz", Route::body(DATA)),
    ]);
    let store = Store::new();
    let urls = [server.url("/gone/x.tar.xz"), server.url("/mirror/x.tar.xz")];
    store.assert_stored(store.fetch(&test_cfg(), &urls));
    assert_eq!(server.hits("/gone/x.tar.xz"), 1);
}

#[test]
fn when_all_fail_one_error_lists_every_url() {
    let server = TestServer::start([
        ("/404/x.tar.xz", Route::status(404)),
        ("/500/x.tar.xz", Route::status(500)),
        ("/wrong/x.tar.xz", Route::body(b"tampered".to_vec())),
    ]);
    let refused = refused_url("/x.tar.xz");
    let urls = [
        server.url("/404/x.tar.xz"),
        server.url("/500/x.tar.xz"),
        server.url("/wrong/x.tar.xz"),
        refused.clone(),
        "mirror://nowhere/x.tar.xz".to_string(),
    ];
    let store = Store::new();
    let cfg = FetchConfig {
        retries: 1,
        ..test_cfg()
    };
    let err = store.fetch(&cfg, &urls).unwrap_err();
    let FetchError::AllFailed { attempts, .. } = &err else {
        panic!("expected AllFailed, got {err:?}");
    };
    let tried: Vec<&str> = attempts.iter().map(|a| a.url.as_str()).collect();
    assert_eq!(tried, urls.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(matches!(
        attempts[0].failure,
        Failure::Status { status: 404 }
    ));
    assert!(matches!(
        attempts[1].failure,
        Failure::Status { status: 500 }
    ));
    assert!(matches!(attempts[2].failure, Failure::Mismatch { .. }));
    assert!(matches!(attempts[3].failure, Failure::Transport(_)));
    assert!(matches!(attempts[4].failure, Failure::NoMirrorBase { .. }));
    assert_eq!(server.hits("/500/x.tar.xz"), 2);

    let msg = err.to_string();
    let actual = SourceHash::of(b"tampered");
    for needle in [
        "cannot fetch x.tar.xz".to_string(),
        "recipe python".to_string(),
        format!("{}: HTTP status 404 Not Found", urls[0]),
        format!(
            "{}: HTTP status 500 Internal Server Error (2 tries)",
            urls[1]
        ),
        format!(
            "{}: sha256 mismatch: the 8 bytes received have {actual}, but the recipe pins {}",
            urls[2],
            sha()
        ),
        format!("{refused}: request failed"),
        "mirror://nowhere/x.tar.xz: skipped".to_string(),
        "PYBAKE_MIRROR_NOWHERE=".to_string(),
        "check the recipe's sha256 pin".to_string(),
    ] {
        assert!(msg.contains(&needle), "{needle:?} not in:\n{msg}");
    }
    store.assert_empty();
}

#[test]
fn mirror_scheme_resolves_against_each_configured_base() {
    let server = TestServer::start([
        ("/m1/pool/x.tar.xz", Route::status(404)),
        ("/m2/pool/x.tar.xz", Route::body(DATA)),
    ]);
    let mut cfg = test_cfg();
    cfg.named_mirrors
        .insert("debian".into(), vec![server.url("/m1/"), server.url("/m2")]);
    let store = Store::new();
    store.assert_stored(store.fetch(&cfg, &["mirror://debian/pool/x.tar.xz".into()]));
    assert_eq!(server.hits("/m1/pool/x.tar.xz"), 1);
    assert_eq!(server.hits("/m2/pool/x.tar.xz"), 1);
}

#[test]
fn mirror_scheme_without_a_base_is_skipped_with_a_hint() {
    let server = TestServer::start([("/x.tar.xz", Route::body(DATA))]);
    let store = Store::new();
    let urls = ["mirror://gnu/x.tar.xz".to_string(), server.url("/x.tar.xz")];
    store.assert_stored(store.fetch(&test_cfg(), &urls));

    let store = Store::new();
    let err = store
        .fetch(&test_cfg(), &["mirror://gnu/x.tar.xz".to_string()])
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(
            "no base URL is configured for mirror://gnu/ (set PYBAKE_MIRROR_GNU=<base URL>"
        ),
        "{msg}"
    );
}

#[test]
fn user_mirrors_are_tried_before_upstream() {
    let upstream = TestServer::start([("/dl/x.tar.xz", Route::body(DATA))]);
    let flat = TestServer::start([("/cache/x.tar.xz", Route::body(DATA))]);
    let by_hash_path = format!("/cas/sha256/{}", sha().to_hex());
    let by_hash = TestServer::start([(by_hash_path.as_str(), Route::body(DATA))]);
    let urls = [upstream.url("/dl/x.tar.xz")];

    let store = Store::new();
    let cfg = FetchConfig {
        user_mirrors: vec![flat.url("/cache/")],
        ..test_cfg()
    };
    store.assert_stored(store.fetch(&cfg, &urls));
    assert_eq!(flat.hits("/cache/x.tar.xz"), 1);

    let store = Store::new();
    let cfg = FetchConfig {
        user_mirrors: vec![by_hash.url("/cas")],
        ..test_cfg()
    };
    store.assert_stored(store.fetch(&cfg, &urls));
    assert_eq!(by_hash.hits("/cas/x.tar.xz"), 1, "flat name first (404)");
    assert_eq!(by_hash.hits(&by_hash_path), 1);

    assert_eq!(upstream.total_hits(), 0);
}

#[test]
fn file_urls_and_directory_mirrors_work() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.tar.xz"), DATA).unwrap();
    std::fs::write(dir.path().join("bad.tar.xz"), b"tampered").unwrap();

    let store = Store::new();
    store.assert_stored(store.fetch(&test_cfg(), &[file_url(&dir.path().join("x.tar.xz"))]));

    let store = Store::new();
    let err = store
        .fetch(&test_cfg(), &[file_url(&dir.path().join("bad.tar.xz"))])
        .unwrap_err();
    assert!(err.to_string().contains("sha256 mismatch"), "{err}");
    store.assert_empty();

    // A plain directory as a user mirror, without scheme.
    let store = Store::new();
    let cfg = FetchConfig {
        user_mirrors: vec![dir.path().display().to_string()],
        ..test_cfg()
    };
    store.assert_stored(store.fetch(&cfg, &["https://unreachable.invalid/x.tar.xz".into()]));
}

#[test]
fn offline_never_touches_the_network_and_says_how_to_provide_the_source() {
    let server = TestServer::start([("/x.tar.xz", Route::body(DATA))]);
    let store = Store::new();
    let cfg = FetchConfig {
        offline: true,
        user_mirrors: vec![server.url("/cache")],
        ..test_cfg()
    };
    let err = store.fetch(&cfg, &[server.url("/x.tar.xz")]).unwrap_err();
    assert_eq!(server.total_hits(), 0);
    assert!(matches!(err, FetchError::Offline { .. }), "{err:?}");
    let msg = err.to_string();
    for needle in [
        "recipe python".to_string(),
        "x.tar.xz".to_string(),
        sha().to_string(),
        "pybake import FILE".to_string(),
        "pybake fetch".to_string(),
        "PYBAKE_MIRRORS=file://".to_string(),
        server.url("/x.tar.xz"),
    ] {
        assert!(msg.contains(&needle), "{needle:?} not in:\n{msg}");
    }
    store.assert_empty();

    // file:// mirrors still work offline.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.tar.xz"), DATA).unwrap();
    let cfg = FetchConfig {
        user_mirrors: vec![file_url(dir.path())],
        ..cfg
    };
    store.assert_stored(store.fetch(&cfg, &[server.url("/x.tar.xz")]));
    assert_eq!(server.total_hits(), 0);
}

#[test]
fn a_stored_source_is_returned_without_any_request() {
    let server = TestServer::start([("/x.tar.xz", Route::body(DATA))]);
    let store = Store::new();
    let urls = [server.url("/x.tar.xz")];
    store.assert_stored(store.fetch(&test_cfg(), &urls));
    assert_eq!(server.hits("/x.tar.xz"), 1);
    store.assert_stored(store.fetch(&test_cfg(), &urls));
    assert_eq!(server.hits("/x.tar.xz"), 1);
    assert_eq!(
        fetch::stored(&store.sources(), &sha()),
        Some(store.sources().join(sha().to_hex()))
    );
}

#[test]
fn an_imported_file_is_fetched_without_any_request() {
    let server = TestServer::start([("/x.tar.xz", Route::body(DATA))]);
    let store = Store::new();
    let file = store.dir.path().join("downloaded-by-hand.tar.xz");
    std::fs::write(&file, DATA).unwrap();
    let (hash, size) = fetch::import(&store.sources(), &store.tmp(), &file).unwrap();
    assert_eq!((hash, size), (sha(), DATA.len() as u64));
    store.assert_stored(store.fetch(&test_cfg(), &[server.url("/x.tar.xz")]));
    assert_eq!(server.total_hits(), 0);
}

/// Kills the child on drop, so a failing assertion does not leave it running.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const CHILD_ENV: &str = "PYBAKE_TEST_FETCH_CHILD";

/// Runs twice: as the test, and (re-executed by the test with `CHILD_ENV` set) as the process
/// doing the download that the test kills with SIGKILL mid-way.
#[test]
fn a_download_killed_midway_leaves_nothing_in_the_store() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let [url, sources, tmp]: [&str; 3] = spec
            .split('\n')
            .collect::<Vec<_>>()
            .try_into()
            .expect("child spec");
        let src = Source {
            recipe: "python",
            urls: &[url.to_string()],
            sha256: sha(),
        };
        let _ = fetch::fetch(
            &test_cfg(),
            Path::new(sources),
            Path::new(tmp),
            &src,
            &pybake::progress::Silent,
        );
        std::process::exit(0);
    }

    let big: Vec<u8> = DATA
        .iter()
        .copied()
        .cycle()
        .take(DATA.len() * 5000)
        .collect();
    let big_len = big.len() as u64; // 185 chunks, about 9 s
    let drip = Reply::Drip {
        body: big,
        chunk: 1000,
        every: Duration::from_millis(50),
    };
    let server = TestServer::start([
        ("/slow/x.tar.xz", Route::always(drip)),
        ("/x.tar.xz", Route::body(DATA)),
    ]);
    let store = Store::new();
    let spec = format!(
        "{}\n{}\n{}",
        server.url("/slow/x.tar.xz"),
        store.sources().display(),
        store.tmp().display()
    );
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_download_killed_midway_leaves_nothing_in_the_store",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CHILD_ENV, spec)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);

    // Wait until part of the body is on disk (wherever the child put it), then kill the child.
    let deadline = Instant::now() + Duration::from_secs(30);
    let on_disk = || {
        [store.tmp(), store.sources()].iter().any(|dir| {
            Store::entries(dir)
                .iter()
                .any(|name| std::fs::metadata(dir.join(name)).is_ok_and(|m| m.len() >= 1000))
        })
    };
    while !on_disk() {
        assert!(
            Instant::now() < deadline,
            "the child never wrote a part of the body"
        );
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "the child exited early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    assert!(server.bytes_sent("/slow/x.tar.xz") < big_len);

    assert_eq!(Store::entries(&store.sources()), Vec::<String>::new());
    assert_eq!(fetch::stored(&store.sources(), &sha()), None);
    // The orphan temp file stays in tmp/ (the process had no chance to remove it), holding a
    // part of the body: the kill did hit mid-download...
    let partial: Vec<u64> = Store::entries(&store.tmp())
        .iter()
        .map(|name| std::fs::metadata(store.tmp().join(name)).unwrap().len())
        .collect();
    assert!(
        matches!(partial[..], [len] if len >= 1000 && len < big_len),
        "{partial:?}"
    );
    // ...and does not get in the way of a later fetch.
    let path = store
        .fetch(&test_cfg(), &[server.url("/x.tar.xz")])
        .unwrap();
    assert_eq!(std::fs::read(path).unwrap(), DATA);
    assert_eq!(Store::entries(&store.sources()), [sha().to_hex()]);
}

#[test]
fn silence_is_reported_as_timed_out_with_the_url() {
    // Headers, then no byte of the body.
    let head_only = Reply::Drip {
        body: DATA.into(),
        chunk: DATA.len(),
        every: Duration::from_secs(10),
    };
    let server = TestServer::start([
        ("/body/x.tar.xz", Route::always(head_only)),
        (
            "/head/x.tar.xz",
            Route::always(Reply::Stall(Duration::from_secs(10))),
        ),
    ]);
    let cfg = FetchConfig {
        retries: 0,
        read_timeout: Duration::from_millis(300),
        ..test_cfg()
    };
    for (path, why) in [
        ("/body/x.tar.xz", "timed out: nothing received for 0.3 s"),
        ("/head/x.tar.xz", "timed out: no response within 0.3 s"),
    ] {
        let store = Store::new();
        let err = store.fetch(&cfg, &[server.url(path)]).unwrap_err();
        let msg = err.to_string();
        let expected = format!("{}: {why}", server.url(path));
        assert!(msg.contains(&expected), "{expected:?} not in:\n{msg}");
        assert!(!msg.contains("decoding"), "{msg}");
        store.assert_empty();
    }
}

#[test]
fn a_trickle_times_out_at_the_low_speed_limit_and_is_retried() {
    let body: Vec<u8> = DATA.iter().copied().cycle().take(400).collect();
    let trickle = Reply::Drip {
        body: body.clone(),
        chunk: 1,
        every: Duration::from_millis(50),
    };
    let server = TestServer::start([("/slow/x.tar.xz", Route::always(trickle))]);
    let store = Store::new();
    let cfg = FetchConfig {
        retries: 1,
        low_speed_limit: 1000,
        low_speed_time: Duration::from_secs(1),
        ..test_cfg()
    };
    let url = server.url("/slow/x.tar.xz");
    let err = store.fetch(&cfg, std::slice::from_ref(&url)).unwrap_err();
    let FetchError::AllFailed { attempts, .. } = &err else {
        panic!("expected AllFailed, got {err:?}");
    };
    assert!(
        matches!(
            attempts[..],
            [Attempt {
                tries: 2,
                failure: Failure::TimedOut(Timeout::LowSpeed { limit: 1000, .. }),
                ..
            }]
        ),
        "{attempts:?}"
    );
    let msg = err.to_string();
    let expected = format!("{url}: timed out: less than 1000 bytes/s over 1 s (2 tries)");
    assert!(msg.contains(&expected), "{expected:?} not in:\n{msg}");
    assert!(msg.contains("PYBAKE_LOW_SPEED_LIMIT"), "{msg}");
    assert_eq!(server.hits("/slow/x.tar.xz"), 2);
    // Each try gave up after about a window's worth of the trickle, far from the whole body.
    assert!(server.bytes_sent("/slow/x.tar.xz") < body.len() as u64);
    store.assert_empty();
}

/// The config with the lockfile recording `size` bytes for DATA.
fn locked_cfg(size: u64) -> FetchConfig {
    let mut cfg = test_cfg();
    cfg.expected_sizes.insert(sha(), size);
    cfg
}

#[test]
fn a_body_growing_past_the_lockfile_size_is_cut_off_and_the_next_url_tried() {
    const FLOOD: u64 = 128 << 20;
    let flood = Reply::Flood {
        prefix: DATA.into(),
        total: FLOOD,
        announce: false,
    };
    let server = TestServer::start([
        ("/flood/x.tar.xz", Route::always(flood)),
        ("/good/x.tar.xz", Route::body(DATA)),
    ]);
    let cfg = locked_cfg(DATA.len() as u64);

    let store = Store::new();
    let flood_url = server.url("/flood/x.tar.xz");
    let err = store
        .fetch(&cfg, std::slice::from_ref(&flood_url))
        .unwrap_err();
    let FetchError::AllFailed { attempts, .. } = &err else {
        panic!("expected AllFailed, got {err:?}");
    };
    assert!(
        matches!(
            attempts[..],
            [Attempt {
                tries: 1,
                failure: Failure::TooLarge {
                    locked: 37,
                    announced: None
                },
                ..
            }]
        ),
        "{attempts:?}"
    );
    let msg = err.to_string();
    let expected = format!(
        "{flood_url}: sent more than the 37 bytes the lockfile records for this source \
         (download cut off)"
    );
    assert!(msg.contains(&expected), "{expected:?} not in:\n{msg}");
    assert!(msg.contains("pybake lock --update python"), "{msg}");
    assert_eq!(server.hits("/flood/x.tar.xz"), 1, "not retried");
    let sent = server.bytes_sent("/flood/x.tar.xz");
    assert!(sent < FLOOD / 4, "the flood was read: {sent} bytes sent");
    store.assert_empty();

    let store = Store::new();
    store.assert_stored(store.fetch(&cfg, &[flood_url, server.url("/good/x.tar.xz")]));
    assert_eq!(server.hits("/flood/x.tar.xz"), 2);
}

#[test]
fn a_size_above_the_lockfile_size_is_refused_before_reading() {
    const BIG: u64 = 128 << 20;
    let flood = Reply::Flood {
        prefix: DATA.into(),
        total: BIG,
        announce: true,
    };
    let server = TestServer::start([("/big/x.tar.xz", Route::always(flood))]);
    let dir = tempfile::tempdir().unwrap();
    let big_file = dir.path().join("x.tar.xz");
    std::fs::write(&big_file, vec![b'x'; 4096]).unwrap();
    let cfg = locked_cfg(DATA.len() as u64);
    for (url, size) in [
        (server.url("/big/x.tar.xz"), BIG),
        (file_url(&big_file), 4096),
    ] {
        let store = Store::new();
        let err = store.fetch(&cfg, std::slice::from_ref(&url)).unwrap_err();
        let FetchError::AllFailed { attempts, .. } = &err else {
            panic!("expected AllFailed, got {err:?}");
        };
        assert!(
            matches!(
                attempts[..],
                [Attempt {
                    tries: 1,
                    failure: Failure::TooLarge { locked: 37, announced: Some(n) },
                    ..
                }] if n == size
            ),
            "{attempts:?}"
        );
        let expected = format!(
            "{url}: is {size} bytes, more than the 37 bytes the lockfile records for this \
             source (not downloaded)"
        );
        assert!(
            err.to_string().contains(&expected),
            "{expected:?} not in:\n{err}"
        );
        store.assert_empty();
    }
    assert!(server.bytes_sent("/big/x.tar.xz") < BIG / 4);
}

#[test]
fn a_mismatch_of_another_size_than_the_lockfile_says_names_both_sizes() {
    let server = TestServer::start([("/x.tar.xz", Route::body(b"tampered".to_vec()))]);
    let store = Store::new();
    let err = store
        .fetch(&locked_cfg(DATA.len() as u64), &[server.url("/x.tar.xz")])
        .unwrap_err();
    let msg = err.to_string();
    for needle in [
        "the 8 bytes received have",
        "(the lockfile records 37 bytes for it)",
        "or the lockfile is wrong (run `pybake lock --update python`",
    ] {
        assert!(msg.contains(needle), "{needle:?} not in:\n{msg}");
    }
    store.assert_empty();

    // The right file of the lockfile's size: nothing to say about sizes.
    let server = TestServer::start([("/x.tar.xz", Route::body(DATA))]);
    store.assert_stored(store.fetch(&locked_cfg(DATA.len() as u64), &[server.url("/x.tar.xz")]));
}
