//! Unit tests of the log: appends, reads, reopen, time lookups, corruption,
//! deletes and limits, on a real RocksDB in a temp dir.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::keys::{self, Cf};
use crate::types::{Durability, NewEvent, PartitionId, StoredEvent};

fn options(dir: &Path) -> Options {
    let mut o = Options::new(dir);
    o.default_partitions = 2;
    o
}

fn ev(key: &str, payload: &str) -> NewEvent {
    NewEvent {
        key: key.into(),
        event_type: "t".into(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        ..Default::default()
    }
}

async fn open(dir: &Path) -> Log {
    let o = options(dir);
    tokio::task::spawn_blocking(move || Log::open(o))
        .await
        .unwrap()
        .unwrap()
}

/// Why the data dir at `dir` refuses to open.
async fn open_refused(dir: &Path) -> Error {
    let o = options(dir);
    tokio::task::spawn_blocking(move || Log::open(o))
        .await
        .unwrap()
        .err()
        .expect("refuses to open")
}

/// Topic "t" with one partition.
async fn one_partition_topic(log: &Log) -> Arc<TopicState> {
    log.create_topic(
        "t",
        TopicConfig {
            partitions: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

fn read_all(log: &Log, topic: &TopicState, p: PartitionId) -> Vec<StoredEvent> {
    log.read(topic, p, 0, usize::MAX, usize::MAX).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_read_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path()).await;
    let topic = log
        .create_topic("orders", TopicConfig::default())
        .await
        .unwrap();
    assert_eq!(topic.partition_count(), 2);
    let res = log
        .append(&topic, &[ev("a", "1"), ev("a", "2"), ev("b", "3")])
        .await
        .unwrap();
    assert_eq!(
        res[0].partition, res[1].partition,
        "same key, same partition"
    );
    assert_eq!(res[1].offset, res[0].offset + 1);
    let p = res[0].partition;
    let got = read_all(&log, &topic, p);
    let payloads: Vec<_> = got.iter().map(|e| e.payload.clone()).collect();
    assert!(payloads.starts_with(&[Bytes::from("1"), Bytes::from("2")]));
    assert!(got
        .windows(2)
        .all(|w| w[0].publish_time <= w[1].publish_time));
    let incarnation = log.incarnation();
    log.close();

    let log = open(dir.path()).await;
    assert_eq!(log.incarnation(), incarnation + 1);
    let topic = log.topic("orders").expect("topic survives reopen");
    let total: u64 = topic.partitions.iter().map(|t| t.end()).sum();
    assert_eq!(total, 3);
    assert_eq!(
        read_all(&log, &topic, p).len() as u64,
        topic.partitions[p as usize].end()
    );
    // Offsets continue densely after reopen.
    let end_before = topic.partitions[p as usize].end();
    let more = log.append(&topic, &[ev("a", "4")]).await.unwrap();
    assert_eq!(more[0].offset, end_before);
    log.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_get_dense_unique_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path()).await;
    let topic = one_partition_topic(&log).await;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (log, topic) = (log.clone(), topic.clone());
        tasks.push(tokio::spawn(async move {
            let mut offsets = Vec::new();
            for i in 0..50 {
                let r = log
                    .append(&topic, &[ev("", &format!("{w}-{i}"))])
                    .await
                    .unwrap();
                offsets.push(r[0].offset);
            }
            offsets
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let mine = t.await.unwrap();
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "each publisher sees its order"
        );
        all.extend(mine);
    }
    all.sort();
    assert_eq!(all, (0..400).collect::<Vec<_>>());
    assert_eq!(read_all(&log, &topic, 0).len(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_stop_at_the_committed_end_and_respect_limits() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path()).await;
    let topic = one_partition_topic(&log).await;
    let events: Vec<_> = (0..10).map(|i| ev("", &i.to_string())).collect();
    log.append(&topic, &events).await.unwrap();
    assert_eq!(log.read(&topic, 0, 3, 4, usize::MAX).unwrap().len(), 4);
    assert_eq!(
        log.read(&topic, 0, 3, 100, 1).unwrap().len(),
        1,
        "byte limit still returns one"
    );
    assert!(log.read(&topic, 0, 10, 100, usize::MAX).unwrap().is_empty());
    let mut rx = topic.watch_tail();
    rx.borrow_and_update();
    log.append(&topic, &[ev("", "x")]).await.unwrap();
    assert!(rx.has_changed().unwrap(), "a commit wakes tailing readers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_lookups_find_the_first_event_at_or_after_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path()).await;
    let topic = one_partition_topic(&log).await;
    let mut times = Vec::new();
    for i in 0..6 {
        let r = log.append(&topic, &[ev("", &i.to_string())]).await.unwrap();
        times.push(read_all(&log, &topic, 0)[r[0].offset as usize].publish_time);
        tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    }
    for (offset, &t) in times.iter().enumerate() {
        assert_eq!(log.offset_for_time(&topic, 0, t).unwrap(), offset as u64);
    }
    assert_eq!(log.offset_for_time(&topic, 0, 0).unwrap(), 0);
    assert_eq!(
        log.offset_for_time(&topic, 0, times[5] + 1).unwrap(),
        6,
        "past the tail: the end"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_is_detected_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path()).await;
    let topic = one_partition_topic(&log).await;
    log.append(&topic, &[ev("", "precious")]).await.unwrap();
    // Flip a payload byte behind the log's back.
    let key = keys::record_key(topic.id(), 0, 0);
    let mut v = log.db().get_cf(log.cf(Cf::Records), key).unwrap().unwrap();
    *v.last_mut().unwrap() ^= 1;
    log.db().put_cf(log.cf(Cf::Records), key, v).unwrap();
    let err = log.read(&topic, 0, 0, 10, usize::MAX).unwrap_err();
    assert!(matches!(err, Error::Corruption { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_record_key_refuses_to_open_instead_of_an_empty_partition() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path()).await;
    let topic = one_partition_topic(&log).await;
    log.append(&topic, &[ev("", "a"), ev("", "b")])
        .await
        .unwrap();
    // The last key of the partition (the one batch, at offset 0) grows a
    // stray byte.
    let good = keys::record_key(topic.id(), 0, 0);
    let v = log.db().get_cf(log.cf(Cf::Records), good).unwrap().unwrap();
    let mut bad = good.to_vec();
    bad.push(0);
    log.db().put_cf(log.cf(Cf::Records), &bad, v).unwrap();
    log.close();
    let err = open_refused(dir.path()).await;
    assert!(matches!(err, Error::CorruptMetadata { .. }), "{err}");
    assert!(err.to_string().contains("malformed record key"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_topic_removes_data_and_never_reuses_ids() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path()).await;
    let old = log.create_topic("t", TopicConfig::default()).await.unwrap();
    log.append(&old, &[ev("", "x")]).await.unwrap();
    log.delete_topic("t", &[]).await.unwrap();
    assert!(log.topic("t").is_none());
    let err = log.append(&old, &[ev("", "late")]).await.unwrap_err();
    assert!(
        matches!(err, Error::TopicNotFound(_)),
        "appends to a deleted topic fail: {err}"
    );
    let new = log.create_topic("t", TopicConfig::default()).await.unwrap();
    assert!(new.id() > old.id());
    assert!(new.partitions.iter().all(|p| p.end() == 0));
    log.close();
    let log = open(dir.path()).await;
    assert_eq!(log.topic("t").unwrap().id(), new.id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_mode_appends_and_limits_event_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(dir.path());
    o.durability = Durability::Buffered;
    o.max_event_bytes = 100;
    let log = tokio::task::spawn_blocking(move || Log::open(o))
        .await
        .unwrap()
        .unwrap();
    let topic = log.topic_or_create("auto").await.unwrap();
    log.append(&topic, &[ev("", "small")]).await.unwrap();
    let err = log
        .append(&topic, &[ev("", &"x".repeat(200))])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidArgument {
                field: "events",
                ..
            }
        ),
        "{err}"
    );
}

/// In fsync mode a write that asked for no sync (an ack-state flush) is
/// synced even when nothing else syncs the WAL: by the syncer's idle sync
/// (`writer::syncer::IDLE_SYNC`, 50 ms), or at the latest by the synced-mark
/// keeper's (1 s). The power-loss tier checks the shorter bound (acked events
/// come back only within its grace).
#[tokio::test]
async fn in_fsync_mode_an_unsynced_write_is_synced_without_a_publish() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path()).await;
    assert_eq!(log.options().durability, Durability::Fsync);
    let acks = crate::delivery::acks::PartitionAcks::starting_at(5);
    let update = crate::writer::Update::PutAckState {
        sub: crate::types::SubscriptionId(1),
        partition: 0,
        acks,
    };
    log.write(vec![update], false).await.unwrap();
    let written = log.inner.db.latest_sequence_number();
    assert!(written > log.inner.synced_mark.synced(), "not synced yet");
    let started = std::time::Instant::now();
    while log.inner.synced_mark.synced() < written {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the unsynced write was never synced"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

fn audit(principal: &str, time_ms: u64) -> eventbus_broker::AuditRecord {
    eventbus_broker::AuditRecord {
        time_ms,
        principal: principal.into(),
        action: "CreateTopic".into(),
        target: "orders".into(),
        result: "OK".into(),
        ..Default::default()
    }
}

/// Every page of `query`, following the cursors.
fn audit_all(log: &Log, mut query: eventbus_broker::AuditQuery) -> Vec<Vec<u64>> {
    let mut pages = Vec::new();
    loop {
        let page = log.audit_page(&query).unwrap();
        pages.push(page.records.iter().map(|r| r.id).collect());
        match page.next {
            Some(next) => query.after = Some(next),
            None => return pages,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_records_page_in_order_filter_and_keep_their_ids_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path()).await;
    for i in 0..25u64 {
        let who = if i % 5 == 0 { "alice" } else { "bob" };
        log.append_audit(vec![audit(who, 1_000 + i)]).await.unwrap();
    }
    let query = |limit| eventbus_broker::AuditQuery {
        limit,
        ..Default::default()
    };
    let pages = audit_all(&log, query(10));
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 5]);
    assert_eq!(pages.concat(), (1..=25).collect::<Vec<_>>());

    let alice = eventbus_broker::AuditQuery {
        principal: Some("alice".into()),
        ..query(2)
    };
    assert_eq!(audit_all(&log, alice).concat(), [1, 6, 11, 16, 21]);
    let window = eventbus_broker::AuditQuery {
        start_ms: Some(1_010),
        end_ms: Some(1_013),
        ..query(100)
    };
    assert_eq!(audit_all(&log, window), [vec![11, 12, 13]]);
    log.close();

    let log = open(dir.path()).await;
    log.append_audit(vec![audit("carol", 5)]).await.unwrap();
    let last = log.audit_page(&query(1000)).unwrap().records.pop().unwrap();
    // The next id, and no earlier than the newest record's time.
    assert_eq!(
        (last.id, last.time_ms, last.principal.as_str()),
        (26, 1_024, "carol")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_append_is_synced_before_it_returns_even_when_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(dir.path());
    o.durability = Durability::Buffered;
    let log = tokio::task::spawn_blocking(move || Log::open(o))
        .await
        .unwrap()
        .unwrap();
    // A buffered append first, so there is something unsynced to cover.
    let topic = log.topic_or_create("t").await.unwrap();
    log.append(&topic, &[ev("", "x")]).await.unwrap();
    log.append_audit(vec![audit("ops", 1)]).await.unwrap();
    assert!(log.inner.synced_mark.synced() >= log.inner.db.latest_sequence_number());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_retention_drops_only_older_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path()).await;
    assert!(!log.trim_audit(u64::MAX).await.unwrap(), "nothing to trim");
    for ms in [100, 200, 300] {
        log.append_audit(vec![audit("ops", ms)]).await.unwrap();
    }
    assert!(log.trim_audit(250).await.unwrap());
    assert!(!log.trim_audit(250).await.unwrap());
    let left = log.audit_page(&Default::default()).unwrap().records;
    assert_eq!(
        left.iter().map(|r| (r.id, r.time_ms)).collect::<Vec<_>>(),
        [(3, 300)]
    );
}

/// A data dir from before the audit log: RocksDB without the `audit`
/// column family. It opens, gets the family, and takes records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_without_the_audit_column_family_opens_and_gets_one() {
    let dir = tempfile::tempdir().unwrap();
    let old = tempfile::tempdir().unwrap();
    {
        // Today's store, then the same files as they were before `audit`.
        let log = open(dir.path()).await;
        let topic = one_partition_topic(&log).await;
        log.append(&topic, &[ev("", "kept")]).await.unwrap();
        log.close();
        let mut o = rocksdb::Options::default();
        o.create_if_missing(true);
        o.create_missing_column_families(true);
        let names = ["meta", "records", "time_index", "subs", "dlq", "dedup"];
        let db = rocksdb::DB::open_cf(&o, old.path(), names).unwrap();
        let src = rocksdb::DB::open_cf(
            &rocksdb::Options::default(),
            dir.path(),
            names.iter().chain(["audit"].iter()),
        )
        .unwrap();
        for name in names {
            let (from, to) = (src.cf_handle(name).unwrap(), db.cf_handle(name).unwrap());
            for item in src.iterator_cf(from, rocksdb::IteratorMode::Start) {
                let (k, v) = item.unwrap();
                db.put_cf(to, k, v).unwrap();
            }
        }
        db.flush_wal(true).unwrap();
        let listed = rocksdb::DB::list_cf(&rocksdb::Options::default(), old.path()).unwrap();
        assert!(!listed.contains(&"audit".to_string()), "{listed:?}");
    }
    let log = open(old.path()).await;
    let topic = log.topic("t").expect("the topic survived");
    assert_eq!(read_all(&log, &topic, 0)[0].payload, Bytes::from("kept"));
    assert!(log
        .audit_page(&Default::default())
        .unwrap()
        .records
        .is_empty());
    log.append_audit(vec![audit("ops", 7)]).await.unwrap();
    assert_eq!(
        log.audit_page(&Default::default()).unwrap().records[0].id,
        1
    );
}

fn offsets_and_payloads(events: &[StoredEvent]) -> Vec<(u64, String)> {
    events
        .iter()
        .map(|e| (e.offset, String::from_utf8_lossy(&e.payload).into_owned()))
        .collect()
}

fn stored_values(log: &Log) -> usize {
    log.db()
        .iterator_cf(log.cf(Cf::Records), rocksdb::IteratorMode::Start)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_append_is_one_batch_read_from_any_offset_within_limits_and_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path()).await;
    let topic = one_partition_topic(&log).await;
    let events: Vec<_> = (0..10).map(|i| ev("", &format!("e{i}"))).collect();
    log.append(&topic, &events).await.unwrap();
    assert_eq!(stored_values(&log), 1, "ten events, one record batch");
    for from in 0..10u64 {
        let got = log.read(&topic, 0, from, 3, usize::MAX).unwrap();
        let want: Vec<_> = (from..(from + 3).min(10))
            .map(|o| (o, format!("e{o}")))
            .collect();
        assert_eq!(offsets_and_payloads(&got), want, "from {from}");
    }
    let got = log.read(&topic, 0, 4, 10, 1).unwrap();
    assert_eq!(offsets_and_payloads(&got), vec![(4, "e4".to_string())]);
    log.close();

    let log = open(dir.path()).await;
    let topic = log.topic("t").unwrap();
    assert_eq!(
        topic.partitions[0].end(),
        10,
        "the batch's count gives the end"
    );
    let r = log.append(&topic, &[ev("", "e10")]).await.unwrap();
    assert_eq!(r[0].offset, 10);
    let all = read_all(&log, &topic, 0);
    let want: Vec<_> = (0..11).map(|o| (o, format!("e{o}"))).collect();
    assert_eq!(offsets_and_payloads(&all), want);
    assert!(all
        .windows(2)
        .all(|w| w[0].publish_time <= w[1].publish_time));
    let t = all[7].publish_time;
    let first_at_t = all.iter().position(|e| e.publish_time >= t).unwrap() as u64;
    assert_eq!(log.offset_for_time(&topic, 0, t).unwrap(), first_at_t);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_whole_batches_and_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path()).await;
    let topic = log
        .create_topic(
            "t",
            TopicConfig {
                partitions: 1,
                retention: eventbus_broker::Retention {
                    max_age_ms: None,
                    max_bytes: Some(1),
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // Batches [0, 3), [3, 5) and [5, 6).
    for n in [3, 2, 1] {
        let events: Vec<_> = (0..n).map(|_| ev("", "x")).collect();
        log.append(&topic, &events).await.unwrap();
    }
    let removed = log
        .apply_retention(&topic, 0, crate::meta::now_ms())
        .await
        .unwrap();
    assert_eq!(removed, 5, "both older batches go, the newest stays");
    assert_eq!(topic.partitions[0].start(), 5);
    assert_eq!(
        offsets_and_payloads(&read_all(&log, &topic, 0)),
        vec![(5, "x".into())]
    );
    log.close();
    let log = open(dir.path()).await;
    let topic = log.topic("t").unwrap();
    assert_eq!(
        (topic.partitions[0].start(), topic.partitions[0].end()),
        (5, 6)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_1_data_dir_opens_reads_as_before_and_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path()).await;
    let topic = one_partition_topic(&log).await;
    // The data dir as format 1 wrote it: one sealed record per value.
    for i in 0..3u64 {
        let mut r = crate::codec::encode_record(&ev("", &format!("old{i}")));
        crate::codec::seal_record(&mut r, 1_000 + i);
        let key = keys::record_key(topic.id(), 0, i);
        log.db().put_cf(log.cf(Cf::Records), key, &r).unwrap();
    }
    let version = keys::meta_key(keys::MetaKind::FormatVersion);
    log.db()
        .put_cf(log.cf(Cf::Meta), version, 1u32.to_be_bytes())
        .unwrap();
    log.close();

    let log = open(dir.path()).await;
    let topic = log.topic("t").unwrap();
    assert_eq!(topic.partitions[0].end(), 3);
    let r = log.append(&topic, &[ev("", "new")]).await.unwrap();
    assert_eq!(r[0].offset, 3);
    let all = read_all(&log, &topic, 0);
    assert_eq!(
        offsets_and_payloads(&all),
        vec![
            (0, "old0".into()),
            (1, "old1".into()),
            (2, "old2".into()),
            (3, "new".into())
        ]
    );
    assert_eq!(all[2].publish_time, 1_002);
    let stamp = log.db().get_cf(log.cf(Cf::Meta), version).unwrap();
    assert_eq!(stamp.as_deref(), Some(&3u32.to_be_bytes()[..]), "upgraded");
    // A format from a newer build is refused, with what to do.
    log.db()
        .put_cf(log.cf(Cf::Meta), version, 4u32.to_be_bytes())
        .unwrap();
    log.close();
    let err = open_refused(dir.path()).await;
    assert!(err.to_string().contains("data dir has format 4"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_2_data_dirs_idempotency_keys_still_deduplicate_after_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path()).await;
    let topic = one_partition_topic(&log).await;
    let keyed = |idempotency_key: &str| NewEvent {
        idempotency_key: idempotency_key.into(),
        ..ev("", idempotency_key)
    };
    let first = log.append(&topic, &[ev("", "old")]).await.unwrap();
    // Format 2 stored a key entry per key: partition, offset, publish_ms.
    let now = crate::meta::now_ms();
    let window = crate::types::saturating_millis(options(dir.path()).dedup_window);
    let mut entry = 0u32.to_be_bytes().to_vec();
    entry.extend_from_slice(&first[0].offset.to_be_bytes());
    entry.extend_from_slice(&now.to_be_bytes());
    let key = keys::dedup_key(topic.id(), now / window, "old");
    log.db().put_cf(log.cf(Cf::Dedup), key, entry).unwrap();
    let version = keys::meta_key(keys::MetaKind::FormatVersion);
    log.db()
        .put_cf(log.cf(Cf::Meta), version, 2u32.to_be_bytes())
        .unwrap();
    log.close();

    let log = open(dir.path()).await;
    let topic = log.topic("t").unwrap();
    let again = log.append(&topic, &[keyed("old")]).await.unwrap();
    assert!(again[0].duplicate, "the key entry is still looked up");
    assert_eq!(again[0].offset, first[0].offset);
    let new = log.append(&topic, &[keyed("new")]).await.unwrap();
    assert!(!new[0].duplicate);
    let retry = log.append(&topic, &[keyed("new")]).await.unwrap();
    assert!(retry[0].duplicate && retry[0].offset == new[0].offset);
    let stamp = log.db().get_cf(log.cf(Cf::Meta), version).unwrap();
    assert_eq!(stamp.as_deref(), Some(&3u32.to_be_bytes()[..]), "upgraded");
    log.close();

    // After a restart the new key is read back from its group value.
    let log = open(dir.path()).await;
    let topic = log.topic("t").unwrap();
    let retry = log.append(&topic, &[keyed("new")]).await.unwrap();
    assert!(retry[0].duplicate && retry[0].offset == new[0].offset);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hot_tail_serves_exactly_what_rocksdb_holds_and_is_empty_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path()).await;
    let topic = one_partition_topic(&log).await;
    // Nothing is kept while no subscription of the topic has members.
    log.append(&topic, &[ev("", "unread")]).await.unwrap();
    assert!(log.read_hot(&topic, 0, 0, 10, usize::MAX).is_none());
    let mut reader = crate::topic::LiveReader::new(topic.clone());
    reader.set(true);
    // Batches [1, 2), [2, 5), [5, 10), [10, 17), with keys, attributes and
    // payloads of different sizes.
    for n in [1usize, 3, 5, 7] {
        let events: Vec<_> = (0..n)
            .map(|i| {
                let mut e = ev(&format!("k{i}"), &"p".repeat(i * 10 + 1));
                e.attributes.insert("n".into(), n.to_string());
                e
            })
            .collect();
        log.append(&topic, &events).await.unwrap();
    }
    assert!(
        log.read_hot(&topic, 0, 0, 10, usize::MAX).is_none(),
        "0 was not kept"
    );
    for from in 1..17u64 {
        for (max_events, max_bytes) in [(usize::MAX, usize::MAX), (2, usize::MAX), (100, 1)] {
            let hot = log
                .read_hot(&topic, 0, from, max_events, max_bytes)
                .expect("all of it is hot")
                .unwrap();
            let cold = log.read(&topic, 0, from, max_events, max_bytes).unwrap();
            assert_eq!(
                hot, cold,
                "from {from}, {max_events} events, {max_bytes} bytes"
            );
        }
    }
    let all = log.read_hot(&topic, 0, 1, usize::MAX, usize::MAX);
    assert_eq!(all.unwrap().unwrap().len(), 16);
    // The last member left: the next commit empties the tail.
    reader.set(false);
    log.append(&topic, &[ev("", "unread")]).await.unwrap();
    assert!(log.read_hot(&topic, 0, 10, 10, usize::MAX).is_none());
    drop(reader);
    log.close();

    let log = open(dir.path()).await;
    let topic = log.topic("t").unwrap();
    let mut reader = crate::topic::LiveReader::new(topic.clone());
    reader.set(true);
    assert!(
        log.read_hot(&topic, 0, 1, usize::MAX, usize::MAX).is_none(),
        "nothing is hot after a reopen: RocksDB serves it"
    );
    log.append(&topic, &[ev("", "new")]).await.unwrap();
    assert!(log.read_hot(&topic, 0, 17, 10, usize::MAX).is_none());
    let hot = log
        .read_hot(&topic, 0, 18, 10, usize::MAX)
        .unwrap()
        .unwrap();
    assert_eq!(offsets_and_payloads(&hot), vec![(18, "new".into())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_hot_tail_budget_every_read_goes_to_rocksdb() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(dir.path());
    o.hot_tail_bytes = 0;
    let log = tokio::task::spawn_blocking(move || Log::open(o))
        .await
        .unwrap()
        .unwrap();
    let topic = one_partition_topic(&log).await;
    let mut reader = crate::topic::LiveReader::new(topic.clone());
    reader.set(true);
    log.append(&topic, &[ev("", "a"), ev("", "b")])
        .await
        .unwrap();
    assert!(log.read_hot(&topic, 0, 0, 10, usize::MAX).is_none());
    assert_eq!(read_all(&log, &topic, 0).len(), 2);
}
