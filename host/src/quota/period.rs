//! Quota periods: calendar months in UTC, decided by an injected [`Clock`].

use crate::store::UnixMillis;

pub use crate::clock::{Clock, ManualClock, SystemClock};

const DAY_MS: i64 = 86_400_000;

/// One calendar month in UTC: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// Its first millisecond (00:00:00.000 UTC on the 1st).
    pub start: UnixMillis,
    /// The first millisecond of the next month.
    pub end: UnixMillis,
}

impl Period {
    /// The month `at` falls in.
    pub fn month_of(at: UnixMillis) -> Period {
        let days = at.as_i64().div_euclid(DAY_MS);
        let (year, month, _) = civil_from_days(days);
        let (next_year, next_month) = if month == 12 {
            (year + 1, 1)
        } else {
            (year, month + 1)
        };
        Period {
            start: UnixMillis(days_from_civil(year, month, 1) * DAY_MS),
            end: UnixMillis(days_from_civil(next_year, next_month, 1) * DAY_MS),
        }
    }

    /// Whole seconds from `now` until the period ends, at least 1 (the
    /// `Retry-After` of a rejection).
    pub fn secs_until_end(&self, now: UnixMillis) -> u64 {
        let ms = self.end.as_i64().saturating_sub(now.as_i64()).max(1);
        u64::try_from((ms + 999) / 1000).unwrap_or(1)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_in_utc() {
        // 2026-12-02T05:00:00Z
        let p = Period::month_of(UnixMillis(1_796_187_600_000));
        assert_eq!(p.start, UnixMillis(1_796_083_200_000)); // 2026-12-01
        assert_eq!(p.end, UnixMillis(1_798_761_600_000)); // 2027-01-01
        // The last millisecond of a month belongs to it; the next does not.
        assert_eq!(Period::month_of(UnixMillis(p.end.as_i64() - 1)), p);
        assert_eq!(Period::month_of(p.end).start, p.end);
        // February of a leap year.
        let feb = Period::month_of(UnixMillis(1_709_251_199_999)); // 2024-02-29T23:59:59.999Z
        assert_eq!(feb.end.as_i64() - feb.start.as_i64(), 29 * DAY_MS);
        assert_eq!(Period::month_of(UnixMillis(0)).start, UnixMillis(0));
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        let p = Period::month_of(UnixMillis(1_796_187_600_000));
        assert_eq!(p.secs_until_end(UnixMillis(p.end.as_i64() - 1)), 1);
        assert_eq!(p.secs_until_end(UnixMillis(p.end.as_i64() - 1_001)), 2);
        assert_eq!(p.secs_until_end(p.end), 1);
    }
}
