//! `eventbus topic create | list | describe | delete`.

use std::time::Duration;

use clap::{Args, Subcommand};
use eventbus::v1::{Retention, Topic};
use eventbus::TopicSettings;
use serde_json::{json, Value};

use super::output::{dur_text, key_values, secs_json, ts_json, ts_text, Table};
use super::time::parse_duration;
use super::Ctx;

#[derive(Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create(CreateArgs),
    /// List all topics with their retained event counts.
    List,
    /// Show a topic's settings and per-partition offsets.
    Describe { topic: String },
    /// Delete a topic with all its events, subscriptions and dead letters.
    /// Irreversible.
    Delete { topic: String },
}

#[derive(Args)]
pub struct CreateArgs {
    topic: String,
    /// Number of partitions (1-1024; fixed for the topic's life). Default:
    /// the server's `default-partitions`.
    #[arg(long)]
    partitions: Option<u32>,
    /// Remove events older than this (e.g. 7d, 12h). Default: keep forever.
    #[arg(long, value_parser = parse_duration)]
    retention_age: Option<Duration>,
    /// Remove a partition's oldest events once it stores more than this many
    /// bytes. Default: no size limit.
    #[arg(long)]
    retention_bytes: Option<u64>,
}

pub async fn run(ctx: Ctx, cmd: TopicCommand) -> anyhow::Result<()> {
    let admin = &ctx.admin;
    let out = ctx.out;
    match cmd {
        TopicCommand::Create(args) => {
            let settings = TopicSettings {
                partitions: args.partitions.unwrap_or(0),
                retention_max_age: args.retention_age,
                retention_max_bytes: args.retention_bytes,
            };
            let topic = admin.create_topic_with(&args.topic, settings).await?;
            if out.json {
                out.doc(&topic_json(&topic))
            } else {
                out.text(&format!(
                    "created topic {} with {} partitions",
                    topic.name, topic.partitions
                ))
            }
        }
        TopicCommand::List => {
            let topics = admin.list_topics().await?;
            if out.json {
                return out.doc(&Value::Array(topics.iter().map(topic_json).collect()));
            }
            let mut table = Table::new(&["NAME", "PARTITIONS", "EVENTS", "RETENTION", "CREATED"]);
            for t in &topics {
                table.row(vec![
                    t.name.clone(),
                    t.partitions.to_string(),
                    retained(t).to_string(),
                    retention_text(&t.retention),
                    ts_text(&t.create_time),
                ]);
            }
            out.text(&table.render())
        }
        TopicCommand::Describe { topic } => {
            let topic = admin.get_topic(&topic).await?;
            if out.json {
                return out.doc(&topic_json(&topic));
            }
            let summary = key_values(&[
                ("name", topic.name.clone()),
                ("partitions", topic.partitions.to_string()),
                ("retention", retention_text(&topic.retention)),
                ("created", ts_text(&topic.create_time)),
                ("creator", topic.creator.clone()),
                ("events", format!("{} retained", retained(&topic))),
            ]);
            let mut table = Table::new(&["PARTITION", "START", "END", "EVENTS"]);
            for p in &topic.partition_info {
                table.row(vec![
                    p.partition.to_string(),
                    p.start_offset.to_string(),
                    p.end_offset.to_string(),
                    (p.end_offset - p.start_offset).to_string(),
                ]);
            }
            out.text(&format!("{summary}\n\n{}", table.render()))
        }
        TopicCommand::Delete { topic } => {
            admin.delete_topic(&topic).await?;
            if out.json {
                out.doc(&json!({ "topic": topic, "deleted": true }))
            } else {
                out.text(&format!("deleted topic {topic}"))
            }
        }
    }
}

/// Events currently retained across all partitions.
fn retained(t: &Topic) -> u64 {
    t.partition_info
        .iter()
        .map(|p| p.end_offset.saturating_sub(p.start_offset))
        .sum()
}

fn retention_text(r: &Option<Retention>) -> String {
    let Some(r) = r else {
        return "forever".to_string();
    };
    let age = r
        .max_age
        .filter(|d| d.seconds > 0 || d.nanos > 0)
        .map(|d| format!("max age {}", dur_text(&Some(d))));
    let bytes = (r.max_bytes > 0).then(|| format!("max {} bytes/partition", r.max_bytes));
    match (age, bytes) {
        (None, None) => "forever".to_string(),
        (Some(a), None) => a,
        (None, Some(b)) => b,
        (Some(a), Some(b)) => format!("{a}, {b}"),
    }
}

pub fn topic_json(t: &Topic) -> Value {
    json!({
        "name": t.name,
        "partitions": t.partitions,
        "retention": {
            "max_age_seconds": t.retention.as_ref().map(|r| secs_json(&r.max_age)).unwrap_or(Value::Null),
            "max_bytes": t.retention.as_ref().map(|r| r.max_bytes).unwrap_or(0),
        },
        "create_time": ts_json(&t.create_time),
        "creator": t.creator,
        "events": retained(t),
        "partition_info": t.partition_info.iter().map(|p| json!({
            "partition": p.partition,
            "start_offset": p.start_offset,
            "end_offset": p.end_offset,
        })).collect::<Vec<_>>(),
    })
}
