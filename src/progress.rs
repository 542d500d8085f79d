//! Progress on stderr: a live display on a terminal, one plain line per event otherwise.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::scheduler::{Outcome, Status};

pub trait Reporter: Sync {
    fn plan(&self, to_build: usize, cached: usize);
    fn started(&self, name: &str);
    fn step(&self, name: &str, number: usize, total: usize, step: &str);
    fn finished(&self, outcome: &Outcome);
    fn note(&self, message: &str);
}

/// The reporter for this process's stderr.
pub fn for_stderr() -> Box<dyn Reporter> {
    if std::io::stderr().is_terminal() {
        Box::new(Live::new())
    } else {
        Box::new(Plain)
    }
}

fn first_line(step: &str) -> &str {
    step.lines().next().unwrap_or("")
}

pub struct Plain;

impl Reporter for Plain {
    fn plan(&self, to_build: usize, cached: usize) {
        eprintln!("pybake: {to_build} to build, {cached} cached");
    }
    fn started(&self, name: &str) {
        eprintln!("pybake: building {name}");
    }
    fn step(&self, name: &str, number: usize, total: usize, step: &str) {
        eprintln!(
            "pybake: {name}: step {number}/{total}: {}",
            first_line(step)
        );
    }
    fn finished(&self, o: &Outcome) {
        match o.status {
            Status::Built => eprintln!("pybake: built {} in {:.1}s", o.name, o.seconds),
            Status::Cached => eprintln!("pybake: {} is cached", o.name),
            Status::Failed => eprintln!("pybake: FAILED {} after {:.1}s", o.name, o.seconds),
            Status::Skipped => eprintln!("pybake: skipped {}", o.name),
        }
    }
    fn note(&self, message: &str) {
        eprintln!("pybake: {message}");
    }
}

struct LiveState {
    built: usize,
    cached: usize,
    remaining: usize,
    bars: BTreeMap<String, ProgressBar>,
}

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
            }),
        }
    }

    fn refresh(&self, s: &LiveState) {
        self.total.set_message(format!(
            "built {}, cached {}, remaining {}",
            s.built, s.cached, s.remaining
        ));
    }
}

impl Reporter for Live {
    fn plan(&self, to_build: usize, cached: usize) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.cached = cached;
        s.remaining = to_build;
        self.total.set_length(to_build as u64);
        self.refresh(&s);
    }
    fn started(&self, name: &str) {
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("  {spinner} {prefix:.bold} [{elapsed}] {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(name.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.bars.insert(name.to_string(), bar);
    }
    fn step(&self, name: &str, number: usize, total: usize, step: &str) {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bar) = s.bars.get(name) {
            bar.set_message(format!("step {number}/{total}: {}", first_line(step)));
        }
    }
    fn finished(&self, o: &Outcome) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bar) = s.bars.remove(&o.name) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        s.remaining = s.remaining.saturating_sub(1);
        match o.status {
            Status::Built => s.built += 1,
            Status::Cached => s.cached += 1,
            _ => {}
        }
        self.total.inc(1);
        let line = match o.status {
            Status::Built => format!("built {} in {:.1}s", o.name, o.seconds),
            Status::Cached => format!("{} is cached", o.name),
            Status::Failed => format!("FAILED {}", o.name),
            Status::Skipped => format!("skipped {}", o.name),
        };
        let _ = self.multi.println(line);
        self.refresh(&s);
        if s.remaining == 0 {
            self.total.finish_and_clear();
        }
    }
    fn note(&self, message: &str) {
        let _ = self.multi.println(format!("pybake: {message}"));
    }
}

/// A reporter that prints nothing (for commands that only plan).
pub struct Silent;

impl Reporter for Silent {
    fn plan(&self, _: usize, _: usize) {}
    fn started(&self, _: &str) {}
    fn step(&self, _: &str, _: usize, _: usize, _: &str) {}
    fn finished(&self, _: &Outcome) {}
    fn note(&self, _: &str) {}
}
