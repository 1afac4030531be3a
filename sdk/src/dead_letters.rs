//! The dead-letter calls of [`Admin`]: list (as a page stream), get, redrive
//! (at once or paced, with progress) and purge.

use tokio_stream::StreamExt as _;

use crate::admin::Admin;
use crate::error::Result;
use crate::paging::PageStream;
use crate::v1;

/// Dead letters per page of [`Admin::dead_letters`]. Each entry carries its
/// whole event, so pages stay well below the server's cap of 1000.
const DEAD_LETTER_PAGE_SIZE: u32 = 200;

/// Ids per RedriveDeadLetters call of an unpaced [`Admin::redrive_paced`],
/// and the most of a paced one: half the server's default `max-page-size`,
/// which bounds the ids of one call.
const REDRIVE_CHUNK: u32 = 500;

/// Which dead letters [`Admin::redrive_dead_letters`],
/// [`Admin::redrive_paced`] and [`Admin::purge_dead_letters`] act on.
#[derive(Clone, Debug, PartialEq)]
pub enum DeadLetters {
    /// Every entry.
    All,
    /// These entry ids (at most the server's `max-page-size`, 1000 by
    /// default, for one redrive or purge call).
    Ids(Vec<String>),
    /// Entries matching a filter (event type pattern, reason substring, time
    /// range).
    Matching(v1::DeadLetterFilter),
}

impl DeadLetters {
    /// The request's selector fields: `(ids, filter, all)`.
    fn into_selector(self) -> (Vec<String>, Option<v1::DeadLetterFilter>, bool) {
        match self {
            DeadLetters::All => (Vec::new(), None, true),
            DeadLetters::Ids(ids) => (ids, None, false),
            DeadLetters::Matching(f) => (Vec::new(), Some(f), false),
        }
    }
}

/// How far an [`Admin::redrive_paced`] has come, reported after each call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedriveProgress {
    /// Entries selected when the redrive started: the total it works through.
    pub selected: u64,
    /// Selected entries sent to the server so far.
    pub sent: u64,
    /// Entries the server redrove so far. Less than `sent` when entries were
    /// purged or redriven by someone else meanwhile.
    pub redriven: u64,
}

impl Admin {
    /// The dead letters of a subscription that match `filter` (all of them
    /// with the default filter), oldest first, fetched page by page as the
    /// stream is polled (200 per page unless [`PageStream::page_size`] says
    /// otherwise). Errors (as the stream's item): NOT_FOUND,
    /// INVALID_ARGUMENT (filter out of bounds).
    pub fn dead_letters(
        &self,
        topic: &str,
        name: &str,
        filter: v1::DeadLetterFilter,
    ) -> PageStream<v1::DeadLetter> {
        let (topic, name) = (topic.to_owned(), name.to_owned());
        let filter = (filter != v1::DeadLetterFilter::default()).then_some(filter);
        self.pages(
            DEAD_LETTER_PAGE_SIZE,
            move |mut c, page_size, page_token| {
                let req = v1::ListDeadLettersRequest {
                    topic: topic.clone(),
                    subscription: name.clone(),
                    page_size,
                    page_token,
                    filter: filter.clone(),
                };
                async move {
                    let page = c.list_dead_letters(req).await?.into_inner();
                    Ok((page.dead_letters, page.next_page_token))
                }
            },
        )
    }

    /// Dead letters matching `filter` (all of them with the default filter),
    /// oldest first, paging until `limit` entries (or the end). See
    /// [`Admin::dead_letters`] for a stream.
    pub async fn list_dead_letters(
        &self,
        topic: &str,
        name: &str,
        filter: v1::DeadLetterFilter,
        limit: usize,
    ) -> Result<Vec<v1::DeadLetter>> {
        let page_size = limit.min(1000) as u32;
        let pages = self.dead_letters(topic, name, filter).page_size(page_size);
        collect_at_most(pages, limit).await
    }

    /// One dead letter by id. Errors: NOT_FOUND (subscription or id).
    pub async fn get_dead_letter(
        &self,
        topic: &str,
        name: &str,
        id: &str,
    ) -> Result<v1::DeadLetter> {
        let req = v1::GetDeadLetterRequest {
            topic: topic.into(),
            subscription: name.into(),
            id: id.into(),
        };
        let resp = self
            .call(|mut c| async move { c.get_dead_letter(req).await })
            .await?;
        Ok(resp.dead_letter.unwrap_or_default())
    }

    /// Sends dead letters back to the subscription (attempts reset, each
    /// exactly once) in one call. With `dry_run`, only counts them. Returns
    /// the count. Errors: NOT_FOUND, INVALID_ARGUMENT (too many ids, filter
    /// out of bounds). See [`Admin::redrive_paced`] to spread a large
    /// redrive over time.
    pub async fn redrive_dead_letters(
        &self,
        topic: &str,
        name: &str,
        which: DeadLetters,
        dry_run: bool,
    ) -> Result<u64> {
        self.redrive_call(topic, name, which, dry_run, 0).await
    }

    /// Redrives the selected dead letters at most `max_per_second` per
    /// second (0: no limit), so consumers are not flooded, reporting
    /// progress after each call. Returns the number redriven.
    ///
    /// The selection is fixed when the call starts: the ids of the matching
    /// entries are read first (page by page), then redriven by id in chunks
    /// of up to a second's worth. So `progress` has a known total, and
    /// entries that fail again and return to the queue during the run are
    /// not redriven twice; entries dead-lettered meanwhile are left for the
    /// next run. `progress` is called once with nothing sent yet, then after
    /// each chunk.
    ///
    /// Errors: NOT_FOUND, INVALID_ARGUMENT (filter out of bounds). A failure
    /// midway leaves the chunks before it redriven.
    pub async fn redrive_paced(
        &self,
        topic: &str,
        name: &str,
        which: DeadLetters,
        max_per_second: u32,
        mut progress: impl FnMut(RedriveProgress),
    ) -> Result<u64> {
        let ids = match which {
            DeadLetters::Ids(ids) => ids,
            DeadLetters::All => {
                self.dead_letter_ids(topic, name, Default::default())
                    .await?
            }
            DeadLetters::Matching(f) => self.dead_letter_ids(topic, name, f).await?,
        };
        let chunk = match max_per_second {
            0 => REDRIVE_CHUNK,
            n => n.min(REDRIVE_CHUNK),
        } as usize;
        let mut done = RedriveProgress {
            selected: ids.len() as u64,
            ..Default::default()
        };
        progress(done);
        for ids in ids.chunks(chunk) {
            let which = DeadLetters::Ids(ids.to_vec());
            done.redriven += self
                .redrive_call(topic, name, which, false, max_per_second)
                .await?;
            done.sent += ids.len() as u64;
            progress(done);
        }
        Ok(done.redriven)
    }

    /// The ids of every entry matching `filter`, oldest first.
    async fn dead_letter_ids(
        &self,
        topic: &str,
        name: &str,
        filter: v1::DeadLetterFilter,
    ) -> Result<Vec<String>> {
        let mut entries = self.dead_letters(topic, name, filter);
        let mut ids = Vec::new();
        while let Some(entry) = entries.next().await {
            ids.push(entry?.id);
        }
        Ok(ids)
    }

    async fn redrive_call(
        &self,
        topic: &str,
        name: &str,
        which: DeadLetters,
        dry_run: bool,
        max_per_second: u32,
    ) -> Result<u64> {
        let (ids, filter, all) = which.into_selector();
        let req = v1::RedriveDeadLettersRequest {
            topic: topic.into(),
            subscription: name.into(),
            ids,
            filter,
            all,
            dry_run,
            max_per_second,
        };
        let resp = self
            .call(|mut c| async move { c.redrive_dead_letters(req).await })
            .await?;
        Ok(resp.count)
    }

    /// Deletes dead letters. With `dry_run`, only counts them. Returns the
    /// count. Errors: NOT_FOUND, INVALID_ARGUMENT (too many ids, filter out
    /// of bounds).
    pub async fn purge_dead_letters(
        &self,
        topic: &str,
        name: &str,
        which: DeadLetters,
        dry_run: bool,
    ) -> Result<u64> {
        let (ids, filter, all) = which.into_selector();
        let req = v1::PurgeDeadLettersRequest {
            topic: topic.into(),
            subscription: name.into(),
            ids,
            filter,
            all,
            dry_run,
        };
        let resp = self
            .call(|mut c| async move { c.purge_dead_letters(req).await })
            .await?;
        Ok(resp.count)
    }
}

/// The first `limit` items of a page stream (no page is fetched past them),
/// or its first error.
async fn collect_at_most<T>(mut pages: PageStream<T>, limit: usize) -> Result<Vec<T>> {
    let mut out = Vec::new();
    while out.len() < limit {
        match pages.next().await {
            Some(item) => out.push(item?),
            None => break,
        }
    }
    Ok(out)
}
