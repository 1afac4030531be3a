//! The audit log in the `audit` column family: records keyed by time and
//! id ([`keys::audit_key`]), appended with a synced write whatever the
//! durability mode, listed a page at a time, trimmed by age.
//!
//! Appends are serialised (one at a time, id and time assigned under the
//! lock and held through the write), so a record becomes readable only
//! after every record before it: a listing that paged past a key never
//! misses one committed later with a smaller key.

use eventbus_broker::audit::{MAX_PAGE_BYTES, MAX_SCAN_RECORDS};
use eventbus_broker::{AuditCursor, AuditPage, AuditQuery, AuditRecord};
use rocksdb::{ReadOptions, DB};

use crate::error::{storage, Error, Result};
use crate::keys::{self, Cf};
use crate::types::UnixMillis;
use crate::writer::Update;

use super::{corrupt_meta, Log};

/// The newest record's time and the next id: times never go back in log
/// order, ids only go up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct AuditClock {
    last_ms: UnixMillis,
    next_id: u64,
}

impl AuditClock {
    /// The clock after the newest stored record (the last key: times never
    /// go back, so it also holds the highest id). Blocking.
    pub(super) fn load(db: &DB) -> Result<AuditClock> {
        let cf = db.cf_handle(Cf::Audit.name()).expect("audit cf");
        let mut it = db.raw_iterator_cf(cf);
        it.seek_to_last();
        let clock = match it.key() {
            Some(k) => {
                let (last_ms, id) = keys::parse_audit_key(k).ok_or_else(|| {
                    corrupt_meta("audit log", format!("malformed audit key {k:02x?}"))
                })?;
                AuditClock {
                    last_ms,
                    next_id: id + 1,
                }
            }
            None => AuditClock {
                last_ms: 0,
                next_id: 1,
            },
        };
        it.status().map_err(storage)?;
        Ok(clock)
    }

    /// Gives `record` the next id and a time no earlier than the last one.
    fn stamp(&mut self, record: &mut AuditRecord) {
        record.time_ms = record.time_ms.max(self.last_ms);
        record.id = self.next_id;
        self.last_ms = record.time_ms;
        self.next_id += 1;
    }
}

impl Log {
    /// Appends `records` in one synced write (even with `durability =
    /// buffered`): each gets the next id and a time no earlier than the
    /// newest record's. Returns once they are durable.
    pub async fn append_audit(&self, records: Vec<AuditRecord>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut clock = self.inner.audit.lock().await;
        let mut next = *clock;
        let updates = records
            .into_iter()
            .map(|r| {
                let mut r = r.bounded();
                next.stamp(&mut r);
                Update::PutAudit(r)
            })
            .collect();
        self.write(updates, true).await?;
        *clock = next;
        Ok(())
    }

    /// Drops every audit record older than `before_ms`, when there is one
    /// (so an idle log gets no range tombstone per pass). Not synced: a
    /// crash at worst keeps records a little longer. Returns whether it
    /// trimmed.
    pub async fn trim_audit(&self, before_ms: UnixMillis) -> Result<bool> {
        let log = self.clone();
        let oldest = tokio::task::spawn_blocking(move || log.oldest_audit_ms())
            .await
            .map_err(|_| Error::ShuttingDown)??;
        if oldest.is_none_or(|ms| ms >= before_ms) {
            return Ok(false);
        }
        self.write(vec![Update::TrimAudit { before_ms }], false)
            .await?;
        Ok(true)
    }

    /// The time of the oldest audit record. Blocking.
    fn oldest_audit_ms(&self) -> Result<Option<UnixMillis>> {
        let mut it = self.inner.db.raw_iterator_cf(self.cf(Cf::Audit));
        it.seek_to_first();
        let oldest = it.key().and_then(keys::parse_audit_key).map(|(ms, _)| ms);
        it.status().map_err(storage)?;
        Ok(oldest)
    }

    /// One page of audit records, oldest first; see [`AuditPage`]. Blocking.
    pub fn audit_page(&self, query: &AuditQuery) -> Result<AuditPage> {
        let limit = query.page_limit();
        let mut ro = ReadOptions::default();
        if let Some(end) = query.end_ms {
            ro.set_iterate_upper_bound(keys::audit_key(end, 0).to_vec());
        }
        let mut it = self.inner.db.raw_iterator_cf_opt(self.cf(Cf::Audit), ro);
        let from = keys::audit_key(query.start_ms.unwrap_or(0), 0);
        match query.after {
            Some(after) if keys::audit_key(after.time_ms, after.id) >= from => {
                it.seek(keys::audit_key(after.time_ms, after.id));
                if it.key() == Some(&keys::audit_key(after.time_ms, after.id)[..]) {
                    it.next();
                }
            }
            _ => it.seek(from),
        }
        let mut page = AuditPage::default();
        let (mut bytes, mut scanned) = (0usize, 0usize);
        let mut last_seen = None;
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let full = page.records.len() >= limit || bytes >= MAX_PAGE_BYTES;
            if full || scanned >= MAX_SCAN_RECORDS {
                // More follow: go on after what was looked at last.
                page.next = last_seen;
                break;
            }
            let (time_ms, id) = keys::parse_audit_key(k).ok_or_else(|| {
                corrupt_meta("audit log", format!("malformed audit key {k:02x?}"))
            })?;
            scanned += 1;
            last_seen = Some(AuditCursor { time_ms, id });
            let record: AuditRecord = serde_json::from_slice(v)
                .map_err(|e| Error::corruption(format!("audit record {time_ms}/{id}"), e))?;
            if query.matches(&record) {
                bytes += record.size_bytes();
                page.records.push(record);
            }
            it.next();
        }
        it.status().map_err(storage)?;
        Ok(page)
    }
}
