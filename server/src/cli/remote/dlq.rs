//! `eventbus dlq list | show | redrive | purge`: a subscription's dead-letter
//! queue.

use std::collections::BTreeMap;

use clap::{Args, Subcommand, ValueEnum};
use eventbus::v1::{DeadLetter, DeadLetterFilter, Event};
use eventbus::DeadLetters;
use indicatif::ProgressBar;
use serde_json::{json, Value};
use tokio_stream::StreamExt as _;

use super::output::{
    event_json, key_values, payload, truncate, ts_json, ts_text, ProgressUnit, Table,
};
use super::time::parse_time;
use super::Ctx;

#[derive(Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first; or count them by type or reason.
    List(ListArgs),
    /// Show one dead letter with its full payload.
    Show {
        topic: String,
        subscription: String,
        /// Dead-letter id (from `dlq list`).
        id: String,
    },
    /// Deliver dead letters again (delivery attempts restart at 1).
    Redrive(RedriveArgs),
    /// Delete dead letters permanently.
    Purge(PurgeArgs),
}

/// Which entries to consider: every criterion given must hold.
#[derive(Args, Clone, Default)]
pub struct FilterArgs {
    /// Event type pattern (`order.*` one segment, `order.>` any number);
    /// repeat for more (any may match).
    #[arg(long = "type", value_name = "PATTERN")]
    types: Vec<String>,
    /// Only entries whose reason contains this text (case-sensitive).
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// Only entries dead-lettered at or after this time (RFC 3339 or
    /// relative such as `1h`).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    since: Option<prost_types::Timestamp>,
    /// Only entries dead-lettered before this time.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    until: Option<prost_types::Timestamp>,
}

impl FilterArgs {
    fn is_empty(&self) -> bool {
        self.types.is_empty()
            && self.reason.is_none()
            && self.since.is_none()
            && self.until.is_none()
    }

    /// The filter to send; the default (empty) filter matches every entry.
    fn to_proto(&self) -> DeadLetterFilter {
        if self.is_empty() {
            return DeadLetterFilter::default();
        }
        DeadLetterFilter {
            types: self.types.clone(),
            reason_contains: self.reason.clone().unwrap_or_default(),
            start_time: self.since,
            end_time: self.until,
        }
    }
}

#[derive(Args)]
pub struct ListArgs {
    topic: String,
    subscription: String,
    #[command(flatten)]
    filter: FilterArgs,
    /// Print at most this many entries; 0 = all. Ignored with --group-by.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Count the whole queue (all pages) by event type or by reason, instead
    /// of listing entries: the first step when the queue grows.
    #[arg(long, value_enum)]
    group_by: Option<GroupBy>,
}

#[derive(Clone, Copy, ValueEnum)]
enum GroupBy {
    Type,
    Reason,
}

/// Exactly one way of choosing entries, enforced by clap (usage error, exit 2).
#[derive(Args)]
#[command(group(
    clap::ArgGroup::new("selector")
        .required(true)
        .multiple(true)
        .args(["ids", "all", "types", "reason", "since", "until"])
))]
pub struct Selector {
    /// A dead-letter id; repeat for more.
    #[arg(long = "id", value_name = "ID", conflicts_with_all = ["all", "types", "reason", "since", "until"])]
    ids: Vec<String>,
    /// Every entry in the queue.
    #[arg(long, conflicts_with_all = ["types", "reason", "since", "until"])]
    all: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

impl Selector {
    /// The entries chosen: by id, all, or by filter (clap allows only one).
    fn which(&self) -> DeadLetters {
        if !self.ids.is_empty() {
            DeadLetters::Ids(self.ids.clone())
        } else if self.all {
            DeadLetters::All
        } else {
            DeadLetters::Matching(self.filter.to_proto())
        }
    }
}

#[derive(Args)]
#[command(after_help = "\
Select entries with --id, with --all, or with filter options (--type,
--reason, --since, --until). The entries selected when the command starts are
redriven; entries dead-lettered while it runs are left for the next run.")]
pub struct RedriveArgs {
    topic: String,
    subscription: String,
    #[command(flatten)]
    selector: Selector,
    /// Only count the entries that would be redriven; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Redrive at most this many entries per second, so consumers are not
    /// flooded.
    #[arg(long, value_name = "N")]
    max_per_second: Option<u32>,
}

#[derive(Args)]
#[command(after_help = "Select entries with --id, with --all, or with filter options.")]
pub struct PurgeArgs {
    topic: String,
    subscription: String,
    #[command(flatten)]
    selector: Selector,
    /// Only count the entries that would be deleted; change nothing.
    #[arg(long)]
    dry_run: bool,
}

pub async fn run(ctx: Ctx, cmd: DlqCommand) -> anyhow::Result<()> {
    match cmd {
        DlqCommand::List(args) => list(ctx, args).await,
        DlqCommand::Show {
            topic,
            subscription,
            id,
        } => show(ctx, topic, subscription, id).await,
        DlqCommand::Redrive(args) => redrive(ctx, args).await,
        DlqCommand::Purge(args) => purge(ctx, args).await,
    }
}

async fn list(ctx: Ctx, args: ListArgs) -> anyhow::Result<()> {
    let filter = args.filter.to_proto();
    let mut entries = ctx
        .admin
        .dead_letters(&args.topic, &args.subscription, filter);
    if let Some(group_by) = args.group_by {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let mut total = 0u64;
        while let Some(e) = entries.next().await {
            let e = e?;
            let key = match group_by {
                GroupBy::Type => e.event.map(|ev| ev.r#type).unwrap_or_default(),
                GroupBy::Reason => e.reason,
            };
            *counts.entry(key).or_default() += 1;
            total += 1;
        }
        // Largest group first: that is where to look.
        let mut groups: Vec<(String, u64)> = counts.into_iter().collect();
        groups.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let field = match group_by {
            GroupBy::Type => "type",
            GroupBy::Reason => "reason",
        };
        if ctx.out.json {
            return ctx.out.doc(&json!({
                "group_by": field,
                "total": total,
                "groups": groups.iter().map(|(k, n)| json!({ field: k, "count": n })).collect::<Vec<_>>(),
            }));
        }
        let mut table = Table::new(&["COUNT", if field == "type" { "TYPE" } else { "REASON" }]);
        for (k, n) in &groups {
            table.row(vec![
                n.to_string(),
                if k.is_empty() { "-".into() } else { k.clone() },
            ]);
        }
        return ctx
            .out
            .text(&format!("{}\n{total} dead letters", table.render()));
    }

    let (listed, more) = super::first(entries, args.limit).await?;
    if more {
        eprintln!(
            "showing the first {} entries; use --limit 0 for all, or --group-by to count them",
            args.limit
        );
    }
    if ctx.out.json {
        return ctx
            .out
            .doc(&Value::Array(listed.iter().map(dead_letter_json).collect()));
    }
    let mut table = Table::new(&[
        "ID",
        "DEAD-LETTERED",
        "TYPE",
        "PARTITION:OFFSET",
        "ATTEMPTS",
        "REDRIVES",
        "REASON",
    ]);
    let no_event = Event::default();
    for e in &listed {
        let ev = e.event.as_ref().unwrap_or(&no_event);
        table.row(vec![
            e.id.clone(),
            ts_text(&e.dead_letter_time),
            if ev.r#type.is_empty() {
                "-".into()
            } else {
                ev.r#type.clone()
            },
            format!("{}:{}", ev.partition, ev.offset),
            e.delivery_attempts.to_string(),
            e.redrive_count.to_string(),
            truncate(&e.reason, 80),
        ]);
    }
    ctx.out.text(&table.render())
}

async fn show(ctx: Ctx, topic: String, subscription: String, id: String) -> anyhow::Result<()> {
    let entry = ctx
        .admin
        .get_dead_letter(&topic, &subscription, &id)
        .await?;
    if ctx.out.json {
        return ctx.out.doc(&dead_letter_json(&entry));
    }
    let ev = entry.event.clone().unwrap_or_default();
    let (body, encoding) = payload(&ev.payload);
    let mut attributes: Vec<_> = ev
        .attributes
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    attributes.sort();
    let summary = key_values(&[
        ("id", entry.id.clone()),
        ("reason", entry.reason.clone()),
        ("dead-lettered", ts_text(&entry.dead_letter_time)),
        ("delivery attempts", entry.delivery_attempts.to_string()),
        ("redrives", entry.redrive_count.to_string()),
        ("first delivery", ts_text(&entry.first_delivery_time)),
        ("last delivery", ts_text(&entry.last_delivery_time)),
        ("event id", ev.event_id.clone()),
        (
            "partition:offset",
            format!("{}:{}", ev.partition, ev.offset),
        ),
        ("published", ts_text(&ev.publish_time)),
        ("type", ev.r#type.clone()),
        ("key", ev.key.clone()),
        ("content type", ev.content_type.clone()),
        ("attributes", attributes.join(" ")),
        ("payload encoding", encoding.to_string()),
    ]);
    ctx.out.text(&format!("{summary}\n\n{body}"))
}

async fn redrive(ctx: Ctx, args: RedriveArgs) -> anyhow::Result<()> {
    let what = format!("{}/{}", args.topic, args.subscription);
    let which = args.selector.which();
    if args.dry_run {
        let count = ctx
            .admin
            .redrive_dead_letters(&args.topic, &args.subscription, which, true)
            .await?;
        return report(&ctx, "redrive", &what, count, true);
    }
    // The SDK fixes the selection first, so the bar has a known total.
    let mut bar: Option<ProgressBar> = None;
    let count = ctx
        .admin
        .redrive_paced(
            &args.topic,
            &args.subscription,
            which,
            args.max_per_second.unwrap_or(0),
            |progress| {
                let bar = bar.get_or_insert_with(|| {
                    let bar = ctx.out.progress(progress.selected, ProgressUnit::Items);
                    bar.set_message("redriving");
                    bar
                });
                bar.set_position(progress.sent);
            },
        )
        .await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    report(&ctx, "redrive", &what, count, false)
}

async fn purge(ctx: Ctx, args: PurgeArgs) -> anyhow::Result<()> {
    let count = ctx
        .admin
        .purge_dead_letters(
            &args.topic,
            &args.subscription,
            args.selector.which(),
            args.dry_run,
        )
        .await?;
    let what = format!("{}/{}", args.topic, args.subscription);
    report(&ctx, "purge", &what, count, args.dry_run)
}

/// `redrove 3 dead letters of orders/billing`, or `{"count": 3, "dry_run": false}`.
fn report(ctx: &Ctx, verb: &str, what: &str, count: u64, dry_run: bool) -> anyhow::Result<()> {
    if ctx.out.json {
        return ctx.out.doc(&json!({ "count": count, "dry_run": dry_run }));
    }
    let past = if verb == "redrive" {
        "redrove"
    } else {
        "purged"
    };
    ctx.out.text(&if dry_run {
        format!("would {verb} {count} dead letters of {what} (dry run, nothing changed)")
    } else {
        format!("{past} {count} dead letters of {what}")
    })
}

pub fn dead_letter_json(e: &DeadLetter) -> Value {
    json!({
        "id": e.id,
        "reason": e.reason,
        "delivery_attempts": e.delivery_attempts,
        "redrive_count": e.redrive_count,
        "first_delivery_time": ts_json(&e.first_delivery_time),
        "last_delivery_time": ts_json(&e.last_delivery_time),
        "dead_letter_time": ts_json(&e.dead_letter_time),
        "event": e.event.as_ref().map(event_json),
    })
}
