//! The broker as one caller sees it.
//!
//! [`Scoped`] wraps the server's broker for one request and is the only
//! broker a handler gets ([`crate::grpc::context::Call`]). It does three
//! things no handler has to remember:
//!
//! * **Tenants.** A principal bound to tenant `acme` names `orders`; the
//!   broker stores `acme/orders`. Every name goes in prefixed and comes out
//!   (in answers and error messages) without the prefix, so a tenant can
//!   neither name nor learn of another tenant's topics, and "exists
//!   elsewhere" answers exactly as "does not exist" (both are the tenant's
//!   own NOT_FOUND). Names with `/` are the server's: clients of a tenant
//!   cannot write one.
//! * **Listings** hold only the topics the caller has a grant on.
//! * **Ack ids** are sealed to the subscription and the principal on the
//!   way out and opened on the way in ([`super::ack_id`]).
//! * **Creation** is done as the caller: every topic and subscription
//!   records its creator and counts against that principal's quotas. This
//!   includes creation on first use (publish or subscribe to a missing
//!   name), which is why the engine's own auto-create is off in the server
//!   and done here.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use eventbus_broker::names::validate_name;
use eventbus_broker::*;
use tokio::sync::watch;
use tokio_stream::StreamExt as _;

use super::ack_id::AckIdSealer;
use super::quota::{Holding, Quotas};
use crate::grpc::context::{Caller, Gate};

/// Separates a tenant from its topic names in the broker's namespace.
pub const TENANT_SEPARATOR: char = '/';

/// The broker, scoped to one caller.
pub struct Scoped {
    inner: Arc<dyn Broker>,
    caller: Caller,
    /// `tenant/`, or empty for a caller bound to no tenant.
    prefix: String,
    sealer: Arc<AckIdSealer>,
    quotas: Arc<Quotas>,
    /// Create missing topics and subscriptions on first use.
    auto_create: bool,
}

impl Scoped {
    pub fn new(inner: Arc<dyn Broker>, caller: Caller, gate: &Gate) -> Scoped {
        let prefix = caller
            .tenant()
            .map(|t| format!("{t}{TENANT_SEPARATOR}"))
            .unwrap_or_default();
        Scoped {
            inner,
            caller,
            prefix,
            sealer: gate.sealer.clone(),
            quotas: gate.quotas.clone(),
            auto_create: gate.auto_create,
        }
    }

    /// The broker's name for the caller's topic `name`.
    fn topic(&self, name: &str) -> Result<String> {
        if self.prefix.is_empty() {
            return Ok(name.to_string());
        }
        validate_name("topic", name)?;
        Ok(format!("{}{name}", self.prefix))
    }

    /// The caller's name for the broker's topic `name`, or None when the
    /// topic is outside the caller's namespace.
    fn local<'a>(&self, name: &'a str) -> Option<&'a str> {
        name.strip_prefix(self.prefix.as_str())
    }

    /// Whether the caller may see the broker's topic `name` in a listing.
    fn visible(&self, name: &str) -> bool {
        match (self.local(name), &self.caller) {
            (None, _) => false,
            (Some(_), Caller::Anonymous) => true,
            (Some(local), Caller::Principal(p)) => p.sees(local),
        }
    }

    fn topic_out(&self, mut info: TopicInfo) -> TopicInfo {
        if let Some(local) = self.local(&info.name) {
            info.name = local.to_string();
        }
        info
    }

    fn subscription_out(&self, mut info: SubscriptionInfo) -> SubscriptionInfo {
        if let Some(local) = self.local(&info.topic) {
            info.topic = local.to_string();
        }
        info
    }

    /// An error as the caller sees it: names without the tenant prefix.
    fn error_out(&self, err: Error) -> Error {
        if self.prefix.is_empty() {
            return err;
        }
        let strip = |s: String| s.replace(&format!("\"{}", self.prefix), "\"");
        let local = |s: String| match s.strip_prefix(self.prefix.as_str()) {
            Some(l) => l.to_string(),
            None => s,
        };
        match err {
            Error::InvalidArgument { field, reason } => Error::InvalidArgument {
                field,
                reason: strip(reason),
            },
            Error::TopicNotFound(t) => Error::TopicNotFound(local(t)),
            Error::TopicExists(t) => Error::TopicExists(local(t)),
            Error::SubscriptionNotFound {
                topic,
                subscription,
            } => Error::SubscriptionNotFound {
                topic: local(topic),
                subscription,
            },
            Error::SubscriptionExists {
                topic,
                subscription,
            } => Error::SubscriptionExists {
                topic: local(topic),
                subscription,
            },
            Error::DamagedRange {
                topic,
                partition,
                offset,
                cause,
            } => Error::DamagedRange {
                topic: local(topic),
                partition,
                offset,
                cause,
            },
            Error::FailedPrecondition(m) => Error::FailedPrecondition(strip(m)),
            Error::ResourceExhausted(m) => Error::ResourceExhausted(strip(m)),
            Error::LimitReached { limit, message } => Error::LimitReached {
                limit,
                message: strip(message),
            },
            other => other,
        }
    }

    /// Runs `f` on the broker's topic name and maps its error for the caller.
    async fn on<T, F>(&self, topic: &str, f: impl FnOnce(String) -> F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        let name = self.topic(topic).map_err(|e| self.error_out(e))?;
        f(name).await.map_err(|e| self.error_out(e))
    }

    /// Runs `op` on the broker's topic name, like [`Scoped::on`]. When the
    /// topic is missing (or, given `subscription`, that subscription) and
    /// auto-create is on, creates what is missing as the caller and runs
    /// `op` once more for each.
    async fn on_creating<T, F, Fut>(
        &self,
        topic: &str,
        subscription: Option<&str>,
        op: F,
    ) -> Result<T>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let name = self.topic(topic).map_err(|e| self.error_out(e))?;
        // At most the topic, then the subscription, is missing.
        for _ in 0..2 {
            let created = match op(name.clone()).await {
                Err(Error::TopicNotFound(_)) if self.auto_create => self
                    .create_topic_as_caller(&name, TopicConfig::default())
                    .await
                    .map(drop),
                Err(Error::SubscriptionNotFound { .. })
                    if self.auto_create && subscription.is_some() =>
                {
                    let sub = subscription.unwrap_or_default();
                    self.create_subscription_as_caller(&name, sub, NewSubscription::default())
                        .await
                        .map(drop)
                }
                done => return done.map_err(|e| self.error_out(e)),
            };
            match created {
                // Lost a race with another creator: theirs will do.
                Ok(()) | Err(Error::TopicExists(_) | Error::SubscriptionExists { .. }) => {}
                Err(e) => return Err(self.error_out(e)),
            }
        }
        op(name).await.map_err(|e| self.error_out(e))
    }

    /// Creates the broker's topic `name`, recording the caller as its creator
    /// and counting it against the caller's topic quota.
    async fn create_topic_as_caller(
        &self,
        name: &str,
        mut config: TopicConfig,
    ) -> Result<TopicInfo> {
        let Caller::Principal(p) = &self.caller else {
            return self.inner.create_topic(name, config).await;
        };
        config.creator = Some(p.name.clone());
        if self.quotas.holding_limit(Holding::Topics).is_none() {
            return self.inner.create_topic(name, config).await;
        }
        let _turn = self.quotas.creation_turn(&p.name).await;
        let held = self
            .inner
            .list_topics()
            .await?
            .iter()
            .filter(|t| t.creator.as_deref() == Some(p.name.as_str()))
            .count();
        self.quotas.may_create(&p.name, Holding::Topics, held)?;
        self.inner.create_topic(name, config).await
    }

    /// As [`Scoped::create_topic_as_caller`], for a subscription.
    async fn create_subscription_as_caller(
        &self,
        topic: &str,
        name: &str,
        mut new: NewSubscription,
    ) -> Result<SubscriptionInfo> {
        let Caller::Principal(p) = &self.caller else {
            return self.inner.create_subscription(topic, name, new).await;
        };
        new.creator = Some(p.name.clone());
        if self.quotas.holding_limit(Holding::Subscriptions).is_none() {
            return self.inner.create_subscription(topic, name, new).await;
        }
        let _turn = self.quotas.creation_turn(&p.name).await;
        let mut held = 0;
        // Creation is rare; counting walks every subscription (the engine
        // keeps no index by creator).
        for t in self.inner.list_topics().await? {
            let (subs, _) = self
                .inner
                .list_subscriptions(&t.name, None, usize::MAX)
                .await?;
            held += subs
                .iter()
                .filter(|s| s.creator.as_deref() == Some(p.name.as_str()))
                .count();
        }
        self.quotas
            .may_create(&p.name, Holding::Subscriptions, held)?;
        self.inner.create_subscription(topic, name, new).await
    }

    /// The backend's ack ids inside the caller's sealed ones.
    fn open_ids(&self, topic: &str, name: &str, sealed: &[String]) -> Result<Vec<String>> {
        let tag = self.sealer.principal_tag(self.caller.name());
        let lease = self.sealer.lease(topic, name, &tag);
        sealed
            .iter()
            .map(|id| {
                lease
                    .open(id)
                    .map(str::to_string)
                    .map_err(|refused| refused.into_error(id))
            })
            .collect()
    }
}

/// The bytes of an event a publish quota counts.
fn event_bytes(e: &NewEvent) -> usize {
    let attributes: usize = e.attributes.iter().map(|(k, v)| k.len() + v.len()).sum();
    e.payload.len() + e.key.len() + e.event_type.len() + e.content_type.len() + attributes
}

#[async_trait]
impl Broker for Scoped {
    fn limits(&self) -> &Limits {
        self.inner.limits()
    }

    async fn publish(&self, topic: &str, events: &[NewEvent]) -> Result<Published> {
        if let Caller::Principal(p) = &self.caller {
            let bytes = events.iter().map(event_bytes).sum();
            self.quotas.publish(&p.name, events.len(), bytes)?;
        }
        self.on_creating(topic, None, |t| async move {
            self.inner.publish(&t, events).await
        })
        .await
    }

    async fn replay(&self, mut request: ReplayRequest) -> Result<BoxStream<Result<ReplayItem>>> {
        request.topic = self.topic(&request.topic).map_err(|e| self.error_out(e))?;
        self.inner
            .replay(request)
            .await
            .map_err(|e| self.error_out(e))
    }

    async fn create_topic(&self, name: &str, config: TopicConfig) -> Result<TopicInfo> {
        let info = self
            .on(name, |t| async move {
                self.create_topic_as_caller(&t, config).await
            })
            .await?;
        Ok(self.topic_out(info))
    }

    async fn get_topic(&self, name: &str) -> Result<TopicInfo> {
        let info = self
            .on(name, |t| async move { self.inner.get_topic(&t).await })
            .await?;
        Ok(self.topic_out(info))
    }

    async fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        let all = self.inner.list_topics().await?;
        Ok(all
            .into_iter()
            .filter(|t| self.visible(&t.name))
            .map(|t| self.topic_out(t))
            .collect())
    }

    async fn delete_topic(&self, name: &str) -> Result<()> {
        self.on(name, |t| async move { self.inner.delete_topic(&t).await })
            .await
    }

    async fn create_subscription(
        &self,
        topic: &str,
        name: &str,
        new: NewSubscription,
    ) -> Result<SubscriptionInfo> {
        let info = self
            .on_creating(topic, None, |t| {
                let new = new.clone();
                async move { self.create_subscription_as_caller(&t, name, new).await }
            })
            .await?;
        Ok(self.subscription_out(info))
    }

    async fn get_subscription(&self, topic: &str, name: &str) -> Result<SubscriptionInfo> {
        let info = self
            .on(topic, |t| async move {
                self.inner.get_subscription(&t, name).await
            })
            .await?;
        Ok(self.subscription_out(info))
    }

    async fn list_subscriptions(
        &self,
        topic: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<SubscriptionInfo>, bool)> {
        let (page, more) = self
            .on(topic, |t| async move {
                self.inner.list_subscriptions(&t, after, limit).await
            })
            .await?;
        let page = page.into_iter().map(|s| self.subscription_out(s)).collect();
        Ok((page, more))
    }

    async fn update_subscription(
        &self,
        topic: &str,
        name: &str,
        update: SubscriptionUpdate,
    ) -> Result<SubscriptionInfo> {
        let info = self
            .on(topic, |t| async move {
                self.inner.update_subscription(&t, name, update).await
            })
            .await?;
        Ok(self.subscription_out(info))
    }

    async fn set_paused(&self, topic: &str, name: &str, paused: bool) -> Result<SubscriptionInfo> {
        let info = self
            .on(topic, |t| async move {
                self.inner.set_paused(&t, name, paused).await
            })
            .await?;
        Ok(self.subscription_out(info))
    }

    async fn seek(&self, topic: &str, name: &str, target: SeekTarget) -> Result<SubscriptionInfo> {
        let info = self
            .on(
                topic,
                |t| async move { self.inner.seek(&t, name, target).await },
            )
            .await?;
        Ok(self.subscription_out(info))
    }

    async fn delete_subscription(&self, topic: &str, name: &str) -> Result<()> {
        self.on(topic, |t| async move {
            self.inner.delete_subscription(&t, name).await
        })
        .await
    }

    async fn subscribe(&self, topic: &str, name: &str, max_in_flight: u32) -> Result<Membership> {
        let internal = self.topic(topic).map_err(|e| self.error_out(e))?;
        // Held by the stream: the slot frees when the member leaves.
        let slot = match &self.caller {
            Caller::Principal(p) => self.quotas.open_stream(&p.name)?,
            Caller::Anonymous => None,
        };
        let membership = self
            .on_creating(topic, Some(name), |t| async move {
                self.inner.subscribe(&t, name, max_in_flight).await
            })
            .await?;
        let tag = self.sealer.principal_tag(self.caller.name());
        let lease = self.sealer.lease(&internal, name, &tag);
        let deliveries = membership.deliveries.map(move |batch| {
            let _slot = &slot;
            batch.map(|mut batch| {
                for d in &mut batch {
                    d.ack_id = lease.seal(&d.ack_id);
                }
                batch
            })
        });
        Ok(Membership {
            member_id: membership.member_id,
            deliveries: Box::pin(deliveries),
        })
    }

    async fn settle(
        &self,
        topic: &str,
        name: &str,
        op: SettleOp,
        ack_ids: &[String],
    ) -> Result<SettleOutcome> {
        let internal = self.topic(topic).map_err(|e| self.error_out(e))?;
        let inner_ids = match self.open_ids(&internal, name, ack_ids) {
            Ok(ids) => ids,
            Err(refused) => {
                // A subscription that does not exist is NOT_FOUND whatever
                // the ids (checked only on this failure path).
                if let Err(e) = self.inner.get_subscription(&internal, name).await {
                    return Err(self.error_out(e));
                }
                return Err(refused);
            }
        };
        let outcome = self
            .inner
            .settle(&internal, name, op, &inner_ids)
            .await
            .map_err(|e| self.error_out(e))?;
        // Stale ids go back to the caller as it sent them.
        let stale = outcome
            .stale
            .into_iter()
            .filter_map(|s| {
                let i = inner_ids.iter().position(|id| *id == s)?;
                Some(ack_ids[i].clone())
            })
            .collect();
        Ok(SettleOutcome { stale })
    }

    async fn list_dead_letters(
        &self,
        topic: &str,
        name: &str,
        after: Option<u64>,
        limit: usize,
        query: DeadLetterQuery,
    ) -> Result<DeadLetterPage> {
        self.on(topic, |t| async move {
            self.inner
                .list_dead_letters(&t, name, after, limit, query)
                .await
        })
        .await
    }

    async fn get_dead_letter(&self, topic: &str, name: &str, id: u64) -> Result<DeadLetter> {
        self.on(topic, |t| async move {
            self.inner.get_dead_letter(&t, name, id).await
        })
        .await
    }

    async fn purge_dead_letters(
        &self,
        topic: &str,
        name: &str,
        selector: DeadLetterSelector,
        dry_run: bool,
    ) -> Result<u64> {
        self.on(topic, |t| async move {
            self.inner
                .purge_dead_letters(&t, name, selector, dry_run)
                .await
        })
        .await
    }

    async fn redrive_dead_letters(
        &self,
        topic: &str,
        name: &str,
        selector: DeadLetterSelector,
        dry_run: bool,
        max_per_second: u32,
    ) -> Result<u64> {
        self.on(topic, |t| async move {
            self.inner
                .redrive_dead_letters(&t, name, selector, dry_run, max_per_second)
                .await
        })
        .await
    }

    fn health(&self) -> StorageHealth {
        self.inner.health()
    }

    fn watch_health(&self) -> watch::Receiver<StorageHealth> {
        self.inner.watch_health()
    }

    async fn storage(&self) -> Result<StorageReport> {
        self.inner.storage().await
    }

    fn backend(&self) -> Backend {
        self.inner.backend()
    }

    async fn cluster(&self) -> Result<Option<ClusterReport>> {
        self.inner.cluster().await
    }

    async fn backup(&self, dir: &Path) -> Result<u64> {
        self.inner.backup(dir).await
    }

    // Only global admins list the audit log (grpc/guard.rs), and records
    // carry the names their callers used.
    async fn append_audit(&self, records: Vec<AuditRecord>) -> Result<()> {
        self.inner.append_audit(records).await
    }

    async fn list_audit(&self, query: AuditQuery) -> Result<AuditPage> {
        self.inner.list_audit(query).await
    }

    async fn flush(&self) {
        self.inner.flush().await
    }
}
