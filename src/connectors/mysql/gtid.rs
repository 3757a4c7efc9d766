//! GTID positions, in both forms a CDC reader meets:
//!
//! * MariaDB: one `domain-server-seq` per replication domain (`0-1-42,1-7-3`), the last
//!   transaction seen in each domain. Resuming sends it as `@slave_connect_state`.
//! * MySQL 5.7/8: a set of executed transactions per source UUID (optionally tagged, 8.4),
//!   `3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5:7,…`. Resuming sends it in
//!   `COM_BINLOG_DUMP_GTID`, and the server streams every transaction not in the set.
//!
//! A checkpoint keeps the state as the server prints it, so a position can be read (and set) by
//! a person, and survives a failover to another server of the same replication topology, where
//! binlog file names and offsets differ.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gtid {
    /// domain → (server id, sequence number) of the last transaction seen in that domain.
    MariaDb(BTreeMap<u32, (u32, u64)>),
    /// "uuid" or "uuid:tag" (lower-case) → sorted, disjoint, inclusive intervals.
    Mysql(BTreeMap<String, Vec<(u64, u64)>>),
}

impl Gtid {
    pub fn is_empty(&self) -> bool {
        match self {
            Gtid::MariaDb(m) => m.is_empty(),
            Gtid::Mysql(m) => m.is_empty(),
        }
    }

    /// Parse a MariaDB GTID position (`@@gtid_binlog_pos`, `BINLOG_GTID_POS()`).
    pub fn parse_mariadb(text: &str) -> Result<Self> {
        let mut m = BTreeMap::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || Error::data(format!("bad MariaDB GTID {part:?} (expected domain-server-seq)"));
            let mut it = part.split('-');
            let (Some(d), Some(s), Some(n), None) = (it.next(), it.next(), it.next(), it.next()) else {
                return Err(bad());
            };
            let d: u32 = d.parse().map_err(|_| bad())?;
            let s: u32 = s.parse().map_err(|_| bad())?;
            let n: u64 = n.parse().map_err(|_| bad())?;
            m.insert(d, (s, n));
        }
        Ok(Gtid::MariaDb(m))
    }

    /// Parse a MySQL GTID set (`@@gtid_executed`, `SHOW MASTER STATUS`; newlines allowed).
    pub fn parse_mysql(text: &str) -> Result<Self> {
        let mut m: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || Error::data(format!("bad MySQL GTID set element {part:?} (expected uuid:1-5:7)"));
            let mut fields = part.split(':');
            let uuid = fields.next().ok_or_else(bad)?.to_ascii_lowercase();
            if uuid.len() != 36 {
                return Err(bad());
            }
            let mut key = uuid;
            for f in fields {
                if f.starts_with(|c: char| c.is_ascii_digit()) {
                    let (a, b) = match f.split_once('-') {
                        Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
                        None => {
                            let n: u64 = f.parse().map_err(|_| bad())?;
                            (n, n)
                        }
                    };
                    if a == 0 || b < a {
                        return Err(bad());
                    }
                    insert_interval(m.entry(key.clone()).or_default(), a, b);
                } else {
                    // A tag (MySQL 8.4): the intervals after it belong to uuid:tag.
                    key = format!("{}:{}", &key[..36], f.to_ascii_lowercase());
                }
            }
        }
        Ok(Gtid::Mysql(m))
    }

    /// Record a MariaDB transaction (from its GTID event).
    pub fn add_mariadb(&mut self, domain: u32, server: u32, seq: u64) {
        if let Gtid::MariaDb(m) = self {
            m.insert(domain, (server, seq));
        }
    }

    /// Record a MySQL transaction (from its GTID event). `source` is "uuid" or "uuid:tag".
    pub fn add_mysql(&mut self, source: &str, gno: u64) {
        if let Gtid::Mysql(m) = self {
            insert_interval(m.entry(source.to_ascii_lowercase()).or_default(), gno, gno);
        }
    }

    /// The MySQL set as `Sid`s for `COM_BINLOG_DUMP_GTID`.
    pub fn mysql_sids(&self) -> Result<Vec<mysql_async::Sid<'static>>> {
        let Gtid::Mysql(m) = self else { return Ok(Vec::new()) };
        m.iter()
            .map(|(source, intervals)| {
                let text = format!("{source}:{}", render_intervals(intervals));
                text.parse::<mysql_async::Sid<'static>>()
                    .map_err(|e| Error::data(format!("GTID set element {text}: {e}")))
            })
            .collect()
    }
}

fn insert_interval(v: &mut Vec<(u64, u64)>, a: u64, b: u64) {
    v.push((a, b));
    v.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for &(s, e) in v.iter() {
        match merged.last_mut() {
            Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    *v = merged;
}

fn render_intervals(v: &[(u64, u64)]) -> String {
    v.iter().map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect::<Vec<_>>().join(":")
}

impl fmt::Display for Gtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gtid::MariaDb(m) => {
                let parts: Vec<String> = m.iter().map(|(d, (s, n))| format!("{d}-{s}-{n}")).collect();
                f.write_str(&parts.join(","))
            }
            Gtid::Mysql(m) => {
                let parts: Vec<String> = m.iter().map(|(k, v)| format!("{}:{}", k, render_intervals(v))).collect();
                f.write_str(&parts.join(","))
            }
        }
    }
}

/// A MariaDB GTID_EVENT (type 162) body: seq_no u64, domain_id u32, flags u8, …
/// Returns (domain, seq, standalone) — standalone events (DDL) have no COMMIT/XID after them.
pub fn mariadb_gtid_event(data: &[u8]) -> Option<(u32, u64, bool)> {
    let seq = u64::from_le_bytes(data.get(0..8)?.try_into().ok()?);
    let domain = u32::from_le_bytes(data.get(8..12)?.try_into().ok()?);
    let flags = *data.get(12)?;
    Some((domain, seq, flags & 1 != 0))
}

/// The MariaDB GTID_EVENT type code.
pub const MARIADB_GTID_EVENT: u8 = 162;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mariadb_positions_round_trip_and_advance_per_domain() {
        let mut g = Gtid::parse_mariadb("0-1-5, 2-7-30").unwrap();
        g.add_mariadb(0, 2, 6);
        g.add_mariadb(1, 1, 1);
        assert_eq!(g.to_string(), "0-2-6,1-1-1,2-7-30");
        assert!(Gtid::parse_mariadb("").unwrap().is_empty());
        assert!(Gtid::parse_mariadb("0-1").is_err());
        assert!(Gtid::parse_mariadb("a-1-2").is_err());
    }

    #[test]
    fn mysql_sets_merge_intervals_and_keep_tags() {
        let u = "3E11FA47-71CA-11E1-9E33-C80AA9429562";
        let mut g = Gtid::parse_mysql(&format!("{u}:1-5:7,\n{}:1-3", u.replace('3', "4"))).unwrap();
        g.add_mysql(&u.to_lowercase(), 6);
        g.add_mysql(&u.to_lowercase(), 9);
        assert_eq!(
            g.to_string(),
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-7:9,4e11fa47-71ca-11e1-9e44-c80aa9429562:1-3"
        );
        let tagged = Gtid::parse_mysql(&format!("{u}:1-2:blue:1-4")).unwrap();
        assert_eq!(
            tagged.to_string(),
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-2,3e11fa47-71ca-11e1-9e33-c80aa9429562:blue:1-4"
        );
        assert!(Gtid::parse_mysql("nope:1-2").is_err());
        assert!(Gtid::parse_mysql(&format!("{u}:0-2")).is_err());
    }

    #[test]
    fn mysql_sets_become_dump_sids_the_server_reads() {
        let u = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let g = Gtid::parse_mysql(&format!("{u}:1-5:7")).unwrap();
        let sids = g.mysql_sids().unwrap();
        assert_eq!(sids.len(), 1);
        assert_eq!(sids[0].to_string(), format!("{u}:1-5:7"));
        // Intervals on the wire are half-open: [1, 6) and [7, 8).
        let iv: Vec<(u64, u64)> = sids[0].intervals().iter().map(|i| (i.start(), i.end())).collect();
        assert_eq!(iv, vec![(1, 6), (7, 8)]);
    }

    #[test]
    fn mariadb_gtid_event_bodies_decode() {
        let mut body = 42u64.to_le_bytes().to_vec();
        body.extend(3u32.to_le_bytes());
        body.push(1);
        assert_eq!(mariadb_gtid_event(&body), Some((3, 42, true)));
        body[12] = 0;
        assert_eq!(mariadb_gtid_event(&body), Some((3, 42, false)));
        assert_eq!(mariadb_gtid_event(&body[..10]), None);
    }
}
