//! `eventbus migrate --from DATA_DIR --nats-url ...`: moves a single node's
//! data dir into cluster mode (a NATS JetStream cluster that gateways,
//! `eventbus serve --storage jetstream`, then serve), offline.
//!
//! What moves: every topic (partitions, retention, every retained event at
//! the same offset with its publish time), every subscription (settings,
//! paused state, its position per partition), every dead letter and every
//! redriven entry not yet delivered again. What does not: the audit log,
//! the counters of subscription statistics, idempotency keys older than
//! the dedup window, and which events above a position were already acked
//! (ARCHITECTURE.md, "Moving a single node into cluster mode").
//!
//! Restartable: a topic already in the cluster must be this data dir's
//! (same partitions and retention, its events a prefix of ours, checked at
//! both ends of what it holds), and the copy goes on from where it stopped.
//! A subscription already in the cluster must have the same settings, and
//! keeps its position there; its dead-letter queue is completed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, ensure, Context as _};
use eventbus_broker::{Offset, StoredEvent};
use eventbus_jetstream::migrate::{Importer, SubscriptionTemplate};
use eventbus_jetstream::topics::TopicMeta;
use eventbus_log::export::ExportedSubscription;
use eventbus_log::{Log, Options, TopicState};

use crate::config::{Config, Overrides, Storage};

/// Events read from the data dir per batch, and at most this many bytes.
const BATCH_EVENTS: usize = 1000;
const BATCH_BYTES: usize = 8 << 20;

#[derive(clap::Args)]
pub struct MigrateArgs {
    /// TOML config file, the gateways' (its nats-* keys and dedup-window
    /// apply). Flags and EVENTBUS_* variables override it.
    #[arg(long, env = "EVENTBUS_CONFIG")]
    config: Option<PathBuf>,
    /// The single node's data dir. Stop that server first: migrate reads
    /// the data dir offline and refuses one a server holds.
    #[arg(long, value_name = "DATA_DIR")]
    from: PathBuf,
    /// The cluster: NATS servers, `nats://host:port`, comma-separated
    /// (config key `nats-url`).
    #[arg(long)]
    nats_url: Option<String>,
    /// The NATS servers' monitoring ports, `http://host:port`,
    /// comma-separated (config key `nats-monitor-url`): as a gateway does,
    /// migrate refuses a cluster that does not fsync every write.
    #[arg(long)]
    nats_monitor_url: Option<String>,
    /// Replicas of every stream it creates (config key `nats-replicas`)
    /// [default: 3].
    #[arg(long)]
    replicas: Option<usize>,
    /// Read the data dir and print what would be copied; nothing is
    /// written and the cluster is not contacted.
    #[arg(long)]
    dry_run: bool,
}

/// What one run did, for the summary.
#[derive(Default)]
struct Tally {
    topics_created: u64,
    topics_present: u64,
    events_copied: u64,
    events_present: u64,
    subscriptions_created: u64,
    subscriptions_present: u64,
    dead_letters_copied: u64,
    redriven_copied: u64,
    /// Events acked above a subscription's position, delivered again.
    redelivered: u64,
}

impl Tally {
    fn changed(&self) -> bool {
        self.topics_created
            + self.events_copied
            + self.subscriptions_created
            + self.dead_letters_copied
            + self.redriven_copied
            > 0
    }
}

pub fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        storage: Some(Storage::Jetstream),
        nats_url: args.nats_url.clone(),
        ..Default::default()
    };
    let mut config = Config::load(args.config.as_deref(), &overrides)?;
    if let Some(url) = &args.nats_monitor_url {
        config.nats_monitor_url = url.clone();
    }
    if let Some(replicas) = args.replicas {
        // JetStream's own bound on a stream's replicas.
        ensure!(
            (1..=5).contains(&replicas),
            "--replicas {replicas}: give 1 to 5 (3 in production: a quorum of 2 acknowledges)"
        );
        config.nats_replicas = replicas;
    }
    check_data_dir(&args.from)?;
    // Warnings (an unsynced cluster accepted by nats-allow-unsynced) go to
    // stderr; progress and the summary go to stdout.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let from = args.from.clone();
        let log = tokio::task::spawn_blocking(move || open_source(&from)).await??;
        let result = if args.dry_run {
            dry_run(&log, &args.from).await
        } else {
            migrate(&log, &config, &args.from).await
        };
        tokio::task::spawn_blocking(move || log.close()).await?;
        result
    })
}

/// Refuses what is not an eventbus data dir before RocksDB opens it (it
/// would create one there).
fn check_data_dir(dir: &Path) -> anyhow::Result<()> {
    ensure!(
        dir.is_dir(),
        "--from {}: no such directory; give the single node's data dir (its --data-dir)",
        dir.display()
    );
    ensure!(
        dir.join("CURRENT").is_file() && dir.join(eventbus_log::SYNCED_MARK_FILE).is_file(),
        "--from {}: not an eventbus data dir (it has no RocksDB CURRENT and {} files); \
         give the single node's data dir (its --data-dir)",
        dir.display(),
        eventbus_log::SYNCED_MARK_FILE
    );
    Ok(())
}

/// Opens the data dir as the server would, or says that a server holds it.
fn open_source(dir: &Path) -> anyhow::Result<Log> {
    Log::open(Options::new(dir)).map_err(|e| {
        let text = e.to_string();
        if text.contains("LOCK") || text.to_ascii_lowercase().contains("lock file") {
            anyhow::anyhow!(
                "the data dir {} is in use: a running server holds its lock ({}); stop the \
                 server, then run migrate again",
                dir.display(),
                dir.join("LOCK").display()
            )
        } else {
            anyhow::Error::new(e).context(format!("opening the data dir {}", dir.display()))
        }
    })
}

/// The topics, sorted by name, with their subscriptions.
async fn read_plan(log: &Log) -> anyhow::Result<Vec<(Arc<TopicState>, Vec<ExportedSubscription>)>> {
    let mut topics = log.topics();
    topics.sort_by(|a, b| a.name().cmp(b.name()));
    let mut plan = Vec::new();
    for topic in topics {
        let (l, t) = (log.clone(), topic.clone());
        let subs = tokio::task::spawn_blocking(move || l.export_subscriptions(&t))
            .await?
            .with_context(|| format!("reading the subscriptions of topic {:?}", topic.name()))?;
        plan.push((topic, subs));
    }
    Ok(plan)
}

async fn dry_run(log: &Log, from: &Path) -> anyhow::Result<()> {
    println!(
        "dry run: {} would be copied as follows (the cluster was not contacted; a topic \
         already there is continued, not copied again)",
        from.display()
    );
    let (mut events, mut subs, mut dead) = (0, 0, 0);
    let plan = read_plan(log).await?;
    for (topic, subscriptions) in &plan {
        println!(
            "topic {}: {} partitions, {} events",
            topic.name(),
            topic.partition_count(),
            topic.retained_events()
        );
        for (p, tail) in topic.partitions.iter().enumerate() {
            println!("  partition {p}: offsets {}..{}", tail.start(), tail.end());
        }
        events += topic.retained_events();
        for s in subscriptions {
            println!(
                "  subscription {}: position {}{}, {} dead letters, {} redriven",
                s.name,
                positions(&s.floors),
                if s.paused { ", paused" } else { "" },
                s.dead_letters.len(),
                s.redrive.len()
            );
            subs += 1;
            dead += s.dead_letters.len();
        }
    }
    println!(
        "would copy {} topics, {events} events, {subs} subscriptions, {dead} dead letters",
        plan.len()
    );
    Ok(())
}

/// `p0=12 p1=0 ...`: a subscription's position per partition.
fn positions(floors: &[Offset]) -> String {
    floors
        .iter()
        .enumerate()
        .map(|(p, o)| format!("p{p}={o}"))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn migrate(log: &Log, config: &Config, from: &Path) -> anyhow::Result<()> {
    crate::sync_check::check(&config.nats_monitor_url, config.nats_allow_unsynced).await?;
    if config.nats_monitor_url.trim().is_empty() {
        eprintln!(
            "warning: cannot check that the NATS servers fsync every write (sync_interval: \
             always); give --nats-monitor-url"
        );
    }
    let importer = Importer::connect(config.jetstream_options())
        .await
        .with_context(|| format!("connecting to NATS JetStream at {}", config.nats_url))?;
    // Idempotency keys younger than the window are carried over; the
    // cluster's window then runs from the move.
    let dedup_since =
        eventbus_broker::now_ms().saturating_sub(config.dedup_window.as_millis() as u64);
    let plan = read_plan(log).await?;
    let mut tally = Tally::default();
    println!(
        "migrating {} into NATS JetStream at {}",
        from.display(),
        config.nats_url
    );
    for (topic, subscriptions) in &plan {
        let meta = move_topic(log, &importer, topic, dedup_since, &mut tally).await?;
        for s in subscriptions {
            move_subscription(&importer, &meta, s, &mut tally).await?;
        }
    }
    verify(&importer, &plan).await?;
    println!(
        "topics: {} created, {} already there; events: {} copied, {} already there; \
         subscriptions: {} created, {} already there; dead letters: {} copied; redriven \
         entries: {} copied",
        tally.topics_created,
        tally.topics_present,
        tally.events_copied,
        tally.events_present,
        tally.subscriptions_created,
        tally.subscriptions_present,
        tally.dead_letters_copied,
        tally.redriven_copied
    );
    if tally.redelivered > 0 {
        println!(
            "note: {} events acked out of order above their subscription's position will be \
             delivered again (at-least-once)",
            tally.redelivered
        );
    }
    if tally.changed() {
        println!(
            "verified: every partition ends at the same offset as in {}",
            from.display()
        );
    } else {
        println!(
            "nothing to do: the cluster already holds everything in {} (verified)",
            from.display()
        );
    }
    Ok(())
}

/// Creates the topic in the cluster, or checks the one there is ours, and
/// copies the events it does not hold yet.
async fn move_topic(
    log: &Log,
    importer: &Importer,
    topic: &Arc<TopicState>,
    dedup_since: u64,
    tally: &mut Tally,
) -> anyhow::Result<Arc<TopicMeta>> {
    let name = topic.name();
    let starts: Vec<Offset> = topic.partitions.iter().map(|p| p.start()).collect();
    let meta = match importer.topic(name).await? {
        None => {
            tally.topics_created += 1;
            importer
                .create_topic(
                    name,
                    topic.meta.retention,
                    topic.meta.created_ms,
                    topic.meta.creator.clone(),
                    &starts,
                )
                .await
                .with_context(|| format!("creating topic {name:?} in the cluster"))?
        }
        Some(meta) => {
            ensure!(
                meta.partitions == topic.partition_count()
                    && meta.retention == topic.meta.retention,
                "topic {name:?} already exists in the cluster with {} partitions and retention \
                 {:?}, the data dir has {} and {:?}: it is not this data dir's copy. Delete it \
                 in the cluster (or rename one) and run migrate again",
                meta.partitions,
                meta.retention,
                topic.partition_count(),
                topic.meta.retention
            );
            tally.topics_present += 1;
            meta
        }
    };
    let mut copied = 0;
    for (p, tail) in topic.partitions.iter().enumerate() {
        let p = p as u32;
        let (start, end) = (tail.start(), tail.end());
        let there = importer.bounds(&meta, p).await?;
        let mismatch = |what: String| {
            anyhow::anyhow!(
                "topic {name:?} partition {p} in the cluster {what}: it is not this data dir's \
                 copy (offsets {start}..{end}). Delete the topic in the cluster and run \
                 migrate again"
            )
        };
        // Later is fine: the cluster's own retention (max_age counts from
        // the move) may have removed events a previous run copied.
        if there.start < start {
            return Err(mismatch(format!("starts at offset {}", there.start)));
        }
        if there.end > end {
            return Err(mismatch(format!("ends at offset {}", there.end)));
        }
        if there.end > there.start {
            // What a previous run copied: its first and last event must be
            // ours (a full comparison would cost a second copy).
            for offset in [there.start, there.end - 1] {
                let event = read_one(log, topic, p, offset).await?;
                if !importer.holds(&meta, p, &event).await? {
                    return Err(mismatch(format!("holds another event at offset {offset}")));
                }
            }
        }
        // Counted from the data dir's start: what the cluster's retention
        // removed was in place too.
        tally.events_present += there.end - start;
        let mut next = there.end;
        while next < end {
            let (l, t) = (log.clone(), topic.clone());
            let batch =
                tokio::task::spawn_blocking(move || l.read(&t, p, next, BATCH_EVENTS, BATCH_BYTES))
                    .await??;
            let Some(last) = batch.last() else {
                bail!("topic {name:?} partition {p}: the data dir returned nothing at offset {next}, below its end {end}");
            };
            ensure!(
                batch[0].offset == next && last.offset + 1 - next == batch.len() as u64,
                "topic {name:?} partition {p}: offsets {next}.. are not dense in the data dir"
            );
            let after = last.offset + 1;
            importer.append(&meta, p, &batch, dedup_since).await?;
            copied += batch.len() as u64;
            next = after;
        }
    }
    tally.events_copied += copied;
    println!(
        "topic {name}: {} partitions, {copied} events copied",
        meta.partitions
    );
    Ok(meta)
}

async fn read_one(
    log: &Log,
    topic: &Arc<TopicState>,
    p: u32,
    offset: Offset,
) -> anyhow::Result<StoredEvent> {
    let (l, t) = (log.clone(), topic.clone());
    let mut events =
        tokio::task::spawn_blocking(move || l.read(&t, p, offset, 1, usize::MAX)).await??;
    match events.pop() {
        Some(e) if e.offset == offset => Ok(e),
        _ => bail!(
            "topic {:?} partition {p}: no event at offset {offset} in the data dir",
            topic.name()
        ),
    }
}

/// Creates the subscription at its positions, or checks the one there has
/// the same settings; then completes its dead-letter and redrive queues.
async fn move_subscription(
    importer: &Importer,
    topic: &TopicMeta,
    s: &ExportedSubscription,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let what = format!("subscription {:?} of topic {:?}", s.name, topic.name);
    let meta = match importer.subscription(topic, &s.name).await? {
        Some(meta) => {
            ensure!(
                meta.config == s.config && meta.paused == s.paused,
                "{what} already exists in the cluster with other settings ({:?}, paused: {}; \
                 the data dir has {:?}, paused: {}). Delete it in the cluster and run migrate \
                 again",
                meta.config,
                meta.paused,
                s.config,
                s.paused
            );
            // Its position there is left alone: it may have moved on.
            tally.subscriptions_present += 1;
            meta
        }
        None => {
            let meta = importer
                .create_subscription(
                    topic,
                    SubscriptionTemplate {
                        name: s.name.clone(),
                        config: s.config.clone(),
                        paused: s.paused,
                        start_position: s.start_position,
                        created_ms: s.created_ms,
                        creator: s.creator.clone(),
                        positions: s.floors.clone(),
                    },
                )
                .await
                .with_context(|| format!("creating {what} in the cluster"))?;
            let at = importer.positions(topic, &meta).await?;
            ensure!(
                at == s.floors,
                "{what} was created at {} in the cluster, not at {}",
                positions(&at),
                positions(&s.floors)
            );
            tally.subscriptions_created += 1;
            tally.redelivered += s.settled_above_floor.iter().sum::<u64>();
            meta
        }
    };
    let (dlq, redrive) = importer.dead_letter_counts(&meta).await?;
    ensure!(
        dlq <= s.dead_letters.len() as u64 && redrive <= s.redrive.len() as u64,
        "{what} has {dlq} dead letters and {redrive} redriven entries in the cluster, more than \
         the data dir's {} and {}: they were written there since. Migrate only completes \
         queues it started",
        s.dead_letters.len(),
        s.redrive.len()
    );
    for dl in &s.dead_letters[dlq as usize..] {
        importer.write_dead_letter(&meta, dl).await?;
        tally.dead_letters_copied += 1;
    }
    for dl in &s.redrive[redrive as usize..] {
        importer.write_redriven(&meta, dl).await?;
        tally.redriven_copied += 1;
    }
    println!(
        "  {what}: position {}{}, {} dead letters, {} redriven",
        positions(&s.floors),
        if s.paused { ", paused" } else { "" },
        s.dead_letters.len(),
        s.redrive.len()
    );
    Ok(())
}

/// Reads the cluster back: each partition's offsets and each queue's
/// length equal the data dir's.
async fn verify(
    importer: &Importer,
    plan: &[(Arc<TopicState>, Vec<ExportedSubscription>)],
) -> anyhow::Result<()> {
    for (topic, subscriptions) in plan {
        let meta = importer
            .topic(topic.name())
            .await?
            .with_context(|| format!("topic {:?} is missing in the cluster", topic.name()))?;
        for (p, tail) in topic.partitions.iter().enumerate() {
            let there = importer.bounds(&meta, p as u32).await?;
            ensure!(
                there.end == tail.end() && there.start >= tail.start(),
                "verification failed: topic {:?} partition {p} holds offsets {}..{} in the \
                 cluster, {}..{} in the data dir",
                topic.name(),
                there.start,
                there.end,
                tail.start(),
                tail.end()
            );
        }
        for s in subscriptions {
            let sub = importer
                .subscription(&meta, &s.name)
                .await?
                .with_context(|| format!("subscription {:?} is missing in the cluster", s.name))?;
            let (dlq, redrive) = importer.dead_letter_counts(&sub).await?;
            ensure!(
                (dlq, redrive) == (s.dead_letters.len() as u64, s.redrive.len() as u64),
                "verification failed: subscription {:?} of topic {:?} has {dlq} dead letters \
                 and {redrive} redriven entries in the cluster, {} and {} in the data dir",
                s.name,
                topic.name(),
                s.dead_letters.len(),
                s.redrive.len()
            );
        }
    }
    Ok(())
}
