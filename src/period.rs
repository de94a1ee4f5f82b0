//! Retention periods as people write them: `90d`, `18 months`, `7y`, `2 years 6 months`, `36h`.
//!
//! A period is calendar-aware: `1 month` before 31 March is 28/29 February, not "30 days". All
//! arithmetic happens in UTC on the run's cutoff, so a period means the same thing in every
//! backend (the threshold is computed here and bound as a parameter; no database does date math).

use std::fmt;

use chrono::{DateTime, Datelike, Duration, Months, Utc};

/// A retention period. Calendar units (years, months) are kept apart from fixed units (weeks,
/// days, hours) because their length depends on where they are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Period {
    pub months: u32,
    pub days: u32,
    pub hours: u32,
}

/// The longest period accepted: 200 years. Anything longer is certainly a typo.
const MAX_MONTHS: u32 = 200 * 12;

impl Period {
    /// Parses a period. Accepts one or more `<number><unit>` terms, optionally separated by
    /// spaces, with units `h|hour(s)`, `d|day(s)`, `w|week(s)`, `m|mo|month(s)`, `y|year(s)`.
    /// A period must be positive: `0d` is rejected (it would destroy data the moment it exists).
    pub fn parse(input: &str) -> Result<Period, String> {
        let text = input.trim();
        if text.is_empty() {
            return Err("empty period (expected something like '90d', '18 months' or '7y')".into());
        }
        let mut period = Period::default();
        let mut rest = text;
        let mut terms = 0;
        // Each unit once: `1y1y` or `1 year 1 year` is a slip, not two years.
        let mut seen: Vec<char> = Vec::new();
        while !rest.is_empty() {
            let digits_end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            if digits_end == 0 {
                return Err(format!(
                    "invalid period '{input}': expected a whole number at '{rest}' (periods look like '90d', '18 months', '7y'; no signs or decimals)"
                ));
            }
            let number: u32 =
                rest[..digits_end].parse().map_err(|_| format!("invalid period '{input}': number too large"))?;
            rest = rest[digits_end..].trim_start();
            let unit_end = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
            let unit = rest[..unit_end].to_ascii_lowercase();
            rest = rest[unit_end..].trim_start();
            let rest_trimmed = rest.trim_start_matches([',', ' ']);
            if rest_trimmed.len() != rest.len() {
                rest = rest_trimmed;
            }
            let add = |a: u32, b: u32| a.checked_add(b).ok_or_else(|| format!("invalid period '{input}': too large"));
            let mul = |a: u32, b: u32| a.checked_mul(b).ok_or_else(|| format!("invalid period '{input}': too large"));
            let kind = match unit.as_str() {
                "h" | "hour" | "hours" => 'h',
                "d" | "day" | "days" => 'd',
                "w" | "week" | "weeks" => 'w',
                "m" | "mo" | "month" | "months" => 'm',
                "y" | "year" | "years" => 'y',
                "" => {
                    return Err(format!("invalid period '{input}': missing unit after {number} (use h, d, w, m or y)"))
                }
                other => {
                    return Err(format!(
                        "invalid period '{input}': unknown unit '{other}' (use hours, days, weeks, months or years)"
                    ))
                }
            };
            if seen.contains(&kind) {
                return Err(format!(
                    "invalid period '{input}': the unit '{unit}' is given twice (write each unit once)"
                ));
            }
            seen.push(kind);
            match kind {
                'h' => period.hours = add(period.hours, number)?,
                'd' => period.days = add(period.days, number)?,
                'w' => period.days = add(period.days, mul(number, 7)?)?,
                'm' => period.months = add(period.months, number)?,
                _ => period.months = add(period.months, mul(number, 12)?)?,
            }
            terms += 1;
        }
        if terms == 0 || period == Period::default() {
            return Err(format!("invalid period '{input}': a retention period must be longer than zero"));
        }
        let total_months = period.months as u64 + (period.days as u64 / 28) + (period.hours as u64 / (24 * 28));
        if total_months > MAX_MONTHS as u64 {
            return Err(format!("invalid period '{input}': longer than 200 years"));
        }
        Ok(period)
    }

    /// The threshold of lapse at `cutoff`: every anchor at or before it has lapsed
    /// (`anchor + period <= cutoff`). `anchor + period` adds the months first (a day the month
    /// lacks becomes its last day, the time of day kept: 31 January 18:00 + 1 month is 28
    /// February 18:00), then the days and hours. The fixed part is undone exactly. The months:
    /// `cutoff - months`, except where the cutoff's day is missing from that month (31 March -
    /// 1 month): then all of that month's last day has lapsed (29 February + 1 month is 29 March,
    /// before 31 March), to its last microsecond (the finest any backend keeps). Where the cutoff
    /// is on its month's last day, the later days of a longer month before lapse at some times
    /// of day and not others (at 28 February 12:00, 30 January 08:00 + 1 month has lapsed, 30
    /// January 18:00 has not): adding months does not keep order there, no single threshold
    /// says it, and `cutoff - months` keeps those anchors until a later run (at most three days;
    /// keeping wins).
    pub fn threshold(&self, cutoff: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let c = cutoff
            .checked_sub_signed(Duration::days(self.days as i64))?
            .checked_sub_signed(Duration::hours(self.hours as i64))?;
        if self.months == 0 {
            return Some(c);
        }
        let back = c.checked_sub_months(Months::new(self.months))?;
        if back.day() != c.day() {
            // `c`'s day is not in `back`'s month, so `back` is that month's last day: every
            // instant of that day lands on the same day number of `c`'s month, before `c`; the
            // next month's first instant lands a month after `c`'s.
            let next_day = back.date_naive().succ_opt()?.and_hms_opt(0, 0, 0)?.and_utc();
            return next_day.checked_sub_signed(Duration::microseconds(1));
        }
        Some(back)
    }

    /// An approximate length in days, used only to compare periods for precedence ("the longest
    /// retention wins") and never for lapse decisions.
    pub fn approx_days(&self) -> u64 {
        self.months as u64 * 31 + self.days as u64 + (self.hours as u64).div_ceil(24)
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let (y, m) = (self.months / 12, self.months % 12);
        if y > 0 {
            parts.push(format!("{y}y"));
        }
        if m > 0 {
            parts.push(format!("{m}mo"));
        }
        if self.days > 0 {
            parts.push(format!("{}d", self.days));
        }
        if self.hours > 0 {
            parts.push(format!("{}h", self.hours));
        }
        write!(f, "{}", parts.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn parses_the_ways_people_write_periods() {
        assert_eq!(Period::parse("90d").unwrap(), Period { days: 90, ..Default::default() });
        assert_eq!(Period::parse("18 months").unwrap(), Period { months: 18, ..Default::default() });
        assert_eq!(Period::parse("7y").unwrap(), Period { months: 84, ..Default::default() });
        assert_eq!(Period::parse("2 years, 6 months").unwrap(), Period { months: 30, ..Default::default() });
        assert_eq!(Period::parse("2w").unwrap(), Period { days: 14, ..Default::default() });
        assert_eq!(Period::parse("36h").unwrap(), Period { hours: 36, ..Default::default() });
    }

    #[test]
    fn rejects_bad_periods_with_the_input_quoted() {
        for bad in ["", "0d", "-5d", "1.5y", "ten days", "5", "5 fortnights", "300y", "99999999999d"] {
            let err = Period::parse(bad).unwrap_err();
            assert!(err.contains("period"), "{bad}: {err}");
        }
        assert!(Period::parse("5 fortnights").unwrap_err().contains("'fortnights'"));
        // A unit given twice is a slip, not a sum (before, `1y1y` was two years).
        for twice in ["1y1y", "1 year 1 year", "1y 6m 1 years", "3d 2 days"] {
            assert!(Period::parse(twice).unwrap_err().contains("given twice"), "{twice}");
        }
    }

    #[test]
    fn threshold_is_calendar_aware() {
        let cutoff = Utc.with_ymd_and_hms(2024, 3, 31, 12, 0, 0).unwrap();
        let t = Period::parse("1 month").unwrap().threshold(cutoff).unwrap();
        // All of 29 February + 1 month is 29 March, before 31 March.
        assert_eq!(t, Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap() - Duration::microseconds(1));
        let t = Period::parse("1y 1d").unwrap().threshold(cutoff).unwrap();
        assert_eq!(t, Utc.with_ymd_and_hms(2023, 3, 30, 12, 0, 0).unwrap());
    }

    /// `threshold` is safe and tight: at every cutoff of three years (four times a day), for
    /// periods with and without months, every anchor at or before it has lapsed (sampled hourly
    /// over the five days before it, where adding months does not keep order), and the next
    /// microsecond has not, except where the cutoff is on its month's last day (see
    /// `threshold`), where some later anchors have lapsed but not all, within three days.
    #[test]
    fn threshold_is_safe_and_tight() {
        let plus = |t: DateTime<Utc>, p: &Period| {
            t.checked_add_months(Months::new(p.months)).unwrap()
                + Duration::days(p.days as i64)
                + Duration::hours(p.hours as i64)
        };
        let periods = [
            "1 month",
            "2 months",
            "3 months",
            "6 months",
            "1y",
            "13 months",
            "18 months",
            "1 month 1d",
            "1y 36h",
            "30d",
            "7h",
        ];
        let start = Utc.with_ymd_and_hms(2023, 1, 1, 0, 0, 0).unwrap();
        let mut tight = 0;
        let mut loose = 0;
        for text in periods {
            let p = Period::parse(text).unwrap();
            for step in 0..(3 * 366 * 4) {
                let cutoff = start + Duration::hours(6 * step) + Duration::minutes(17);
                let t = p.threshold(cutoff).unwrap();
                for h in 0..(5 * 24) {
                    let a = t - Duration::hours(h) - Duration::minutes(h % 60);
                    assert!(
                        plus(a, &p) <= cutoff,
                        "{text} at {cutoff}: {a}, at or before threshold {t}, has not lapsed"
                    );
                }
                let next = t + Duration::microseconds(1);
                if plus(next, &p) > cutoff {
                    tight += 1;
                } else {
                    // Only at a month's last day, and never more than three days off.
                    let c = cutoff - Duration::days(p.days as i64) - Duration::hours(p.hours as i64);
                    assert_eq!(
                        (c + Duration::days(1)).day(),
                        1,
                        "{text} at {cutoff}: {next} has lapsed too (threshold {t})"
                    );
                    assert!(plus(t + Duration::days(3) + Duration::hours(1), &p) > cutoff, "{text} at {cutoff}");
                    loose += 1;
                }
            }
        }
        assert!(tight > 10 * loose, "{tight} tight, {loose} loose");
    }

    #[test]
    fn month_ends_lapse_on_time() {
        let month = Period::parse("1 month").unwrap();
        // At the cutoff's month's last day: `cutoff - 1 month` (30 January 18:00 + 1 month is
        // 28 February 18:00, after the cutoff).
        let cutoff = Utc.with_ymd_and_hms(2026, 2, 28, 12, 0, 0).unwrap();
        assert_eq!(month.threshold(cutoff).unwrap(), Utc.with_ymd_and_hms(2026, 1, 28, 12, 0, 0).unwrap());
        // All of 28 February + 1 month is 28 March, before 31 March.
        let cutoff = Utc.with_ymd_and_hms(2026, 3, 31, 6, 0, 0).unwrap();
        let end_of_feb = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap() - Duration::microseconds(1);
        assert_eq!(month.threshold(cutoff).unwrap(), end_of_feb);
        // Mid-month: plain subtraction.
        let cutoff = Utc.with_ymd_and_hms(2026, 3, 15, 6, 0, 0).unwrap();
        assert_eq!(month.threshold(cutoff).unwrap(), Utc.with_ymd_and_hms(2026, 2, 15, 6, 0, 0).unwrap());
    }
}
