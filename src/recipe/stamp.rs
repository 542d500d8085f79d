//! What a file was when it was read, as far as `stat` can tell: enough for the evaluation cache
//! (`crate::eval_cache`) to know, without reading it again, that it has not changed since.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// Device, inode, mode, size, and modification and change times to the nanosecond, as git's
/// index keeps them. Any write changes the size or the mtime; a `chmod`, `rename` or link count
/// change moves the ctime; replacing the file changes the inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Change time, nanoseconds since the epoch.
    pub ctime_ns: i128,
}

impl FileStamp {
    pub fn of(m: &std::fs::Metadata) -> Self {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            mode: m.mode(),
            size: m.size(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        }
    }

    /// The later of the two times.
    pub fn last_change_ns(&self) -> i128 {
        self.mtime_ns.max(self.ctime_ns)
    }
}

impl std::fmt::Display for FileStamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {:o} {} {} {}",
            self.dev, self.ino, self.mode, self.size, self.mtime_ns, self.ctime_ns
        )
    }
}

impl std::str::FromStr for FileStamp {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let mut f = s.split(' ');
        let mut next = || f.next().ok_or(());
        let stamp = FileStamp {
            dev: next()?.parse().map_err(drop)?,
            ino: next()?.parse().map_err(drop)?,
            mode: u32::from_str_radix(next()?, 8).map_err(drop)?,
            size: next()?.parse().map_err(drop)?,
            mtime_ns: next()?.parse().map_err(drop)?,
            ctime_ns: next()?.parse().map_err(drop)?,
        };
        if f.next().is_some() {
            return Err(());
        }
        Ok(stamp)
    }
}

/// The recipe directory and every recipe file as a load read them.
#[derive(Debug, Clone)]
pub struct ReadFiles {
    /// The directory, stamped before it was listed (`None` until [`super::RecipeSet::load`]
    /// sets it).
    pub dir: Option<FileStamp>,
    /// Each recipe file, stamped when opened (before its bytes were read), in name order.
    pub files: Vec<(PathBuf, FileStamp)>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use super::*;

    #[test]
    fn a_stamp_reads_back_as_written() {
        let s = FileStamp {
            dev: 2049,
            ino: 123,
            mode: 0o100644,
            size: 77,
            mtime_ns: 1_700_000_000_123_456_789,
            ctime_ns: -5,
        };
        assert_eq!(s.to_string().parse::<FileStamp>(), Ok(s));
        assert!("1 2 3".parse::<FileStamp>().is_err());
        assert!(format!("{s} 9").parse::<FileStamp>().is_err());
    }

    #[test]
    fn a_write_changes_the_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.toml");
        std::fs::write(&f, "x").unwrap();
        let before = FileStamp::of(&std::fs::metadata(&f).unwrap());
        std::fs::write(&f, "xy").unwrap();
        assert_ne!(FileStamp::of(&std::fs::metadata(&f).unwrap()), before);
    }
}
