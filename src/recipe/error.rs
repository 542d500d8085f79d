//! Errors in recipe files. Each names the file and, where there is one, the line.

use std::fmt;
use std::path::PathBuf;

/// A place in a recipe file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.file.display()),
            None => write!(f, "{}", self.file.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("cannot read recipe directory {dir}: {source}\n  hint: pass --recipes DIR, or run pybake from the project's top directory")]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {file}: {source}")]
    ReadFile {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file} is {kind}, not a regular file: only regular files (or symlinks to them) named *.toml are read as recipes\n  hint: rename it or move it out of the recipe directory")]
    NotAFile { file: PathBuf, kind: &'static str },
    #[error("{at}: {message}")]
    Syntax { at: Location, message: String },
    #[error("{at}: bad value for `{field}`: {message}")]
    BadValue {
        at: Location,
        field: String,
        message: String,
    },
    #[error("{at}: recipe `{name}` is defined twice (also in {other})")]
    Duplicate {
        at: Location,
        name: String,
        other: PathBuf,
    },
    #[error("{at}: recipe `{recipe}` depends on `{dep}`, which no recipe defines{hint}")]
    MissingDep {
        at: Location,
        recipe: String,
        dep: String,
        hint: String,
    },
    #[error("{at}: recipe `{recipe}` extends `{parent}`, which no recipe defines")]
    MissingParent {
        at: Location,
        recipe: String,
        parent: String,
    },
    #[error("{at}: dependency cycle: {cycle}")]
    Cycle { at: Location, cycle: String },
    #[error("{at}: `extends` cycle: {cycle}")]
    ExtendsCycle { at: Location, cycle: String },
    #[error("no recipe named `{name}` in {dir}{hint}")]
    UnknownRecipe {
        name: String,
        dir: PathBuf,
        hint: String,
    },
    #[error("cannot hash local source {path} of recipe `{recipe}`: {source}")]
    HashSource {
        recipe: String,
        path: PathBuf,
        #[source]
        source: crate::hash::tree::TreeError,
    },
}

impl RecipeError {
    /// What kind of problem this is (see [`crate::exit`]): a recipe directory or file that
    /// cannot be read is a path or permission problem; everything else is the recipe's.
    pub fn class(&self) -> crate::exit::Class {
        match self {
            RecipeError::ReadDir { .. } | RecipeError::ReadFile { .. } => {
                crate::exit::Class::Environment
            }
            _ => crate::exit::Class::User,
        }
    }
}

/// The 1-based line of a byte offset in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// " (did you mean `x`?)" when a known name is close to `wanted`.
pub fn suggestion<'a>(wanted: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    let best = known
        .into_iter()
        .map(|k| (edit_distance(wanted, k), k))
        .filter(|(d, _)| *d <= 2)
        .min();
    match best {
        Some((_, k)) => format!(" (did you mean `{k}`?)"),
        None => String::new(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_one_based() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 4), 3);
    }

    #[test]
    fn suggests_close_names() {
        assert_eq!(
            suggestion("greting", ["greeting", "hello"]),
            " (did you mean `greeting`?)"
        );
        assert_eq!(suggestion("zzz", ["greeting"]), "");
    }
}
