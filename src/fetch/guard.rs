//! Limits on one body while it streams: the low-speed window and the lockfile's size cap.
//!
//! A [`Guard`] wraps the body reader. When a limit is crossed it fails the read and remembers
//! which limit it was ([`Guard::tripped`]), so the caller decides from that, not from the
//! `io::Error` it returns.
//! - Size cap: no more than `max` bytes are ever passed on. Each read asks the inner reader for
//!   at most one byte past the cap; getting that byte is how a body is known to be too large.
//! - Low speed: after every read, the bytes received during the last `window` are compared with
//!   `limit × window`. Bytes are counted in slices of `window / SLICES`; a slice that began
//!   before the window is dropped whole, so the check may look at slightly less than `window`
//!   (never more), which errs towards declaring a link slow. No check happens before the first
//!   `window` has passed, so a small file on a fast link is never judged.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::time::{Duration, Instant};

const SLICES: u32 = 16;

/// Which limit stopped the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tripped {
    LowSpeed(LowSpeed),
    /// More than `max` bytes.
    TooLarge {
        max: u64,
    },
}

/// The low-speed rule: at least `limit` bytes per second, averaged over `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LowSpeed {
    pub limit: u64,
    pub window: Duration,
}

pub(super) struct Guard<R> {
    inner: R,
    max: Option<u64>,
    bytes: u64,
    speed: Option<SpeedMeter>,
    tripped: Option<Tripped>,
}

impl<R: Read> Guard<R> {
    /// `max`: the most bytes the body may have; `speed`: the low-speed rule, from now on.
    pub(super) fn new(inner: R, max: Option<u64>, speed: Option<LowSpeed>) -> Self {
        Self {
            inner,
            max,
            bytes: 0,
            speed: speed.map(|rule| SpeedMeter::new(rule, Instant::now())),
            tripped: None,
        }
    }

    /// The limit that stopped the body, if one did.
    pub(super) fn tripped(&self) -> Option<Tripped> {
        self.tripped
    }

    pub(super) fn into_inner(self) -> R {
        self.inner
    }

    fn trip(&mut self, why: Tripped) -> io::Error {
        self.tripped = Some(why);
        io::Error::other(match why {
            Tripped::LowSpeed(_) => "download too slow",
            Tripped::TooLarge { .. } => "download larger than expected",
        })
    }
}

impl<R: Read> Read for Guard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(why) = self.tripped {
            return Err(self.trip(why));
        }
        let room = match self.max {
            Some(max) => usize::try_from(max.saturating_sub(self.bytes).saturating_add(1))
                .unwrap_or(usize::MAX)
                .min(buf.len()),
            None => buf.len(),
        };
        let n = self.inner.read(&mut buf[..room])?;
        self.bytes += n as u64;
        if let Some(max) = self.max.filter(|&max| self.bytes > max) {
            return Err(self.trip(Tripped::TooLarge { max }));
        }
        if let Some(meter) = &mut self.speed {
            if meter.too_slow(n as u64, Instant::now()) {
                let rule = meter.rule;
                return Err(self.trip(Tripped::LowSpeed(rule)));
            }
        }
        Ok(n)
    }
}

/// Bytes received over the last window, in slices.
struct SpeedMeter {
    rule: LowSpeed,
    started: Instant,
    /// (start of slice, bytes received in it), oldest first.
    slices: VecDeque<(Instant, u64)>,
}

impl SpeedMeter {
    fn new(rule: LowSpeed, started: Instant) -> Self {
        Self {
            rule,
            started,
            slices: VecDeque::new(),
        }
    }

    /// Records `n` bytes received at `now`; true when the last window brought too few.
    fn too_slow(&mut self, n: u64, now: Instant) -> bool {
        let window = self.rule.window;
        match self.slices.back_mut() {
            Some((start, bytes)) if now.duration_since(*start) < window / SLICES => *bytes += n,
            _ => self.slices.push_back((now, n)),
        }
        while self
            .slices
            .front()
            .is_some_and(|(start, _)| now.duration_since(*start) >= window)
        {
            self.slices.pop_front();
        }
        if now.duration_since(self.started) < window {
            return false;
        }
        let received: u64 = self.slices.iter().map(|(_, bytes)| bytes).sum();
        (received as f64) < self.rule.limit as f64 * window.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy_all(r: &mut impl Read) -> (Vec<u8>, io::Result<u64>) {
        let mut out = Vec::new();
        let res = io::copy(r, &mut out);
        (out, res)
    }

    #[test]
    fn an_endless_body_is_cut_off_without_passing_on_a_byte_past_the_cap() {
        let mut g = Guard::new(io::repeat(b'x'), Some(100), None);
        let (out, res) = copy_all(&mut g);
        assert!(res.is_err());
        assert_eq!(g.tripped(), Some(Tripped::TooLarge { max: 100 }));
        assert!(out.len() <= 100, "{}", out.len());
    }

    #[test]
    fn a_body_of_exactly_the_cap_passes() {
        let data = vec![7u8; 100_000];
        let mut g = Guard::new(&data[..], Some(100_000), None);
        let (out, res) = copy_all(&mut g);
        assert_eq!(res.unwrap(), 100_000);
        assert_eq!(out, data);
        assert_eq!(g.tripped(), None);
    }

    fn meter(limit: u64, window_ms: u64) -> (SpeedMeter, Instant) {
        let t0 = Instant::now();
        let rule = LowSpeed {
            limit,
            window: Duration::from_millis(window_ms),
        };
        (SpeedMeter::new(rule, t0), t0)
    }

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn a_trickle_is_too_slow_once_a_window_has_passed() {
        // 1000 B/s over 2 s: 1 byte every 500 ms.
        let (mut m, t0) = meter(1000, 2000);
        for ms in (500..2000).step_by(500) {
            assert!(!m.too_slow(1, at(t0, ms)), "judged before a full window");
        }
        assert!(m.too_slow(1, at(t0, 2000)));
    }

    #[test]
    fn a_fast_start_does_not_hide_a_slow_end() {
        let (mut m, t0) = meter(1000, 2000);
        assert!(!m.too_slow(1_000_000, at(t0, 100)));
        assert!(!m.too_slow(1, at(t0, 1900)));
        assert!(
            !m.too_slow(1, at(t0, 2050)),
            "the fast start is in the window"
        );
        assert!(
            m.too_slow(1, at(t0, 2200)),
            "the fast start left the window"
        );
    }

    #[test]
    fn a_steady_link_at_the_limit_is_never_too_slow() {
        // 1100 B/s in reads every 50 ms, for 10 s.
        let (mut m, t0) = meter(1000, 1000);
        for ms in (50..10_000).step_by(50) {
            assert!(!m.too_slow(55, at(t0, ms)), "at {ms} ms");
        }
    }
}
