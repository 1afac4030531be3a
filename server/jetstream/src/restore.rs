//! `eventbus restore --from DIR --nats-url ...`: a cluster-mode backup
//! ([`crate::backup`]) put into a cluster, stream by stream, with
//! `$JS.API.STREAM.RESTORE` ([`backup::restore_stream`]). Offline: no
//! gateway may run on the target while it restores.
//!
//! Before anything is written, every file is checked against the
//! manifest's SHA-256 (by the caller, [`backup::verify_files`]) and the
//! target must hold none of the backup's streams. Then:
//!
//! 1. The topic and subscription buckets go in first, and are read back:
//!    they say which topics and subscriptions exist.
//! 2. What was created or deleted while the backup ran is sorted out (the
//!    snapshots are one stream at a time, [`crate::backup`]): a topic whose
//!    partition streams are not all in the backup, or a subscription whose
//!    topic or queues are not, was made while it ran; its entry is removed.
//!    A stream no entry refers to belonged to something deleted while it
//!    ran; it is left out. Each is reported.
//! 3. The other streams go in: partitions (with the subscriptions'
//!    consumers), dead letters, redrive queues, the audit log.
//! 4. Consumers are checked against the subscriptions: one missing (its
//!    subscription was created while its partition's snapshot was taken)
//!    removes that subscription; one no subscription owns is deleted; one
//!    whose deliveries run past its stream's last sequence (an event
//!    published and delivered while the stream's snapshot was taken, after
//!    its messages were read) restarts after what it acked, so events
//!    published after the restore are not skipped.
//! 5. The restore waits (up to 30 s) until every restored stream has a
//!    leader that counts each replica current.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use eventbus_broker::{Error, Result};
use futures_util::TryStreamExt as _;

use crate::backup::{self, Kind, Manifest, RestoredStream};
use crate::subscriptions::{consumer_name, SubscriptionMeta, SUBSCRIPTIONS_BUCKET};
use crate::topics::{stream_name, TopicMeta, TOPICS_BUCKET};
use crate::{dead_letters, nats_error};

/// How long a restored stream's consumers may take to show up in the
/// cluster's API (the restoring server assigns them once the stream is in).
const CONSUMERS_WAIT: Duration = Duration::from_secs(10);

/// How long the restore waits, in all, for the replicas of what it
/// restored to catch up.
const SETTLE_WAIT: Duration = Duration::from_secs(30);

/// What a restore did.
#[derive(Debug, Default)]
pub struct Summary {
    pub streams: usize,
    /// Bytes of the streams as restored (one replica's worth).
    pub bytes: u64,
    pub topics: usize,
    pub events: u64,
    pub subscriptions: usize,
    pub dead_letters: u64,
    pub audit_records: u64,
    /// What was sorted out (step 2 and 4 of the module docs), one line each.
    pub notes: Vec<String>,
    /// The streams the cluster now holds from the backup.
    pub names: Vec<String>,
}

/// What to restore, given the streams in the backup and the buckets'
/// contents (step 2 of the module docs).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The streams to restore after the buckets, in backup order.
    pub streams: Vec<Kind>,
    /// Streams in the backup that no kept entry refers to.
    pub orphans: Vec<Kind>,
    /// Indexes into the topics and subscriptions given, to remove.
    pub dropped_topics: Vec<usize>,
    pub dropped_subscriptions: Vec<usize>,
}

/// Decides what is restored; pure, so it is tested on its own.
pub fn plan(backup: &BTreeSet<Kind>, topics: &[TopicMeta], subs: &[SubscriptionMeta]) -> Plan {
    let mut out = Plan::default();
    let mut kept_topics = BTreeSet::new();
    for (i, t) in topics.iter().enumerate() {
        let complete = (0..t.partitions).all(|p| {
            backup.contains(&Kind::Partition {
                topic: t.id,
                partition: p,
            })
        });
        if complete {
            kept_topics.insert(t.id);
        } else {
            out.dropped_topics.push(i);
        }
    }
    let mut kept_subs = BTreeSet::new();
    for (i, s) in subs.iter().enumerate() {
        let queues = [false, true]
            .iter()
            .all(|&redrive| backup.contains(&Kind::Subscription { id: s.id, redrive }));
        if kept_topics.contains(&s.topic_id) && queues {
            kept_subs.insert(s.id);
        } else {
            out.dropped_subscriptions.push(i);
        }
    }
    let partitions: BTreeMap<u32, u32> = topics.iter().map(|t| (t.id, t.partitions)).collect();
    for &kind in backup {
        let wanted = match kind {
            Kind::Partition { topic, partition } => {
                kept_topics.contains(&topic) && partition < partitions[&topic]
            }
            Kind::Subscription { id, .. } => kept_subs.contains(&id),
            Kind::Audit => true,
            Kind::SubscriptionsBucket | Kind::TopicsBucket => continue,
        };
        if wanted {
            out.streams.push(kind);
        } else {
            out.orphans.push(kind);
        }
    }
    out
}

/// The stream name of a kind (the inverse of [`Kind::of`]).
fn name_of(kind: Kind) -> String {
    match kind {
        Kind::Partition { topic, partition } => stream_name(topic, partition),
        Kind::Subscription { id, redrive: false } => dead_letters::dlq_stream_name(id),
        Kind::Subscription { id, redrive: true } => dead_letters::redrive_stream_name(id),
        Kind::Audit => crate::audit::STREAM.to_string(),
        Kind::SubscriptionsBucket => format!("KV_{SUBSCRIPTIONS_BUCKET}"),
        Kind::TopicsBucket => format!("KV_{TOPICS_BUCKET}"),
    }
}

/// Restores the backup in `dir` (whose files the caller verified) into the
/// cluster behind `client`. `replicas` replaces every stream's replica
/// count when given. `say` gets a line per stream as it is restored.
pub async fn restore(
    client: &async_nats::Client,
    js: &jetstream::Context,
    dir: &Path,
    manifest: &Manifest,
    replicas: Option<usize>,
    say: &mut dyn FnMut(&str),
) -> Result<Summary> {
    let mut entries = BTreeMap::new();
    for entry in &manifest.streams {
        let kind = Kind::of(&entry.name).ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "the manifest names stream {:?}, which is not an eventbus stream",
                entry.name
            ))
        })?;
        entries.insert(kind, entry);
    }
    refuse_existing(js, manifest).await?;
    let mut summary = Summary::default();
    let mut restored: BTreeMap<Kind, RestoredStream> = BTreeMap::new();
    // 1. The buckets, read back.
    for kind in [Kind::SubscriptionsBucket, Kind::TopicsBucket] {
        if entries.contains_key(&kind) {
            let r = put(client, dir, entries[&kind], replicas, &mut summary, say).await?;
            restored.insert(kind, r);
        }
    }
    let (topic_store, topics) = read_bucket::<TopicMeta>(js, TOPICS_BUCKET, "t_").await?;
    let (sub_store, subs) = read_bucket::<SubscriptionMeta>(js, SUBSCRIPTIONS_BUCKET, "s").await?;
    let topic_metas: Vec<TopicMeta> = topics.iter().map(|(_, t)| t.clone()).collect();
    let sub_metas: Vec<SubscriptionMeta> = subs.iter().map(|(_, s)| s.clone()).collect();

    // 2. What the backup caught half made.
    let backed_up: BTreeSet<Kind> = entries.keys().copied().collect();
    let plan = plan(&backed_up, &topic_metas, &sub_metas);
    for &i in &plan.dropped_topics {
        let (key, t) = &topics[i];
        purge(topic_store.as_ref(), key).await?;
        summary.notes.push(format!(
            "topic {:?} left out: not all its partition streams are in the backup (it was \
             created while the backup ran)",
            t.name
        ));
    }
    let topic_names: BTreeMap<u32, &str> = topic_metas
        .iter()
        .map(|t| (t.id, t.name.as_str()))
        .collect();
    let sub_label = |s: &SubscriptionMeta| {
        format!(
            "subscription {:?} of topic {:?}",
            s.name,
            topic_names.get(&s.topic_id).copied().unwrap_or("(deleted)")
        )
    };
    for &i in &plan.dropped_subscriptions {
        let (key, s) = &subs[i];
        purge(sub_store.as_ref(), key).await?;
        summary.notes.push(format!(
            "{} left out: its topic or its dead-letter streams are not in the backup (created \
             or deleted while the backup ran)",
            sub_label(s)
        ));
    }
    for &kind in &plan.orphans {
        summary.notes.push(format!(
            "stream {} left out: no topic or subscription in the backup refers to it (deleted \
             while the backup ran)",
            name_of(kind)
        ));
    }

    // 3. The streams.
    for &kind in &plan.streams {
        let r = put(client, dir, entries[&kind], replicas, &mut summary, say).await?;
        restored.insert(kind, r);
    }

    // 4. Consumers against subscriptions.
    let dropped_subs: BTreeSet<usize> = plan.dropped_subscriptions.iter().copied().collect();
    let kept_subs: Vec<&(String, SubscriptionMeta)> = subs
        .iter()
        .enumerate()
        .filter(|(i, _)| !dropped_subs.contains(i))
        .map(|(_, s)| s)
        .collect();
    let dropped_topics: BTreeSet<usize> = plan.dropped_topics.iter().copied().collect();
    let kept_topics: Vec<&TopicMeta> = topic_metas
        .iter()
        .enumerate()
        .filter(|(i, _)| !dropped_topics.contains(i))
        .map(|(_, t)| t)
        .collect();
    let mut incomplete = BTreeSet::new();
    for t in &kept_topics {
        let owners: BTreeSet<u32> = kept_subs
            .iter()
            .filter(|(_, s)| s.topic_id == t.id)
            .map(|(_, s)| s.id)
            .collect();
        for p in 0..t.partitions {
            let kind = Kind::Partition {
                topic: t.id,
                partition: p,
            };
            let missing =
                check_consumers(js, kind, &restored[&kind], &owners, &mut summary).await?;
            incomplete.extend(missing);
        }
    }
    for (_, s) in &kept_subs {
        let kind = Kind::Subscription {
            id: s.id,
            redrive: true,
        };
        let owners = BTreeSet::from([s.id]);
        let missing = check_consumers(js, kind, &restored[&kind], &owners, &mut summary).await?;
        incomplete.extend(missing);
    }
    let topic_of: BTreeMap<u32, &TopicMeta> = kept_topics.iter().map(|t| (t.id, *t)).collect();
    for (key, s) in kept_subs.iter().filter(|(_, s)| incomplete.contains(&s.id)) {
        purge(sub_store.as_ref(), key).await?;
        let topic = topic_of[&s.topic_id];
        for p in 0..topic.partitions {
            let _ = js
                .delete_consumer_from_stream(consumer_name(s.id), stream_name(topic.id, p))
                .await;
        }
        dead_letters::delete_streams(js, s.id).await;
        for redrive in [false, true] {
            restored.remove(&Kind::Subscription { id: s.id, redrive });
        }
        summary.notes.push(format!(
            "{} left out: its consumer is missing on a stream (it was created while the backup \
             ran)",
            sub_label(s)
        ));
    }

    // 5. Every stream led, its leader counting each replica current. (A
    // follower of a stream just restored was seen empty for seconds while
    // its leader called it current; the CLI checks each server's own
    // state where it can, `server/src/cli/restore.rs`.)
    let deadline = tokio::time::Instant::now() + SETTLE_WAIT;
    for kind in restored.keys() {
        let name = name_of(*kind);
        if !caught_up(js, &name, deadline).await? {
            summary.notes.push(format!(
                "stream {name}: some replicas were still catching up after {} s; they go on by \
                 themselves (eventbus status shows their lag)",
                SETTLE_WAIT.as_secs()
            ));
        }
    }

    summary.names = restored.keys().map(|k| name_of(*k)).collect();
    summary.topics = kept_topics.len();
    summary.subscriptions = kept_subs.len() - incomplete.len();
    for (kind, r) in &restored {
        match kind {
            Kind::Partition { .. } => summary.events += r.messages,
            Kind::Subscription { redrive: false, .. } => summary.dead_letters += r.messages,
            Kind::Audit => summary.audit_records += r.messages,
            _ => {}
        }
    }
    Ok(summary)
}

/// Whether stream `name` has a leader and every replica is current,
/// waiting for it until `deadline`.
async fn caught_up(
    js: &jetstream::Context,
    name: &str,
    deadline: tokio::time::Instant,
) -> Result<bool> {
    loop {
        let mut stream = js
            .get_stream(name)
            .await
            .map_err(|e| nats_error("reading a restored stream", e))?;
        let info = stream
            .info()
            .await
            .map_err(|e| nats_error("reading a restored stream", e))?;
        let current = info.cluster.as_ref().is_none_or(|c| {
            (c.leader.is_some() || c.name.is_none()) && c.replicas.iter().all(|r| r.current)
        });
        if current {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Restores one stream, and says so.
async fn put(
    client: &async_nats::Client,
    dir: &Path,
    entry: &backup::StreamEntry,
    replicas: Option<usize>,
    summary: &mut Summary,
    say: &mut dyn FnMut(&str),
) -> Result<RestoredStream> {
    let r = restore_with_patience(client, dir, entry, replicas).await?;
    let held = match r.messages {
        0 => "empty".to_string(),
        n => format!("{n} messages (seq {}..={})", r.first_seq, r.last_seq),
    };
    say(&format!(
        "  {}: {held}, {} bytes, {} replicas",
        entry.name, r.bytes, r.replicas
    ));
    summary.streams += 1;
    summary.bytes += r.bytes;
    Ok(r)
}

/// [`backup::restore_stream`], done again while the cluster answers "no
/// responders" part-way (seen under load right after a stream's restore
/// began: the subject its chunks go to had no responder yet, or no longer
/// one). Nothing else writes the stream (the target held none of the
/// backup's streams, [`refuse_existing`]), so a partial one is deleted
/// first; another error ends the restore as before.
async fn restore_with_patience(
    client: &async_nats::Client,
    dir: &Path,
    entry: &backup::StreamEntry,
    replicas: Option<usize>,
) -> Result<RestoredStream> {
    let deadline = tokio::time::Instant::now() + crate::placement::PATIENCE;
    loop {
        match backup::restore_stream(client, dir, entry, replicas).await {
            Err(e)
                if e.to_string().contains("no responders")
                    && tokio::time::Instant::now() < deadline =>
            {
                tracing::debug!(stream = %entry.name, error = %e, "restoring the stream again");
                let js = jetstream::new(client.clone());
                if let Err(e) = js.delete_stream(&entry.name).await {
                    tracing::debug!(stream = %entry.name, error = %e, "no partial stream to delete");
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            done => return done,
        }
    }
}

/// Refuses a target that holds any of the backup's streams, naming them.
async fn refuse_existing(js: &jetstream::Context, manifest: &Manifest) -> Result<()> {
    let wanted: BTreeSet<&str> = manifest.streams.iter().map(|s| s.name.as_str()).collect();
    let mut there: Vec<String> = js
        .stream_names()
        .try_filter(|n| std::future::ready(wanted.contains(n.as_str())))
        .try_collect()
        .await
        .map_err(|e| nats_error("listing the target's streams", e))?;
    if there.is_empty() {
        return Ok(());
    }
    there.sort();
    let n = there.len();
    let shown = there
        .iter()
        .take(10)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    let more = if n > 10 { ", ..." } else { "" };
    Err(Error::AlreadyExists(format!(
        "the target cluster already has {n} of the backup's streams ({shown}{more}); nothing \
         was restored. Restore into a cluster without them: a new one, or delete them first \
         (stop its gateways; `nats stream rm NAME`)"
    )))
}

/// Every entry of `bucket` whose key starts with `prefix`, decoded, with its
/// key; none (and no store) when the backup had no such bucket. Read
/// message by message from the stream's leader: the replicas of a stream
/// just restored are still catching up, and a listing through a consumer
/// (`kv::Store::keys`) placed on one of them saw an empty bucket.
async fn read_bucket<T: serde::de::DeserializeOwned>(
    js: &jetstream::Context,
    bucket: &str,
    prefix: &str,
) -> Result<(Option<kv::Store>, Vec<(String, T)>)> {
    let doing = format!("reading the restored bucket {bucket}");
    let store = match js.get_key_value(bucket).await {
        Ok(s) => s,
        Err(e) if e.kind() == jetstream::context::KeyValueErrorKind::GetBucket => {
            return Ok((None, Vec::new()))
        }
        Err(e) => return Err(nats_error(&doing, e)),
    };
    let stream = js
        .get_stream(format!("KV_{bucket}"))
        .await
        .map_err(|e| nats_error(&doing, e))?;
    let subjects = format!("$KV.{bucket}.>");
    // The newest operation on each key.
    let mut latest: BTreeMap<String, Option<bytes::Bytes>> = BTreeMap::new();
    let mut seq = 1;
    loop {
        let found = stream
            .raw_message_builder()
            .sequence(seq)
            .next_by_subject(subjects.clone())
            .send()
            .await;
        let m = match found {
            Ok(m) => m,
            Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => break,
            Err(e) => return Err(nats_error(&doing, e)),
        };
        seq = m.sequence + 1;
        let Some(key) = m.subject.strip_prefix(&subjects[..subjects.len() - 1]) else {
            continue;
        };
        let removed = m
            .headers
            .get("KV-Operation")
            .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE");
        latest.insert(key.to_string(), (!removed).then_some(m.payload));
    }
    let mut out = Vec::new();
    for (key, value) in latest {
        let Some(value) = value.filter(|_| key.starts_with(prefix)) else {
            continue;
        };
        let meta = serde_json::from_slice(&value).map_err(|e| Error::CorruptMetadata {
            location: format!("{bucket}/{key}"),
            reason: e.to_string(),
        })?;
        out.push((key, meta));
    }
    Ok((Some(store), out))
}

async fn purge(store: Option<&kv::Store>, key: &str) -> Result<()> {
    if let Some(store) = store {
        store
            .purge(key)
            .await
            .map_err(|e| nats_error("removing a half-made entry", e))?;
    }
    Ok(())
}

/// Checks the consumers of a restored stream against the subscriptions
/// that own one there (`owners`): deletes those no subscription owns,
/// restarts one that runs past the stream's end, and returns the owners
/// whose consumer is missing.
async fn check_consumers(
    js: &jetstream::Context,
    kind: Kind,
    restored: &RestoredStream,
    owners: &BTreeSet<u32>,
    summary: &mut Summary,
) -> Result<BTreeSet<u32>> {
    let name = name_of(kind);
    let doing = format!("checking the consumers of restored stream {name}");
    let stream = js
        .get_stream(&name)
        .await
        .map_err(|e| nats_error(&doing, e))?;
    let deadline = tokio::time::Instant::now() + CONSUMERS_WAIT;
    let names: BTreeSet<String> = loop {
        let names: BTreeSet<String> = stream
            .consumer_names()
            .try_collect()
            .await
            .map_err(|e| nats_error(&doing, e))?;
        if names.len() as u64 >= restored.consumers || tokio::time::Instant::now() >= deadline {
            break names;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for consumer in &names {
        let Some(id) = consumer
            .strip_prefix('s')
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if !owners.contains(&id) {
            stream
                .delete_consumer(consumer)
                .await
                .map_err(|e| nats_error(&doing, e))?;
            summary.notes.push(format!(
                "consumer {consumer} on stream {name} deleted: no subscription in the backup \
                 owns it (deleted while the backup ran)"
            ));
        }
    }
    let mut missing = BTreeSet::new();
    for &id in owners {
        let consumer = consumer_name(id);
        if !names.contains(&consumer) {
            missing.insert(id);
            continue;
        }
        let info = stream
            .consumer_info(&consumer)
            .await
            .map_err(|e| nats_error(&doing, e))?;
        let last = restored.last_seq;
        if info.delivered.stream_sequence > last {
            let next = info.ack_floor.stream_sequence.min(last) + 1;
            stream
                .reset_consumer(&consumer, Some(next))
                .await
                .map_err(|e| nats_error(&doing, e))?;
            summary.notes.push(format!(
                "consumer {consumer} on stream {name} had delivered up to sequence {} past the \
                 stream's last {last} (events published while the backup ran); it restarts at \
                 sequence {next}",
                info.delivered.stream_sequence
            ));
        }
    }
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventbus_broker::{StartPosition, SubscriptionConfig};

    fn topic(id: u32, partitions: u32) -> TopicMeta {
        TopicMeta {
            id,
            name: format!("t{id}"),
            partitions,
            retention: Default::default(),
            created_ms: 0,
            creator: None,
        }
    }

    fn sub(id: u32, topic_id: u32) -> SubscriptionMeta {
        SubscriptionMeta {
            id,
            topic_id,
            name: format!("s{id}"),
            config: SubscriptionConfig::default(),
            paused: false,
            start_position: StartPosition::Earliest,
            created_ms: 0,
            creator: None,
        }
    }

    fn p(topic: u32, partition: u32) -> Kind {
        Kind::Partition { topic, partition }
    }

    fn q(id: u32, redrive: bool) -> Kind {
        Kind::Subscription { id, redrive }
    }

    #[test]
    fn what_the_backup_caught_half_made_is_left_out() {
        let backup: BTreeSet<Kind> = [
            // Topic 1 complete, with subscriptions 1 (complete) and 2 (no
            // redrive queue: created while the backup ran).
            p(1, 0),
            p(1, 1),
            q(1, false),
            q(1, true),
            q(2, false),
            // Topic 2 lacks partition 1 (created while the backup ran);
            // its subscription 3 goes with it.
            p(2, 0),
            q(3, false),
            q(3, true),
            // Topic 3 and subscription 4 were deleted: no entries.
            p(3, 0),
            q(4, false),
            q(4, true),
            Kind::Audit,
            Kind::SubscriptionsBucket,
            Kind::TopicsBucket,
        ]
        .into();
        let topics = [topic(1, 2), topic(2, 2)];
        let subs = [sub(1, 1), sub(2, 1), sub(3, 2)];
        let plan = plan(&backup, &topics, &subs);
        assert_eq!(plan.dropped_topics, vec![1]);
        assert_eq!(plan.dropped_subscriptions, vec![1, 2]);
        assert_eq!(
            plan.streams,
            vec![p(1, 0), p(1, 1), q(1, false), q(1, true), Kind::Audit]
        );
        assert_eq!(
            plan.orphans,
            vec![
                p(2, 0),
                p(3, 0),
                q(2, false),
                q(3, false),
                q(3, true),
                q(4, false),
                q(4, true)
            ]
        );
    }

    #[test]
    fn a_consistent_backup_is_restored_whole() {
        let backup: BTreeSet<Kind> = [
            p(1, 0),
            q(1, false),
            q(1, true),
            Kind::Audit,
            Kind::SubscriptionsBucket,
            Kind::TopicsBucket,
        ]
        .into();
        let plan = plan(&backup, &[topic(1, 1)], &[sub(1, 1)]);
        assert_eq!(
            plan,
            Plan {
                streams: vec![p(1, 0), q(1, false), q(1, true), Kind::Audit],
                ..Default::default()
            }
        );
        for k in &backup {
            assert_eq!(Kind::of(&name_of(*k)), Some(*k));
        }
    }
}
