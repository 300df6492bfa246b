//! The GCRA (generic cell rate algorithm) arithmetic, with no state and no
//! I/O: the in-process limiter and the Redis script compute the same thing.
//!
//! A key keeps one number, its theoretical arrival time (TAT). A request at
//! `now` is admitted when `max(TAT, now) + interval - now <= interval *
//! burst`, and then moves the TAT to `max(TAT, now) + interval`. A key whose
//! TAT is in the past behaves exactly like a key never seen, which is what
//! lets idle keys be forgotten.

/// Microseconds in the window the per-minute rates are quoted in.
pub const WINDOW_MICROS: u64 = 60_000_000;

/// One key's budget: `per_window` requests each [`WINDOW_MICROS`], at most
/// `burst` of them at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests per window (≥ 1).
    pub per_window: u64,
    /// Requests a key with a full budget may send at once (1..=`per_window`).
    pub burst: u64,
}

impl Quota {
    /// A quota of `per_minute` requests, `burst` at once (clamped to
    /// 1..=`per_minute`; `None` = the whole minute's budget at once).
    /// `per_minute` 0 is treated as 1: a limit, never a division by zero.
    pub fn per_minute(per_minute: u64, burst: Option<u64>) -> Quota {
        let per_window = per_minute.max(1);
        Quota {
            per_window,
            burst: burst.unwrap_or(per_window).clamp(1, per_window),
        }
    }

    /// Microseconds between two requests at the sustained rate (≥ 1).
    pub fn interval(&self) -> u64 {
        (WINDOW_MICROS / self.per_window).max(1)
    }

    /// The largest `TAT - now` an admitted request may leave.
    pub fn tolerance(&self) -> u64 {
        self.interval().saturating_mul(self.burst)
    }
}

/// What one check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the request is admitted.
    pub allowed: bool,
    /// Requests that would still be admitted right now, after this one.
    pub remaining: u64,
    /// Microseconds until the key's budget is full again.
    pub reset_micros: u64,
    /// When denied: microseconds until a request would be admitted.
    pub retry_after_micros: u64,
}

/// One GCRA step: the outcome of a request at `now` for a key whose TAT is
/// `tat` (`None`: never seen or forgotten), and the TAT to store when it is
/// admitted (`None` when denied: nothing changes).
pub fn step(quota: Quota, tat: Option<u64>, now: u64) -> (Outcome, Option<u64>) {
    let ahead = tat.map_or(0, |t| t.saturating_sub(now));
    let o = outcome(quota, ahead);
    (o, o.allowed.then(|| now.saturating_add(o.reset_micros)))
}

/// The outcome of a request for a key whose TAT is `ahead` microseconds in
/// the future (0 when it is in the past). The Redis script answers `ahead`.
pub fn outcome(quota: Quota, ahead: u64) -> Outcome {
    let interval = quota.interval();
    let tolerance = quota.tolerance();
    let new_ahead = ahead.saturating_add(interval);
    if new_ahead <= tolerance {
        Outcome {
            allowed: true,
            remaining: (tolerance - new_ahead) / interval,
            reset_micros: new_ahead,
            retry_after_micros: 0,
        }
    } else {
        Outcome {
            allowed: false,
            remaining: 0,
            reset_micros: ahead,
            retry_after_micros: new_ahead - tolerance,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `n` requests at `now` from `tat`; returns the outcomes and the final TAT.
    fn burst(
        quota: Quota,
        mut tat: Option<u64>,
        now: u64,
        n: usize,
    ) -> (Vec<Outcome>, Option<u64>) {
        let mut outcomes = Vec::new();
        for _ in 0..n {
            let (o, new) = step(quota, tat, now);
            if new.is_some() {
                tat = new;
            }
            outcomes.push(o);
        }
        (outcomes, tat)
    }

    #[test]
    fn a_fresh_key_gets_its_burst_then_is_denied() {
        let q = Quota::per_minute(60, Some(3));
        let (o, _) = burst(q, None, 1_000, 4);
        assert_eq!(
            o.iter()
                .map(|o| (o.allowed, o.remaining))
                .collect::<Vec<_>>(),
            [(true, 2), (true, 1), (true, 0), (false, 0)]
        );
        // One request a second: the next is admitted one interval later.
        assert_eq!(o[3].retry_after_micros, 1_000_000);
        assert_eq!(o[3].reset_micros, 3_000_000);
        assert_eq!(o[2].reset_micros, 3_000_000);
    }

    #[test]
    fn the_budget_refills_at_the_sustained_rate() {
        let q = Quota::per_minute(60, Some(3));
        let (_, tat) = burst(q, None, 0, 3);
        // Half an interval later: still nothing.
        assert!(!step(q, tat, 500_000).0.allowed);
        // One interval later: exactly one more.
        let (o, tat) = burst(q, tat, 1_000_000, 2);
        assert_eq!((o[0].allowed, o[1].allowed), (true, false));
        // After the whole reset time the key is as good as new.
        let (o, _) = burst(q, tat, 1_000_000 + 3_000_000, 4);
        assert_eq!(o.iter().filter(|o| o.allowed).count(), 3);
    }

    #[test]
    fn a_tat_in_the_past_is_a_fresh_key() {
        let q = Quota::per_minute(600, None);
        assert_eq!(step(q, Some(5), 10_000_000), step(q, None, 10_000_000));
    }

    #[test]
    fn the_default_burst_is_the_minute_and_clamps() {
        let q = Quota::per_minute(100, None);
        assert_eq!(q.burst, 100);
        let (o, _) = burst(q, None, 0, 101);
        assert_eq!(o.iter().filter(|o| o.allowed).count(), 100);
        assert_eq!(Quota::per_minute(10, Some(50)).burst, 10);
        assert_eq!(Quota::per_minute(10, Some(0)).burst, 1);
        assert_eq!(Quota::per_minute(0, None).per_window, 1);
        // A rate above a million per minute still has an interval.
        assert_eq!(Quota::per_minute(u64::MAX, None).interval(), 1);
    }

    #[test]
    fn outcome_agrees_with_step() {
        let q = Quota::per_minute(7, Some(4));
        let mut tat = None;
        for now in (0..20_000_000).step_by(900_001) {
            let (o, new) = step(q, tat, now);
            let ahead = tat.map_or(0, |t: u64| t.saturating_sub(now));
            assert_eq!(o, outcome(q, ahead));
            if new.is_some() {
                tat = new;
            }
        }
    }
}
