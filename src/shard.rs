//! Scale-out: `--shard index/count` splits one logical run across `count` workers.
//!
//! Each policy belongs to exactly one shard, chosen by a stable hash of its name (FNV-1a, 64 bit:
//! the same on every machine and Rust version, unlike `std`'s randomized hasher). A policy with
//! `shard_by_key: true` is instead processed by every shard, each taking only its part of the
//! keys ([`Filter::KeyShard`]: `key mod count = index` for an integer key, a stable hash of the
//! object key for object stores). The parts are disjoint and cover everything, so `count` shards
//! together destroy what one unsharded worker destroys.
//!
//! Indices are 0-based, like a Kubernetes Indexed Job's `JOB_COMPLETION_INDEX`.

use std::fmt;
use std::str::FromStr;

use crate::connector::{ColumnKind, Filter};
use crate::policy::Policy;
use crate::validate::Prepared;

/// This worker's shard: `index` in `0..count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("shard '{s}' is not INDEX/COUNT with 0 <= INDEX < COUNT (e.g. 0/3)");
        let (i, n) = s.trim().split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// FNV-1a, 64 bit: stable across processes, machines and releases.
pub fn key_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Shard {
    /// The shard a whole (not key-sharded) policy belongs to.
    pub fn owner(name: &str, count: u32) -> u32 {
        (key_hash(name) % u64::from(count)) as u32
    }

    /// The directory (and report-bucket prefix) of this shard's reports: its own report chain.
    pub fn dir_name(&self) -> String {
        format!("shard-{}-of-{}", self.index, self.count)
    }

    /// The shard whose [`Shard::dir_name`] `name` is, exactly (not `shard-01-of-3`, nor
    /// `shard-5-of-3`).
    pub fn from_dir_name(name: &str) -> Option<Shard> {
        let (i, n) = name.strip_prefix("shard-")?.split_once("-of-")?;
        let shard = Shard { index: i.parse().ok()?, count: n.parse().ok()? };
        (shard.index < shard.count && shard.dir_name() == name).then_some(shard)
    }

    /// Does this shard process `p` (wholly, or its part of the keys)?
    pub fn takes(&self, p: &Policy) -> bool {
        p.shard_by_key || Shard::owner(&p.name, self.count) == self.index
    }

    /// The filter restricting a key-sharded policy to this shard's part; `None` when the policy
    /// is processed whole (not key-sharded, or only one shard).
    pub fn part(&self, p: &Policy) -> Option<Filter> {
        if !p.shard_by_key || self.count == 1 {
            return None;
        }
        Some(Filter::KeyShard {
            column: p.key.first().cloned().unwrap_or_default(),
            index: self.index,
            count: self.count,
        })
    }
}

/// Why a policy cannot be split by key, if it cannot: a table needs a single integer key column
/// (`MOD` is portable and index-friendly on integers; hashing text is not portable across
/// dialects). Object stores hash the object key and always qualify.
pub fn key_shard_problem(p: &Policy, prep: &Prepared) -> Option<String> {
    if !p.shard_by_key || p.objects.is_some() {
        return None;
    }
    match p.key.as_slice() {
        [k] if prep.table.kind(k) == ColumnKind::Int => None,
        [k] => Some(format!(
            "shard_by_key needs an integer key column; '{k}' of table '{}' is {}",
            prep.table.name,
            prep.table.column(k).map_or("unknown", |c| c.sql_type.as_str())
        )),
        _ => Some(format!("shard_by_key needs a single key column; '{}' has {}", prep.table.name, p.key.len())),
    }
}

/// `--cutoff`: an instant (RFC 3339 or a date), or `today` (00:00 UTC of `now`'s day) or
/// `this-hour` (the start of `now`'s hour). Shards of one run must share the cutoff; pods of an
/// Indexed Job start at different moments, so they pass `--cutoff today` (or `this-hour`) and agree
/// unless they start on either side of midnight (or the hour), which `report combine` then refuses.
pub fn parse_cutoff(s: &str, now: chrono::DateTime<chrono::Utc>) -> Result<chrono::DateTime<chrono::Utc>, String> {
    use chrono::{DurationRound, TimeDelta};
    let floor = |d: TimeDelta| now.duration_trunc(d).map_err(|e| e.to_string());
    match s.trim() {
        "today" => floor(TimeDelta::days(1)),
        "this-hour" => floor(TimeDelta::hours(1)),
        other => crate::holds::parse_plausible_time(other).map_err(|e| format!("{e}, or `today` / `this-hour`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoff_keywords_align_to_the_day_or_hour() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-29T06:31:17.250Z").unwrap().to_utc();
        assert_eq!(parse_cutoff("today", now).unwrap().to_rfc3339(), "2026-11-29T00:00:00+00:00");
        assert_eq!(parse_cutoff("this-hour", now).unwrap().to_rfc3339(), "2026-11-29T06:00:00+00:00");
        assert_eq!(parse_cutoff("2026-01-01", now).unwrap().to_rfc3339(), "2026-01-01T00:00:00+00:00");
        assert!(parse_cutoff("yesterday", now).unwrap_err().contains("today"));
    }

    #[test]
    fn parses_index_over_count() {
        assert_eq!("0/3".parse::<Shard>(), Ok(Shard { index: 0, count: 3 }));
        assert_eq!(" 2 / 3 ".parse::<Shard>(), Ok(Shard { index: 2, count: 3 }));
        for bad in ["3/3", "1/0", "-1/3", "a/3", "3", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn hash_is_stable() {
        // Published FNV-1a 64 test vectors: the assignment must never change between releases.
        assert_eq!(key_hash(""), 0xcbf29ce484222325);
        assert_eq!(key_hash("a"), 0xaf63dc4c8601ec8c);
        assert_eq!(key_hash("foobar"), 0x85944171f73967e8);
    }
}
