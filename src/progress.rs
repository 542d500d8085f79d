//! Progress on stderr: a live display on a terminal, one plain line per event otherwise.
//!
//! This module owns its vocabulary ([`Event`], [`Status`]) and imports nothing of the engine:
//! the scheduler, builds, downloads and uploads report through a [`Reporter`] and never print
//! on their own.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// What became of one derivation in a realize.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Built,
    Cached,
    /// Downloaded from a binary cache and verified.
    Substituted,
    Failed,
    /// Not attempted: a dependency failed, or the run stopped at another failure.
    Skipped,
}

/// Something worth telling the user about.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// What a realize is about to do.
    Plan {
        build: usize,
        substitute: usize,
        cached: usize,
    },
    Started {
        name: &'a str,
    },
    /// A download of `name`'s output from a binary cache begins (its bytes follow as a
    /// transfer).
    Substituting {
        name: &'a str,
    },
    Step {
        name: &'a str,
        number: usize,
        total: usize,
        step: &'a str,
    },
    Finished {
        name: &'a str,
        status: Status,
        seconds: f64,
    },
    /// A download or upload begins; `id` comes from [`transfer_id`].
    TransferStarted {
        id: u64,
        what: &'a str,
        total: Option<u64>,
    },
    /// `done` bytes of transfer `id` so far.
    TransferProgress {
        id: u64,
        done: u64,
    },
    TransferFinished {
        id: u64,
    },
    Warning(&'a str),
    Note(&'a str),
}

pub trait Reporter: Sync {
    fn report(&self, event: Event);
}

/// A fresh id for a transfer's events.
pub fn transfer_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The reporter for this process's stderr.
pub fn for_stderr() -> Box<dyn Reporter> {
    if std::io::stderr().is_terminal() {
        Box::new(Live::new())
    } else {
        Box::new(Plain::new())
    }
}

/// A step as one short line: its first line, cut at [`STEP_SHOWN`] characters.
fn first_line(step: &str) -> std::borrow::Cow<'_, str> {
    let line = step.lines().next().unwrap_or("");
    match line.char_indices().nth(STEP_SHOWN) {
        Some((at, _)) => format!("{}...", &line[..at]).into(),
        None => line.into(),
    }
}

/// How much of a step a progress line shows (the log has all of it).
const STEP_SHOWN: usize = 100;

fn plan_line(build: usize, substitute: usize, cached: usize) -> String {
    if substitute > 0 {
        format!("{build} to build, {substitute} to substitute, {cached} cached")
    } else {
        format!("{build} to build, {cached} cached")
    }
}

fn finished_line(name: &str, status: Status, seconds: f64) -> String {
    match status {
        Status::Built => format!("built {name} in {seconds:.1}s"),
        Status::Cached => format!("{name} is cached"),
        Status::Substituted => format!("substituted {name} in {seconds:.1}s"),
        Status::Failed => format!("FAILED {name} after {seconds:.1}s"),
        Status::Skipped => format!("skipped {name}"),
    }
}

/// One line per event, for logs (CI). While builds run, a heartbeat line names each of them
/// with its current step and elapsed time every [`HEARTBEAT`] (`PYBAKE_HEARTBEAT` seconds
/// overrides it), so that a 20-minute step does not look like a hung job.
pub struct Plain {
    running: std::sync::Arc<Mutex<BTreeMap<String, Running>>>,
}

/// Writes a line to stderr, ignoring failure: progress must never stop a build, and
/// `eprintln!` panics when stderr is a closed pipe (`pybake realize 2>&1 | head`).
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// How often a plain log says what is still running.
pub const HEARTBEAT: Duration = Duration::from_secs(60);

struct Running {
    since: std::time::Instant,
    step: String,
}

impl Plain {
    pub fn new() -> Self {
        let running: std::sync::Arc<Mutex<BTreeMap<String, Running>>> = Default::default();
        let every = std::env::var("PYBAKE_HEARTBEAT")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|s| *s > 0.0)
            .map(Duration::from_secs_f64)
            .unwrap_or(HEARTBEAT);
        let watched = std::sync::Arc::downgrade(&running);
        // Ends with the reporter: it holds the only strong reference.
        std::thread::spawn(move || loop {
            std::thread::sleep(every);
            let Some(running) = watched.upgrade() else {
                return;
            };
            let running = running.lock().unwrap_or_else(|e| e.into_inner());
            for (name, r) in running.iter() {
                say(&format!(
                    "pybake: still building {name} ({}, {})",
                    r.step,
                    elapsed(r.since.elapsed())
                ));
            }
        });
        Plain { running }
    }

    fn track(&self, event: &Event) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        match *event {
            Event::Started { name } | Event::Substituting { name } => {
                running.insert(
                    name.to_string(),
                    Running {
                        since: std::time::Instant::now(),
                        step: "preparing".into(),
                    },
                );
            }
            Event::Step {
                name,
                number,
                total,
                step,
            } => {
                if let Some(r) = running.get_mut(name) {
                    r.step = format!("step {number}/{total}: {}", first_line(step));
                }
            }
            Event::Finished { name, .. } => {
                running.remove(name);
            }
            _ => {}
        }
    }
}

impl Default for Plain {
    fn default() -> Self {
        Self::new()
    }
}

/// `1h02m03s`, `4m05s`, `6s`.
fn elapsed(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}

impl Reporter for Plain {
    fn report(&self, event: Event) {
        self.track(&event);
        let line = match event {
            Event::Plan {
                build,
                substitute,
                cached,
            } => plan_line(build, substitute, cached),
            Event::Started { name } => format!("building {name}"),
            Event::Substituting { name } => format!("substituting {name}"),
            Event::Step {
                name,
                number,
                total,
                step,
            } => format!("{name}: step {number}/{total}: {}", first_line(step)),
            Event::Finished {
                name,
                status,
                seconds,
            } => finished_line(name, status, seconds),
            Event::TransferStarted { what, .. } => format!("fetching {what}"),
            Event::TransferProgress { .. } | Event::TransferFinished { .. } => return,
            Event::Warning(m) => format!("warning: {m}"),
            Event::Note(m) => m.to_string(),
        };
        say(&format!("pybake: {line}"));
    }
}

/// The closing lines of a realize: how many outputs were built, substituted, cached, failed
/// and skipped, and the slowest builds with their times. `rows` are (name, status, seconds).
pub fn summary(rows: &[(&str, Status, f64)]) -> Vec<String> {
    let count = |st: Status| rows.iter().filter(|r| r.1 == st).count();
    let mut lines = vec![format!(
        "summary: {} built, {} substituted, {} cached, {} failed, {} skipped",
        count(Status::Built),
        count(Status::Substituted),
        count(Status::Cached),
        count(Status::Failed),
        count(Status::Skipped)
    )];
    let mut slow: Vec<&(&str, Status, f64)> = rows
        .iter()
        .filter(|r| matches!(r.1, Status::Built | Status::Substituted | Status::Failed))
        .collect();
    slow.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(b.0)));
    if !slow.is_empty() {
        let shown: Vec<String> = slow
            .iter()
            .take(5)
            .map(|r| format!("{} {}", r.0, elapsed(Duration::from_secs_f64(r.2))))
            .collect();
        lines.push(format!("slowest: {}", shown.join(", ")));
    }
    lines
}

struct LiveState {
    built: usize,
    cached: usize,
    remaining: usize,
    bars: BTreeMap<String, ProgressBar>,
    transfers: BTreeMap<u64, ProgressBar>,
}

/// Progress bars on a terminal.
pub struct Live {
    multi: MultiProgress,
    total: ProgressBar,
    state: Mutex<LiveState>,
}

impl Live {
    fn new() -> Self {
        let multi = MultiProgress::new();
        let total = multi.add(ProgressBar::new(0));
        total.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        total.enable_steady_tick(Duration::from_millis(120));
        Live {
            multi,
            total,
            state: Mutex::new(LiveState {
                built: 0,
                cached: 0,
                remaining: 0,
                bars: BTreeMap::new(),
                transfers: BTreeMap::new(),
            }),
        }
    }

    fn refresh(&self, s: &LiveState) {
        self.total.set_message(format!(
            "built {}, cached {}, remaining {}",
            s.built, s.cached, s.remaining
        ));
    }

    fn transfer_bar(&self, what: &str, total: Option<u64>) -> ProgressBar {
        let (bar, template) = match total {
            Some(len) => (
                ProgressBar::new(len),
                "  {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            ),
            None => (
                ProgressBar::new_spinner(),
                "  {spinner} {msg} {bytes} {bytes_per_sec}",
            ),
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_string());
        self.multi.add(bar)
    }
}

impl Reporter for Live {
    fn report(&self, event: Event) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::Plan {
                build,
                substitute,
                cached,
            } => {
                s.cached = cached;
                s.remaining = build + substitute;
                self.total.set_length((build + substitute) as u64);
                self.refresh(&s);
                let _ = self
                    .multi
                    .println(format!("pybake: {}", plan_line(build, substitute, cached)));
            }
            Event::Started { name } | Event::Substituting { name } => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template(
                        "  {spinner} {prefix:.bold} [{elapsed}] {wide_msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_prefix(name.to_string());
                bar.enable_steady_tick(Duration::from_millis(120));
                s.bars.insert(name.to_string(), bar);
            }
            Event::Step {
                name,
                number,
                total,
                step,
            } => {
                if let Some(bar) = s.bars.get(name) {
                    bar.set_message(format!("step {number}/{total}: {}", first_line(step)));
                }
            }
            Event::Finished {
                name,
                status,
                seconds,
            } => {
                if let Some(bar) = s.bars.remove(name) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                s.remaining = s.remaining.saturating_sub(1);
                match status {
                    Status::Built | Status::Substituted => s.built += 1,
                    Status::Cached => s.cached += 1,
                    _ => {}
                }
                self.total.inc(1);
                let _ = self.multi.println(finished_line(name, status, seconds));
                self.refresh(&s);
                if s.remaining == 0 {
                    self.total.finish_and_clear();
                }
            }
            Event::TransferStarted { id, what, total } => {
                let bar = self.transfer_bar(what, total);
                s.transfers.insert(id, bar);
            }
            Event::TransferProgress { id, done } => {
                if let Some(bar) = s.transfers.get(&id) {
                    bar.set_position(done);
                }
            }
            Event::TransferFinished { id } => {
                if let Some(bar) = s.transfers.remove(&id) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
            }
            Event::Warning(m) => {
                let _ = self.multi.println(format!("pybake: warning: {m}"));
            }
            Event::Note(m) => {
                let _ = self.multi.println(format!("pybake: {m}"));
            }
        }
    }
}

/// Reads through `inner`, reporting the bytes read as transfer `id`'s progress (at most ten
/// times a second).
pub struct TransferReader<'r, R> {
    inner: R,
    reporter: &'r dyn Reporter,
    id: u64,
    done: u64,
    last: std::time::Instant,
}

impl<'r, R> TransferReader<'r, R> {
    pub fn new(inner: R, reporter: &'r dyn Reporter, id: u64) -> Self {
        TransferReader {
            inner,
            reporter,
            id,
            done: 0,
            last: std::time::Instant::now(),
        }
    }
}

impl<R: std::io::Read> std::io::Read for TransferReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.last.elapsed() >= Duration::from_millis(100) {
            self.last = std::time::Instant::now();
            self.reporter.report(Event::TransferProgress {
                id: self.id,
                done: self.done,
            });
        }
        Ok(n)
    }
}

/// A reporter that prints nothing (for commands that only plan, and for tests).
pub struct Silent;

impl Reporter for Silent {
    fn report(&self, _: Event) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_and_names_the_slowest() {
        let rows = [
            ("binaryen", Status::Built, 545.0),
            ("zlib", Status::Built, 8.2),
            ("debian-base", Status::Cached, 0.0),
            ("emsdk", Status::Substituted, 3.5),
            ("cpython-node", Status::Failed, 3725.0),
            ("cpython-browser", Status::Skipped, 0.0),
        ];
        assert_eq!(
            summary(&rows),
            [
                "summary: 2 built, 1 substituted, 1 cached, 1 failed, 1 skipped",
                "slowest: cpython-node 1h02m05s, binaryen 9m05s, zlib 8s, emsdk 3s",
            ]
        );
        assert_eq!(summary(&[]).len(), 1);
    }
}
