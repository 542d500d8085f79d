//! Why a recipe's current derivation is not the one built last time (`pybake explain`,
//! `realize --explain`), down to the input that changed.
//!
//! The store keeps each inserted output's [`DrvRecord`] (in its metadata, `inputs`) and,
//! per recipe, the store name inserted last (the last line for it in `.pybake/built.log`). The explanation compares
//! the last build's record with the current one, input by input ([`diff`], a pure function over
//! two records and a lookup of other records by store name). A dependency (or the root) whose
//! derivation changed is followed through its own records to the first recipe whose own inputs
//! changed, and said in one line: `dependency emsdk changed because its source
//! emscripten_3.1.69+dfsg-3_all.deb changed (sha256:… -> sha256:…)`.

use std::collections::BTreeMap;
use std::fmt;

use crate::derivation::{BuildsOn, DepInput, Derivation, DrvRecord, SourceInput};
use crate::store::{Store, StoreError, StoreName};

/// How far a chain of dependencies is followed; records of a real graph are never this deep,
/// and a damaged store must not make explain recurse without end.
const MAX_DEPTH: usize = 64;
/// How many of a dependency's own changes its one line names.
const SHOWN_PER_LINE: usize = 3;

/// Records that `drv`'s output, just inserted with its record in its metadata (`inputs`), is
/// now the last build of its recipe (a line in `.pybake/built.log`). Call it whenever an output
/// is inserted, built or substituted.
pub fn remember(store: &Store, drv: &Derivation) -> Result<(), StoreError> {
    store.set_last_built(&drv.recipe.name, &drv.store_name)
}

/// The record of output `name` in the store, if there is one that matches its name: a record
/// that does not parse, or whose hash is not the one its name says, counts as none. Outputs
/// built by pybake 0.x before records moved into the metadata have theirs in
/// `.pybake/drv/<store name>.json`.
pub fn recorded(store: &Store, name: &StoreName) -> Option<DrvRecord> {
    let in_meta = store.read_meta(name).ok().and_then(|m| m.inputs);
    let record = match in_meta {
        Some(v) => DrvRecord::from_value(v).ok()?,
        None => DrvRecord::from_json(&store.read_drv(name).ok()??).ok()?,
    };
    let named = StoreName::new(&record.drv_hash(), &record.name, &record.version);
    (named == *name).then_some(record)
}

/// Why `drv` (one of `drvs`, the current derivations) is or is not the output built last.
pub fn explain(
    store: &Store,
    drvs: &[Derivation],
    drv: &Derivation,
) -> Result<Explanation, StoreError> {
    let current = drv.store_name.clone();
    let last = store.last_built(&drv.recipe.name)?;
    let verdict = if store.is_valid(&current) {
        Verdict::UpToDate {
            last: last.filter(|l| *l != current),
        }
    } else {
        match last {
            None => Verdict::NeverBuilt,
            Some(last) if last == current => Verdict::Gone,
            Some(last) => match recorded(store, &last) {
                None => Verdict::NotRecorded { last },
                Some(old) => {
                    let now: BTreeMap<&StoreName, &DrvRecord> =
                        drvs.iter().map(|d| (&d.store_name, &d.record)).collect();
                    let lookup = |n: &StoreName| match now.get(n) {
                        Some(r) => Some((*r).clone()),
                        None => recorded(store, n),
                    };
                    Verdict::Changed {
                        last,
                        changes: diff(&old, &drv.record, &lookup),
                    }
                }
            },
        }
    };
    Ok(Explanation {
        name: drv.recipe.name.clone(),
        current,
        verdict,
    })
}

/// The answer for one recipe; its `Display` is what `pybake explain` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub name: String,
    /// The current derivation's store name.
    pub current: StoreName,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No output of this recipe was ever inserted into this store.
    NeverBuilt,
    /// The current derivation's output is in the store; `last` is the last build when that
    /// was another derivation (the recipe changed and changed back).
    UpToDate { last: Option<StoreName> },
    /// The current derivation was the last build, but its output is gone from the store.
    Gone,
    /// The last build's inputs are not recorded (an older pybake built it).
    NotRecorded { last: StoreName },
    Changed {
        last: StoreName,
        changes: Vec<Change>,
    },
}

/// One input that differs between two records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Scheme {
        old: String,
        new: String,
    },
    Platform {
        old: String,
        new: String,
    },
    Name {
        old: String,
        new: String,
    },
    Version {
        old: String,
        new: String,
    },
    /// `remove-references-to` changed.
    RemovedReferences {
        old: Vec<String>,
        new: Vec<String>,
    },
    /// Builds on another kind of thing, another root recipe, or another host.
    BuildsOn {
        old: BuildsOn,
        new: BuildsOn,
    },
    /// The same root recipe, with another derivation.
    Root {
        name: String,
        cause: Cause,
    },
    /// `index` counts from 0 in the new steps (in the old ones for a removed step).
    Step {
        index: usize,
        old: Option<String>,
        new: Option<String>,
    },
    Env {
        key: String,
        old: Option<String>,
        new: Option<String>,
    },
    /// A source, named by its `dest` or file name.
    Source {
        name: String,
        old: Option<SourceInput>,
        new: Option<SourceInput>,
    },
    /// The same sources, laid out in another order (a later one may overwrite an earlier one).
    SourceOrder,
    DepAdded {
        name: String,
    },
    DepRemoved {
        name: String,
    },
    /// A dependency with another derivation.
    Dep {
        name: String,
        cause: Cause,
    },
}

/// Why a dependency (or the root) has another derivation: the chain down to the first recipe
/// whose own inputs changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// Its own inputs changed; `deps_too` of its dependencies changed as well.
    Own {
        changes: Vec<Change>,
        deps_too: usize,
    },
    /// Only its dependencies changed: this one leads on (a [`Change::Dep`] or [`Change::Root`]),
    /// and `others` more changed besides.
    Through { change: Box<Change>, others: usize },
    /// The old derivation's inputs are not recorded in this store.
    NotRecorded { old: StoreName, new: StoreName },
    /// The chain is longer than anything real ([`MAX_DEPTH`]).
    TooDeep,
}

/// A dependency or root that has another derivation, not yet followed.
struct Link {
    root: bool,
    name: String,
    old: StoreName,
    new: StoreName,
}

/// Every input that differs between `old` and `new`, in the order of the record's fields. A
/// dependency or root with another derivation is followed with `lookup` (records by store
/// name, old and current) to the first recipe whose own inputs changed.
pub fn diff(
    old: &DrvRecord,
    new: &DrvRecord,
    lookup: &dyn Fn(&StoreName) -> Option<DrvRecord>,
) -> Vec<Change> {
    let (mut changes, links) = shallow(old, new);
    changes.extend(links.into_iter().map(|l| follow(l, lookup, 1)));
    changes
}

fn follow(link: Link, lookup: &dyn Fn(&StoreName) -> Option<DrvRecord>, depth: usize) -> Change {
    let cause = cause(&link.old, &link.new, lookup, depth);
    if link.root {
        Change::Root {
            name: link.name,
            cause,
        }
    } else {
        Change::Dep {
            name: link.name,
            cause,
        }
    }
}

fn cause(
    old: &StoreName,
    new: &StoreName,
    lookup: &dyn Fn(&StoreName) -> Option<DrvRecord>,
    depth: usize,
) -> Cause {
    if depth > MAX_DEPTH {
        return Cause::TooDeep;
    }
    let (Some(o), Some(n)) = (lookup(old), lookup(new)) else {
        return Cause::NotRecorded {
            old: old.clone(),
            new: new.clone(),
        };
    };
    let (own, mut links) = shallow(&o, &n);
    if !own.is_empty() || links.is_empty() {
        return Cause::Own {
            changes: own,
            deps_too: links.len(),
        };
    }
    let others = links.len() - 1;
    let first = links.remove(0);
    Cause::Through {
        change: Box::new(follow(first, lookup, depth + 1)),
        others,
    }
}

/// The record's own changes, and the dependencies and root with another derivation.
fn shallow(old: &DrvRecord, new: &DrvRecord) -> (Vec<Change>, Vec<Link>) {
    // Destructured, so a new field of the record cannot be forgotten here.
    let DrvRecord {
        scheme,
        platform,
        name,
        version,
        builds_on,
        steps,
        env,
        sources,
        deps,
        remove_references_to,
    } = new;
    let mut out = Vec::new();
    let mut links = Vec::new();
    if old.scheme != *scheme {
        out.push(Change::Scheme {
            old: old.scheme.clone(),
            new: scheme.clone(),
        });
    }
    if old.platform != *platform {
        out.push(Change::Platform {
            old: old.platform.clone(),
            new: platform.clone(),
        });
    }
    if old.name != *name {
        out.push(Change::Name {
            old: old.name.clone(),
            new: name.clone(),
        });
    }
    if old.version != *version {
        out.push(Change::Version {
            old: old.version.clone(),
            new: version.clone(),
        });
    }
    match (&old.builds_on, builds_on) {
        (a, b) if a == b => {}
        (
            BuildsOn::Root {
                name: a,
                store_name: old_root,
                ..
            },
            BuildsOn::Root {
                name: b,
                store_name: new_root,
                ..
            },
        ) if a == b => links.push(Link {
            root: true,
            name: b.clone(),
            old: old_root.clone(),
            new: new_root.clone(),
        }),
        (a, b) => out.push(Change::BuildsOn {
            old: a.clone(),
            new: b.clone(),
        }),
    }
    if old.remove_references_to != *remove_references_to {
        out.push(Change::RemovedReferences {
            old: old.remove_references_to.clone(),
            new: remove_references_to.clone(),
        });
    }
    out.extend(step_changes(&old.steps, steps));
    out.extend(env_changes(&old.env, env));
    out.extend(source_changes(&old.sources, sources));
    for name in old.deps.keys().filter(|n| !deps.contains_key(*n)) {
        out.push(Change::DepRemoved { name: name.clone() });
    }
    for (
        name,
        DepInput {
            drv_hash,
            store_name,
        },
    ) in deps
    {
        match old.deps.get(name) {
            None => out.push(Change::DepAdded { name: name.clone() }),
            Some(o) if o.drv_hash != *drv_hash => links.push(Link {
                root: false,
                name: name.clone(),
                old: o.store_name.clone(),
                new: store_name.clone(),
            }),
            Some(_) => {}
        }
    }
    (out, links)
}

/// Steps compared as a diff (longest common subsequence), so that inserting one step shows as
/// one added step rather than every later step changed. A removed and an added step at the same
/// place are one changed step.
fn step_changes(old: &[String], new: &[String]) -> Vec<Change> {
    // Above this many cells, compare position by position: cheap, and still names each step.
    if old.len().saturating_mul(new.len()) > 1_000_000 {
        return positional(old, new);
    }
    let (n, m) = (old.len(), new.len());
    // lcs[i][j]: the longest common subsequence of old[i..] and new[j..].
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if old[i] == new[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut out = Vec::new();
    let (mut removed, mut added) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && old[i] == new[j] {
            hunk(old, new, &mut removed, &mut added, &mut out);
            i += 1;
            j += 1;
        } else if j == m || (i < n && lcs[i + 1][j] >= lcs[i][j + 1]) {
            removed.push(i);
            i += 1;
        } else {
            added.push(j);
            j += 1;
        }
    }
    hunk(old, new, &mut removed, &mut added, &mut out);
    out
}

/// Turns one run of removed and added steps into changes.
fn hunk(
    old: &[String],
    new: &[String],
    removed: &mut Vec<usize>,
    added: &mut Vec<usize>,
    out: &mut Vec<Change>,
) {
    let paired = removed.len().min(added.len());
    for k in 0..paired {
        out.push(Change::Step {
            index: added[k],
            old: Some(old[removed[k]].clone()),
            new: Some(new[added[k]].clone()),
        });
    }
    for &i in &removed[paired..] {
        out.push(Change::Step {
            index: i,
            old: Some(old[i].clone()),
            new: None,
        });
    }
    for &j in &added[paired..] {
        out.push(Change::Step {
            index: j,
            old: None,
            new: Some(new[j].clone()),
        });
    }
    removed.clear();
    added.clear();
}

fn positional(old: &[String], new: &[String]) -> Vec<Change> {
    (0..old.len().max(new.len()))
        .filter(|&i| old.get(i) != new.get(i))
        .map(|index| Change::Step {
            index,
            old: old.get(index).cloned(),
            new: new.get(index).cloned(),
        })
        .collect()
}

fn env_changes(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Vec<Change> {
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| Change::Env {
            key: k.clone(),
            old: old.get(k).cloned(),
            new: new.get(k).cloned(),
        })
        .collect()
}

/// Sources are matched by where they go and their file name; a source whose content changed
/// keeps both.
fn source_changes(old: &[SourceInput], new: &[SourceInput]) -> Vec<Change> {
    let key = |s: &SourceInput| (s.dest.clone(), s.file.clone());
    let mut taken = vec![false; old.len()];
    let mut pairs: Vec<(Option<usize>, usize)> = Vec::new();
    for (j, s) in new.iter().enumerate() {
        let found = (0..old.len()).find(|&i| !taken[i] && key(&old[i]) == key(s));
        if let Some(i) = found {
            taken[i] = true;
        }
        pairs.push((found, j));
    }
    let mut out = Vec::new();
    for (i, j) in &pairs {
        let n = &new[*j];
        match i {
            Some(i) if old[*i] == *n => {}
            Some(i) => out.push(Change::Source {
                name: source_name(n, new),
                old: Some(old[*i].clone()),
                new: Some(n.clone()),
            }),
            None => out.push(Change::Source {
                name: source_name(n, new),
                old: None,
                new: Some(n.clone()),
            }),
        }
    }
    for (o, _) in old.iter().zip(&taken).filter(|(_, t)| !**t) {
        out.push(Change::Source {
            name: source_name(o, old),
            old: Some(o.clone()),
            new: None,
        });
    }
    let order: Vec<usize> = pairs.iter().filter_map(|(i, _)| *i).collect();
    if order.windows(2).any(|w| w[0] > w[1]) {
        out.push(Change::SourceOrder);
    }
    out
}

/// A source's name for people: its `dest` when that names it alone, its file name when it goes
/// to `$src` itself, both otherwise.
fn source_name(s: &SourceInput, all: &[SourceInput]) -> String {
    if s.dest == "." {
        s.file.clone()
    } else if all.iter().filter(|o| o.dest == s.dest).count() == 1 {
        s.dest.clone()
    } else {
        format!("{}/{}", s.dest, s.file)
    }
}

fn builds_on_text(b: &BuildsOn) -> String {
    match b {
        BuildsOn::Root { name, .. } => format!("root {name}"),
        BuildsOn::Host(id) => format!("the host ({id})"),
        BuildsOn::Nothing => "nothing (no steps)".into(),
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Scheme { old, new } => write!(f, "scheme changed: {old} -> {new}"),
            Change::Platform { old, new } => write!(f, "platform changed: {old} -> {new}"),
            Change::Name { old, new } => write!(f, "name changed: {old} -> {new}"),
            Change::Version { old, new } => write!(f, "version changed: {old} -> {new}"),
            Change::RemovedReferences { old, new } => write!(
                f,
                "remove-references-to changed: [{}] -> [{}]",
                old.join(", "),
                new.join(", ")
            ),
            Change::BuildsOn { old, new } => match (old, new) {
                (BuildsOn::Host(a), BuildsOn::Host(b)) => {
                    write!(f, "host identity changed: {a} -> {b}")
                }
                (BuildsOn::Root { name: a, .. }, BuildsOn::Root { name: b, .. }) => {
                    write!(f, "root changed: {a} -> {b}")
                }
                _ => write!(
                    f,
                    "what the steps run on changed: {} -> {}",
                    builds_on_text(old),
                    builds_on_text(new)
                ),
            },
            Change::Root { name, cause } => write!(f, "root {name} changed{cause}"),
            Change::Step { index, old, new } => match (old, new) {
                (Some(o), Some(n)) => write!(f, "steps[{index}] changed: {o:?} -> {n:?}"),
                (None, Some(n)) => write!(f, "steps[{index}] added: {n:?}"),
                (Some(o), None) => write!(f, "steps[{index}] removed: {o:?}"),
                (None, None) => write!(f, "steps[{index}] unchanged"),
            },
            Change::Env { key, old, new } => match (old, new) {
                (Some(o), Some(n)) => write!(f, "env.{key} changed: {o:?} -> {n:?}"),
                (None, Some(n)) => write!(f, "env.{key} added: {n:?}"),
                (Some(o), None) => write!(f, "env.{key} removed: {o:?}"),
                (None, None) => write!(f, "env.{key} unchanged"),
            },
            Change::Source { name, old, new } => match (old, new) {
                (Some(o), Some(n)) => {
                    write!(f, "source {name} changed (")?;
                    if o.sha256 != n.sha256 {
                        write!(f, "{} -> {}", o.sha256, n.sha256)?;
                        if o.unpack != n.unpack {
                            f.write_str("; ")?;
                        }
                    }
                    if o.unpack != n.unpack {
                        write!(f, "unpack {} -> {}", o.unpack, n.unpack)?;
                    }
                    f.write_str(")")
                }
                (None, Some(n)) => write!(f, "source {name} added ({})", n.sha256),
                (Some(o), None) => write!(f, "source {name} removed (was {})", o.sha256),
                (None, None) => write!(f, "source {name} unchanged"),
            },
            Change::SourceOrder => f.write_str("the order of the sources changed"),
            Change::DepAdded { name } => write!(f, "dependency {name} added"),
            Change::DepRemoved { name } => write!(f, "dependency {name} removed"),
            Change::Dep { name, cause } => write!(f, "dependency {name} changed{cause}"),
        }
    }
}

/// Written after "dependency X changed": the rest of the line.
impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Own { changes, deps_too } => {
                if changes.is_empty() {
                    return f.write_str(" (no recorded input differs)");
                }
                f.write_str(" because ")?;
                for (k, c) in changes.iter().take(SHOWN_PER_LINE).enumerate() {
                    if k > 0 {
                        f.write_str(" and ")?;
                    }
                    write!(f, "its {c}")?;
                }
                if changes.len() > SHOWN_PER_LINE {
                    write!(f, " and {} more", changes.len() - SHOWN_PER_LINE)?;
                }
                match deps_too {
                    0 => Ok(()),
                    1 => f.write_str(" (and one of its dependencies changed)"),
                    n => write!(f, " (and {n} of its dependencies changed)"),
                }
            }
            Cause::Through { change, others } => {
                write!(f, " because its {change}")?;
                match others {
                    0 => Ok(()),
                    1 => f.write_str(" (and one more of its dependencies changed)"),
                    n => write!(f, " (and {n} more of its dependencies changed)"),
                }
            }
            Cause::NotRecorded { old, new } => write!(
                f,
                " ({old} -> {new}; the store has no record of {old}'s inputs)"
            ),
            Cause::TooDeep => f.write_str(" (through a chain too long to follow)"),
        }
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Explanation {
            name,
            current,
            verdict,
        } = self;
        match verdict {
            Verdict::NeverBuilt => write!(
                f,
                "{name}: never built in this store (its output would be {current})"
            ),
            Verdict::UpToDate { last: None } => {
                write!(f, "{name}: up to date ({current} is in the store)")
            }
            Verdict::UpToDate { last: Some(last) } => write!(
                f,
                "{name}: up to date ({current} is in the store; the last build was {last})"
            ),
            Verdict::Gone => write!(
                f,
                "{name}: {current} was the last build, but its output is no longer in the store"
            ),
            Verdict::NotRecorded { last } => write!(
                f,
                "{name}: {current} differs from the last build, {last}, whose inputs are not \
                 recorded in this store (an older pybake built it)"
            ),
            Verdict::Changed { last, changes } => {
                write!(f, "{name}: {current} differs from the last build, {last}:")?;
                if changes.is_empty() {
                    f.write_str("\n  (no recorded input differs)")?;
                }
                for c in changes {
                    write!(f, "\n  {c}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests;
