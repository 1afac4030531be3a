//! Subscription figures across gateways. JetStream keeps the gauges a
//! subscription has (backlog, in flight); what a single node counts in its
//! delivery actor (delivered, acked, nacked, redelivered, dead-lettered,
//! filtered) and its open Subscribe streams happen on whichever gateway
//! delivers or settles. Each gateway counts its own, per subscription, in
//! memory, and answers a core NATS request on [`SUBJECT`] with them; the
//! gateway asked for a subscription's figures sends one request and sums
//! what comes back within [`GATHER_WINDOW`].
//!
//! Counters therefore count since each gateway started, as a single node's
//! count since its process started, and the sum is over the gateways that
//! answered in time: one that is down or cut off from NATS is missing from
//! it until it answers again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::delivery::Members;

/// Where every gateway listens for the request (core NATS, not stored).
pub const SUBJECT: &str = "eventbus.gateways.stats";

/// How long the asking gateway waits for the others. Gateways on one
/// cluster answer in a few milliseconds; the wait ends early once as many
/// answered as the last full window saw (see [`Gateways::gather`]).
const GATHER_WINDOW: Duration = Duration::from_millis(250);

/// How often a gather waits the full window even when the expected number
/// answered early, so that a gateway started since is counted.
const FULL_WINDOW_EVERY: Duration = Duration::from_secs(5);

/// One subscription's counts on one gateway.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub delivered: u64,
    pub acked: u64,
    pub nacked: u64,
    pub redelivered: u64,
    pub dead_lettered: u64,
    pub filtered: u64,
    /// Subscribe streams open on the subscription (a gauge).
    pub members: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.delivered += o.delivered;
        self.acked += o.acked;
        self.nacked += o.nacked;
        self.redelivered += o.redelivered;
        self.dead_lettered += o.dead_lettered;
        self.filtered += o.filtered;
        self.members += o.members;
    }
}

/// What the asking gateway sends: the subscriptions it wants.
#[derive(Serialize, Deserialize)]
struct Ask {
    subscriptions: Vec<u32>,
}

/// One gateway's answer.
#[derive(Serialize, Deserialize)]
struct Answer {
    gateway: u64,
    /// Only subscriptions this gateway has counted anything for.
    counts: Vec<(u32, Counts)>,
}

/// This gateway's counts, and what it knows of the others.
pub struct Gateways {
    /// Random, to tell this gateway's own answer from the others'.
    id: u64,
    counts: Mutex<HashMap<u32, Counts>>,
    members: Arc<Members>,
    /// Gateways (this one excluded) that answered the last full window.
    expected: AtomicUsize,
    /// When a gather last waited the full window.
    last_full: Mutex<Option<Instant>>,
}

/// Which counter an event bumps.
#[derive(Debug, Clone, Copy)]
pub enum Count {
    Delivered { redelivery: bool },
    Acked,
    Nacked,
    DeadLettered,
    Filtered,
}

impl Gateways {
    pub fn new(members: Arc<Members>) -> Gateways {
        Gateways {
            id: rand::random(),
            counts: Mutex::default(),
            members,
            expected: AtomicUsize::new(0),
            last_full: Mutex::new(None),
        }
    }

    /// Counts one event of subscription `subscription`.
    pub fn count(&self, subscription: u32, what: Count) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let c = counts.entry(subscription).or_default();
        match what {
            Count::Delivered { redelivery } => {
                c.delivered += 1;
                c.redelivered += u64::from(redelivery);
            }
            Count::Acked => c.acked += 1,
            Count::Nacked => c.nacked += 1,
            Count::DeadLettered => c.dead_lettered += 1,
            Count::Filtered => c.filtered += 1,
        }
    }

    /// Forgets a deleted subscription's counts.
    pub fn forget(&self, subscription: u32) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.remove(&subscription);
    }

    /// This gateway's counts for `subscriptions`, members included; only
    /// those with anything to report.
    fn local(&self, subscriptions: &[u32]) -> Vec<(u32, Counts)> {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        subscriptions
            .iter()
            .filter_map(|&id| {
                let mut c = counts.get(&id).copied().unwrap_or_default();
                c.members = u64::from(self.members.count(id));
                (c != Counts::default()).then_some((id, c))
            })
            .collect()
    }

    /// Answers every other gateway's requests until the connection closes.
    pub async fn serve(self: Arc<Gateways>, client: async_nats::Client) {
        let mut requests = match client.subscribe(SUBJECT).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot answer other gateways' statistics requests");
                return;
            }
        };
        while let Some(request) = requests.next().await {
            let Some(reply) = request.reply else { continue };
            let Ok(ask) = serde_json::from_slice::<Ask>(&request.payload) else {
                continue;
            };
            let answer = Answer {
                gateway: self.id,
                counts: self.local(&ask.subscriptions),
            };
            let Ok(body) = serde_json::to_vec(&answer) else {
                continue;
            };
            if let Err(e) = client.publish(reply, Bytes::from(body)).await {
                tracing::debug!(error = %e, "answering a statistics request");
            }
        }
    }

    /// The counts of `subscriptions` summed over this gateway and every
    /// other that answers in time. Without NATS, this gateway's alone.
    pub async fn gather(
        &self,
        client: &async_nats::Client,
        subscriptions: &[u32],
    ) -> HashMap<u32, Counts> {
        let mut total: HashMap<u32, Counts> = self.local(subscriptions).into_iter().collect();
        if subscriptions.is_empty() {
            return total;
        }
        let started = Instant::now();
        let full = {
            let last = self.last_full.lock().unwrap_or_else(|e| e.into_inner());
            last.is_none_or(|t| started.duration_since(t) >= FULL_WINDOW_EVERY)
        };
        let expected = self.expected.load(Ordering::Relaxed);
        if !full && expected == 0 {
            // No other gateway answered the last full window.
            return total;
        }
        let answers = match self.ask(client, subscriptions, full, expected).await {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "gathering other gateways' statistics");
                return total;
            }
        };
        if full || answers.len() > expected {
            self.expected.store(answers.len(), Ordering::Relaxed);
            *self.last_full.lock().unwrap_or_else(|e| e.into_inner()) = Some(started);
        }
        for answer in answers {
            for (id, c) in answer.counts {
                total.entry(id).or_default().add(&c);
            }
        }
        total
    }

    /// Sends the request and collects the other gateways' answers: for the
    /// whole window, or (`full` false) until `expected` answered.
    async fn ask(
        &self,
        client: &async_nats::Client,
        subscriptions: &[u32],
        full: bool,
        expected: usize,
    ) -> Result<Vec<Answer>, String> {
        let body = serde_json::to_vec(&Ask {
            subscriptions: subscriptions.to_vec(),
        })
        .map_err(|e| e.to_string())?;
        let inbox = client.new_inbox();
        let mut replies = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| e.to_string())?;
        client
            .publish_with_reply(SUBJECT, inbox, Bytes::from(body))
            .await
            .map_err(|e| e.to_string())?;
        let ends = Instant::now() + GATHER_WINDOW;
        let mut seen = HashSet::new();
        let mut answers = Vec::new();
        while full || answers.len() < expected {
            let Ok(Some(reply)) = tokio::time::timeout_at(ends, replies.next()).await else {
                break;
            };
            let Ok(answer) = serde_json::from_slice::<Answer>(&reply.payload) else {
                continue;
            };
            // Our own answer (NATS echoes the request back to us) is
            // already in the total.
            if answer.gateway != self.id && seen.insert(answer.gateway) {
                answers.push(answer);
            }
        }
        let _ = replies.unsubscribe().await;
        Ok(answers)
    }
}
