//! `eventbus replay <topic>`: read history by offset or time range, filtered
//! by type, without touching any subscription.

use std::collections::HashMap;

use clap::Args;
use eventbus::v1::Topic;
use eventbus::{Position, ReplayOptions};
use indicatif::ProgressBar;

use super::output::{event_json, event_text, ProgressUnit};
use super::time::parse_position;
use super::Ctx;

#[derive(Args)]
#[command(after_help = "\
--from and --to take an offset (a bare number, applied to every selected
partition), an RFC 3339 time (2026-11-22T09:00:00Z), or a relative time in
the past (15m, 1h, 2d). --from is inclusive, --to exclusive. Without --to the
replay stops at the end of each partition as of the start of the command,
unless --follow keeps it open for new events.

Output: one line per event; with --json, JSON lines (see `eventbus --help`).")]
pub struct ReplayArgs {
    topic: String,
    /// Start here (inclusive). Default: the earliest retained event.
    #[arg(long, value_name = "OFFSET|TIME", value_parser = parse_position)]
    from: Option<Position>,
    /// Stop here (exclusive). Default: the current end.
    #[arg(long, value_name = "OFFSET|TIME", value_parser = parse_position, conflicts_with = "follow")]
    to: Option<Position>,
    /// Only events whose type matches this pattern (`order.*`, `order.>`);
    /// repeat for more (any may match).
    #[arg(long = "type", value_name = "PATTERN")]
    types: Vec<String>,
    /// Only this partition; repeat for more. Default: all partitions.
    #[arg(long = "partition", value_name = "N")]
    partitions: Vec<u32>,
    /// After catching up, keep printing new events until interrupted.
    #[arg(long)]
    follow: bool,
}

pub async fn run(ctx: Ctx, args: ReplayArgs) -> anyhow::Result<()> {
    // The bar needs the partitions' current ends; skip that call when no bar
    // would be drawn anyway.
    let mut progress = if args.follow || !ctx.out.shows_progress() {
        Progress::hidden()
    } else {
        let topic = ctx.admin.get_topic(&args.topic).await?;
        Progress::new(&ctx, &topic, &args)
    };

    let options = ReplayOptions {
        partitions: args.partitions.clone(),
        from: args.from,
        to: args.to,
        event_types: args.types.clone(),
        follow: args.follow,
    };
    let mut replay = ctx.client.replay(&args.topic, options).await?;
    while let Some(batch) = replay.next_batch().await {
        let mut lines = String::new();
        for event in &batch? {
            if ctx.out.json {
                lines.push_str(&serde_json::to_string(&event_json(event))?);
            } else {
                lines.push_str(&event_text(event, ""));
            }
            lines.push('\n');
            progress.seen(event.partition, event.offset);
        }
        ctx.out.write_above(&progress.bar, &lines)?;
    }
    progress.bar.finish_and_clear();
    Ok(())
}

/// Progress through the offset ranges being replayed. Counting offsets rather
/// than events keeps the bar honest when a type filter skips most events.
struct Progress {
    bar: ProgressBar,
    /// Per partition: the first offset of the range and the last one seen.
    start: HashMap<u32, u64>,
    seen: HashMap<u32, u64>,
}

impl Progress {
    fn hidden() -> Progress {
        Progress {
            bar: ProgressBar::hidden(),
            start: HashMap::new(),
            seen: HashMap::new(),
        }
    }

    fn new(ctx: &Ctx, topic: &Topic, args: &ReplayArgs) -> Progress {
        let mut start = HashMap::new();
        let mut total = 0;
        for p in &topic.partition_info {
            if !args.partitions.is_empty() && !args.partitions.contains(&p.partition) {
                continue;
            }
            let from = match args.from {
                Some(Position::Offset(o)) => o.max(p.start_offset),
                _ => p.start_offset,
            };
            let to = match args.to {
                Some(Position::Offset(o)) => o.min(p.end_offset),
                _ => p.end_offset,
            };
            total += to.saturating_sub(from);
            start.insert(p.partition, from);
        }
        let bar = ctx.out.progress(total, ProgressUnit::Items);
        bar.set_message("replaying");
        Progress {
            bar,
            start,
            seen: HashMap::new(),
        }
    }

    fn seen(&mut self, partition: u32, offset: u64) {
        if self.bar.is_hidden() {
            return;
        }
        self.seen.insert(partition, offset);
        let done: u64 = self
            .seen
            .iter()
            .map(|(p, last)| (last + 1).saturating_sub(*self.start.get(p).unwrap_or(&0)))
            .sum();
        self.bar.set_position(done);
    }
}
