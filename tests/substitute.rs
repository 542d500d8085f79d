//! Binary caches end to end, with the real binary: push from one store, realize into an empty
//! one. One suite (`suite!` below) runs against every backend, on real servers started here: a
//! directory, Debian's nginx with WebDAV PUT, and s3s-fs. Every way a substitution can go wrong
//! must end in a warning that names the cache, the output and the reason, then a local build,
//! and never in an unverified file in the store. Failures only HTTP can produce (5xx, 401/403)
//! use nginx's real answers or the fault-injecting server of `support::http`.

#![allow(clippy::disallowed_methods)] // tests may use std::fs; src uses fs-err (clippy.toml)

mod common;
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;
use support::servers::{Nginx, S3Server};
use support::{Reply, Route, TestServer};

// ---------------------------------------------------------------------------------------------
// Backends

/// A running cache server (or a directory) that caches can be made in.
struct Backend {
    kind: Kind,
    /// The variables pybake needs to talk to it (S3 credentials).
    env: Vec<(String, String)>,
    _keep: Box<dyn std::any::Any>,
    base: PathBuf,
    url_base: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Dir,
    Nginx,
    S3,
}

/// One cache of a backend: its URL and the directory its objects are files in, for tampering.
#[derive(Clone, Debug)]
struct Cache {
    url: String,
    files: PathBuf,
}

impl Backend {
    fn dir() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_path_buf();
        Backend {
            kind: Kind::Dir,
            env: Vec::new(),
            url_base: format!("file://{}", base.display()),
            base,
            _keep: Box::new(dir),
        }
    }

    fn nginx() -> Self {
        let nginx = Nginx::start();
        Backend {
            kind: Kind::Nginx,
            env: Vec::new(),
            url_base: nginx.url(""),
            base: nginx.root(),
            _keep: Box::new(nginx),
        }
    }

    fn s3() -> Self {
        let s3 = S3Server::start("cache");
        Backend {
            kind: Kind::S3,
            env: S3Server::good_env(),
            url_base: s3.endpoint(),
            base: s3.bucket_dir("cache"),
            _keep: Box::new(s3),
        }
    }

    /// A cache named `name` in this backend (a directory, an HTTP prefix or an S3 prefix).
    fn cache(&self, name: &str) -> Cache {
        let url = match self.kind {
            Kind::Dir | Kind::Nginx => format!("{}/{name}", self.url_base),
            Kind::S3 => format!(
                "s3://cache/{name}?endpoint={}&region=us-east-1",
                self.url_base
            ),
        };
        Cache {
            url,
            files: self.base.join(name),
        }
    }

    /// The URL of a cache of this kind where nothing answers.
    fn unreachable(&self) -> String {
        let closed = support::refused_url("");
        match self.kind {
            Kind::Dir => format!("file://{}/no-such-cache", self.base.display()),
            Kind::Nginx => format!("{closed}/cache"),
            Kind::S3 => format!("s3://cache/pybake?endpoint={closed}&region=us-east-1"),
        }
    }

    /// A cache of this kind that refuses writes, and the environment to push to it with.
    /// `with_info`: the cache has its `pybake-cache-info` already.
    fn refusing_writes(&self, with_info: bool) -> (Cache, Vec<(String, String)>) {
        let name = if with_info { "with-info" } else { "new" };
        let (cache, env) = match self.kind {
            Kind::Dir => (self.cache(&format!("read-only-{name}")), Vec::new()),
            // The test nginx denies PUT under /ro/ (limit_except GET).
            Kind::Nginx => (self.cache(&format!("ro/{name}")), Vec::new()),
            Kind::S3 => (
                self.cache(name),
                S3Server::env(S3Server::ACCESS_KEY, "not-the-secret"),
            ),
        };
        if with_info {
            std::fs::create_dir_all(&cache.files).unwrap();
            std::fs::write(
                cache.files.join("pybake-cache-info"),
                "StoreDir: /pybake/store\nFormat: 1\nPriority: 50\n",
            )
            .unwrap();
        }
        if self.kind == Kind::Dir {
            std::fs::create_dir_all(&cache.files).unwrap();
            set_mode(&cache.files, 0o555);
        }
        (cache, env)
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

// ---------------------------------------------------------------------------------------------
// The project: a tiny root, `a`, a build tool, and `b`, which mentions `a`'s path.

/// A project whose recipes build on `tiny-root` (so their outputs are not host builds):
/// `a` (a file, an executable and a symlink), `tool` (needed to build `b` only), and `b`,
/// which depends on both and records `a`'s store path (so `a` is in its runtime closure, `tool`
/// is not).
fn project() -> Project {
    let p = Project::new();
    tiny_root(&p);
    p.recipe(
        "a",
        r#"name = "a"
version = "1"
root = "tiny-root"
steps = [
  "mkdir -p $out/share $out/bin",
  "echo a > $out/share/a.txt",
  "ln -s a.txt $out/share/link",
  "printf '#!/bin/sh\\necho a\\n' > $out/bin/a && chmod +x $out/bin/a",
]
"#,
    );
    p.recipe(
        "tool",
        r#"name = "tool"
version = "1"
root = "tiny-root"
steps = ["mkdir -p $out/bin", "printf '#!/bin/sh\\necho made by tool\\n' > $out/bin/tool && chmod +x $out/bin/tool"]
"#,
    );
    p.recipe(
        "b",
        r#"name = "b"
version = "1"
root = "tiny-root"
deps = ["a", "tool"]
steps = [
  "mkdir -p $out",
  "echo $DEP_A > $out/a-path",
  "cat $DEP_A/share/a.txt > $out/b.txt",
  "tool > $out/tool.txt",
]
"#,
    );
    p
}

/// The project, its `built` store holding b's closure, and a signing key.
struct Setup {
    p: Project,
    env: Vec<(String, String)>,
    key: Key,
}

struct Key {
    secret: String,
    public: String,
}

const BUILT: &str = "built";
const FRESH: &str = "fresh";

impl Setup {
    fn new(backend: &Backend) -> Self {
        let p = project();
        let s = Setup {
            key: generate_key(&p, "test-cache-1"),
            env: backend.env.clone(),
            p,
        };
        s.pb(BUILT, &["realize", "b"]).ok();
        s
    }

    /// pybake with `--store STORE` and the backend's environment.
    fn pb(&self, store: &str, args: &[&str]) -> Run {
        self.pb_env(store, &self.env, args)
    }

    fn pb_env(&self, store: &str, env: &[(String, String)], args: &[&str]) -> Run {
        let mut c = self.p.cmd(&["--store", store]);
        c.args(args);
        c.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN");
        // No user configuration from outside (docs/config.md): only what a test sets.
        c.env("XDG_CONFIG_HOME", self.p.path().join("xdg"));
        c.envs(env.iter().map(|(k, v)| (k, v)));
        Run::from(c.output().expect("run pybake"))
    }

    /// `cache push CACHE b` from the built store, signed with the setup's key.
    fn push(&self, cache: &Cache) -> Run {
        self.pb(
            BUILT,
            &[
                "cache",
                "push",
                &cache.url,
                "b",
                "--secret-key",
                &self.key.secret,
            ],
        )
    }

    /// `realize --json b` (or other arguments) into `store` from `caches`, trusting the key.
    fn realize_from(&self, store: &str, caches: &[&str], extra: &[&str]) -> Run {
        let mut args = Vec::new();
        for c in caches {
            args.extend(["--substituter", c]);
        }
        args.extend(["--trusted-public-key", &self.key.public]);
        args.extend(["realize", "--json"]);
        args.extend(extra);
        if !extra.iter().any(|a| !a.starts_with('-')) {
            args.push("b");
        }
        self.pb(store, &args)
    }

    /// The store name of `recipe`'s output.
    fn name(&self, recipe: &str) -> String {
        let path = self.pb(BUILT, &["path", recipe]).ok().line();
        path.rsplit('/').next().unwrap().to_string()
    }

    fn store(&self, store: &str) -> PathBuf {
        self.p.path().join(store)
    }

    /// Output hash of every output in the built store, by store name.
    fn built_hashes(&self) -> BTreeMap<String, String> {
        outputs(&self.store(BUILT))
            .into_iter()
            .map(|n| {
                let h = output_hash_in_meta(&self.store(BUILT), &n);
                (n, h)
            })
            .collect()
    }

    /// Checks that every output in `store` is valid and intact (its tree hashes to what its
    /// metadata says, and to what the built store has for that name), and that no temporary is
    /// left behind: nothing unverified is in the store.
    fn assert_store_sound(&self, store: &str) {
        let dir = self.store(store);
        let built = self.built_hashes();
        for name in outputs(&dir) {
            let recorded = output_hash_in_meta(&dir, &name);
            let actual = self.tree_hash(&dir.join(&name));
            assert_eq!(
                recorded, actual,
                "{name} in {store} does not match its metadata"
            );
            assert_eq!(
                Some(&recorded),
                built.get(&name),
                "{name} in {store} differs from the built output"
            );
        }
        let tmp = dir.join(".pybake/tmp");
        let left: Vec<_> = std::fs::read_dir(&tmp)
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "temporaries left in {store}: {left:?}");
    }

    fn tree_hash(&self, path: &Path) -> String {
        let out = self.p.run(&["hash", path.to_str().unwrap()]).ok().stdout;
        out.split_whitespace().next().unwrap().to_string()
    }
}

fn generate_key(p: &Project, name: &str) -> Key {
    let secret = p.path().join(format!("{name}.secret"));
    let r = p
        .run(&[
            "key",
            "generate",
            name,
            "--secret-key",
            secret.to_str().unwrap(),
        ])
        .ok();
    Key {
        secret: secret.display().to_string(),
        public: r.line(),
    }
}

/// The store names of the outputs in a store directory (valid or not), sorted.
fn outputs(store: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(store) {
        Ok(d) => d
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

fn output_hash_in_meta(store: &Path, name: &str) -> String {
    let meta = meta_of(store, name);
    meta["output_hash"].as_str().unwrap().to_string()
}

/// Every entry of a tree with its kind, executable bit and contents (or link target), sorted:
/// a comparison of bytes that does not rely on pybake's own hashing.
fn listing(root: &Path) -> Vec<(String, String)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let what = if meta.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                stack.push(path.clone());
                "dir".to_string()
            } else {
                let x = meta.permissions().mode() & 0o111 != 0;
                format!("file x={x} {:?}", std::fs::read(&path).unwrap())
            };
            out.push((rel, what));
        }
    }
    out.sort();
    out
}

fn status_of(statuses: &[(String, String)], name: &str) -> Option<String> {
    statuses
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, s)| s.clone())
}

/// The files of a cache directory with their modification times, for "nothing was written".
fn files_with_mtimes(dir: &Path) -> Vec<(String, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, meta.modified().unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// The lines of stderr that are warnings.
fn warnings(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("pybake: warning:"))
        .collect()
}

/// Asserts that some warning names the cache, the output and the reason.
#[track_caller]
fn assert_warned(stderr: &str, cache: &str, output: &str, reason: &str) {
    let found = warnings(stderr)
        .iter()
        .any(|w| w.contains(cache) && w.contains(output) && w.contains(reason));
    assert!(
        found,
        "no warning naming {cache}, {output} and {reason:?}; stderr:\n{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// Tampering with a cache's files

/// Where an output's files are in a cache's directory.
struct Entry {
    narinfo: PathBuf,
    nar: PathBuf,
}

fn entry(cache: &Cache, store_name: &str) -> Entry {
    let hash = &store_name[..32];
    let narinfo = cache.files.join(format!("{hash}.narinfo"));
    let text =
        std::fs::read_to_string(&narinfo).unwrap_or_else(|e| panic!("{}: {e}", narinfo.display()));
    let url = text
        .lines()
        .find_map(|l| l.strip_prefix("URL: "))
        .expect("URL line");
    Entry {
        nar: cache.files.join(url),
        narinfo,
    }
}

/// Replaces the value of `key` in a narinfo file.
fn edit_narinfo(path: &Path, key: &str, value: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    let prefix = format!("{key}: ");
    assert!(
        text.lines().any(|l| l.starts_with(&prefix)),
        "{key} in {text}"
    );
    let edited: String = text
        .lines()
        .map(|l| {
            if l.starts_with(&prefix) {
                format!("{prefix}{value}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(path, edited).unwrap();
}

/// Another sha256 in `sha256:<hex>` form.
fn other_hash(h: &str) -> String {
    let hex = h.strip_prefix("sha256:").unwrap();
    let flipped: String = hex
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i == 10 {
                if c == '0' {
                    '1'
                } else {
                    '0'
                }
            } else {
                c
            }
        })
        .collect();
    format!("sha256:{flipped}")
}

fn narinfo_value(path: &Path, key: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let prefix = format!("{key}: ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap()
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// The suite, once per backend

macro_rules! suite {
    ($backend:ident: $($test:ident),* $(,)?) => {
        mod $backend {
            $(
                #[test]
                fn $test() {
                    super::$test(&super::Backend::$backend())
                }
            )*
        }
    };
}

macro_rules! suite_for_every_backend {
    ($($test:ident),* $(,)?) => {
        suite!(dir: $($test),*);
        suite!(nginx: $($test),*);
        suite!(s3: $($test),*);
    };
}

suite_for_every_backend!(
    push_then_realize_substitutes_everything,
    a_second_push_skips_what_is_there,
    the_runtime_closure_comes_along,
    unsigned_entries_are_refused,
    entries_signed_by_an_untrusted_key_are_refused,
    a_tampered_narinfo_is_refused,
    a_corrupt_archive_is_refused,
    a_truncated_archive_is_refused,
    another_outputs_archive_is_refused,
    an_archive_longer_than_its_file_size_is_refused,
    a_missing_archive_is_built,
    a_narinfo_of_another_store_name_is_refused,
    a_wrong_output_hash_is_refused,
    an_unreachable_cache_is_a_warning,
    the_first_cache_in_priority_order_wins_and_a_bad_entry_falls_through,
    jobs_zero_substitutes_or_fails_naming_the_recipes,
    a_push_the_cache_refuses_fails_listing_what_was_not_pushed,
    verify_reports_good_and_bad_entries,
    realize_push_pushes_what_it_built,
    plan_shows_what_would_be_substituted,
    sources_come_from_the_cache_when_upstream_is_gone,
);

/// A recipe `c` with a downloaded source whose upstream disappears after the push: a changed
/// `c` (not in the cache) still builds, from the source the push put in the cache, and a cache
/// holding other bytes under the source's name is not believed.
fn sources_come_from_the_cache_when_upstream_is_gone(backend: &Backend) {
    let s = Setup::new(backend);
    let cache = backend.cache("sources");
    let source = b"the pinned source\n".to_vec();
    let sha = sha256_hex(&source);
    let upstream = TestServer::start([("/src.txt", Route::body(source.clone()))]);
    let url = upstream.url("/src.txt");
    let recipe = |step: &str| {
        format!(
            "name = \"c\"\nversion = \"1\"\nroot = \"tiny-root\"\nsteps = [\"mkdir $out && cp $src/src.txt $out/ && {step}\"]\n[[sources]]\nurl = \"{url}\"\nsha256 = \"{sha}\"\n"
        )
    };
    s.p.recipe("c", &recipe("true"));
    s.pb(BUILT, &["realize", "c"]).ok();
    s.pb(
        BUILT,
        &[
            "cache",
            "push",
            &cache.url,
            "c",
            "--secret-key",
            &s.key.secret,
        ],
    )
    .ok();
    let stored = cache.files.join("sources").join(&sha);
    assert_eq!(
        std::fs::read(&stored).unwrap(),
        source,
        "the push stored the source"
    );
    drop(upstream);

    // Another derivation of c: nothing to substitute, so it is built, from the cache's copy.
    s.p.recipe("c", &recipe("echo changed > $out/note"));
    let r = s.realize_from(FRESH, &[&cache.url], &["c"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        status_of(&statuses(&r.stdout), "c").as_deref(),
        Some("built")
    );
    let out = s.store(FRESH).join(s.name("c"));
    assert_eq!(std::fs::read(out.join("src.txt")).unwrap(), source);

    // Other bytes under the source's name: a warning, then the usual download (gone here).
    set_mode(&stored, 0o644);
    std::fs::write(&stored, b"a poisoned source\n").unwrap();
    let r = s.realize_from("fresh2", &[&cache.url], &["c"]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("is not that source"), "{}", r.stderr);
    let sources = s.store("fresh2").join(".pybake/sources");
    assert!(
        !sources.join(&sha).exists(),
        "the poisoned bytes never entered the store"
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn push_then_realize_substitutes_everything(backend: &Backend) {
    let s = Setup::new(backend);
    let cache = backend.cache("main");
    let push = s.push(&cache).ok();
    assert!(
        push.stderr.contains("pushed 2 output(s)"),
        "a and b: {}",
        push.stderr
    );

    let r = s.realize_from(FRESH, &[&cache.url], &[]).ok();
    let st = statuses(&r.stdout);
    assert_eq!(
        st,
        pairs(&[("a", "substituted"), ("b", "substituted")]),
        "{}",
        r.stderr
    );
    assert!(warnings(&r.stderr).is_empty(), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("summary: 0 built, 2 substituted, 0 cached"),
        "{}",
        r.stderr
    );
    // Nothing was built: tiny-root and tool, which b was built with, are not even there.
    let mut expected = vec![s.name("a"), s.name("b")];
    expected.sort();
    assert_eq!(outputs(&s.store(FRESH)), expected, "{}", r.stderr);
    for recipe in ["a", "b"] {
        let name = s.name(recipe);
        assert_eq!(
            output_hash_in_meta(&s.store(FRESH), &name),
            output_hash_in_meta(&s.store(BUILT), &name)
        );
        assert_eq!(
            listing(&s.store(FRESH).join(&name)),
            listing(&s.store(BUILT).join(&name)),
            "{recipe}'s bytes"
        );
    }
    s.assert_store_sound(FRESH);
    // Its log says where it came from, not a build's lines from another machine.
    let log = std::fs::read_to_string(
        s.store(FRESH)
            .join(".pybake/logs")
            .join(format!("{}.log", s.name("b"))),
    )
    .unwrap();
    assert_eq!(
        log,
        format!(
            "=== pybake: substituted from {}: built elsewhere, so its build log is not here\n",
            cache.url
        )
    );
    // A second realize has everything.
    let again = s.realize_from(FRESH, &[&cache.url], &[]).ok();
    assert_eq!(statuses(&again.stdout), pairs(&[("b", "cached")]));
}

fn a_second_push_skips_what_is_there(backend: &Backend) {
    let s = Setup::new(backend);
    let cache = backend.cache("main");
    s.push(&cache).ok();
    let before = files_with_mtimes(&cache.files);
    let again = s.push(&cache).ok();
    assert!(
        again.stderr.contains("pushed 0 output(s) and 0 source(s)"),
        "{}",
        again.stderr
    );
    assert!(
        again
            .stderr
            .contains("2 output(s) and 0 source(s) were there already"),
        "{}",
        again.stderr
    );
    assert_eq!(files_with_mtimes(&cache.files), before, "nothing rewritten");

    // A damaged entry (its archive gone) is pushed again, and then substitutes.
    let e = entry(&cache, &s.name("a"));
    std::fs::remove_file(&e.nar).unwrap();
    let again = s.push(&cache).ok();
    assert!(
        again.stderr.contains("pushed 1 output(s)"),
        "{}",
        again.stderr
    );
    assert!(e.nar.exists(), "the archive is back");
    let r = s.realize_from(FRESH, &[&cache.url], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        statuses(&r.stdout)
            .iter()
            .all(|(_, st)| st == "substituted"),
        "{}",
        r.stdout
    );
}

fn the_runtime_closure_comes_along(backend: &Backend) {
    let s = Setup::new(backend);
    let cache = backend.cache("main");
    s.push(&cache).ok();
    let (a, b, tool) = (s.name("a"), s.name("b"), s.name("tool"));
    // b mentions a's path: pushing b pushed a; tool is a build-time dependency only.
    assert!(entry(&cache, &a).nar.is_file());
    assert!(!cache
        .files
        .join(format!("{}.narinfo", &tool[..32]))
        .exists());
    assert_eq!(narinfo_value(&entry(&cache, &b).narinfo, "References"), a);

    // Realizing a alone gets it from the cache too.
    let r = s.realize_from("fresh-a", &[&cache.url], &["a"]).ok();
    assert_eq!(statuses(&r.stdout), pairs(&[("a", "substituted")]));
    // b's substituted output still finds a where it recorded it.
    s.realize_from(FRESH, &[&cache.url], &[]).ok();
    let recorded = std::fs::read_to_string(s.store(FRESH).join(&b).join("a-path")).unwrap();
    assert_eq!(recorded.trim(), format!("/pybake/store/{a}"));
    assert!(s.store(FRESH).join(&a).join("share/a.txt").is_file());
    let meta = meta_of(&s.store(FRESH), &b);
    assert_eq!(meta["references"], serde_json::json!([a]));
}

/// Realizes b from a cache whose entry of b has been spoilt: first with `-j 0` (so nothing may
/// be built: b must not appear in the store at all), then normally (b is built, a still
/// substituted). Both warn, naming the cache, b and `reason`.
fn spoilt_b_is_built(s: &Setup, cache: &Cache, reason: &str) {
    spoilt_is_built(s, cache, reason, false)
}

/// [`spoilt_b_is_built`] where a is spoilt the same way (`all`) or not.
fn spoilt_is_built(s: &Setup, cache: &Cache, reason: &str, all: bool) {
    let b = s.name("b");
    let r = s.realize_from(FRESH, &[&cache.url], &["-j", "0", "b"]);
    assert_eq!(r.code, 3, "-j 0 cannot build b: {}", r.stderr);
    assert_warned(&r.stderr, &cache.url, &b, reason);
    assert!(
        !s.store(FRESH).join(&b).exists(),
        "the spoilt b entered the store: {}",
        r.stderr
    );
    assert_eq!(
        s.store(FRESH).join(s.name("a")).exists(),
        !all,
        "a good a is substituted: {}",
        r.stderr
    );
    s.assert_store_sound(FRESH);

    let r = s.realize_from(FRESH, &[&cache.url], &[]).ok();
    assert_warned(&r.stderr, &cache.url, &b, reason);
    let st = statuses(&r.stdout);
    assert_eq!(
        status_of(&st, "b").as_deref(),
        Some("built"),
        "{}",
        r.stderr
    );
    // Without -j 0, a good a was substituted by the first run.
    let a = if all { "built" } else { "cached" };
    assert_eq!(status_of(&st, "a").as_deref(), Some(a), "{}", r.stderr);
    if all {
        assert_warned(&r.stderr, &cache.url, &s.name("a"), reason);
    }
    s.assert_store_sound(FRESH);
    assert_eq!(
        listing(&s.store(FRESH).join(&b)),
        listing(&s.store(BUILT).join(&b))
    );
}

fn unsigned_entries_are_refused(backend: &Backend) {
    let s = Setup::new(backend);
    let cache = backend.cache("main");
    let push = s.pb(BUILT, &["cache", "push", &cache.url, "b"]).ok();
    assert!(push.stderr.contains("unsigned"), "{}", push.stderr);
    spoilt_is_built(&s, &cache, "it is not signed", true);
}

fn entries_signed_by_an_untrusted_key_are_refused(backend: &Backend) {
    let s = Setup::new(backend);
    let cache = backend.cache("main");
    let other = generate_key(&s.p, "someone-else-1");
    s.pb(
        BUILT,
        &[
            "cache",
            "push",
            &cache.url,
            "b",
            "--secret-key",
            &other.secret,
        ],
    )
    .ok();
    spoilt_is_built(&s, &cache, "not trusted: someone-else-1", true);
}

fn a_tampered_narinfo_is_refused(backend: &Backend) {
    let s = Setup::new(backend);
    let cache = backend.cache("main");
    s.push(&cache).ok();
    let e = entry(&cache, &s.name("b"));
    let nar_hash = narinfo_value(&e.narinfo, "NarHash");
    edit_narinfo(&e.narinfo, "NarHash", &other_hash(&nar_hash));
    spoilt_b_is_built(&s, &cache, "does not verify");
}

fn a_corrupt_archive_is_refused(backend: &Backend) {
    let s = Setup::new(backend);
    let cache = backend.cache("main");
    s.push(&cache).ok();
    let e = entry(&cache, &s.name("b"));
    let mut bytes = std::fs::read(&e.nar).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 4] {
        *b ^= 0xff;
    }
    std::fs::write(&e.nar, bytes).unwrap();
    let said = format!(
        "the narinfo says {} bytes with {}",
        narinfo_value(&e.narinfo, "FileSize"),
        narinfo_value(&e.narinfo, "FileHash")
    );
    spoilt_b_is_built(&s, &cache, &said);
}

fn a_truncated_archive_is_refused(backend: &Backend) {
    let s = Setup::new(backend);
    let cache = backend.cache("main");
    s.push(&cache).ok();
    let e = entry(&cache, &s.name("b"));
    let bytes = std::fs::read(&e.nar).unwrap();
    std::fs::write(&e.nar, &bytes[..bytes.len() - 10]).unwrap();
    let said = format!("the archive is {} bytes with sha256:", bytes.len() - 10);
    spoilt_b_is_built(&s, &cache, &said);
}

fn another_outputs_archive_is_refused(backend: &Backend) {
    let s = Setup::new(backend);
    let cache = backend.cache("main");
    s.push(&cache).ok();
    // A well-formed archive, of a's output: only the hashes tell it is not b's.
    let (ea, eb) = (entry(&cache, &s.name("a")), entry(&cache, &s.name("b")));
    std::fs::copy(&ea.nar, &eb.nar).unwrap();
    let said = format!(
        "the narinfo says {} bytes with {}",
        narinfo_value(&eb.narinfo, "FileSize"),
        narinfo_value(&eb.narinfo, "FileHash")
    );
    spoilt_b_is_built(&s, &cache, &said);
}

fn an_archive_longer_than_its_file_size_is_refused(backend: &Backend) {
    let s = Setup::new(backend);
    let cache = backend.cache("main");
    s.push(&cache).ok();
    let e = entry(&cache, &s.name("b"));
    let mut bytes = std::fs::read(&e.nar).unwrap();
    let size = bytes.len();
    // A second copy: a valid zstd stream longer than FileSize.
    bytes.extend_from_within(..);
    std::fs::write(&e.nar, bytes).unwrap();
    spoilt_b_is_built(
        &s,
        &cache,
        &format!("longer than the {size} bytes announced"),
    );
}

fn a_missing_archive_is_built(backend: &Backend) {
    let s = Setup::new(backend);
    let cache = backend.cache("main");
    s.push(&cache).ok();
    let e = entry(&cache, &s.name("b"));
    std::fs::remove_file(&e.nar).unwrap();
    spoilt_b_is_built(&s, &cache, "no longer has the archive");
}

fn a_narinfo_of_another_store_name_is_refused(backend: &Backend) {
    let s = Setup::new(backend);
    let cache = backend.cache("main");
    s.push(&cache).ok();
    let (a, b) = (s.name("a"), s.name("b"));
    // a's (validly signed) narinfo where b's should be.
    std::fs::copy(entry(&cache, &a).narinfo, entry(&cache, &b).narinfo).unwrap();
    spoilt_b_is_built(&s, &cache, &format!("describes {a}"));
}

fn a_wrong_output_hash_is_refused(backend: &Backend) {
    let s = Setup::new(backend);
    let cache = backend.cache("main");
    s.push(&cache).ok();
    // OutputHash is not in the signed fingerprint: the signature still verifies, the unpacked
    // tree must not.
    let e = entry(&cache, &s.name("b"));
    let h = narinfo_value(&e.narinfo, "OutputHash");
    edit_narinfo(&e.narinfo, "OutputHash", &other_hash(&h));
    spoilt_b_is_built(&s, &cache, &format!("unpacks to {h}, but its narinfo says"));
}

fn an_unreachable_cache_is_a_warning(backend: &Backend) {
    let s = Setup::new(backend);
    let url = backend.unreachable();
    let r = s.realize_from(FRESH, &[&url], &[]).ok();
    assert_warned(&r.stderr, &url, &s.name("b"), "not answering");
    assert_eq!(
        warnings(&r.stderr).len(),
        1,
        "one warning for the cache, not one per output: {}",
        r.stderr
    );
    let st = statuses(&r.stdout);
    assert!(st.iter().all(|(_, s)| s == "built"), "{st:?}");
    s.assert_store_sound(FRESH);
}

fn the_first_cache_in_priority_order_wins_and_a_bad_entry_falls_through(backend: &Backend) {
    let s = Setup::new(backend);
    let (first, second) = (backend.cache("first"), backend.cache("second"));
    let (a, b) = (s.name("a"), s.name("b"));
    s.push(&first).ok();
    s.push(&second).ok();
    // The first lacks a; its b is corrupt.
    let ea = entry(&first, &a);
    std::fs::remove_file(&ea.narinfo).unwrap();
    let eb = entry(&first, &b);
    let bytes = std::fs::read(&eb.nar).unwrap();
    std::fs::write(&eb.nar, &bytes[..bytes.len() / 2]).unwrap();
    // Listed second, but priority 10 puts the first before the second (the default is 50).
    s.p.file(
        "pybake.toml",
        &format!(
            "trusted-public-keys = [\"{}\"]\n\
             [[substituters]]\nurl = \"{}\"\n\
             [[substituters]]\nurl = \"{}\"\npriority = 10\n",
            s.key.public, second.url, first.url
        ),
    );
    let r = s.pb(FRESH, &["realize", "--json", "b"]).ok();
    assert_eq!(
        statuses(&r.stdout),
        pairs(&[("a", "substituted"), ("b", "substituted")]),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains(&format!("fetching {a} from {}", second.url)),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains(&format!("fetching {b} from {}", first.url)),
        "the first cache is tried first: {}",
        r.stderr
    );
    assert_warned(&r.stderr, &first.url, &b, "corrupt");
    assert!(
        r.stderr
            .contains(&format!("fetching {b} from {}", second.url)),
        "{}",
        r.stderr
    );
    s.assert_store_sound(FRESH);
    std::fs::remove_file(s.p.path().join("pybake.toml")).unwrap();
}

fn jobs_zero_substitutes_or_fails_naming_the_recipes(backend: &Backend) {
    let s = Setup::new(backend);
    let cache = backend.cache("main");
    // An empty cache.
    let r = s.realize_from(FRESH, &[&cache.url], &["-j", "0", "b"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let msg = r
        .stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default();
    let named = msg
        .split_once(" but ")
        .and_then(|(_, rest)| rest.split_once(" cannot be substituted"))
        .map(|(names, _)| {
            let mut v: Vec<&str> = names.split(", ").collect();
            v.sort();
            v
        });
    assert_eq!(
        named,
        Some(vec!["a", "b", "tiny-root", "tool"]),
        "the recipes it would have to build: {}",
        r.stderr
    );
    assert!(outputs(&s.store(FRESH)).is_empty());

    s.push(&cache).ok();
    let r = s.realize_from(FRESH, &[&cache.url], &["-j", "0", "b"]).ok();
    assert_eq!(
        statuses(&r.stdout),
        pairs(&[("a", "substituted"), ("b", "substituted")])
    );
    s.assert_store_sound(FRESH);
}

fn a_push_the_cache_refuses_fails_listing_what_was_not_pushed(backend: &Backend) {
    let s = Setup::new(backend);
    // A new cache (its description is the first write refused), then one that has its
    // description (each entry is refused).
    for with_info in [false, true] {
        let (cache, env) = backend.refusing_writes(with_info);
        let args = [
            "cache",
            "push",
            &cache.url,
            "b",
            "--secret-key",
            &s.key.secret,
        ];
        let r = if backend.kind == Kind::Dir && unsafe { libc::geteuid() } == 0 {
            // Root writes into a read-only directory unless it gives up the capability to.
            let mut c = std::process::Command::new("setpriv");
            c.args(["--bounding-set", "-dac_override,-fowner"])
                .arg(env!("CARGO_BIN_EXE_pybake"))
                .args(["--store", BUILT])
                .args(args)
                .current_dir(s.p.path());
            for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("PYBAKE_")) {
                c.env_remove(k);
            }
            c.env("XDG_CONFIG_HOME", s.p.path().join("xdg"));
            Run::from(c.output().unwrap())
        } else {
            s.pb_env(BUILT, &env, &args)
        };
        assert_ne!(r.code, 0, "{}", r.stderr);
        let listed: Vec<&str> = r
            .stderr
            .lines()
            .skip_while(|l| !l.contains("were NOT pushed"))
            .skip(1)
            .collect();
        for name in [s.name("a"), s.name("b")] {
            assert!(
                listed.iter().any(|l| l.starts_with(&format!("  {name}: "))),
                "{name} listed as not pushed: {}",
                r.stderr
            );
        }
        let reason = match backend.kind {
            Kind::Dir => "Permission denied",
            Kind::Nginx | Kind::S3 => "denied",
        };
        assert!(
            listed.iter().any(|l| l.contains(reason)),
            "the reason: {}",
            r.stderr
        );
        assert!(
            !cache
                .files
                .join(format!("{}.narinfo", &s.name("b")[..32]))
                .exists(),
            "{}",
            r.stderr
        );
    }
}

fn verify_reports_good_and_bad_entries(backend: &Backend) {
    let s = Setup::new(backend);
    let cache = backend.cache("main");
    s.push(&cache).ok();
    let trust = ["--trusted-public-key", &s.key.public];
    let v = s
        .pb(
            FRESH,
            &[&trust[..], &["cache", "verify", &cache.url, "a", "b"]].concat(),
        )
        .ok();
    assert!(
        v.stderr.contains(&format!("verify {}: ok", s.name("a"))),
        "{}",
        v.stderr
    );
    assert!(
        v.stderr.contains(&format!("verify {}: ok", s.name("b"))),
        "{}",
        v.stderr
    );

    let e = entry(&cache, &s.name("b"));
    let mut bytes = std::fs::read(&e.nar).unwrap();
    let last = bytes.len() - 5;
    bytes[last] ^= 0x55;
    std::fs::write(&e.nar, bytes).unwrap();
    let v = s.pb(
        FRESH,
        &[&trust[..], &["cache", "verify", &cache.url, "a", "b"]].concat(),
    );
    assert_eq!(v.code, 1, "{}", v.stderr);
    assert!(
        v.stderr.contains(&format!("verify {}: ok", s.name("a"))),
        "{}",
        v.stderr
    );
    assert!(
        v.stderr.contains(&format!("verify {}: BAD", s.name("b"))),
        "{}",
        v.stderr
    );
    assert!(outputs(&s.store(FRESH)).is_empty(), "verify stores nothing");

    // A narinfo whose signature no longer verifies is bad too, not merely absent.
    let e = entry(&cache, &s.name("a"));
    let h = narinfo_value(&e.narinfo, "NarHash");
    edit_narinfo(&e.narinfo, "NarHash", &other_hash(&h));
    let v = s.pb(
        FRESH,
        &[&trust[..], &["cache", "verify", &cache.url, "a"]].concat(),
    );
    assert_eq!(v.code, 1, "{}", v.stderr);
    assert!(
        v.stderr.contains(&format!("verify {}: BAD", s.name("a"))),
        "{}",
        v.stderr
    );
    assert_warned(&v.stderr, &cache.url, &s.name("a"), "does not verify");
    // And one the cache does not have is reported as such.
    let v = s.pb(
        FRESH,
        &[&trust[..], &["cache", "verify", &cache.url, "tool"]].concat(),
    );
    assert_eq!(v.code, 0, "{}", v.stderr);
    assert!(
        v.stderr
            .contains(&format!("verify {}: not in the cache", s.name("tool"))),
        "{}",
        v.stderr
    );
}

fn realize_push_pushes_what_it_built(backend: &Backend) {
    let p = project();
    let s = Setup {
        key: generate_key(&p, "ci-1"),
        env: backend.env.clone(),
        p,
    };
    let cache = backend.cache("main");
    let r = s
        .pb(
            BUILT,
            &[
                "realize",
                "b",
                "--push",
                &cache.url,
                "--secret-key",
                &s.key.secret,
            ],
        )
        .ok();
    assert!(r.stderr.contains("pushed 2 output(s)"), "{}", r.stderr);
    let r = s.realize_from(FRESH, &[&cache.url], &[]).ok();
    assert_eq!(
        statuses(&r.stdout),
        pairs(&[("a", "substituted"), ("b", "substituted")])
    );
}

// ---------------------------------------------------------------------------------------------
// Backend-specific failures and configuration

/// Serves the files of a cache directory over the fault-injecting server, with `overrides`.
fn serve_dir(dir: &Path, overrides: &[(String, Route)]) -> TestServer {
    let mut routes: Vec<(String, Route)> = files_with_mtimes(dir)
        .into_iter()
        .map(|(rel, _)| {
            (
                format!("/c/{rel}"),
                Route::body(std::fs::read(dir.join(&rel)).unwrap()),
            )
        })
        .collect();
    for (path, route) in overrides {
        routes.retain(|(p, _)| p != path);
        routes.push((path.clone(), route.clone()));
    }
    TestServer::start(routes.iter().map(|(p, r)| (p.as_str(), r.clone())))
}

#[test]
fn http_500_is_retried_then_a_warning() {
    let backend = Backend::dir();
    let s = Setup::new(&backend);
    let cache = backend.cache("main");
    s.push(&cache).ok();
    let (a, b) = (s.name("a"), s.name("b"));
    let b_nar = entry(&cache, &b).nar;
    let b_nar_key = format!("/c/{}", b_nar.strip_prefix(&cache.files).unwrap().display());
    let a_info = format!("/c/{}.narinfo", &a[..32]);
    // a's narinfo fails twice then succeeds: retried. b's archive fails every time.
    let server = serve_dir(
        &cache.files,
        &[
            (
                a_info.clone(),
                Route::fail_first(
                    2,
                    Reply::Status(500),
                    Reply::Body(std::fs::read(entry(&cache, &a).narinfo).unwrap()),
                ),
            ),
            (b_nar_key.clone(), Route::status(500)),
        ],
    );
    let url = server.url("/c");
    let r = s.realize_from(FRESH, &[&url], &[]).ok();
    assert_eq!(server.hits(&a_info), 3, "retried until it answered");
    assert_eq!(server.hits(&b_nar_key), 4, "retried, then given up");
    assert_warned(&r.stderr, &url, &b, "500");
    let st = statuses(&r.stdout);
    assert_eq!(
        status_of(&st, "a").as_deref(),
        Some("substituted"),
        "{}",
        r.stderr
    );
    assert_eq!(
        status_of(&st, "b").as_deref(),
        Some("built"),
        "{}",
        r.stderr
    );
    s.assert_store_sound(FRESH);

    // A narinfo that always fails: the cache is reported down once, and everything is built.
    let server = serve_dir(&cache.files, &[(a_info.clone(), Route::status(503))]);
    let url = server.url("/c");
    let r = s.realize_from("fresh-2", &[&url], &["a"]).ok();
    assert_eq!(server.hits(&a_info), 4);
    assert_warned(&r.stderr, &url, &a, "503");
    assert_eq!(
        statuses(&r.stdout),
        pairs(&[("tiny-root", "built"), ("a", "built")])
    );
}

#[test]
fn a_denied_cache_is_an_authorisation_problem_not_a_miss() {
    // nginx's real 401 (basic auth), the fault server's 403, s3s-fs with a wrong secret.
    let nginx = Backend::nginx();
    let s = Setup::new(&nginx);
    let open = nginx.cache("auth");
    // Push with the password; read without it.
    let with_password = open.url.replace(
        "http://",
        &format!(
            "http://{}:{}@",
            support::servers::NGINX_USER.0,
            support::servers::NGINX_USER.1
        ),
    );
    s.push(&Cache {
        url: with_password,
        files: open.files.clone(),
    })
    .ok();
    let b = s.name("b");
    let r = s.realize_from(FRESH, &[&open.url], &[]).ok();
    assert_warned(&r.stderr, &open.url, &b, "denied");
    assert_warned(&r.stderr, &open.url, &b, "credentials");
    assert_warned(
        &r.stderr,
        &open.url,
        &b,
        "authorisation problem, not a missing entry",
    );
    assert!(!r.stderr.contains("not in the cache"), "{}", r.stderr);
    s.assert_store_sound(FRESH);

    let server = TestServer::start([(
        format!("/c/{}.narinfo", &b[..32]).as_str(),
        Route::status(403),
    )]);
    let url = server.url("/c");
    let r = s.realize_from("fresh-403", &[&url], &[]).ok();
    assert_warned(&r.stderr, &url, &b, "denied");
    assert_warned(&r.stderr, &url, &b, "authorisation problem");
    assert_eq!(
        server.hits(&format!("/c/{}.narinfo", &b[..32])),
        1,
        "never retried"
    );

    let s3 = Backend::s3();
    let s = Setup::new(&s3);
    let cache = s3.cache("pybake");
    s.push(&cache).ok();
    let wrong = S3Server::env(S3Server::ACCESS_KEY, "not-the-secret");
    let r = s
        .pb_env(
            FRESH,
            &wrong,
            &[
                "--substituter",
                &cache.url,
                "--trusted-public-key",
                &s.key.public,
                "realize",
                "--json",
                "b",
            ],
        )
        .ok();
    assert_warned(&r.stderr, "s3://cache/pybake", &s.name("b"), "denied");
    assert_warned(
        &r.stderr,
        "s3://cache/pybake",
        &s.name("b"),
        "authorisation problem",
    );
    s.assert_store_sound(FRESH);
}

#[test]
fn key_rotation_trusts_entries_signed_by_the_second_key() {
    let backend = Backend::dir();
    let s = Setup::new(&backend);
    let cache = backend.cache("main");
    let new = generate_key(&s.p, "test-cache-2");
    s.pb(
        BUILT,
        &[
            "cache",
            "push",
            &cache.url,
            "b",
            "--secret-key",
            &new.secret,
        ],
    )
    .ok();
    let r = s
        .pb(
            FRESH,
            &[
                "--substituter",
                &cache.url,
                "--trusted-public-key",
                &s.key.public,
                "--trusted-public-key",
                &new.public,
                "realize",
                "--json",
                "b",
            ],
        )
        .ok();
    assert_eq!(
        statuses(&r.stdout),
        pairs(&[("a", "substituted"), ("b", "substituted")]),
        "{}",
        r.stderr
    );
    // The old key alone does not do.
    let r = s.realize_from("fresh-old-key", &[&cache.url], &[]).ok();
    assert_warned(
        &r.stderr,
        &cache.url,
        &s.name("b"),
        "not trusted: test-cache-2",
    );
}

#[test]
fn allow_unsigned_accepts_unsigned_entries_of_that_cache_only() {
    let backend = Backend::dir();
    let s = Setup::new(&backend);
    let (unsigned, other) = (backend.cache("unsigned"), backend.cache("other"));
    s.pb(BUILT, &["cache", "push", &unsigned.url, "a"]).ok();
    s.pb(BUILT, &["cache", "push", &other.url, "b"]).ok();
    s.p.file(
        "pybake.toml",
        &format!(
            "[[substituters]]\nurl = \"{}\"\nallow-unsigned = true\n[[substituters]]\nurl = \"{}\"\n",
            unsigned.url, other.url
        ),
    );
    let r = s.pb(FRESH, &["realize", "--json", "b"]).ok();
    let st = statuses(&r.stdout);
    assert_eq!(
        status_of(&st, "a").as_deref(),
        Some("substituted"),
        "{}",
        r.stderr
    );
    assert_eq!(
        status_of(&st, "b").as_deref(),
        Some("built"),
        "{}",
        r.stderr
    );
    assert_warned(&r.stderr, &other.url, &s.name("b"), "not signed");
    s.assert_store_sound(FRESH);
}

#[test]
fn no_substitute_builds() {
    let backend = Backend::dir();
    let s = Setup::new(&backend);
    let cache = backend.cache("main");
    s.push(&cache).ok();
    let r = s
        .realize_from(FRESH, &[&cache.url], &["--no-substitute", "b"])
        .ok();
    let st = statuses(&r.stdout);
    assert!(st.iter().all(|(_, s)| s == "built"), "{st:?}");
    assert!(!r.stderr.contains("fetching"), "{}", r.stderr);
}

#[test]
fn a_host_build_is_pushed_only_when_allowed() {
    let backend = Backend::dir();
    let p = Project::new();
    p.recipe(
        "h",
        "name = \"h\"\nversion = \"1\"\nsteps = [\"mkdir -p $out\", \"echo h > $out/h\"]\n",
    );
    // h2 mentions h: refused because h is.
    p.recipe(
        "h2",
        "name = \"h2\"\nversion = \"1\"\ndeps = [\"h\"]\nsteps = [\"mkdir -p $out\", \"echo $DEP_H > $out/h-path\"]\n",
    );
    let s = Setup {
        key: generate_key(&p, "k-1"),
        env: Vec::new(),
        p,
    };
    s.pb(BUILT, &["realize", "h2"]).ok();
    let cache = backend.cache("main");
    let push = |extra: &[&str]| {
        let mut args = vec![
            "cache",
            "push",
            &cache.url,
            "h2",
            "--secret-key",
            &s.key.secret,
        ];
        args.extend(extra);
        s.pb(BUILT, &args)
    };
    let r = push(&[]);
    // The user's mistake, not the cache's: exit code 2, although h2 failed only because h did.
    assert_eq!(r.code, 2, "{}", r.stderr);
    let (h, h2) = (s.name("h"), s.name("h2"));
    assert!(
        r.stderr.contains(&format!("  {h}: {h} is a host build")),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("--allow-host-builds"), "{}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("  {h2}: a reference of {h2} was not pushed")),
        "{}",
        r.stderr
    );
    for n in [&h, &h2] {
        assert!(!cache.files.join(format!("{}.narinfo", &n[..32])).exists());
    }

    push(&["--allow-host-builds"]).ok();
    for n in [&h, &h2] {
        assert!(!narinfo_value(&entry(&cache, n).narinfo, "HostBuild").is_empty());
    }
}

#[test]
fn allow_unsigned_takes_untrusted_signatures_but_never_altered_entries() {
    let backend = Backend::dir();
    let s = Setup::new(&backend);
    let cache = backend.cache("main");
    s.push(&cache).ok();
    let config = format!(
        "[[substituters]]\nurl = \"{}\"\nallow-unsigned = true\n",
        cache.url
    );
    // Signed by a key this machine does not trust: no worse than unsigned.
    s.p.file("pybake.toml", &config);
    let r = s.pb(FRESH, &["realize", "--json", "b"]).ok();
    assert_eq!(
        statuses(&r.stdout),
        pairs(&[("a", "substituted"), ("b", "substituted")]),
        "{}",
        r.stderr
    );
    // Signed by a trusted key's name but altered since: refused all the same.
    let e = entry(&cache, &s.name("b"));
    let h = narinfo_value(&e.narinfo, "NarHash");
    edit_narinfo(&e.narinfo, "NarHash", &other_hash(&h));
    s.p.file(
        "pybake.toml",
        &format!("trusted-public-keys = [\"{}\"]\n{config}", s.key.public),
    );
    let r = s.pb("fresh-2", &["realize", "--json", "b"]).ok();
    assert_warned(&r.stderr, &cache.url, &s.name("b"), "does not verify");
    let st = statuses(&r.stdout);
    assert_eq!(
        status_of(&st, "b").as_deref(),
        Some("built"),
        "{}",
        r.stderr
    );
    s.assert_store_sound("fresh-2");
}

fn plan_shows_what_would_be_substituted(backend: &Backend) {
    let s = Setup::new(backend);
    let cache = backend.cache("main");
    s.push(&cache).ok();
    let path = |recipe: &str| format!("{}/{}", s.store(FRESH).display(), s.name(recipe));
    let plan = |extra: &[&str]| {
        let mut args = vec!["--substituter", &cache.url];
        args.extend(["--trusted-public-key", &s.key.public]);
        args.extend(extra);
        args.extend(["plan", "b"]);
        s.pb(FRESH, &args).ok()
    };
    let from = format!("(from {})", cache.url);
    // Only b and what it references at run time: tiny-root and tool are not needed.
    let r = plan(&[]);
    assert_eq!(
        r.stdout.lines().collect::<Vec<_>>(),
        [
            format!("substitute {} {from}", path("a")),
            format!("substitute {} {from}", path("b")),
        ],
        "{}",
        r.stderr
    );
    assert!(
        outputs(&s.store(FRESH)).is_empty(),
        "plan downloads nothing"
    );

    let r = plan(&["--no-substitute"]);
    assert_eq!(
        r.stdout.lines().collect::<Vec<_>>(),
        ["tiny-root", "a", "tool", "b"]
            .map(|n| format!("build  {}", path(n)))
            .to_vec()
    );

    // b's entry refused: b is built, with what it needs; a still comes from the cache.
    let e = entry(&cache, &s.name("b"));
    let h = narinfo_value(&e.narinfo, "NarHash");
    edit_narinfo(&e.narinfo, "NarHash", &other_hash(&h));
    s.pb(FRESH, &["--no-substitute", "realize", "tiny-root"])
        .ok();
    let r = plan(&[]);
    assert_warned(&r.stderr, &cache.url, &s.name("b"), "does not verify");
    assert_eq!(
        r.stdout.lines().collect::<Vec<_>>(),
        [
            format!("cached {}", path("tiny-root")),
            format!("substitute {} {from}", path("a")),
            format!("build  {}", path("tool")),
            format!("build  {}", path("b")),
        ],
        "{}",
        r.stderr
    );
}
