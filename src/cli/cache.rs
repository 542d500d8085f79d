//! `pybake cache push|verify`, `pybake key generate`, and `realize --push`.

use std::collections::{BTreeSet, VecDeque};
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use super::{Global, EXIT_BUILD_FAILED};
use crate::cache::keys::SecretKey;
use crate::cache::open_cache;
use crate::cache::push::{push, PushOptions, PushReport};
use crate::cache::substitute::Substituters;
use crate::progress::{self, Event, Reporter};
use crate::project::{Closure, Project};
use crate::recipe::Origin;
use crate::store::{Store, StoreName};

#[derive(Debug, clap::Subcommand)]
pub enum CacheCommand {
    /// Upload NAME...'s outputs with their runtime closures, build logs and sources.
    ///
    /// Archives go first and each narinfo last (after its references'), so a reader of the
    /// cache never sees an entry whose archive or references are missing; what the cache has
    /// already is skipped. Exits non-zero, listing what was not pushed, if any upload failed.
    Push(PushCommand),
    /// Download NAME...'s entries from CACHE again and check them: narinfo, signature, archive
    /// hash and size, and the unpacked output's hash [default: every recipe].
    Verify(VerifyArgs),
}

#[derive(Debug, clap::Args)]
pub struct PushCommand {
    /// The cache: file:///DIR, http(s)://HOST/PREFIX or s3://BUCKET/PREFIX?endpoint=URL&region=R.
    #[arg(value_name = "CACHE")]
    pub cache: String,
    /// Recipes whose outputs to push (they must be in the store: realize them first).
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    #[command(flatten)]
    pub opts: PushFlags,
}

/// Flags shared by `cache push` and `realize --push`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PushFlags {
    /// Sign each narinfo with this secret key (`pybake key generate`) [default: the configured
    /// secret-key-file, PYBAKE_SECRET_KEY_FILE]. Without one, entries are pushed unsigned.
    #[arg(long, value_name = "FILE")]
    pub secret_key: Option<PathBuf>,
    /// Push host builds too (recipes without a root: their bytes depend on the host).
    #[arg(long)]
    pub allow_host_builds: bool,
    /// zstd level of the archives (1-19; docs/binary-cache.md has the measurements).
    #[arg(long, value_name = "N", default_value_t = crate::cache::compress::DEFAULT_LEVEL)]
    pub compression_level: i32,
}

/// `realize --push CACHE` and its flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PushArgs {
    /// After realizing, push NAME...'s outputs (runtime closures, logs, sources) to CACHE.
    #[arg(long, value_name = "CACHE")]
    pub push: Option<String>,
    #[command(flatten)]
    pub flags: PushFlags,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[arg(value_name = "CACHE")]
    pub cache: String,
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {
    /// Make a signing key pair: writes the secret key to FILE (mode 0600) and prints the public
    /// key, `NAME:base64`, to give to `--trusted-public-key` (or `trusted-public-keys`).
    Generate {
        /// The key's name, e.g. `ci.example.org-1` (a number lets you rotate keys).
        #[arg(value_name = "NAME")]
        name: String,
        /// Where to write the secret key (it must not exist).
        #[arg(long, value_name = "FILE")]
        secret_key: PathBuf,
    },
}

pub fn run(g: &Global, c: &CacheCommand) -> anyhow::Result<i32> {
    match c {
        CacheCommand::Push(p) => {
            let project = g.project()?;
            let closure = project.closure(&p.names)?;
            let reporter = progress::for_stderr();
            let args = PushArgs {
                push: Some(p.cache.clone()),
                flags: p.opts.clone(),
            };
            push_closure(&project, &closure, &p.cache, &args, &*reporter)
        }
        CacheCommand::Verify(v) => verify(g, v),
    }
}

pub fn key(c: &KeyCommand) -> anyhow::Result<i32> {
    match c {
        KeyCommand::Generate { name, secret_key } => {
            let key = SecretKey::generate(name)?;
            write_secret(secret_key, &key.to_file_text())?;
            writeln!(std::io::stdout().lock(), "{}", key.public())?;
            say!(
                "pybake: wrote the secret key to {} (keep it secret); the public key is above",
                secret_key.display()
            );
            Ok(0)
        }
    }
}

/// Creates `path` with mode 0600 and `text`, refusing to replace a file.
fn write_secret(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use fs_err::os::unix::fs::OpenOptionsExt;
    use std::io::Write;
    // fs-err's error names the file.
    let mut f = fs_err::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .context("cannot create the secret key")?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    Ok(())
}

fn secret_key(project: &Project, flags: &PushFlags) -> anyhow::Result<Option<SecretKey>> {
    let file = flags
        .secret_key
        .clone()
        .or_else(|| project.config().secret_key_file.clone());
    let Some(file) = file else {
        return Ok(None);
    };
    let text = fs_err::read_to_string(&file).context("cannot read the secret key")?;
    let key: SecretKey = text
        .trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("{} is not a secret key: {e}", file.display()))?;
    Ok(Some(key))
}

/// The targets' runtime closures (references before what mentions them), the sources of the
/// closure's derivations, pushed to `cache`; the exit code.
pub fn push_closure(
    project: &Project,
    closure: &Closure,
    cache: &str,
    args: &PushArgs,
    reporter: &dyn Reporter,
) -> anyhow::Result<i32> {
    let store = project.store();
    let backend = open_cache(cache)?;
    let key = secret_key(project, &args.flags)?;
    if key.is_none() {
        reporter.report(Event::Warning(&format!(
            "no secret key: entries pushed to {cache} are unsigned, and substituters will refuse them unless they allow unsigned entries"
        )));
    }
    let mut roots = Vec::new();
    for name in closure.targets() {
        if let Some(d) = closure.get(name) {
            roots.push(d.store_name.clone());
        }
    }
    let outputs = runtime_closure(store, &roots)?;
    let sources: Vec<_> = closure
        .derivations()
        .iter()
        .flat_map(|d| d.recipe.sources.iter().zip(&d.source_hashes))
        .filter(|(s, _)| matches!(s.origin, Origin::Url { .. }))
        .map(|(_, h)| *h)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let opts = PushOptions {
        level: args.flags.compression_level,
        threads: super::default_parallelism() as u32,
        allow_host_builds: args.flags.allow_host_builds,
    };
    let start = std::time::Instant::now();
    let report = push(
        store,
        &*backend,
        key.as_ref(),
        &outputs,
        &sources,
        &opts,
        reporter,
    );
    print_report(cache, &report, start.elapsed().as_secs_f64());
    Ok(if report.failed.is_empty() {
        0
    } else {
        EXIT_BUILD_FAILED.max(
            report
                .failed
                .iter()
                .filter(|(_, e)| !e.is_consequence())
                .map(|(_, e)| e.class().exit_code())
                .max()
                .unwrap_or(EXIT_BUILD_FAILED),
        )
    })
}

fn print_report(cache: &str, r: &PushReport, seconds: f64) {
    say!(
        "pybake: pushed {} output(s) and {} source(s) to {cache} ({:.1} MB in {seconds:.1}s); {} output(s) and {} source(s) were there already",
        r.pushed.len(),
        r.sources_pushed,
        r.bytes as f64 / 1e6,
        r.present.len(),
        r.sources_present
    );
    if !r.failed.is_empty() {
        say!("error: {} item(s) were NOT pushed:", r.failed.len());
        for (what, e) in &r.failed {
            say!("  {what}: {}", crate::cache::substitute::error_chain(e));
        }
    }
}

/// `roots` and their references, transitively, each after its references.
pub fn runtime_closure(store: &Store, roots: &[StoreName]) -> anyhow::Result<Vec<StoreName>> {
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    // Iterative post-order: a name is emitted once all its references are.
    let mut stack: VecDeque<(StoreName, bool)> = roots.iter().map(|r| (r.clone(), false)).collect();
    while let Some((n, expanded)) = stack.pop_back() {
        if expanded {
            if seen.insert(n.clone()) {
                order.push(n);
            }
            continue;
        }
        if seen.contains(&n) {
            continue;
        }
        let meta = store.read_meta(&n).map_err(|e| {
            anyhow::anyhow!("{n} is not in the store (realize it before pushing): {e}")
        })?;
        stack.push_back((n.clone(), true));
        for r in meta.references.iter().filter(|r| **r != n) {
            if !seen.contains(r) {
                stack.push_back((r.clone(), false));
            }
        }
    }
    Ok(order)
}

fn verify(g: &Global, v: &VerifyArgs) -> anyhow::Result<i32> {
    let project = g.project()?;
    let names = if v.names.is_empty() {
        project.all()
    } else {
        v.names.clone()
    };
    let closure = project.closure(&names)?;
    let reporter = progress::for_stderr();
    let mut config = project.config().clone();
    config.substituters = vec![crate::config::Substituter {
        url: v.cache.clone(),
        priority: None,
        allow_unsigned: false,
    }];
    let keys = config
        .trusted_public_keys
        .iter()
        .map(|k| k.parse())
        .collect::<Result<Vec<_>, _>>()?;
    let subs = Substituters::open(
        &config.substituters,
        crate::cache::keys::TrustedKeys::new(keys),
        &*reporter,
    );
    anyhow::ensure!(!subs.is_empty(), "cannot use {} as a cache", v.cache);
    let wanted: Vec<StoreName> = names
        .iter()
        .filter_map(|n| closure.get(n))
        .map(|d| d.store_name.clone())
        .collect();
    let found = subs.query(&wanted, &*reporter);
    let scratch = tempfile::Builder::new()
        .prefix("verify-")
        .tempdir_in(project.store().tmp_dir())?;
    let (mut ok, mut bad, mut absent) = (0, 0, 0);
    for (i, n) in wanted.iter().enumerate() {
        let Some(c) = found.get(n).and_then(|c| c.first()) else {
            // Not a candidate: absent, or present and refused (bad signature, invalid
            // narinfo, access denied), which is what verify is for.
            let key = crate::cache::narinfo::narinfo_key(n);
            match subs.caches[0].backend.exists(&key) {
                Ok(false) => {
                    say!("pybake: verify {n}: not in the cache");
                    absent += 1;
                }
                Ok(true) => {
                    say!("pybake: verify {n}: BAD: its narinfo is refused (the warning above says why)");
                    bad += 1;
                }
                Err(e) => {
                    say!(
                        "pybake: verify {n}: BAD: cannot check it: {}",
                        crate::cache::substitute::error_chain(&e)
                    );
                    bad += 1;
                }
            }
            continue;
        };
        let dest = scratch.path().join(i.to_string());
        match subs.download(c, &dest, &*reporter) {
            Ok(h) => {
                say!("pybake: verify {n}: ok ({h})");
                ok += 1;
            }
            Err(e) => {
                say!(
                    "pybake: verify {n}: BAD: {}",
                    crate::cache::substitute::error_chain(&e)
                );
                bad += 1;
            }
        }
        let _ = crate::store::remove_tree(&dest);
    }
    let _ = crate::store::remove_tree(scratch.path());
    say!(
        "pybake: verified {ok} entr(ies), {bad} bad, {absent} not in {}",
        v.cache
    );
    Ok(if bad > 0 { EXIT_BUILD_FAILED } else { 0 })
}
