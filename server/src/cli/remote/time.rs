//! Parsing of the time and position arguments (`--from`, `--to`, `--since`,
//! `sub seek --to`) into the SDK's values. They are clap value parsers, so a
//! malformed value is a usage error (exit 2).

use std::time::{Duration, SystemTime};

use eventbus::{Position, SeekTo};
use prost_types::Timestamp;

const TIME_FORMS: &str =
    "expected an RFC 3339 time (2026-11-22T09:00:00Z, 2026-11-22T10:00:00+01:00) \
     or a relative time in the past (90s, 15m, 1h, 2d, `1h 30m ago`)";

/// A point in time: RFC 3339 (any offset), or a duration meaning that long
/// ago (`1h`, `1h ago`, `2d 3h`).
pub fn parse_time(s: &str) -> Result<Timestamp, String> {
    let s = s.trim();
    if let Ok(ts) = s.parse::<Timestamp>() {
        return Ok(ts);
    }
    let ago = s.strip_suffix("ago").unwrap_or(s).trim();
    let d = humantime::parse_duration(ago).map_err(|_| format!("`{s}`: {TIME_FORMS}"))?;
    let t = SystemTime::now()
        .checked_sub(d)
        .ok_or_else(|| format!("`{s}` is too long ago"))?;
    Ok(Timestamp::from(t))
}

/// [`parse_time`] as the SDK's time type.
fn parse_system_time(s: &str) -> Result<SystemTime, String> {
    let ts = parse_time(s)?;
    SystemTime::try_from(ts).map_err(|e| format!("`{s}`: {e}"))
}

/// A duration argument such as `30s` or `7d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d: Duration = humantime::parse_duration(s)
        .map_err(|e| format!("`{s}`: {e}; expected e.g. 500ms, 30s, 5m, 7d"))?;
    // The wire carries seconds as i64.
    prost_types::Duration::try_from(d).map_err(|e| e.to_string())?;
    Ok(d)
}

/// A replay bound: a bare number is an offset (applied to every selected
/// partition); anything else is a time (see [`parse_time`]).
pub fn parse_position(s: &str) -> Result<Position, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map(Position::Offset)
            .map_err(|e| format!("`{s}`: {e}"));
    }
    parse_system_time(s)
        .map(Position::Time)
        .map_err(|e| format!("{e}, or an offset number"))
}

/// Where `sub seek --to` moves a subscription's cursor: `earliest`,
/// `latest`, `<partition>:<offset>[,...]`, or a time.
pub fn parse_seek_target(s: &str) -> Result<SeekTo, String> {
    match s {
        "earliest" => return Ok(SeekTo::Earliest),
        "latest" => return Ok(SeekTo::Latest),
        _ => {}
    }
    let is_offsets = s.split(',').all(|pair| {
        pair.split_once(':').is_some_and(|(p, o)| {
            !p.is_empty()
                && !o.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && o.bytes().all(|b| b.is_ascii_digit())
        })
    });
    if is_offsets {
        let mut offsets = Vec::new();
        for pair in s.split(',') {
            let (p, o) = pair.split_once(':').expect("checked above");
            let p = p.parse().map_err(|e| format!("partition `{p}`: {e}"))?;
            let o = o.parse().map_err(|e| format!("offset `{o}`: {e}"))?;
            offsets.push((p, o));
        }
        return Ok(SeekTo::Offsets(offsets));
    }
    parse_system_time(s)
        .map(SeekTo::Time)
        .map_err(|e| format!("{e}, or earliest, latest, or partition:offset[,partition:offset...]"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_with_any_offset() {
        let utc = parse_time("2026-11-22T09:00:00Z").unwrap();
        assert_eq!(utc.seconds, 1_795_338_000);
        assert_eq!(parse_time("2026-11-22T10:00:00+01:00").unwrap(), utc);
    }

    #[test]
    fn relative_times_are_in_the_past() {
        let now = SystemTime::now();
        for s in ["1h", "1h ago", "60m"] {
            let t = SystemTime::try_from(parse_time(s).unwrap()).unwrap();
            let ago = now.duration_since(t).unwrap();
            assert!(ago >= Duration::from_secs(3599) && ago < Duration::from_secs(3700));
        }
        assert!(parse_time("yesterday-ish").is_err());
    }

    #[test]
    fn numbers_are_offsets_everything_else_times() {
        assert_eq!(parse_position("0").unwrap(), Position::Offset(0));
        assert_eq!(parse_position("42").unwrap(), Position::Offset(42));
        assert!(matches!(parse_position("1h").unwrap(), Position::Time(_)));
        assert!(parse_position("-3").is_err());
    }

    #[test]
    fn seek_targets() {
        assert_eq!(parse_seek_target("earliest").unwrap(), SeekTo::Earliest);
        assert_eq!(parse_seek_target("latest").unwrap(), SeekTo::Latest);
        assert_eq!(
            parse_seek_target("0:10,3:7").unwrap(),
            SeekTo::Offsets(vec![(0, 10), (3, 7)])
        );
        assert!(matches!(
            parse_seek_target("2026-11-22T09:00:00Z").unwrap(),
            SeekTo::Time(_)
        ));
        assert!(parse_seek_target("0:").is_err());
        assert!(parse_seek_target("first").is_err());
    }
}
