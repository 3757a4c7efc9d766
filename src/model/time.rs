//! Date and timestamp texts read into values: the common forms by hand, the rest by chrono.

use super::{FieldType, Value};
use chrono::{NaiveDate, NaiveDateTime};

/// [`Value::parse_time`] of any form, by chrono's parsers.
pub(super) fn parse_time_general(s: &str, ty: FieldType) -> Option<Value> {
    let zoned = super::zoned_to_utc(s);
    let naive = || {
        let t = s.replacen('T', " ", 1);
        NaiveDateTime::parse_from_str(&t, "%Y-%m-%d %H:%M:%S%.f")
            .ok()
            .or_else(|| NaiveDate::parse_from_str(&t, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)))
    };
    match ty {
        FieldType::Date => NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().map(Value::Date),
        FieldType::Timestamp => zoned.map(|z| z.naive_utc()).or_else(naive).map(Value::Timestamp),
        FieldType::TimestampTz => zoned.or_else(|| naive().map(|n| n.and_utc())).map(Value::TimestampTz),
        _ => None,
    }
}

/// Digits `b[from..to]` as a number; `None` unless they are all ASCII digits.
fn digits(b: &[u8], from: usize, to: usize) -> Option<u32> {
    b.get(from..to)?.iter().try_fold(0u32, |n, c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
}

/// Exactly `YYYY-MM-DD`, a valid day.
pub(super) fn fast_date(b: &[u8]) -> Option<NaiveDate> {
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    NaiveDate::from_ymd_opt(digits(b, 0, 4)? as i32, digits(b, 5, 7)?, digits(b, 8, 10)?)
}

/// Exactly `YYYY-MM-DD HH:MM:SS` (or a `T` between), with an optional fraction of 1 to 9
/// digits, a valid day and time (a leap second is left to the general parse).
pub(super) fn fast_timestamp(b: &[u8]) -> Option<NaiveDateTime> {
    if b.len() < 19 || !matches!(b[10], b' ' | b'T') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let day = fast_date(b.get(..10)?)?;
    let nanos = match b.len() {
        19 => 0,
        20 => return None,
        n if n <= 29 && b[19] == b'.' => digits(b, 20, n)? * 10u32.pow((29 - n) as u32),
        _ => return None,
    };
    let second = digits(b, 17, 19)?;
    if second >= 60 {
        return None;
    }
    day.and_hms_nano_opt(digits(b, 11, 13)?, digits(b, 14, 16)?, second, nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_time_forms_read_as_chrono_reads_them() {
        let texts = [
            "2024-02-29",
            "2023-02-29",
            "2024-13-01",
            "0000-01-01",
            "9999-12-31",
            "2024-1-01",
            "2024-01-01x",
            "2024-02-29 23:59:59",
            "2024-02-29T23:59:59",
            "2024-02-29 24:00:00",
            "2024-02-29 23:60:00",
            "2024-02-29 23:59:60",
            "2024-02-29 23:59:59.",
            "2024-02-29 23:59:59.5",
            "2024-02-29 23:59:59.123456",
            "2024-02-29 23:59:59.123456789",
            "2024-02-29 23:59:59.1234567891",
            "2024-02-29 23:59:59,5",
            "2024-02-29 23:59:5a",
            "2024-02-29 1:02:03",
            "2024-02-29  23:59:59",
            "+2024-02-29 23:59:59",
        ];
        for t in texts {
            for ty in [FieldType::Date, FieldType::Timestamp, FieldType::TimestampTz] {
                assert_eq!(Value::parse_time(t, ty), parse_time_general(t, ty), "{t:?} as {ty:?}");
            }
        }
        assert!(fast_timestamp(b"2024-02-29 23:59:59.5").is_some() && fast_date(b"2024-02-29").is_some());
    }
}
