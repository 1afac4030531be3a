//! [`Admin`]: topics, subscriptions and the dead-letter queue.
//!
//! The common operations take plain names; the generated client from
//! [`Admin::raw`] covers every field of every admin RPC.

use std::time::{Duration, SystemTime};

use crate::backoff::proto_duration as duration;
use crate::client::Channel;
use crate::error::Result;
use crate::v1::{self, admin_service_client::AdminServiceClient};

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
    /// Per-partition offsets: `(partition, offset)`.
    Offsets(Vec<(u32, u64)>),
}

/// Which dead letters [`Admin::redrive_dead_letters`] and
/// [`Admin::purge_dead_letters`] act on.
#[derive(Clone, Debug, PartialEq)]
pub enum DeadLetters {
    /// Every entry.
    All,
    /// These entry ids.
    Ids(Vec<String>),
    /// Entries matching a filter (event type pattern, reason substring, time
    /// range).
    Matching(v1::DeadLetterFilter),
}

/// Settings for [`Admin::create_subscription`]. Unset fields take the
/// server's defaults (ack deadline 30 s, 5 attempts, start at the tail).
#[derive(Clone, Debug, Default)]
pub struct SubscriptionSettings {
    /// Lease length; 1 s to 10 min.
    pub ack_deadline: Option<Duration>,
    /// Redelivery backoff: `(min, max)`.
    pub retry_backoff: Option<(Duration, Duration)>,
    /// Deliveries before an event is dead-lettered; 0 means unlimited.
    pub max_delivery_attempts: Option<u32>,
    /// Only deliver events whose type matches one of these NATS-style
    /// patterns (`order.*`, `order.>`).
    pub event_types: Vec<String>,
    /// At most one event per key in flight.
    pub ordered_by_key: bool,
    /// Start at the earliest retained event instead of the tail.
    pub from_earliest: bool,
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

    /// Creates a topic with `partitions` partitions (0: the server default).
    pub async fn create_topic(&self, topic: &str, partitions: u32) -> Result<v1::Topic> {
        let resp = self
            .client
            .clone()
            .create_topic(v1::CreateTopicRequest {
                topic: topic.into(),
                partitions,
                retention: None,
            })
            .await?;
        Ok(resp.into_inner().topic.unwrap_or_default())
    }

    /// One topic.
    pub async fn get_topic(&self, topic: &str) -> Result<v1::Topic> {
        let resp = self
            .client
            .clone()
            .get_topic(v1::GetTopicRequest {
                topic: topic.into(),
            })
            .await?;
        Ok(resp.into_inner().topic.unwrap_or_default())
    }

    /// Every topic (all pages).
    pub async fn list_topics(&self) -> Result<Vec<v1::Topic>> {
        let mut out = Vec::new();
        let mut page_token = String::new();
        loop {
            let resp = self
                .client
                .clone()
                .list_topics(v1::ListTopicsRequest {
                    page_size: 1000,
                    page_token,
                })
                .await?
                .into_inner();
            out.extend(resp.topics);
            if resp.next_page_token.is_empty() {
                return Ok(out);
            }
            page_token = resp.next_page_token;
        }
    }

    /// Deletes a topic, its events and its subscriptions.
    pub async fn delete_topic(&self, topic: &str) -> Result<()> {
        self.client
            .clone()
            .delete_topic(v1::DeleteTopicRequest {
                topic: topic.into(),
            })
            .await?;
        Ok(())
    }

    /// Creates a subscription (consumer group) on `topic`.
    pub async fn create_subscription(
        &self,
        topic: &str,
        name: &str,
        settings: SubscriptionSettings,
    ) -> Result<v1::Subscription> {
        let request = v1::CreateSubscriptionRequest {
            topic: topic.into(),
            subscription: name.into(),
            start_position: if settings.from_earliest {
                v1::StartPosition::Earliest as i32
            } else {
                v1::StartPosition::Unspecified as i32
            },
            ack_deadline: settings.ack_deadline.map(duration),
            retry_policy: settings.retry_backoff.map(|(min, max)| v1::RetryPolicy {
                min_backoff: Some(duration(min)),
                max_backoff: Some(duration(max)),
            }),
            max_delivery_attempts: settings.max_delivery_attempts,
            filter: (!settings.event_types.is_empty()).then(|| v1::Filter {
                types: settings.event_types,
                attributes: Vec::new(),
            }),
            ordering: if settings.ordered_by_key {
                v1::Ordering::Key as i32
            } else {
                v1::Ordering::Unspecified as i32
            },
        };
        let resp = self.client.clone().create_subscription(request).await?;
        Ok(resp.into_inner().subscription.unwrap_or_default())
    }

    /// One subscription, with its stats (backlog, in flight, DLQ size, ...).
    pub async fn get_subscription(&self, topic: &str, name: &str) -> Result<v1::Subscription> {
        let resp = self
            .client
            .clone()
            .get_subscription(v1::GetSubscriptionRequest {
                topic: topic.into(),
                subscription: name.into(),
            })
            .await?;
        Ok(resp.into_inner().subscription.unwrap_or_default())
    }

    /// Every subscription of `topic` (all pages).
    pub async fn list_subscriptions(&self, topic: &str) -> Result<Vec<v1::Subscription>> {
        let mut out = Vec::new();
        let mut page_token = String::new();
        loop {
            let resp = self
                .client
                .clone()
                .list_subscriptions(v1::ListSubscriptionsRequest {
                    topic: topic.into(),
                    page_size: 1000,
                    page_token,
                })
                .await?
                .into_inner();
            out.extend(resp.subscriptions);
            if resp.next_page_token.is_empty() {
                return Ok(out);
            }
            page_token = resp.next_page_token;
        }
    }

    /// Deletes a subscription and its dead letters.
    pub async fn delete_subscription(&self, topic: &str, name: &str) -> Result<()> {
        self.client
            .clone()
            .delete_subscription(v1::DeleteSubscriptionRequest {
                topic: topic.into(),
                subscription: name.into(),
            })
            .await?;
        Ok(())
    }

    /// Stops new deliveries; held leases stay valid. Survives restarts.
    pub async fn pause(&self, topic: &str, name: &str) -> Result<v1::Subscription> {
        let resp = self
            .client
            .clone()
            .pause_subscription(v1::PauseSubscriptionRequest {
                topic: topic.into(),
                subscription: name.into(),
            })
            .await?;
        Ok(resp.into_inner().subscription.unwrap_or_default())
    }

    /// Resumes a paused subscription.
    pub async fn resume(&self, topic: &str, name: &str) -> Result<v1::Subscription> {
        let resp = self
            .client
            .clone()
            .resume_subscription(v1::ResumeSubscriptionRequest {
                topic: topic.into(),
                subscription: name.into(),
            })
            .await?;
        Ok(resp.into_inner().subscription.unwrap_or_default())
    }

    /// Moves the subscription ("reprocess since 09:00", "skip the backlog").
    pub async fn seek(&self, topic: &str, name: &str, to: SeekTo) -> Result<v1::Subscription> {
        use v1::seek_subscription_request::Target;
        let target = match to {
            SeekTo::Earliest => Target::StartPosition(v1::StartPosition::Earliest as i32),
            SeekTo::Latest => Target::StartPosition(v1::StartPosition::Latest as i32),
            SeekTo::Time(t) => Target::Time(t.into()),
            SeekTo::Offsets(offsets) => Target::Offsets(v1::PartitionOffsets {
                offsets: offsets
                    .into_iter()
                    .map(|(partition, offset)| v1::PartitionOffset { partition, offset })
                    .collect(),
            }),
        };
        let resp = self
            .client
            .clone()
            .seek_subscription(v1::SeekSubscriptionRequest {
                topic: topic.into(),
                subscription: name.into(),
                target: Some(target),
            })
            .await?;
        Ok(resp.into_inner().subscription.unwrap_or_default())
    }

    /// Dead letters matching `filter` (all of them with the default filter),
    /// oldest first, paging until `limit` entries (or the end).
    pub async fn list_dead_letters(
        &self,
        topic: &str,
        name: &str,
        filter: v1::DeadLetterFilter,
        limit: usize,
    ) -> Result<Vec<v1::DeadLetter>> {
        let mut out = Vec::new();
        let mut page_token = String::new();
        while out.len() < limit {
            let resp = self
                .client
                .clone()
                .list_dead_letters(v1::ListDeadLettersRequest {
                    topic: topic.into(),
                    subscription: name.into(),
                    page_size: (limit - out.len()).min(1000) as u32,
                    page_token,
                    filter: Some(filter.clone()),
                })
                .await?
                .into_inner();
            out.extend(resp.dead_letters);
            if resp.next_page_token.is_empty() {
                break;
            }
            page_token = resp.next_page_token;
        }
        out.truncate(limit);
        Ok(out)
    }

    /// One dead letter by id.
    pub async fn get_dead_letter(
        &self,
        topic: &str,
        name: &str,
        id: &str,
    ) -> Result<v1::DeadLetter> {
        let resp = self
            .client
            .clone()
            .get_dead_letter(v1::GetDeadLetterRequest {
                topic: topic.into(),
                subscription: name.into(),
                id: id.into(),
            })
            .await?;
        Ok(resp.into_inner().dead_letter.unwrap_or_default())
    }

    /// Sends dead letters back to the subscription (attempts reset, each
    /// exactly once). With `dry_run`, only counts them. Returns the count.
    pub async fn redrive_dead_letters(
        &self,
        topic: &str,
        name: &str,
        which: DeadLetters,
        dry_run: bool,
    ) -> Result<u64> {
        let (ids, filter, all) = selector(which);
        let resp = self
            .client
            .clone()
            .redrive_dead_letters(v1::RedriveDeadLettersRequest {
                topic: topic.into(),
                subscription: name.into(),
                ids,
                filter,
                all,
                dry_run,
                max_per_second: 0,
            })
            .await?;
        Ok(resp.into_inner().count)
    }

    /// Deletes dead letters. With `dry_run`, only counts them. Returns the count.
    pub async fn purge_dead_letters(
        &self,
        topic: &str,
        name: &str,
        which: DeadLetters,
        dry_run: bool,
    ) -> Result<u64> {
        let (ids, filter, all) = selector(which);
        let resp = self
            .client
            .clone()
            .purge_dead_letters(v1::PurgeDeadLettersRequest {
                topic: topic.into(),
                subscription: name.into(),
                ids,
                filter,
                all,
                dry_run,
            })
            .await?;
        Ok(resp.into_inner().count)
    }
}

fn selector(which: DeadLetters) -> (Vec<String>, Option<v1::DeadLetterFilter>, bool) {
    match which {
        DeadLetters::All => (Vec::new(), None, true),
        DeadLetters::Ids(ids) => (ids, None, false),
        DeadLetters::Matching(f) => (Vec::new(), Some(f), false),
    }
}
