//! `eventbus dlq list | show | redrive | purge`: a subscription's dead-letter
//! queue.

use std::collections::BTreeMap;

use clap::{Args, Subcommand, ValueEnum};
use eventbus_proto::v1::{
    DeadLetter, DeadLetterFilter, Event, GetDeadLetterRequest, ListDeadLettersRequest,
    PurgeDeadLettersRequest, RedriveDeadLettersRequest,
};
use serde_json::{json, Value};

use super::output::{
    event_json, key_values, payload, truncate, ts_json, ts_text, ProgressUnit, Table,
};
use super::time::parse_time;
use super::Ctx;

/// Entries per ListDeadLetters page. Each carries its whole event, so pages
/// stay well below the server's 1000 cap.
const PAGE_SIZE: u32 = 200;

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

    fn to_proto(&self) -> Option<DeadLetterFilter> {
        (!self.is_empty()).then(|| DeadLetterFilter {
            types: self.types.clone(),
            reason_contains: self.reason.clone().unwrap_or_default(),
            start_time: self.since,
            end_time: self.until,
        })
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
    /// The filter to send: only when neither ids nor --all select.
    fn filter(&self) -> Option<DeadLetterFilter> {
        if self.ids.is_empty() && !self.all {
            self.filter.to_proto()
        } else {
            None
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

/// Pages through the queue, calling `each` per entry until it returns false.
async fn for_each_entry(
    ctx: &mut Ctx,
    topic: &str,
    subscription: &str,
    filter: Option<DeadLetterFilter>,
    mut each: impl FnMut(DeadLetter) -> bool,
) -> anyhow::Result<()> {
    let mut page_token = String::new();
    loop {
        let page = ctx
            .clients
            .admin
            .list_dead_letters(ListDeadLettersRequest {
                topic: topic.to_string(),
                subscription: subscription.to_string(),
                page_size: PAGE_SIZE,
                page_token,
                filter: filter.clone(),
            })
            .await?
            .into_inner();
        for entry in page.dead_letters {
            if !each(entry) {
                return Ok(());
            }
        }
        if page.next_page_token.is_empty() {
            return Ok(());
        }
        page_token = page.next_page_token;
    }
}

async fn list(mut ctx: Ctx, args: ListArgs) -> anyhow::Result<()> {
    let filter = args.filter.to_proto();
    if let Some(group_by) = args.group_by {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let mut total = 0u64;
        for_each_entry(&mut ctx, &args.topic, &args.subscription, filter, |e| {
            let key = match group_by {
                GroupBy::Type => e.event.map(|ev| ev.r#type).unwrap_or_default(),
                GroupBy::Reason => e.reason,
            };
            *counts.entry(key).or_default() += 1;
            total += 1;
            true
        })
        .await?;
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

    let limit = if args.limit == 0 {
        usize::MAX
    } else {
        args.limit
    };
    let mut entries = Vec::new();
    let mut more = false;
    for_each_entry(&mut ctx, &args.topic, &args.subscription, filter, |e| {
        if entries.len() == limit {
            more = true;
            return false;
        }
        entries.push(e);
        true
    })
    .await?;
    if more {
        eprintln!(
            "showing the first {limit} entries; use --limit 0 for all, or --group-by to count them"
        );
    }
    if ctx.out.json {
        return ctx.out.doc(&Value::Array(
            entries.iter().map(dead_letter_json).collect(),
        ));
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
    for e in &entries {
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

async fn show(mut ctx: Ctx, topic: String, subscription: String, id: String) -> anyhow::Result<()> {
    let entry = ctx
        .clients
        .admin
        .get_dead_letter(GetDeadLetterRequest {
            topic,
            subscription,
            id,
        })
        .await?
        .into_inner()
        .dead_letter
        .unwrap_or_default();
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

async fn redrive(mut ctx: Ctx, args: RedriveArgs) -> anyhow::Result<()> {
    let what = format!("{}/{}", args.topic, args.subscription);
    let request = |ids: Vec<String>, dry_run: bool| RedriveDeadLettersRequest {
        topic: args.topic.clone(),
        subscription: args.subscription.clone(),
        ids,
        filter: None,
        all: false,
        dry_run,
        max_per_second: args.max_per_second.unwrap_or(0),
    };
    if args.dry_run {
        let mut req = request(args.selector.ids.clone(), true);
        req.all = args.selector.all;
        req.filter = args.selector.filter();
        let count = ctx
            .clients
            .admin
            .redrive_dead_letters(req)
            .await?
            .into_inner()
            .count;
        return report(&ctx, "redrive", &what, count, true);
    }

    // Snapshot the selected ids first, then redrive them in chunks by id: the
    // bar shows real progress with a known total, and entries that fail again
    // and return to the queue during the run are not redriven twice.
    let ids = if !args.selector.ids.is_empty() {
        args.selector.ids.clone()
    } else {
        let mut ids = Vec::new();
        let filter = args.selector.filter.to_proto();
        for_each_entry(&mut ctx, &args.topic, &args.subscription, filter, |e| {
            ids.push(e.id);
            true
        })
        .await?;
        ids
    };
    let chunk = match args.max_per_second {
        Some(n) if n > 0 => n as usize,
        _ => 500,
    };
    let bar = ctx.out.progress(ids.len() as u64, ProgressUnit::Items);
    bar.set_message("redriving");
    let mut count = 0;
    for ids in ids.chunks(chunk) {
        count += ctx
            .clients
            .admin
            .redrive_dead_letters(request(ids.to_vec(), false))
            .await?
            .into_inner()
            .count;
        bar.inc(ids.len() as u64);
    }
    bar.finish_and_clear();
    report(&ctx, "redrive", &what, count, false)
}

async fn purge(mut ctx: Ctx, args: PurgeArgs) -> anyhow::Result<()> {
    let count = ctx
        .clients
        .admin
        .purge_dead_letters(PurgeDeadLettersRequest {
            topic: args.topic.clone(),
            subscription: args.subscription.clone(),
            ids: args.selector.ids.clone(),
            filter: args.selector.filter(),
            all: args.selector.all,
            dry_run: args.dry_run,
        })
        .await?
        .into_inner()
        .count;
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
