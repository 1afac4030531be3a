//! Everything the operator commands print: tables and key/value blocks for
//! people, JSON for scripts, `error:` lines, progress bars.
//!
//! JSON conventions (documented in `eventbus --help`): times are RFC 3339
//! strings in UTC, durations are numbers of seconds in `*_seconds` fields,
//! unset values are `null`, and payloads are text when they are valid UTF-8,
//! else base64, with `payload_encoding` saying which.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use eventbus::v1::Event;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};
use tonic::Code;

/// The output mode chosen with `--json`.
#[derive(Clone, Copy)]
pub struct Output {
    pub json: bool,
}

impl Output {
    pub fn new(json: bool) -> Output {
        Output { json }
    }

    /// One JSON document (pretty-printed) for a non-streaming command.
    pub fn doc(&self, value: &Value) -> anyhow::Result<()> {
        let mut s = serde_json::to_string_pretty(value)?;
        s.push('\n');
        write_stdout(&s)
    }

    /// One line of a JSON-lines stream.
    pub fn json_line(&self, value: &Value) -> anyhow::Result<()> {
        let mut s = serde_json::to_string(value)?;
        s.push('\n');
        write_stdout(&s)
    }

    /// Human text, printed as is (a newline is added).
    pub fn text(&self, s: &str) -> anyhow::Result<()> {
        write_stdout(&format!("{s}\n"))
    }

    /// Lines (each ending in a newline) printed while `bar` may be on
    /// screen: the bar is lifted only when both share the terminal, once per
    /// chunk rather than per line.
    pub fn write_above(&self, bar: &ProgressBar, lines: &str) -> anyhow::Result<()> {
        if bar.is_hidden() || !std::io::stdout().is_terminal() {
            write_stdout(lines)
        } else {
            bar.suspend(|| write_stdout(lines))
        }
    }

    /// Whether progress bars are drawn: only on a terminal and without
    /// `--json`, so scripts and tests see clean output.
    pub fn shows_progress(&self) -> bool {
        !self.json && std::io::stderr().is_terminal()
    }

    /// A progress bar on stderr, or a hidden one when [`Output::shows_progress`]
    /// says no.
    pub fn progress(&self, len: u64, unit: ProgressUnit) -> ProgressBar {
        if !self.shows_progress() {
            return ProgressBar::hidden();
        }
        let template = match unit {
            ProgressUnit::Items => "{msg} [{wide_bar}] {human_pos}/{human_len} ({rate}, ETA {eta})",
            ProgressUnit::Bytes => {
                "{msg} [{wide_bar}] {bytes}/{total_bytes} ({bytes_per_sec}, ETA {eta})"
            }
        };
        // indicatif's {per_sec} prints four decimals; whole items per second
        // read better.
        let style = ProgressStyle::with_template(template)
            .expect("valid progress template")
            .with_key(
                "rate",
                |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0}/s", state.per_sec());
                },
            )
            .progress_chars("=> ");
        ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr()).with_style(style)
    }
}

/// What a progress bar counts.
#[derive(Clone, Copy)]
pub enum ProgressUnit {
    Items,
    Bytes,
}

/// Writes to stdout and flushes, so streamed lines appear at once and a
/// closed pipe is noticed as an error (not a panic as with `println!`).
fn write_stdout(s: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// True when the error is stdout's reader having gone away (`| head`).
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Prints `error: <context>: <GRPC_CODE>: <message>[: <cause>...]` on
/// stderr (causes are, e.g., the connection error behind UNAVAILABLE), plus a
/// hint when the server could not be reached.
pub fn print_error(err: &anyhow::Error, server: &str) {
    let mut parts: Vec<String> = Vec::new();
    let mut status_code = None;
    for cause in err.chain() {
        let part = match cause.downcast_ref::<tonic::Status>() {
            Some(status) => {
                status_code = Some(status.code());
                // `CODE: message`, as the SDK formats every status.
                format!(
                    "{}: {}",
                    eventbus::code_name(status.code()),
                    status.message()
                )
            }
            None => cause.to_string(),
        };
        // tonic repeats a transport error's text in the status message.
        if !part.is_empty() && !parts.iter().any(|p| p.contains(&part)) {
            parts.push(part);
        }
    }
    eprintln!("error: {}", parts.join(": "));
    if status_code == Some(Code::Unavailable) {
        eprintln!("hint: is the server running at {server}? Set --server or EVENTBUS_SERVER.");
    }
}

/// A table with left-aligned columns separated by two spaces, like `kubectl
/// get`. Cells are flattened to one line.
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Table {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.header.len());
        self.rows
            .push(cells.into_iter().map(|c| one_line(&c)).collect());
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let header: Vec<String> = self.header.iter().map(|h| h.to_string()).collect();
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let pad = widths[i] - cell.chars().count();
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out.pop();
        out
    }
}

/// `label:  value` lines with the values aligned, for `describe` / `show`.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    pairs
        .iter()
        .map(|(k, v)| format!("{:<width$}  {v}", format!("{k}:")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Control characters (newlines, tabs) would break table alignment.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// At most `max` characters, with `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn to_system_time(ts: &prost_types::Timestamp) -> Option<SystemTime> {
    SystemTime::try_from(*ts).ok()
}

/// A timestamp for JSON: RFC 3339 in UTC with the precision it has, or null.
pub fn ts_json(ts: &Option<prost_types::Timestamp>) -> Value {
    match ts {
        Some(ts) => Value::String(ts.to_string()),
        None => Value::Null,
    }
}

/// A timestamp for people: RFC 3339 to the second, or `-`.
pub fn ts_text(ts: &Option<prost_types::Timestamp>) -> String {
    ts.as_ref()
        .and_then(to_system_time)
        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
        .unwrap_or_else(|| "-".to_string())
}

/// A duration for JSON: seconds as a number, or null.
pub fn secs_json(d: &Option<prost_types::Duration>) -> Value {
    match d {
        Some(d) => json!(d.seconds as f64 + f64::from(d.nanos) / 1e9),
        None => Value::Null,
    }
}

/// A duration for people (`1m 30s`, `250ms`), or `-`.
pub fn dur_text(d: &Option<prost_types::Duration>) -> String {
    match d.as_ref().and_then(|d| Duration::try_from(*d).ok()) {
        Some(d) if d >= Duration::from_secs(1) => {
            humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
        }
        Some(d) => {
            humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
        }
        None => "-".to_string(),
    }
}

/// A payload as (text, encoding): UTF-8 text when valid, base64 otherwise.
pub fn payload(bytes: &[u8]) -> (String, &'static str) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), "utf8"),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(bytes),
            "base64",
        ),
    }
}

/// An event's attributes in key order (the wire map has none).
fn sorted_attributes(e: &Event) -> std::collections::BTreeMap<&str, &str> {
    e.attributes
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// The JSON shape of an event, shared by subscribe, replay and dead letters.
pub fn event_json(e: &Event) -> Value {
    let (payload, encoding) = payload(&e.payload);
    json!({
        "event_id": e.event_id,
        "topic": e.topic,
        "partition": e.partition,
        "offset": e.offset,
        "key": e.key,
        "type": e.r#type,
        "content_type": e.content_type,
        "attributes": sorted_attributes(e),
        "publish_time": ts_json(&e.publish_time),
        "event_time": ts_json(&e.event_time),
        "payload": payload,
        "payload_encoding": encoding,
    })
}

/// One line per event for people: time, partition:offset, type, key,
/// attributes, `extra` (if not empty) and payload (base64 payloads are marked
/// `base64:`).
pub fn event_text(e: &Event, extra: &str) -> String {
    let (payload, encoding) = payload(&e.payload);
    let payload = if encoding == "base64" {
        format!("base64:{payload}")
    } else {
        one_line(&payload)
    };
    let mut line = format!(
        "{}  {}:{}  {}",
        ts_text(&e.publish_time),
        e.partition,
        e.offset,
        if e.r#type.is_empty() { "-" } else { &e.r#type }
    );
    if !e.key.is_empty() {
        line.push_str(&format!("  key={}", e.key));
    }
    for (k, v) in sorted_attributes(e) {
        line.push_str(&format!("  {k}={v}"));
    }
    if !extra.is_empty() {
        line.push_str("  ");
        line.push_str(extra);
    }
    line.push_str("  ");
    line.push_str(&payload);
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_flattens_cells() {
        let mut t = Table::new(&["NAME", "N"]);
        t.row(vec!["orders".into(), "4".into()]);
        t.row(vec!["a\nb".into(), "12".into()]);
        assert_eq!(t.render(), "NAME    N\norders  4\na b     12");
    }

    #[test]
    fn payload_is_text_when_utf8_else_base64() {
        assert_eq!(payload(b"{\"id\":1}"), ("{\"id\":1}".to_string(), "utf8"));
        assert_eq!(payload(&[0xff, 0x00]), ("/wA=".to_string(), "base64"));
    }

    #[test]
    fn durations_and_times_render_for_people_and_scripts() {
        let d = Some(prost_types::Duration {
            seconds: 90,
            nanos: 500_000_000,
        });
        assert_eq!(dur_text(&d), "1m 30s");
        assert_eq!(secs_json(&d), json!(90.5));
        let ts = Some(prost_types::Timestamp {
            seconds: 1_795_338_000,
            nanos: 0,
        });
        assert_eq!(ts_text(&ts), "2026-11-22T09:00:00Z");
        assert_eq!(ts_json(&None), Value::Null);
    }
}
