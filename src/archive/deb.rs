//! Debian binary packages (`.deb`, see deb(5)): an `ar` archive whose members are
//! `debian-binary` ("2.0\n"), `control.tar[.gz|.xz|.zst]` and `data.tar[.gz|.xz|.zst|.bz2]`.
//! Only `data.tar` is unpacked, by the module's one tar unpacker and under all of its rules;
//! this file holds what differs for packages (the rules are stated in the module docs):
//! reading the `ar` container, placing entries into a merged-/usr tree, rewriting link targets
//! to that tree, and the top-level compatibility links.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use super::{ArchiveError, DebProblem};

/// The first bytes of every `ar` archive.
pub(super) const AR_MAGIC: &[u8; 8] = b"!<arch>\n";

/// Top-level directories that are links into `usr/` on a merged-/usr system (Debian 12 and
/// later); sorted, so the links are made in a fixed order.
pub(super) const MERGED: [&str; 6] = ["bin", "lib", "lib32", "lib64", "libx32", "sbin"];

const HEADER_LEN: u64 = 60;
/// The control file is a few KiB; a bound keeps a hostile one from filling memory.
const MAX_CONTROL: u64 = 1 << 20;

/// What unpacking needs from a .deb.
pub(super) struct Deb {
    /// `NAME VERSION` from the control file, for messages.
    pub package: String,
    /// Offset and length of the `data.tar` member's bytes in the file.
    pub data: (u64, u64),
}

struct Member {
    name: String,
    offset: u64,
    size: u64,
}

/// Reads the `ar` container of `archive` (whose first 8 bytes are [`AR_MAGIC`]): checks the
/// format, reads the package name from the control file and finds `data.tar`.
pub(super) fn read(archive: &Path, file: &mut fs_err::File) -> Result<Deb, ArchiveError> {
    let bad = |problem| ArchiveError::Deb {
        archive: archive.to_path_buf(),
        problem,
    };
    let io_err = |source| ArchiveError::Read {
        archive: archive.to_path_buf(),
        source,
    };
    let members = members(file).map_err(|e| match e {
        MemberError::Io(e) => io_err(e),
        MemberError::Bad(p) => bad(p),
    })?;
    match members.first() {
        Some(m) if m.name == "debian-binary" => {}
        _ => {
            return Err(ArchiveError::Unsupported {
                archive: archive.to_path_buf(),
                format: "an ar archive but not a Debian package",
            })
        }
    }
    let version = read_member(file, &members[0], 64).map_err(io_err)?;
    if !version.starts_with(b"2.") {
        let shown = String::from_utf8_lossy(&version).trim().to_string();
        return Err(bad(DebProblem::Version(shown)));
    }
    let (mut control, mut data) = (None, None);
    for m in &members[1..] {
        let slot = match m.name.as_str() {
            n if n.starts_with('_') => continue, // reserved for dpkg's extensions
            n if is_member(n, "control.tar") => &mut control,
            n if is_member(n, "data.tar") => &mut data,
            _ => return Err(bad(DebProblem::UnknownMember(m.name.clone()))),
        };
        if slot.replace(m).is_some() {
            return Err(bad(DebProblem::Duplicate(m.name.clone())));
        }
    }
    let control = control.ok_or_else(|| bad(DebProblem::Missing("control.tar")))?;
    let data = data.ok_or_else(|| bad(DebProblem::Missing("data.tar")))?;
    let package = package_name(archive, file, control)?;
    Ok(Deb {
        package,
        data: (data.offset, data.size),
    })
}

/// `control.tar` or `control.tar.<compression>`: the compression itself is detected from the
/// bytes, like every archive's.
fn is_member(name: &str, base: &str) -> bool {
    name.strip_prefix(base)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

enum MemberError {
    Io(io::Error),
    Bad(DebProblem),
}

fn members(file: &mut fs_err::File) -> Result<Vec<Member>, MemberError> {
    let len = file.metadata().map_err(MemberError::Io)?.len();
    let mut members = Vec::new();
    let mut offset = AR_MAGIC.len() as u64;
    while offset < len {
        if offset + HEADER_LEN > len {
            return Err(MemberError::Bad(DebProblem::Truncated(format!(
                "the member header at byte {offset}"
            ))));
        }
        let mut header = [0u8; HEADER_LEN as usize];
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut header))
            .map_err(MemberError::Io)?;
        let bad_header = || MemberError::Bad(DebProblem::Header { offset });
        if &header[58..60] != b"`\n" {
            return Err(bad_header());
        }
        // GNU ar ends names with `/`, dpkg-deb pads them with spaces.
        let name = std::str::from_utf8(&header[..16]).map_err(|_| bad_header())?;
        let name = name.trim_end_matches(' ').trim_end_matches('/').to_string();
        let size = std::str::from_utf8(&header[48..58])
            .ok()
            .map(|s| s.trim_end_matches(' '))
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(bad_header)?;
        let data = offset + HEADER_LEN;
        if size > len - data {
            return Err(MemberError::Bad(DebProblem::Truncated(format!(
                "member {name:?} ({size} bytes)"
            ))));
        }
        members.push(Member {
            name,
            offset: data,
            size,
        });
        // Members start at even offsets; the padding byte after the last one may be missing.
        offset = data + size + (size & 1);
    }
    Ok(members)
}

fn read_member(file: &mut fs_err::File, m: &Member, limit: u64) -> io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(m.offset))?;
    let mut buf = Vec::new();
    file.by_ref()
        .take(m.size.min(limit))
        .read_to_end(&mut buf)?;
    Ok(buf)
}

/// `NAME VERSION` from the `Package` and `Version` fields of `./control` in `control.tar`.
fn package_name(
    archive: &Path,
    file: &mut fs_err::File,
    control: &Member,
) -> Result<String, ArchiveError> {
    let read_err = |source| ArchiveError::Read {
        archive: archive.to_path_buf(),
        source,
    };
    file.seek(SeekFrom::Start(control.offset))
        .map_err(read_err)?;
    let reader = super::decompress(archive, Box::new(file.by_ref().take(control.size)))?;
    let mut tar = tar::Archive::new(reader);
    for entry in tar.entries().map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let path = entry.path().map_err(read_err)?;
        let mut normal = path.components().filter(|c| *c != Component::CurDir);
        if !(normal.next() == Some(Component::Normal(OsStr::new("control")))
            && normal.next().is_none())
        {
            continue;
        }
        let mut text = Vec::new();
        entry
            .take(MAX_CONTROL)
            .read_to_end(&mut text)
            .map_err(read_err)?;
        let text = String::from_utf8_lossy(&text);
        let field = |key: &str| {
            text.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(key).then(|| v.trim().to_string())
            })
        };
        let name = field("Package").ok_or(ArchiveError::Deb {
            archive: archive.to_path_buf(),
            problem: DebProblem::Missing("Package field in the control file"),
        })?;
        return Ok(match field("Version") {
            Some(v) => format!("{name} {v}"),
            None => name,
        });
    }
    Err(ArchiveError::Deb {
        archive: archive.to_path_buf(),
        problem: DebProblem::Missing("control file in control.tar"),
    })
}

fn is_merged(c: &OsStr) -> bool {
    MERGED.iter().any(|m| c == OsStr::new(m))
}

/// Where an entry found at `comps` in a package lands: under `usr/` when its first component
/// is one of [`MERGED`].
pub(super) fn merged(mut comps: Vec<OsString>) -> Vec<OsString> {
    if comps.first().is_some_and(|c| is_merged(c)) {
        comps.insert(0, OsString::from("usr"));
    }
    comps
}

/// What a symlink of a package becomes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Link {
    /// Create it with this target.
    Target(PathBuf),
    /// It is a top-level compatibility link (`bin -> usr/bin`): skipped, as unpacking makes
    /// those itself.
    Compat,
    /// Its target climbs above the root, or has a `..` that cannot be resolved lexically.
    Escapes,
}

/// The link found at `orig` (as in the archive, before [`merged`]) with `target`: the target is
/// resolved as the package meant it, on the package's own (unmerged) layout, from the link's
/// original place (an absolute target from the root); that path is [`merged`] and made relative
/// to the link's merged place. A relative target that already says this is kept as it is.
pub(super) fn link(orig: &[OsString], target: &Path) -> Link {
    let Some((_, parent)) = orig.split_last() else {
        return Link::Escapes;
    };
    let Some(resolved) = resolve(parent, target) else {
        return Link::Escapes;
    };
    let resolved = merged(resolved);
    if orig.len() == 1 && is_merged(&orig[0]) && resolved == [OsStr::new("usr"), &orig[0]] {
        return Link::Compat;
    }
    let placed = merged(orig.to_vec());
    let placed_parent = &placed[..placed.len() - 1];
    if target.is_relative() && resolve(placed_parent, target).as_ref() == Some(&resolved) {
        return Link::Target(target.to_path_buf());
    }
    // The link's parents are real directories (the unpacker never creates them as links), so
    // `..` from the link's directory climbs exactly its own path.
    let common = placed_parent
        .iter()
        .zip(&resolved)
        .take_while(|(a, b)| a == b)
        .count();
    let mut rel = PathBuf::new();
    for _ in common..placed_parent.len() {
        rel.push("..");
    }
    for c in &resolved[common..] {
        rel.push(c);
    }
    if rel.as_os_str().is_empty() {
        rel.push(".");
    }
    Link::Target(rel)
}

/// The path below the root that `target` names, for a link in the directory `parent`; `None`
/// when it climbs above the root or has a `..` after a name (which depends on what the name is,
/// so no lexical answer is right).
fn resolve(parent: &[OsString], target: &Path) -> Option<Vec<OsString>> {
    let mut out: Vec<OsString> = if target.is_absolute() {
        Vec::new()
    } else {
        parent.to_vec()
    };
    let mut seen_name = false;
    for c in target.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir if !seen_name => {
                out.pop()?;
            }
            Component::Normal(s) => {
                seen_name = true;
                out.push(s.to_os_string());
            }
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Checks, before anything of a package moves into `dest`, the compatibility links that it
/// will need: `dest/NAME -> usr/NAME` for each name of [`MERGED`] whose `usr/NAME` is a real
/// directory in `staged` or in `dest`. Returns the names whose link is still missing; a link
/// that is already there with exactly this target is fine, anything else at `dest/NAME` is a
/// conflict.
pub(super) fn compat_links(
    archive: &Path,
    package: &str,
    staged: &Path,
    dest: &Path,
) -> Result<Vec<&'static str>, ArchiveError> {
    let lstat_err = |path: &Path, source| ArchiveError::Dest {
        archive: archive.to_path_buf(),
        path: path.to_path_buf(),
        source,
    };
    let is_dir = |p: &Path| match fs_err::symlink_metadata(p) {
        Ok(m) => Ok(m.file_type().is_dir()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(lstat_err(p, e)),
    };
    let has = |root: &Path, name: &str| -> Result<bool, ArchiveError> {
        Ok(is_dir(&root.join("usr"))? && is_dir(&root.join("usr").join(name))?)
    };
    let mut missing = Vec::new();
    for name in MERGED {
        if !(has(staged, name)? || has(dest, name)?) {
            continue;
        }
        let link = dest.join(name);
        match fs_err::symlink_metadata(&link) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(name),
            Err(e) => return Err(lstat_err(&link, e)),
            Ok(m)
                if m.file_type().is_symlink()
                    && fs_err::read_link(&link).ok() == Some(Path::new("usr").join(name)) => {}
            Ok(_) => {
                return Err(ArchiveError::PackageConflict {
                    archive: archive.to_path_buf(),
                    package: package.to_string(),
                    dest: dest.to_path_buf(),
                    path: PathBuf::from(name),
                })
            }
        }
    }
    Ok(missing)
}

pub(super) fn make_compat_links(
    archive: &Path,
    dest: &Path,
    names: &[&'static str],
) -> Result<(), ArchiveError> {
    for name in names {
        let link = dest.join(name);
        fs_err::os::unix::fs::symlink(Path::new("usr").join(name), &link).map_err(|source| {
            ArchiveError::Dest {
                archive: archive.to_path_buf(),
                path: link.clone(),
                source,
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
