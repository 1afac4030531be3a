//! Per-topic publish rates for `GetStatus`: a sampler records each topic's
//! committed end offsets every [`SAMPLE_EVERY`] and keeps [`WINDOW`] of
//! history, so a rate is events per second over the last ~10 s.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use eventbus_broker::Broker;

pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
const WINDOW: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct PublishRates {
    samples: Mutex<VecDeque<(Instant, HashMap<String, u64>)>>,
}

impl PublishRates {
    pub async fn sample(&self, broker: &dyn Broker, now: Instant) {
        let Ok(topics) = broker.list_topics().await else {
            return;
        };
        let ends = topics
            .into_iter()
            .map(|t| {
                let events = t.committed_events();
                (t.name, events)
            })
            .collect();
        let mut s = self.samples.lock().expect("not poisoned");
        s.push_back((now, ends));
        // Keep one sample at or beyond the window's start.
        while s.len() > 2 && now.duration_since(s[1].0) >= WINDOW {
            s.pop_front();
        }
    }

    /// Events per second published to `topic` over the sampled window; 0
    /// until two samples exist.
    pub fn rate(&self, topic: &str) -> f64 {
        let s = self.samples.lock().expect("not poisoned");
        let (Some((t0, first)), Some((t1, last))) = (s.front(), s.back()) else {
            return 0.0;
        };
        let secs = t1.duration_since(*t0).as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        let (a, b) = (
            first.get(topic).copied().unwrap_or(0),
            last.get(topic).copied().unwrap_or(0),
        );
        b.saturating_sub(a) as f64 / secs
    }
}
