//! `eventbus publish <topic> [payload]`: one event from the argument, or one
//! event per line from `--file` or stdin, sent in batches.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use eventbus::v1::{PublishEvent, PublishRequest, PublishResult};
use indicatif::ProgressBar;
use serde_json::json;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};

use super::output::ProgressUnit;
use super::Ctx;

/// A batch is sent once it holds this many events...
const BATCH_EVENTS: usize = 500;
/// ...or this many payload bytes (the server's default request limit is 4 MiB).
const BATCH_BYTES: usize = 1 << 20;
/// A partial batch is sent when the input pauses this long, so a slow pipe
/// (`tail -f log | eventbus publish ...`) publishes promptly.
const IDLE_FLUSH: Duration = Duration::from_millis(50);

#[derive(Args)]
#[command(after_help = "\
Without a payload argument and without --file, events are read from stdin,
one per line. Empty lines are skipped. Lines are sent in atomic batches; if a
batch fails, the error names its lines and every earlier line was published.

Output: one line per event for a payload argument; a summary for line input.
With --json, one JSON object per event: {\"line\", \"partition\", \"offset\",
\"event_id\", \"duplicate\"} (\"line\" only for line input).")]
pub struct PublishArgs {
    /// Topic to publish to.
    topic: String,
    /// The payload of a single event (UTF-8 text). Omit it to read events
    /// from --file or stdin, one per line.
    #[arg(conflicts_with = "file")]
    payload: Option<String>,
    /// Read events from this file, one per line.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Partitioning key: events with the same key keep their order.
    #[arg(long)]
    key: Option<String>,
    /// Event type, e.g. order.created.
    #[arg(long = "type")]
    event_type: Option<String>,
    /// Attribute `name=value`; repeat for more.
    #[arg(long = "attr", value_name = "NAME=VALUE", value_parser = parse_attr)]
    attrs: Vec<(String, String)>,
    /// Deduplication key. With line input, line N gets `<key>-<N>`, so
    /// re-running the same input publishes nothing twice.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// MIME type of the payload, e.g. application/json.
    #[arg(long)]
    content_type: Option<String>,
}

/// Clap value parser for `--attr NAME=VALUE`.
pub(super) fn parse_attr(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}`: expected NAME=VALUE with a non-empty name")),
    }
}

impl PublishArgs {
    fn event(&self, payload: Vec<u8>, idempotency_key: String) -> PublishEvent {
        PublishEvent {
            key: self.key.clone().unwrap_or_default(),
            r#type: self.event_type.clone().unwrap_or_default(),
            payload: payload.into(),
            content_type: self.content_type.clone().unwrap_or_default(),
            attributes: self.attrs.iter().cloned().collect::<HashMap<_, _>>(),
            idempotency_key,
            event_time: None,
        }
    }
}

pub async fn run(ctx: Ctx, args: PublishArgs) -> anyhow::Result<()> {
    if let Some(payload) = &args.payload {
        return publish_one(ctx, &args, payload.clone().into_bytes()).await;
    }
    match &args.file {
        Some(path) => {
            let file = tokio::fs::File::open(path)
                .await
                .with_context(|| format!("cannot open {}", path.display()))?;
            let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
            let bar = ctx.out.progress(len, ProgressUnit::Bytes);
            bar.set_message("publishing");
            publish_lines(ctx, &args, BufReader::new(file), &bar).await
        }
        None => {
            if std::io::stdin().is_terminal() {
                eprintln!("reading events from stdin, one per line; end with Ctrl-D");
            }
            let bar = ProgressBar::hidden();
            publish_lines(ctx, &args, BufReader::new(tokio::io::stdin()), &bar).await
        }
    }
}

async fn publish_one(ctx: Ctx, args: &PublishArgs, payload: Vec<u8>) -> anyhow::Result<()> {
    let event = args.event(payload, args.idempotency_key.clone().unwrap_or_default());
    let result = ctx
        .client
        .events()
        .publish(PublishRequest {
            topic: args.topic.clone(),
            events: vec![event],
        })
        .await?
        .into_inner()
        .results
        .pop()
        .context("the server returned no publish result")?;
    if ctx.out.json {
        ctx.out.json_line(&result_json(None, &result))
    } else {
        ctx.out.text(&format!(
            "published to {} partition {} offset {} (event id {}){}",
            args.topic,
            result.partition,
            result.offset,
            result.event_id,
            if result.duplicate {
                ", a duplicate"
            } else {
                ""
            }
        ))
    }
}

/// Lines read but not yet published, with the input position they came from.
#[derive(Default)]
struct Batch {
    events: Vec<PublishEvent>,
    lines: Vec<u64>,
    /// Payload bytes, for the batch size limit.
    bytes: usize,
    /// Input bytes consumed (with newlines and skipped empty lines), credited
    /// to the progress bar once the batch is acknowledged.
    consumed: u64,
}

/// Totals for the summary line.
#[derive(Default)]
struct Summary {
    published: u64,
    duplicates: u64,
}

async fn publish_lines(
    ctx: Ctx,
    args: &PublishArgs,
    mut input: impl AsyncBufRead + Unpin,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let mut batch = Batch::default();
    let mut summary = Summary::default();
    let mut line_no = 0u64;
    // `read_until` is cancel-safe: bytes read before an IDLE_FLUSH timeout stay
    // in `buf` and the next call continues the same line.
    let mut buf = Vec::new();
    loop {
        let read = if batch.events.is_empty() {
            input.read_until(b'\n', &mut buf).await
        } else {
            match tokio::time::timeout(IDLE_FLUSH, input.read_until(b'\n', &mut buf)).await {
                Ok(read) => read,
                Err(_idle) => {
                    send(&ctx, args, &mut batch, &mut summary, bar).await?;
                    continue;
                }
            }
        }
        .context("reading events")?;
        let eof = read == 0;
        if eof && buf.is_empty() {
            break;
        }
        if !eof && buf.last() != Some(&b'\n') {
            continue; // EOF without a final newline comes next.
        }
        line_no += 1;
        let consumed = buf.len();
        let mut line = std::mem::take(&mut buf);
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        batch.consumed += consumed as u64;
        if !line.is_empty() {
            let key = args
                .idempotency_key
                .as_ref()
                .map(|k| format!("{k}-{line_no}"))
                .unwrap_or_default();
            batch.bytes += line.len();
            batch.events.push(args.event(line, key));
            batch.lines.push(line_no);
        }
        if batch.events.len() >= BATCH_EVENTS || batch.bytes >= BATCH_BYTES {
            send(&ctx, args, &mut batch, &mut summary, bar).await?;
        }
        if eof {
            break;
        }
    }
    send(&ctx, args, &mut batch, &mut summary, bar).await?;
    bar.finish_and_clear();
    if !ctx.out.json {
        ctx.out.text(&format!(
            "published {} events to {}{}",
            summary.published,
            args.topic,
            match summary.duplicates {
                0 => String::new(),
                n => format!(" ({n} of them duplicates, not stored again)"),
            }
        ))?;
    }
    Ok(())
}

async fn send(
    ctx: &Ctx,
    args: &PublishArgs,
    batch: &mut Batch,
    summary: &mut Summary,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let batch = std::mem::take(batch);
    if batch.events.is_empty() {
        bar.inc(batch.consumed);
        return Ok(());
    }
    let (first, last) = (batch.lines[0], batch.lines[batch.lines.len() - 1]);
    let results = ctx
        .client
        .events()
        .publish(PublishRequest {
            topic: args.topic.clone(),
            events: batch.events,
        })
        .await
        .with_context(|| {
            format!(
                "publishing lines {first}-{last} (nothing of them was stored; earlier lines were)"
            )
        })?
        .into_inner()
        .results;
    let mut lines = String::new();
    for (line, result) in batch.lines.iter().zip(&results) {
        summary.published += 1;
        summary.duplicates += u64::from(result.duplicate);
        if ctx.out.json {
            lines.push_str(&serde_json::to_string(&result_json(Some(*line), result))?);
            lines.push('\n');
        }
    }
    ctx.out.write_above(bar, &lines)?;
    bar.inc(batch.consumed);
    Ok(())
}

fn result_json(line: Option<u64>, r: &PublishResult) -> serde_json::Value {
    let mut v = json!({
        "partition": r.partition,
        "offset": r.offset,
        "event_id": r.event_id,
        "duplicate": r.duplicate,
    });
    if let Some(line) = line {
        v["line"] = json!(line);
    }
    v
}
