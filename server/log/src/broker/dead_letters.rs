//! The dead-letter queue of a subscription: listing, reading, purging and
//! redriving its entries. Changes go through the admin lock, so the shared
//! entry count stays exact.

use std::sync::Arc;
use std::time::Duration;

use eventbus_broker::{DeadLetter, DeadLetterPage, DeadLetterQuery, DeadLetterSelector};

use super::{blocking, LogBroker};
use crate::dead_letters;
use crate::delivery::SubscriptionHandle;
use crate::error::{Error, Result};
use crate::keys;
use crate::writer::Update;

impl LogBroker {
    /// One page of dead letters matching `query`, after seq `after`. Returns the
    /// page and the seq to continue after, when there may be more.
    pub async fn list_dead_letters(
        &self,
        topic: &str,
        name: &str,
        after: Option<u64>,
        limit: usize,
        query: DeadLetterQuery,
    ) -> Result<DeadLetterPage> {
        query.validate(&self.options().limits)?;
        let h = self.subscription(topic, name)?;
        let (log, sub, topic_id) = (self.log.clone(), h.id(), h.topic.id());
        blocking(move || {
            let mut page = Vec::new();
            let mut page_bytes = 0usize;
            let mut failure = None;
            let mut more = false;
            log.scan_dlq(sub, after.map_or(0, |a| a + 1), |k, v| {
                match dead_letters::decode(topic_id, k, v).map(|d| d.public()) {
                    Ok(dl) if query.matches(&dl) => {
                        // Bounded in bytes too: a page of big events must fit
                        // the 4 MiB a default client receives (and the
                        // server's memory); the first entry always goes.
                        let bytes = dl.size_bytes();
                        if page.len() == limit
                            || (!page.is_empty()
                                && page_bytes + bytes > dead_letters::MAX_PAGE_BYTES)
                        {
                            more = true;
                            return false;
                        }
                        page_bytes += bytes;
                        page.push(dl);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        failure = Some(e);
                        return false;
                    }
                }
                true
            })?;
            if let Some(e) = failure {
                return Err(e);
            }
            let next_after = more.then(|| page.last().map(|d| d.id)).flatten();
            Ok(DeadLetterPage {
                dead_letters: page,
                next_after,
            })
        })
        .await
    }

    pub async fn get_dead_letter(&self, topic: &str, name: &str, seq: u64) -> Result<DeadLetter> {
        let h = self.subscription(topic, name)?;
        let (log, sub, topic_id) = (self.log.clone(), h.id(), h.topic.id());
        let found = blocking(move || dead_letters::read(&log, sub, topic_id, seq)).await?;
        found
            .map(|d| d.public())
            .ok_or_else(|| Error::DeadLetterNotFound {
                subscription: name.to_string(),
                id: seq.to_string(),
            })
    }

    /// Deletes the selected dead letters (or, with `dry_run`, counts them).
    pub async fn purge_dead_letters(
        &self,
        topic: &str,
        name: &str,
        selector: DeadLetterSelector,
        dry_run: bool,
    ) -> Result<u64> {
        let _admin = self.admin.lock().await;
        let h = self.subscription(topic, name)?;
        let seqs = self.select_dead_letters(&h, selector).await?;
        let count = seqs.len() as u64;
        if dry_run || seqs.is_empty() {
            return Ok(count);
        }
        for chunk in seqs.chunks(1024) {
            let ops = chunk
                .iter()
                .map(|&seq| Update::PurgeDeadLetter { sub: h.id(), seq })
                .collect();
            self.log.write(ops, true).await?;
            h.dlq
                .count
                .fetch_sub(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        tracing::info!(topic, subscription = name, count, "dead letters purged");
        Ok(count)
    }

    /// Sends the selected dead letters back to this subscription (or, with
    /// `dry_run`, counts them). Attempts start over; each entry's redrive count
    /// goes up by one.
    ///
    /// Exactly once, even across a crash: each chunk is one synced batch that
    /// deletes the DLQ entries and adds them to the subscription's redrive queue
    /// under the same seq. A crash leaves every entry on exactly one side, and
    /// running the redrive again moves only what is still in the DLQ.
    /// `max_per_second` (0: unlimited) paces the chunks.
    pub async fn redrive_dead_letters(
        &self,
        topic: &str,
        name: &str,
        selector: DeadLetterSelector,
        dry_run: bool,
        max_per_second: u32,
    ) -> Result<u64> {
        let _admin = self.admin.lock().await;
        let h = self.subscription(topic, name)?;
        let seqs = self.select_dead_letters(&h, selector).await?;
        let count = seqs.len() as u64;
        if dry_run || seqs.is_empty() {
            return Ok(count);
        }
        let chunk_size = match max_per_second {
            0 => 1024,
            n => (n as usize).min(1024),
        };
        let pace = (max_per_second > 0)
            .then(|| Duration::from_secs_f64(chunk_size as f64 / max_per_second as f64));
        for chunk in seqs.chunks(chunk_size) {
            let started = tokio::time::Instant::now();
            let (log, sub, topic_id, chunk_seqs) =
                (self.log.clone(), h.id(), h.topic.id(), chunk.to_vec());
            let entries = blocking(move || {
                let mut out = Vec::with_capacity(chunk_seqs.len());
                for seq in chunk_seqs {
                    out.extend(dead_letters::read(&log, sub, topic_id, seq)?);
                }
                Ok(out)
            })
            .await?;
            let mut ops = Vec::with_capacity(entries.len());
            let mut redriven = Vec::with_capacity(entries.len());
            for dl in entries {
                let mut entry = dl.entry;
                entry.redrive_count += 1;
                entry.attempts = 0;
                ops.push(Update::Redrive {
                    sub: h.id(),
                    entry: entry.clone(),
                });
                redriven.push(crate::delivery::Redriven {
                    seq: entry.seq,
                    redrive_count: entry.redrive_count,
                    event: Arc::new(dl.event),
                    entry,
                });
            }
            let moved = redriven.len() as u64;
            self.log.write(ops, true).await?;
            h.dlq
                .count
                .fetch_sub(moved, std::sync::atomic::Ordering::Relaxed);
            h.redriven(redriven).await?;
            if let Some(pace) = pace {
                tokio::time::sleep_until(started + pace).await;
            }
        }
        tracing::info!(topic, subscription = name, count, "dead letters redriven");
        Ok(count)
    }

    /// The seqs of the existing dead letters `selector` names.
    async fn select_dead_letters(
        &self,
        h: &SubscriptionHandle,
        selector: DeadLetterSelector,
    ) -> Result<Vec<u64>> {
        match &selector {
            DeadLetterSelector::Filter(q) => q.validate(&self.options().limits)?,
            DeadLetterSelector::Ids(ids) => {
                self.options().limits.check_dead_letter_ids(ids.len())?
            }
            DeadLetterSelector::All => {}
        }
        let (log, sub, topic_id) = (self.log.clone(), h.id(), h.topic.id());
        blocking(move || {
            let mut seqs = Vec::new();
            let mut failure = None;
            let wanted: Option<std::collections::HashSet<u64>> = match &selector {
                DeadLetterSelector::Ids(ids) => Some(ids.iter().copied().collect()),
                _ => None,
            };
            log.scan_dlq(sub, 0, |k, v| {
                let Some((_, seq)) = keys::parse_dlq_key(k) else {
                    return true;
                };
                let keep = match &selector {
                    DeadLetterSelector::All => true,
                    DeadLetterSelector::Ids(_) => wanted.as_ref().is_some_and(|w| w.contains(&seq)),
                    DeadLetterSelector::Filter(q) => match dead_letters::decode(topic_id, k, v) {
                        Ok(dl) => q.matches(&dl.public()),
                        Err(e) => {
                            failure = Some(e);
                            return false;
                        }
                    },
                };
                if keep {
                    seqs.push(seq);
                }
                true
            })?;
            match failure {
                Some(e) => Err(e),
                None => Ok(seqs),
            }
        })
        .await
    }
}
