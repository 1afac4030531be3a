//! `eventbus sub create | list | describe | pause | resume | seek | delete`.

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use eventbus::v1::{attribute_condition, AttributeCondition, Filter, Ordering, Subscription};
use eventbus::{RedeliveryBackoff, SeekTo, StartPosition, SubscriptionSettings};
use serde_json::{json, Value};

use super::output::{dur_text, key_values, secs_json, ts_json, ts_text, Table};
use super::publish::parse_attr;
use super::time::{parse_duration, parse_seek_target};
use super::Ctx;

#[derive(Subcommand)]
pub enum SubCommand {
    /// Create a subscription (consumer group) on a topic.
    Create(CreateArgs),
    /// List a topic's subscriptions with backlog, in-flight and DLQ counts.
    List { topic: String },
    /// Show a subscription's settings and statistics.
    Describe { topic: String, subscription: String },
    /// Stop delivering new events; open streams stay connected.
    Pause { topic: String, subscription: String },
    /// Resume delivery of a paused subscription.
    Resume { topic: String, subscription: String },
    /// Move the subscription's cursor: events from the target on are
    /// delivered again, earlier ones count as settled. Outstanding leases are
    /// discarded; the dead-letter queue is untouched.
    Seek(SeekArgs),
    /// Delete a subscription with its cursor and dead-letter queue. Irreversible.
    Delete { topic: String, subscription: String },
}

#[derive(Args)]
pub struct CreateArgs {
    topic: String,
    subscription: String,
    /// Where delivery starts.
    #[arg(long, value_enum, default_value = "earliest")]
    start: Start,
    /// Time to settle a delivery before it is redelivered (1s-10m). Default 30s.
    #[arg(long, value_parser = parse_duration)]
    ack_deadline: Option<Duration>,
    /// Delivery attempts before an event is dead-lettered; 0 = never.
    /// Default 5.
    #[arg(long)]
    max_delivery_attempts: Option<u32>,
    /// Only deliver events whose type matches this pattern (`order.*`,
    /// `order.>`); repeat for more.
    #[arg(long = "type", value_name = "PATTERN")]
    types: Vec<String>,
    /// Only deliver events with this attribute value (`NAME=VALUE`); repeat
    /// for more (all must hold).
    #[arg(long = "attr", value_name = "NAME=VALUE", value_parser = parse_attr)]
    attrs: Vec<(String, String)>,
    /// Ordering guarantee.
    #[arg(long, value_enum, default_value = "none")]
    ordering: OrderingArg,
    /// First redelivery backoff (enables exponential backoff). Default: redeliver at once.
    #[arg(long, value_parser = parse_duration)]
    min_backoff: Option<Duration>,
    /// Largest redelivery backoff (enables exponential backoff).
    #[arg(long, value_parser = parse_duration)]
    max_backoff: Option<Duration>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Start {
    Earliest,
    Latest,
}

#[derive(Clone, Copy, ValueEnum)]
enum OrderingArg {
    /// No ordering guarantee.
    None,
    /// One event per key in flight at a time.
    Key,
}

#[derive(Args)]
pub struct SeekArgs {
    topic: String,
    subscription: String,
    /// `earliest`, `latest`, a time (RFC 3339 or relative such as `1h`), or
    /// `partition:offset[,partition:offset...]` (unlisted partitions keep
    /// their position).
    #[arg(long, value_parser = parse_seek_target)]
    to: SeekTo,
}

pub async fn run(ctx: Ctx, cmd: SubCommand) -> anyhow::Result<()> {
    let admin = &ctx.admin;
    let out = ctx.out;
    let (sub, done) = match cmd {
        SubCommand::Create(args) => {
            let (topic, name) = (args.topic.clone(), args.subscription.clone());
            let sub = admin
                .create_subscription(&topic, &name, settings(args))
                .await?;
            (sub, "created subscription")
        }
        SubCommand::List { topic } => {
            let subs = admin.list_subscriptions(&topic).await?;
            if out.json {
                return out.doc(&Value::Array(subs.iter().map(subscription_json).collect()));
            }
            let mut table = Table::new(&[
                "NAME",
                "PAUSED",
                "BACKLOG",
                "IN-FLIGHT",
                "OLDEST-UNACKED",
                "DEAD-LETTERS",
                "MEMBERS",
            ]);
            for s in &subs {
                let mut row = vec![s.name.clone()];
                row.extend(state_cells(s));
                row.push(s.stats.unwrap_or_default().members.to_string());
                table.row(row);
            }
            return out.text(&table.render());
        }
        SubCommand::Describe {
            topic,
            subscription,
        } => {
            let sub = admin.get_subscription(&topic, &subscription).await?;
            return if out.json {
                out.doc(&subscription_json(&sub))
            } else {
                out.text(&describe_text(&sub))
            };
        }
        SubCommand::Pause {
            topic,
            subscription,
        } => (
            admin.pause(&topic, &subscription).await?,
            "paused subscription",
        ),
        SubCommand::Resume {
            topic,
            subscription,
        } => (
            admin.resume(&topic, &subscription).await?,
            "resumed subscription",
        ),
        SubCommand::Seek(args) => (
            admin.seek(&args.topic, &args.subscription, args.to).await?,
            "moved the cursor of subscription",
        ),
        SubCommand::Delete {
            topic,
            subscription,
        } => {
            admin.delete_subscription(&topic, &subscription).await?;
            return if out.json {
                out.doc(&json!({ "topic": topic, "subscription": subscription, "deleted": true }))
            } else {
                out.text(&format!("deleted subscription {topic}/{subscription}"))
            };
        }
    };
    // Commands that change a subscription print it as it is afterwards.
    if out.json {
        out.doc(&subscription_json(&sub))
    } else {
        out.text(&format!("{done} {}/{}", sub.topic, sub.name))
    }
}

fn settings(args: CreateArgs) -> SubscriptionSettings {
    let retry_backoff =
        (args.min_backoff.is_some() || args.max_backoff.is_some()).then_some(RedeliveryBackoff {
            min: args.min_backoff,
            max: args.max_backoff,
        });
    SubscriptionSettings {
        ack_deadline: args.ack_deadline,
        retry_backoff,
        max_delivery_attempts: args.max_delivery_attempts,
        event_types: args.types,
        attributes: args
            .attrs
            .into_iter()
            .map(|(key, value)| eventbus::AttributeCondition::equals(key, value))
            .collect(),
        ordered_by_key: matches!(args.ordering, OrderingArg::Key),
        start: Some(match args.start {
            Start::Earliest => StartPosition::Earliest,
            Start::Latest => StartPosition::Latest,
        }),
        from_earliest: false,
    }
}

/// PAUSED, BACKLOG, IN-FLIGHT, OLDEST-UNACKED and dead-letter count: the
/// cells every subscription table shows.
pub fn state_cells(s: &Subscription) -> Vec<String> {
    let stats = s.stats.unwrap_or_default();
    vec![
        yes_no(s.paused),
        stats.backlog.to_string(),
        stats.in_flight.to_string(),
        dur_text(&stats.oldest_unacked_age),
        stats.dead_letter_count.to_string(),
    ]
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

fn ordering_name(o: i32) -> &'static str {
    match Ordering::try_from(o) {
        Ok(Ordering::Key) => "key",
        _ => "none",
    }
}

fn filter_text(f: &Option<Filter>) -> String {
    let Some(f) = f else {
        return "all events".to_string();
    };
    let mut parts = Vec::new();
    if !f.types.is_empty() {
        parts.push(format!("type {}", f.types.join(" | ")));
    }
    for c in &f.attributes {
        parts.push(match &c.condition {
            Some(attribute_condition::Condition::Eq(v)) => format!("{}={v}", c.key),
            Some(attribute_condition::Condition::Ne(v)) => format!("{}!={v}", c.key),
            Some(attribute_condition::Condition::In(l)) => {
                format!("{} in [{}]", c.key, l.values.join(", "))
            }
            Some(attribute_condition::Condition::Exists(true)) => format!("{} present", c.key),
            Some(attribute_condition::Condition::Exists(false)) => format!("{} absent", c.key),
            Some(attribute_condition::Condition::Prefix(p)) => format!("{} starts with {p}", c.key),
            None => format!("{} (no condition)", c.key),
        });
    }
    if parts.is_empty() {
        "all events".to_string()
    } else {
        parts.join(" and ")
    }
}

fn describe_text(s: &Subscription) -> String {
    let st = s.stats.unwrap_or_default();
    // The server reports a zero policy for "redeliver at once".
    let zero = prost_types::Duration::default();
    let retry = match &s.retry_policy {
        Some(r) if r.max_backoff.unwrap_or(zero) != zero => format!(
            "exponential backoff {} .. {}",
            dur_text(&r.min_backoff),
            dur_text(&r.max_backoff)
        ),
        _ => "redeliver at once".to_string(),
    };
    let dlq = match st.dead_letter_count {
        0 => "0".to_string(),
        n => format!("{n} (oldest {} old)", dur_text(&st.oldest_dead_letter_age)),
    };
    key_values(&[
        ("topic", s.topic.clone()),
        ("subscription", s.name.clone()),
        ("paused", yes_no(s.paused)),
        ("created", ts_text(&s.create_time)),
        ("creator", s.creator.clone()),
        ("ack deadline", dur_text(&s.ack_deadline)),
        ("max delivery attempts", match s.max_delivery_attempts {
            0 => "unlimited".to_string(),
            n => n.to_string(),
        }),
        ("retry", retry),
        ("ordering", ordering_name(s.ordering).to_string()),
        ("filter", filter_text(&s.filter)),
        ("backlog", st.backlog.to_string()),
        ("in flight", st.in_flight.to_string()),
        ("oldest unacked age", dur_text(&st.oldest_unacked_age)),
        ("dead letters", dlq),
        ("members", st.members.to_string()),
        (
            "since server start",
            format!(
                "delivered {}, acked {}, nacked {}, redelivered {}, dead-lettered {}, filtered {}, lost to retention {}",
                st.delivered, st.acked, st.nacked, st.redelivered, st.dead_lettered, st.filtered, st.lost_to_retention
            ),
        ),
    ])
}

/// Mirrors the proto's AttributeCondition: `{"key": .., "<test>": ..}`.
fn condition_json(c: &AttributeCondition) -> Value {
    use attribute_condition::Condition;
    match &c.condition {
        Some(Condition::Eq(v)) => json!({ "key": c.key, "eq": v }),
        Some(Condition::Ne(v)) => json!({ "key": c.key, "ne": v }),
        Some(Condition::In(l)) => json!({ "key": c.key, "in": l.values }),
        Some(Condition::Exists(b)) => json!({ "key": c.key, "exists": b }),
        Some(Condition::Prefix(p)) => json!({ "key": c.key, "prefix": p }),
        None => json!({ "key": c.key }),
    }
}

pub fn subscription_json(s: &Subscription) -> Value {
    let st = s.stats.unwrap_or_default();
    json!({
        "topic": s.topic,
        "name": s.name,
        "paused": s.paused,
        "create_time": ts_json(&s.create_time),
        "creator": s.creator,
        "ack_deadline_seconds": secs_json(&s.ack_deadline),
        "max_delivery_attempts": s.max_delivery_attempts,
        "retry_policy": s.retry_policy.as_ref().map(|r| json!({
            "min_backoff_seconds": secs_json(&r.min_backoff),
            "max_backoff_seconds": secs_json(&r.max_backoff),
        })),
        "ordering": ordering_name(s.ordering),
        "filter": s.filter.as_ref().map(|f| json!({
            "types": f.types,
            "attributes": f.attributes.iter().map(condition_json).collect::<Vec<_>>(),
        })),
        "stats": {
            "backlog": st.backlog,
            "in_flight": st.in_flight,
            "oldest_unacked_age_seconds": secs_json(&st.oldest_unacked_age),
            "delivered": st.delivered,
            "acked": st.acked,
            "nacked": st.nacked,
            "redelivered": st.redelivered,
            "dead_lettered": st.dead_lettered,
            "filtered": st.filtered,
            "dead_letter_count": st.dead_letter_count,
            "oldest_dead_letter_age_seconds": secs_json(&st.oldest_dead_letter_age),
            "lost_to_retention": st.lost_to_retention,
            "members": st.members,
        },
    })
}
