use super::*;
use crate::hash::{DrvHash, SourceHash};

fn rec(name: &str) -> DrvRecord {
    DrvRecord {
        scheme: crate::derivation::SCHEME.into(),
        platform: "x86_64-linux".into(),
        name: name.into(),
        version: "1".into(),
        builds_on: BuildsOn::Host("debian 12".into()),
        steps: vec!["mkdir -p $out".into(), "echo one > $out/x".into()],
        env: BTreeMap::from([("X".into(), "1".into())]),
        sources: vec![],
        deps: BTreeMap::new(),
        remove_references_to: vec![],
    }
}

fn store_name(r: &DrvRecord) -> StoreName {
    StoreName::new(&r.drv_hash(), &r.name, &r.version)
}

fn src(dest: &str, file: &str, content: &[u8]) -> SourceInput {
    SourceInput {
        dest: dest.into(),
        file: file.into(),
        unpack: true,
        sha256: SourceHash::of(content),
    }
}

fn with_dep(mut r: DrvRecord, dep: &DrvRecord) -> DrvRecord {
    r.deps.insert(
        dep.name.clone(),
        DepInput {
            drv_hash: dep.drv_hash(),
            store_name: store_name(dep),
        },
    );
    r
}

/// A lookup over the given records, by their store names.
fn lookup_of(records: &[&DrvRecord]) -> impl Fn(&StoreName) -> Option<DrvRecord> {
    let by_name: BTreeMap<StoreName, DrvRecord> = records
        .iter()
        .map(|r| (store_name(r), (*r).clone()))
        .collect();
    move |n| by_name.get(n).cloned()
}

fn lines(changes: &[Change]) -> Vec<String> {
    changes.iter().map(|c| c.to_string()).collect()
}

fn none(_: &StoreName) -> Option<DrvRecord> {
    None
}

#[test]
fn identical_records_differ_in_nothing() {
    assert!(diff(&rec("a"), &rec("a"), &none).is_empty());
}

#[test]
fn a_changed_step_is_named_with_both_texts() {
    let mut new = rec("a");
    new.steps[1] = "echo two > $out/x".into();
    assert_eq!(
        lines(&diff(&rec("a"), &new, &none)),
        [r#"steps[1] changed: "echo one > $out/x" -> "echo two > $out/x""#]
    );
}

#[test]
fn an_inserted_or_removed_step_is_one_change_not_a_shift() {
    let mut new = rec("a");
    new.steps.insert(1, "touch $out/first".into());
    assert_eq!(
        lines(&diff(&rec("a"), &new, &none)),
        [r#"steps[1] added: "touch $out/first""#]
    );
    assert_eq!(
        lines(&diff(&new, &rec("a"), &none)),
        [r#"steps[1] removed: "touch $out/first""#]
    );
    let mut replaced = rec("a");
    replaced.steps = vec!["true".into()];
    assert_eq!(
        lines(&diff(&rec("a"), &replaced, &none)),
        [
            r#"steps[0] changed: "mkdir -p $out" -> "true""#,
            r#"steps[1] removed: "echo one > $out/x""#
        ]
    );
    // Line breaks and quotes inside a step stay on one line.
    let mut multi = rec("a");
    multi.steps[0] = "echo \"a\"\necho b".into();
    assert_eq!(
        lines(&diff(&rec("a"), &multi, &none)),
        [r#"steps[0] changed: "mkdir -p $out" -> "echo \"a\"\necho b""#]
    );
}

#[test]
fn env_variables_are_named_by_key() {
    let mut new = rec("a");
    new.env.insert("X".into(), "2".into());
    new.env.insert("CFLAGS".into(), "-O2".into());
    let mut old = rec("a");
    old.env.insert("GONE".into(), "x".into());
    assert_eq!(
        lines(&diff(&old, &new, &none)),
        [
            r#"env.CFLAGS added: "-O2""#,
            r#"env.GONE removed: "x""#,
            r#"env.X changed: "1" -> "2""#
        ]
    );
}

#[test]
fn sources_are_named_by_dest_or_file_and_show_both_hashes() {
    let mut old = rec("a");
    old.sources = vec![
        src("python", "Python-3.11.2.tgz", b"py"),
        src(".", "hello-src", b"hello"),
        src("debs", "a.deb", b"a"),
        src("debs", "b.deb", b"b"),
    ];
    let mut new = old.clone();
    new.sources[0].sha256 = SourceHash::of(b"py2");
    new.sources[1].sha256 = SourceHash::of(b"hello2");
    new.sources[3].sha256 = SourceHash::of(b"b2");
    new.sources[2].unpack = false;
    let h = |b: &[u8]| SourceHash::of(b).to_string();
    assert_eq!(
        lines(&diff(&old, &new, &none)),
        [
            format!("source python changed ({} -> {})", h(b"py"), h(b"py2")),
            format!(
                "source hello-src changed ({} -> {})",
                h(b"hello"),
                h(b"hello2")
            ),
            "source debs/a.deb changed (unpack true -> false)".to_string(),
            format!("source debs/b.deb changed ({} -> {})", h(b"b"), h(b"b2")),
        ]
    );
    let mut fewer = old.clone();
    fewer.sources.remove(0);
    fewer.sources.push(src("xterm", "xterm.tgz", b"x"));
    assert_eq!(
        lines(&diff(&old, &fewer, &none)),
        [
            format!("source xterm added ({})", h(b"x")),
            format!("source python removed (was {})", h(b"py")),
        ]
    );
    let mut swapped = old.clone();
    swapped.sources.swap(2, 3);
    assert_eq!(
        lines(&diff(&old, &swapped, &none)),
        ["the order of the sources changed"]
    );
}

#[test]
fn version_scheme_and_what_the_steps_run_on() {
    let mut new = rec("a");
    new.version = "2".into();
    new.scheme = "pybake-drv-v3".into();
    new.builds_on = BuildsOn::Host("debian 13".into());
    assert_eq!(
        lines(&diff(&rec("a"), &new, &none)),
        [
            "scheme changed: pybake-drv-v2 -> pybake-drv-v3",
            "version changed: 1 -> 2",
            "host identity changed: debian 12 -> debian 13",
        ]
    );
    let base = rec("base");
    let mut rooted = rec("a");
    rooted.builds_on = BuildsOn::Root {
        name: "base".into(),
        drv_hash: base.drv_hash(),
        store_name: store_name(&base),
    };
    assert_eq!(
        lines(&diff(&rec("a"), &rooted, &none)),
        ["what the steps run on changed: the host (debian 12) -> root base"]
    );
}

#[test]
fn a_changed_dependency_is_followed_to_the_root_cause_in_one_line() {
    let c_old = rec("c");
    let mut c_new = rec("c");
    c_new.env.insert("X".into(), "2".into());
    let b_old = with_dep(rec("b"), &c_old);
    let b_new = with_dep(rec("b"), &c_new);
    let a_old = with_dep(rec("a"), &b_old);
    let a_new = with_dep(rec("a"), &b_new);
    let lookup = lookup_of(&[&c_old, &c_new, &b_old, &b_new]);
    assert_eq!(
        lines(&diff(&a_old, &a_new, &lookup)),
        [
            r#"dependency b changed because its dependency c changed because its env.X changed: "1" -> "2""#
        ]
    );
    // One level: the dependency's own change.
    assert_eq!(
        lines(&diff(&b_old, &b_new, &lookup)),
        [r#"dependency c changed because its env.X changed: "1" -> "2""#]
    );
}

#[test]
fn the_chain_stops_at_the_first_recipe_whose_own_inputs_changed() {
    let c_old = rec("c");
    let mut c_new = rec("c");
    c_new.env.insert("X".into(), "2".into());
    let b_old = with_dep(rec("b"), &c_old);
    let mut b_new = with_dep(rec("b"), &c_new);
    b_new.version = "1.1".into();
    let a_old = with_dep(rec("a"), &b_old);
    let a_new = with_dep(rec("a"), &b_new);
    let lookup = lookup_of(&[&c_old, &c_new, &b_old, &b_new]);
    assert_eq!(
        lines(&diff(&a_old, &a_new, &lookup)),
        ["dependency b changed because its version changed: 1 -> 1.1 (and one of its dependencies changed)"]
    );
}

#[test]
fn a_changed_root_is_followed_like_a_dependency() {
    let mut base_old = rec("base");
    base_old.sources = vec![src(".", "base-src", b"1")];
    let mut base_new = base_old.clone();
    base_new.sources[0].sha256 = SourceHash::of(b"2");
    let on = |b: &DrvRecord| {
        let mut r = rec("a");
        r.builds_on = BuildsOn::Root {
            name: "base".into(),
            drv_hash: b.drv_hash(),
            store_name: store_name(b),
        };
        r
    };
    let lookup = lookup_of(&[&base_old, &base_new]);
    assert_eq!(
        lines(&diff(&on(&base_old), &on(&base_new), &lookup)),
        [format!(
            "root base changed because its source base-src changed ({} -> {})",
            SourceHash::of(b"1"),
            SourceHash::of(b"2")
        )]
    );
}

#[test]
fn an_unrecorded_old_dependency_is_said_so() {
    let c_old = rec("c");
    let mut c_new = rec("c");
    c_new.steps.clear();
    let a_old = with_dep(rec("a"), &c_old);
    let a_new = with_dep(rec("a"), &c_new);
    let lookup = lookup_of(&[&c_new]);
    let (o, n) = (store_name(&c_old), store_name(&c_new));
    assert_eq!(
        lines(&diff(&a_old, &a_new, &lookup)),
        [format!(
            "dependency c changed ({o} -> {n}; the store has no record of {o}'s inputs)"
        )]
    );
    let mut more = a_new.clone();
    more.deps.remove("c");
    more.deps.insert("d".into(), a_new.deps["c"].clone());
    assert_eq!(
        lines(&diff(&a_old, &more, &lookup)),
        ["dependency c removed", "dependency d added"]
    );
}

#[test]
fn a_looping_lookup_ends() {
    // Records that name each other (only a damaged store could hold such): the chain is cut.
    let leaf_a = rec("leaf");
    let mut leaf_b = rec("leaf");
    leaf_b.version = "2".into();
    let a = with_dep(rec("x"), &leaf_a);
    let b = with_dep(rec("x"), &leaf_b);
    let (sa, sb) = (store_name(&a), store_name(&b));
    let (a2, b2) = (a.clone(), b.clone());
    let looping = move |n: &StoreName| {
        // Every "x" names another "x" with another derivation, forever.
        let mut r = if *n == sa { b2.clone() } else { a2.clone() };
        r.deps = BTreeMap::from([(
            "x".to_string(),
            DepInput {
                drv_hash: DrvHash::of(n.as_str().as_bytes()),
                store_name: if *n == sa { sb.clone() } else { sa.clone() },
            },
        )]);
        r.version = "1".into();
        Some(r)
    };
    let top_old = with_dep(rec("top"), &a);
    let top_new = with_dep(rec("top"), &b);
    let rendered = lines(&diff(&top_old, &top_new, &looping));
    assert_eq!(rendered.len(), 1);
    assert!(
        rendered[0].ends_with("(through a chain too long to follow)"),
        "{rendered:?}"
    );
}

#[test]
fn explanations_read_as_sentences() {
    let current = store_name(&rec("a"));
    let last = store_name(&rec("b"));
    let e = |verdict| Explanation {
        name: "a".into(),
        current: current.clone(),
        verdict,
    };
    assert_eq!(
        e(Verdict::NeverBuilt).to_string(),
        format!("a: never built in this store (its output would be {current})")
    );
    assert_eq!(
        e(Verdict::UpToDate { last: None }).to_string(),
        format!("a: up to date ({current} is in the store)")
    );
    let mut new = rec("a");
    new.version = "2".into();
    assert_eq!(
        e(Verdict::Changed {
            last: last.clone(),
            changes: diff(&rec("a"), &new, &none),
        })
        .to_string(),
        format!("a: {current} differs from the last build, {last}:\n  version changed: 1 -> 2")
    );
}
