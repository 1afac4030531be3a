//! [`Admin`]: topics, subscriptions, server status, backups and the audit
//! log. The dead-letter calls are in `dead_letters.rs`.
//!
//! The common operations take plain names and the settings types of
//! `settings.rs`; the generated client from [`Admin::raw`] covers every field
//! of every admin RPC.

use std::future::Future;
use std::time::SystemTime;

use crate::client::Channel;
use crate::error::Result;
use crate::paging::{Page, PageStream};
use crate::settings::{SubscriptionSettings, SubscriptionUpdate, TopicSettings};
use crate::v1::{self, admin_service_client::AdminServiceClient};

/// Topics and subscriptions per page of [`Admin::topics`] and
/// [`Admin::subscriptions`]: the server's cap, so a list takes few calls.
const LIST_PAGE_SIZE: u32 = 1000;

/// Admin calls. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Admin {
    client: AdminServiceClient<Channel>,
}

/// Where [`Admin::seek`] moves a subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeekTo {
    /// The earliest retained event: reprocess everything.
    Earliest,
    /// The tail: skip the backlog.
    Latest,
    /// The first event published at or after this time.
    Time(SystemTime),
    /// Per-partition offsets: `(partition, offset)`. Partitions not listed
    /// keep their position.
    Offsets(Vec<(u32, u64)>),
}

impl SeekTo {
    fn into_proto(self) -> v1::seek_subscription_request::Target {
        use v1::seek_subscription_request::Target;
        match self {
            SeekTo::Earliest => Target::StartPosition(v1::StartPosition::Earliest as i32),
            SeekTo::Latest => Target::StartPosition(v1::StartPosition::Latest as i32),
            SeekTo::Time(t) => Target::Time(t.into()),
            SeekTo::Offsets(offsets) => Target::Offsets(v1::PartitionOffsets {
                offsets: offsets
                    .into_iter()
                    .map(|(partition, offset)| v1::PartitionOffset { partition, offset })
                    .collect(),
            }),
        }
    }
}

impl Admin {
    pub(crate) fn new(channel: Channel) -> Admin {
        Admin {
            client: AdminServiceClient::new(channel)
                .max_decoding_message_size(crate::client::MAX_RESPONSE_BYTES),
        }
    }

    /// The generated client, for every field of every admin RPC.
    pub fn raw(&self) -> AdminServiceClient<Channel> {
        self.client.clone()
    }

    /// Makes one unary call on a clone of the client and returns the
    /// response message; a non-OK status becomes [`Error::Status`](crate::Error::Status).
    /// Every admin call goes through here, so errors are mapped in one place.
    pub(crate) async fn call<Resp, Fut>(
        &self,
        rpc: impl FnOnce(AdminServiceClient<Channel>) -> Fut,
    ) -> Result<Resp>
    where
        Fut: Future<Output = std::result::Result<tonic::Response<Resp>, tonic::Status>>,
    {
        Ok(rpc(self.client.clone()).await?.into_inner())
    }

    /// A lazy stream over a list RPC: `list(client, page_size, page_token)`
    /// returns one page's items and the next token.
    pub(crate) fn pages<T, F, Fut>(&self, page_size: u32, list: F) -> PageStream<T>
    where
        F: Fn(AdminServiceClient<Channel>, u32, String) -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Page<T>, tonic::Status>> + Send + 'static,
    {
        let client = self.client.clone();
        PageStream::new(page_size, move |size, token| {
            let page = list(client.clone(), size, token);
            async move { Ok(page.await?) }
        })
    }

    /// Creates a topic with `partitions` partitions (0: the server default)
    /// and no retention limit. Errors: ALREADY_EXISTS, INVALID_ARGUMENT (name
    /// or partition count).
    pub async fn create_topic(&self, topic: &str, partitions: u32) -> Result<v1::Topic> {
        let settings = TopicSettings {
            partitions,
            ..Default::default()
        };
        self.create_topic_with(topic, settings).await
    }

    /// Creates a topic with partitions and retention from `settings`.
    /// Errors: ALREADY_EXISTS, INVALID_ARGUMENT (name, partition count or
    /// retention out of range).
    pub async fn create_topic_with(
        &self,
        topic: &str,
        settings: TopicSettings,
    ) -> Result<v1::Topic> {
        let req = settings.into_request(topic);
        let resp = self
            .call(|mut c| async move { c.create_topic(req).await })
            .await?;
        Ok(resp.topic.unwrap_or_default())
    }

    /// One topic, with its partitions' current offsets. Errors: NOT_FOUND.
    pub async fn get_topic(&self, topic: &str) -> Result<v1::Topic> {
        let req = v1::GetTopicRequest {
            topic: topic.into(),
        };
        let resp = self
            .call(|mut c| async move { c.get_topic(req).await })
            .await?;
        Ok(resp.topic.unwrap_or_default())
    }

    /// Every topic, in name order, fetched page by page as the stream is
    /// polled (1000 per page unless [`PageStream::page_size`] says
    /// otherwise).
    pub fn topics(&self) -> PageStream<v1::Topic> {
        self.pages(LIST_PAGE_SIZE, |mut c, page_size, page_token| async move {
            let req = v1::ListTopicsRequest {
                page_size,
                page_token,
            };
            let page = c.list_topics(req).await?.into_inner();
            Ok((page.topics, page.next_page_token))
        })
    }

    /// Every topic (all pages), collected. See [`Admin::topics`] for a
    /// stream.
    pub async fn list_topics(&self) -> Result<Vec<v1::Topic>> {
        collect(self.topics()).await
    }

    /// Deletes a topic, its events and its subscriptions. Errors: NOT_FOUND.
    pub async fn delete_topic(&self, topic: &str) -> Result<()> {
        let req = v1::DeleteTopicRequest {
            topic: topic.into(),
        };
        self.call(|mut c| async move { c.delete_topic(req).await })
            .await?;
        Ok(())
    }

    /// Creates a subscription (consumer group) on `topic`. Errors:
    /// NOT_FOUND (topic), ALREADY_EXISTS, INVALID_ARGUMENT (name, settings
    /// or filter out of bounds).
    pub async fn create_subscription(
        &self,
        topic: &str,
        name: &str,
        settings: SubscriptionSettings,
    ) -> Result<v1::Subscription> {
        let req = settings.into_request(topic, name);
        let resp = self
            .call(|mut c| async move { c.create_subscription(req).await })
            .await?;
        Ok(resp.subscription.unwrap_or_default())
    }

    /// One subscription, with its stats (backlog, in flight, DLQ size, ...).
    /// Errors: NOT_FOUND.
    pub async fn get_subscription(&self, topic: &str, name: &str) -> Result<v1::Subscription> {
        let req = v1::GetSubscriptionRequest {
            topic: topic.into(),
            subscription: name.into(),
        };
        let resp = self
            .call(|mut c| async move { c.get_subscription(req).await })
            .await?;
        Ok(resp.subscription.unwrap_or_default())
    }

    /// Every subscription of `topic`, in name order with stats, fetched page
    /// by page as the stream is polled (1000 per page unless
    /// [`PageStream::page_size`] says otherwise). Errors (as the stream's
    /// item): NOT_FOUND (topic).
    pub fn subscriptions(&self, topic: &str) -> PageStream<v1::Subscription> {
        let topic = topic.to_owned();
        self.pages(LIST_PAGE_SIZE, move |mut c, page_size, page_token| {
            let req = v1::ListSubscriptionsRequest {
                topic: topic.clone(),
                page_size,
                page_token,
            };
            async move {
                let page = c.list_subscriptions(req).await?.into_inner();
                Ok((page.subscriptions, page.next_page_token))
            }
        })
    }

    /// Every subscription of `topic` (all pages), collected. See
    /// [`Admin::subscriptions`] for a stream.
    pub async fn list_subscriptions(&self, topic: &str) -> Result<Vec<v1::Subscription>> {
        collect(self.subscriptions(topic)).await
    }

    /// Changes the settings named in `update`; returns the subscription as
    /// it is afterwards. Errors: NOT_FOUND, INVALID_ARGUMENT (no change
    /// named, or a value out of range).
    pub async fn update_subscription(
        &self,
        topic: &str,
        name: &str,
        update: SubscriptionUpdate,
    ) -> Result<v1::Subscription> {
        let req = update.into_request(topic, name);
        let resp = self
            .call(|mut c| async move { c.update_subscription(req).await })
            .await?;
        Ok(resp.subscription.unwrap_or_default())
    }

    /// Deletes a subscription and its dead letters. Errors: NOT_FOUND.
    pub async fn delete_subscription(&self, topic: &str, name: &str) -> Result<()> {
        let req = v1::DeleteSubscriptionRequest {
            topic: topic.into(),
            subscription: name.into(),
        };
        self.call(|mut c| async move { c.delete_subscription(req).await })
            .await?;
        Ok(())
    }

    /// Stops new deliveries; held leases stay valid. Survives restarts.
    /// Errors: NOT_FOUND.
    pub async fn pause(&self, topic: &str, name: &str) -> Result<v1::Subscription> {
        let req = v1::PauseSubscriptionRequest {
            topic: topic.into(),
            subscription: name.into(),
        };
        let resp = self
            .call(|mut c| async move { c.pause_subscription(req).await })
            .await?;
        Ok(resp.subscription.unwrap_or_default())
    }

    /// Resumes a paused subscription. Errors: NOT_FOUND.
    pub async fn resume(&self, topic: &str, name: &str) -> Result<v1::Subscription> {
        let req = v1::ResumeSubscriptionRequest {
            topic: topic.into(),
            subscription: name.into(),
        };
        let resp = self
            .call(|mut c| async move { c.resume_subscription(req).await })
            .await?;
        Ok(resp.subscription.unwrap_or_default())
    }

    /// Moves the subscription ("reprocess since 09:00", "skip the backlog").
    /// Outstanding leases end; the dead-letter queue is untouched. Errors:
    /// NOT_FOUND, INVALID_ARGUMENT (a time out of range, a partition the
    /// topic does not have or listed twice).
    pub async fn seek(&self, topic: &str, name: &str, to: SeekTo) -> Result<v1::Subscription> {
        let req = v1::SeekSubscriptionRequest {
            topic: topic.into(),
            subscription: name.into(),
            target: Some(to.into_proto()),
        };
        let resp = self
            .call(|mut c| async move { c.seek_subscription(req).await })
            .await?;
        Ok(resp.subscription.unwrap_or_default())
    }

    /// One snapshot of the server: every topic with its publish rate and its
    /// subscriptions' stats, and the storage and disk state.
    pub async fn status(&self) -> Result<v1::GetStatusResponse> {
        self.call(|mut c| async move { c.get_status(v1::GetStatusRequest {}).await })
            .await
    }

    /// Writes an online, consistent backup into `dir`, a new directory
    /// under the server's `backup-root` (a path relative to it; it must not
    /// exist, its parent must), while the server keeps serving. Returns the
    /// backup's absolute path on the server and its size. Errors:
    /// FAILED_PRECONDITION (no backup-root configured; or the directory
    /// exists, its parent is missing or not writable, one message for all),
    /// INVALID_ARGUMENT (`..`, an absolute path outside backup-root, inside
    /// the data dir), RESOURCE_EXHAUSTED (disk full).
    pub async fn create_backup(&self, dir: &str) -> Result<v1::CreateBackupResponse> {
        let req = v1::CreateBackupRequest { dir: dir.into() };
        self.call(|mut c| async move { c.create_backup(req).await })
            .await
    }
}

impl Admin {
    /// The server's audit log, oldest first, fetched page by page as the
    /// stream is polled (1000 per page unless [`PageStream::page_size`]
    /// says otherwise): one record per mutating admin call and per denied
    /// call. Errors (as the stream's item): INVALID_ARGUMENT (a time out of
    /// range), PERMISSION_DENIED without the global admin grant.
    pub fn audit_records(&self, filter: AuditFilter) -> PageStream<v1::AuditRecord> {
        self.pages(LIST_PAGE_SIZE, move |mut c, page_size, page_token| {
            let req = v1::ListAuditRecordsRequest {
                page_size,
                page_token,
                start_time: filter.since.map(Into::into),
                end_time: filter.until.map(Into::into),
                principal: filter.principal.clone().unwrap_or_default(),
            };
            async move {
                let page = c.list_audit_records(req).await?.into_inner();
                Ok((page.records, page.next_page_token))
            }
        })
    }
}

/// Which records [`Admin::audit_records`] lists; the default lists all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Records at or after this time.
    pub since: Option<SystemTime>,
    /// Records before this time.
    pub until: Option<SystemTime>,
    /// One principal's records (`anonymous` on a server without
    /// authentication).
    pub principal: Option<String>,
}

/// Every item of a page stream, or its first error.
pub(crate) async fn collect<T>(pages: PageStream<T>) -> Result<Vec<T>> {
    use tokio_stream::StreamExt as _;
    pages.collect().await
}
