//! Errors in recipe files. Each names the file and, where there is one, the line.

use std::fmt;
use std::path::PathBuf;

/// A place in a recipe file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: Option<usize>,
    /// The 1-based column and width (in characters, within `line`) of what is meant, for
    /// showing the line with a caret under it (see [`snippet`]).
    pub span: Option<(u32, u32)>,
}

impl Location {
    /// The location of the byte range `span` in `text`, the contents of `file`.
    pub fn of_span(file: &std::path::Path, text: &str, span: std::ops::Range<usize>) -> Self {
        Self::of_span_in(file, text, &line_starts(text), span)
    }

    /// [`Location::of_span`] with the offsets of `text`'s lines ([`line_starts`]) at hand: a
    /// recipe's locations are all taken from one text, and counting its lines again for each
    /// was a fifth of a no-op realize of the real graph.
    pub fn of_span_in(
        file: &std::path::Path,
        text: &str,
        lines: &[usize],
        span: std::ops::Range<usize>,
    ) -> Self {
        // Offsets from a parser or a UTF-8 check may fall inside a character: widen to its
        // boundaries rather than slice through it.
        let mut start = span.start.min(text.len());
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        // The last line starting at or before `start` (lines[0] is 0).
        let line = lines.partition_point(|&l| l <= start).max(1);
        let line_start = lines.get(line - 1).copied().unwrap_or(0);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let mut end = span.end.clamp(start, line_end);
        while !text.is_char_boundary(end) {
            end += 1;
        }
        let col = text[line_start..start].chars().count() + 1;
        let width = text[start..end].chars().count().max(1);
        let small = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Location {
            file: file.to_path_buf(),
            line: Some(line),
            span: Some((small(col), small(width))),
        }
    }

    /// A whole file, or a line without a column.
    pub fn at_line(file: &std::path::Path, line: Option<usize>) -> Self {
        Location {
            file: file.to_path_buf(),
            line,
            span: None,
        }
    }
}

/// The line of `text` a location names, with a caret under its span, rustc style:
///
/// ```text
///   --> recipes/hello.toml:3:9
///    |
///  3 | deps = ["greting"]
///    |         ^^^^^^^^^
/// ```
/// Empty when the location has no line or the text has no such line.
pub fn snippet(at: &Location, text: &str) -> String {
    let Some(line) = at.line else {
        return String::new();
    };
    let Some(src) = text.lines().nth(line - 1) else {
        return String::new();
    };
    let num = line.to_string();
    let pad = " ".repeat(num.len());
    let (col, width) = at.span.map_or((1, 0), |(c, w)| (c as usize, w as usize));
    let mut out = format!(
        "{pad}--> {}:{line}:{col}\n{pad} |\n{num} | {src}\n",
        at.file.display()
    );
    if width > 0 {
        out.push_str(&format!(
            "{pad} | {}{}\n",
            " ".repeat(col - 1),
            "^".repeat(width)
        ));
    }
    out
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
    #[error("{at}: the file is not valid UTF-8 (recipe files are UTF-8 text)\n  hint: re-save it as UTF-8; the first invalid byte is marked below")]
    NotUtf8 { at: Location },
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
        /// " (did you mean `x`?)" or empty; boxed to keep the error small.
        hint: Box<str>,
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
    /// Where in a recipe file the error is, when it is in one.
    pub fn location(&self) -> Option<&Location> {
        match self {
            RecipeError::Syntax { at, .. }
            | RecipeError::BadValue { at, .. }
            | RecipeError::Duplicate { at, .. }
            | RecipeError::MissingDep { at, .. }
            | RecipeError::MissingParent { at, .. }
            | RecipeError::Cycle { at, .. }
            | RecipeError::ExtendsCycle { at, .. }
            | RecipeError::NotUtf8 { at } => Some(at),
            _ => None,
        }
    }

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
/// The byte offset where each line of `text` starts (the first is 0).
pub fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(memchr::memchr_iter(b'\n', text.as_bytes()).map(|i| i + 1))
        .collect()
}

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

#[cfg(test)]
mod snippet_tests {
    use super::*;

    #[test]
    fn every_offset_gets_the_line_and_column_counted_from_the_start() {
        let text = "a = 1\n\nname = \"é\"\n  x\n";
        for start in 0..=text.len() {
            let at = Location::of_span(std::path::Path::new("r.toml"), text, start..start + 1);
            let mut boundary = start;
            while !text.is_char_boundary(boundary) {
                boundary -= 1;
            }
            assert_eq!(at.line, Some(line_of(text, boundary)), "offset {start}");
            let line_start = text[..boundary].rfind('\n').map_or(0, |i| i + 1);
            let col = text[line_start..boundary].chars().count() + 1;
            assert_eq!(at.span.map(|s| s.0), Some(col as u32), "offset {start}");
        }
    }

    #[test]
    fn a_span_is_shown_under_its_line_even_inside_a_character() {
        let text = "name = \"a\"\ndeps = [\"gréting\"]\n";
        let at = Location::of_span(std::path::Path::new("r.toml"), text, 19..28);
        assert_eq!(at.line, Some(2));
        assert_eq!(
            snippet(&at, text),
            " --> r.toml:2:9\n  |\n2 | deps = [\"gréting\"]\n  |         ^^^^^^^^\n"
        );
        // An offset in the middle of `é` (bytes 20..22) is widened to the whole character.
        let at = Location::of_span(std::path::Path::new("r.toml"), text, 21..22);
        assert_eq!(at.span, Some((11, 1)));
        assert_eq!(
            snippet(&Location::at_line(std::path::Path::new("r"), None), text),
            ""
        );
    }
}
