//! The audit log on JetStream: one stream, `EB_AUDIT` on subject
//! `eb.audit`, replicated like the topics, every record one JSON message
//! whose stream sequence is its id. Gateways append concurrently; the
//! stream orders them. Listing walks the stream from the cursor's
//! sequence (or the start time) with an ordered consumer.

use async_nats::jetstream::{self, consumer::pull, consumer::DeliverPolicy, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use eventbus_broker::audit::{MAX_PAGE_RECORDS, MAX_SCAN_RECORDS};
use eventbus_broker::{AuditCursor, AuditPage, AuditQuery, AuditRecord, Error, Result};
use futures_util::StreamExt as _;

use crate::nats_error;

pub const STREAM: &str = "EB_AUDIT";
const SUBJECT: &str = "eb.audit";

pub async fn open(js: &jetstream::Context, replicas: usize) -> Result<()> {
    js.get_or_create_stream(stream::Config {
        name: STREAM.to_string(),
        subjects: vec![SUBJECT.to_string()],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        allow_direct: true,
        deny_delete: true,
        ..Default::default()
    })
    .await
    .map_err(|e| nats_error("opening the audit stream", e))?;
    Ok(())
}

/// Appends each record, in order; durable (quorum) when it returns.
pub async fn append(js: &jetstream::Context, records: Vec<AuditRecord>) -> Result<()> {
    for record in records {
        let body = serde_json::to_vec(&record).map_err(|e| Error::Storage(e.to_string()))?;
        crate::acked::publish(js, SUBJECT, HeaderMap::new(), Bytes::from(body))
            .await
            .map_err(|e| nats_error("appending an audit record", e))?;
    }
    Ok(())
}

pub async fn list(js: &jetstream::Context, query: AuditQuery) -> Result<AuditPage> {
    let mut stream = js
        .get_stream(STREAM)
        .await
        .map_err(|e| nats_error("opening the audit stream", e))?;
    let last = stream
        .info()
        .await
        .map_err(|e| nats_error("reading the audit stream", e))?
        .state
        .last_sequence;
    let limit = match query.limit {
        0 => MAX_PAGE_RECORDS,
        n => n.min(MAX_PAGE_RECORDS),
    };
    let deliver_policy = match (&query.after, query.start_ms) {
        (Some(after), _) => DeliverPolicy::ByStartSequence {
            start_sequence: after.id + 1,
        },
        (None, Some(ms)) => DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .map_err(|e| Error::invalid("start_time", e.to_string()))?,
        },
        (None, None) => DeliverPolicy::All,
    };
    let mut page = AuditPage {
        records: Vec::new(),
        next: None,
    };
    if last == 0 || query.after.as_ref().is_some_and(|a| a.id >= last) {
        return Ok(page);
    }
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| nats_error("reading the audit stream", e))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| nats_error("reading the audit stream", e))?;
    let mut scanned = 0;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| nats_error("reading the audit stream", e))?;
        let seq = message
            .info()
            .map_err(|e| nats_error("reading the audit stream", e))?
            .stream_sequence;
        let mut record: AuditRecord = serde_json::from_slice(&message.payload)
            .map_err(|e| Error::corruption(format!("{STREAM} sequence {seq}"), e))?;
        record.id = seq;
        scanned += 1;
        if query.end_ms.is_some_and(|end| record.time_ms >= end) {
            break;
        }
        let cursor = AuditCursor {
            time_ms: record.time_ms,
            id: seq,
        };
        if query.matches(&record) {
            page.records.push(record);
        }
        if seq >= last {
            break;
        }
        if page.records.len() >= limit || scanned >= MAX_SCAN_RECORDS {
            page.next = Some(cursor);
            break;
        }
    }
    Ok(page)
}
