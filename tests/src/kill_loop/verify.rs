//! The verifier: reads the log back with Replay after every restart (the
//! tail, or all of it: see [`Verifier::check`]) and judges it, and the
//! consumers' deliveries, against the [`History`].
//!
//! | check | how |
//! |---|---|
//! | lost | every publish answered OK before the Replay call is at its (partition, offset) with its payload (in the range read) |
//! | holes | offsets of each partition are dense from 0 up to the end GetTopic reported before the Replay |
//! | reused | an offset read back once never shows another payload later |
//! | truncated | a partition never ends below an offset read back earlier |
//! | duplicates | no payload (so no idempotency key) is stored at two offsets |
//! | floor regressions | an event whose Ack returned OK is delivered again only after a kill that came less than `grace` after that OK (the last lazy ack-state flush may be lost) |
//! | never delivered | at the end, every event in the log reached a consumer at least once |

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use eventbus::Client;
use tokio_stream::StreamExt;

use super::history::{Acked, Delivered, History};

/// One partition as read back: `(offset, payload)` in offset order.
type Partition = Vec<(u64, String)>;

/// Counts of anomalies. All zero in a correct run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Anomalies {
    pub lost: u64,
    pub holes: u64,
    pub reused: u64,
    pub truncated: u64,
    pub duplicates: u64,
    pub floor_regressions: u64,
    pub never_delivered: u64,
}

impl std::fmt::Display for Anomalies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "lost {}, holes {}, reused {}, truncated {}, duplicates {}, floor regressions {}, never delivered {}",
            self.lost,
            self.holes,
            self.reused,
            self.truncated,
            self.duplicates,
            self.floor_regressions,
            self.never_delivered
        )
    }
}

impl Anomalies {
    pub fn total(&self) -> u64 {
        self.lost
            + self.holes
            + self.reused
            + self.truncated
            + self.duplicates
            + self.floor_regressions
            + self.never_delivered
    }

    fn add(&mut self, o: &Anomalies) {
        self.lost += o.lost;
        self.holes += o.holes;
        self.reused += o.reused;
        self.truncated += o.truncated;
        self.duplicates += o.duplicates;
        self.floor_regressions += o.floor_regressions;
        self.never_delivered += o.never_delivered;
    }
}

/// What one check found.
#[derive(Clone, Debug, Default)]
pub struct Check {
    pub anomalies: Anomalies,
    /// Events in the log.
    pub events: u64,
    /// Publishes answered OK so far (retries answered "duplicate" included).
    pub acked_publishes: u64,
    /// Deliveries of an event that had been delivered before (nacks,
    /// leases lost in a crash, acks lost in the flush window).
    pub redeliveries: u64,
    /// Of those, events whose Ack had returned OK within `grace` before a
    /// kill: the contract allows them back.
    pub acks_back_within_grace: u64,
    /// The oldest such ack (kill minus OK), the measure the grace must cover.
    pub max_ack_age_back: Option<Duration>,
    /// Events in the log that no consumer has received yet, and a few of them.
    pub undelivered: u64,
    pub undelivered_examples: Vec<String>,
    /// How long GetTopic and the Replay took ...
    pub read: Duration,
    /// ... and that plus the checks.
    pub took: Duration,
    /// Up to a few examples of each anomaly, for the report.
    pub examples: Vec<String>,
}

/// What one power cut took (see [`Verifier::cut`]).
#[derive(Clone, Debug, Default)]
pub struct CutLoss {
    /// Acknowledged publishes no longer in the log.
    pub lost: u64,
    /// How long before the kill the oldest and the newest of them had been
    /// answered OK: the loss window.
    pub oldest: Option<Duration>,
    pub newest: Option<Duration>,
    /// Offsets the partitions lost below the highest end read back before
    /// (events stored since the last check are not counted).
    pub events: u64,
    pub examples: Vec<String>,
}

/// The verifier's memory across cycles.
pub struct Verifier {
    grace: Duration,
    /// Every offset ever read back, with its payload.
    seen: HashMap<(u32, u64), String>,
    /// Where each payload was read back first.
    by_payload: HashMap<String, (u32, u64)>,
    /// The highest end read back per partition.
    ends: HashMap<u32, u64>,
    /// Answered publishes taken from the history so far: (partition, offset,
    /// payload, when the OK arrived).
    acked_publishes: Vec<(u32, u64, String, Instant)>,
    /// OK acks per event, taken from the history so far.
    acks: HashMap<(u32, u64), Vec<Acked>>,
    delivered: HashSet<(u32, u64)>,
    stored_cursor: usize,
    acked_cursor: usize,
    delivered_cursor: usize,
    /// What [`Verifier::cut`] found, reported with the next check.
    pending: Check,
    pub totals: Anomalies,
}

const MAX_EXAMPLES: usize = 5;

/// How far below the highest end read before a tail check starts reading,
/// per partition (see [`Verifier::check`]).
pub const TAIL_WINDOW: u64 = 1_000;

/// How much of the log a check reads back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Full,
    Tail,
}

impl Verifier {
    /// `grace`: how long after an Ack's OK the ack may still be lost to a kill.
    pub fn new(grace: Duration) -> Verifier {
        Verifier {
            grace,
            seen: HashMap::new(),
            by_payload: HashMap::new(),
            ends: HashMap::new(),
            acked_publishes: Vec::new(),
            acks: HashMap::new(),
            delivered: HashSet::new(),
            stored_cursor: 0,
            acked_cursor: 0,
            delivered_cursor: 0,
            pending: Check::default(),
            totals: Anomalies::default(),
        }
    }

    /// Reads `topic` back through `client` (connected straight to the
    /// server) and checks it and everything recorded since the last check.
    ///
    /// `Scope::Full` reads every partition from offset 0. `Scope::Tail` reads
    /// from [`TAIL_WINDOW`] offsets below the highest end read before: an
    /// offset can only be reused if a partition's end went back, which the
    /// truncation check sees unless publishes refilled the partition past its
    /// old end before this check, and the window covers any refill a restart
    /// leaves time for. Tail checks keep a cycle's cost independent of the
    /// log's size, so kills stay at their random moments.
    pub async fn check(
        &mut self,
        client: &Client,
        topic: &str,
        history: &History,
        scope: Scope,
    ) -> eventbus::Result<Check> {
        let started = Instant::now();
        // Publishes answered before the reads below are committed, so they
        // must be in what the reads return.
        let stored_until = history.lock().stored.len();
        let promised = partition_ends(client, topic).await?;
        let from: HashMap<u32, u64> = promised
            .keys()
            .map(|p| {
                let high = self.ends.get(p).copied().unwrap_or_default();
                let from = match scope {
                    Scope::Full => 0,
                    Scope::Tail => high.saturating_sub(TAIL_WINDOW),
                };
                (*p, from)
            })
            .collect();
        let log = replay(client, topic, &from).await?;
        let mut check = Check {
            read: started.elapsed(),
            ..std::mem::take(&mut self.pending)
        };
        self.take_publishes(history, stored_until);
        self.check_log(&log, &from, &promised, &mut check);
        self.check_deliveries(history, &mut check);
        if scope == Scope::Full {
            for (p, events) in &log {
                for (o, payload) in events {
                    if !self.delivered.contains(&(*p, *o)) {
                        check.undelivered += 1;
                        if check.undelivered_examples.len() < MAX_EXAMPLES {
                            check
                                .undelivered_examples
                                .push(format!("{payload} at {p}:{o}"));
                        }
                    }
                }
            }
        }
        check.events = log
            .iter()
            .map(|(p, events)| events.last().map_or(from[p], |(o, _)| o + 1))
            .sum();
        check.acked_publishes = self.acked_publishes.len() as u64;
        check.took = started.elapsed();
        self.totals.add(&check.anomalies);
        Ok(check)
    }

    /// Every anomaly found so far, including those of a cut not yet
    /// reported by a check.
    pub fn all_anomalies(&self) -> Anomalies {
        let mut all = self.totals;
        all.add(&self.pending.anomalies);
        all
    }

    /// Counts the events of `check` that never reached a consumer as
    /// anomalies: the end-of-run verdict, once the consumers had their chance.
    pub fn record_never_delivered(&mut self, check: &mut Check) {
        check.anomalies.never_delivered = check.undelivered;
        self.totals.never_delivered += check.undelivered;
        let examples: Vec<String> = check
            .undelivered_examples
            .iter()
            .map(|u| format!("never delivered: {u}"))
            .collect();
        check.examples.extend(examples);
    }

    /// After a power cut and the restart, before any client reaches the new
    /// server: takes every publish answered and every delivery made so far,
    /// counts the acknowledged publishes at or past a partition's new end as
    /// lost to the cut, and forgets those offsets (new publishes reuse them,
    /// which is then no anomaly). The next [`Verifier::check`] judges the
    /// rest as usual: an acknowledged publish below the new end must still be
    /// there, so a cut may only take a suffix of each partition.
    ///
    /// `allowed`: whether the durability mode allows the loss (buffered);
    /// otherwise every lost publish is counted as an anomaly.
    pub async fn cut(
        &mut self,
        client: &Client,
        topic: &str,
        history: &History,
        killed_at: Instant,
        allowed: bool,
    ) -> eventbus::Result<CutLoss> {
        let ends = partition_ends(client, topic).await?;
        Ok(self.forget_past(&ends, history, killed_at, allowed))
    }

    /// [`Verifier::cut`] once the partitions' `ends` after the restart are known.
    fn forget_past(
        &mut self,
        ends: &HashMap<u32, u64>,
        history: &History,
        killed_at: Instant,
        allowed: bool,
    ) -> CutLoss {
        let answered = history.lock().stored.len();
        self.take_publishes(history, answered);
        let mut pending = std::mem::take(&mut self.pending);
        self.check_deliveries(history, &mut pending);
        let gone = |p: &u32, o: &u64| ends.get(p).is_none_or(|end| o >= end);
        let mut loss = CutLoss::default();
        self.acked_publishes.retain(|(p, o, payload, at)| {
            if !gone(p, o) {
                return true;
            }
            loss.lost += 1;
            let age = killed_at.saturating_duration_since(*at);
            loss.oldest = loss.oldest.max(Some(age));
            loss.newest = Some(loss.newest.map_or(age, |n: Duration| n.min(age)));
            if loss.examples.len() < MAX_EXAMPLES {
                loss.examples.push(format!(
                    "lost to the power cut: {payload} answered at {p}:{o} {} ms before the kill",
                    age.as_millis()
                ));
            }
            false
        });
        let by_payload = &mut self.by_payload;
        self.seen.retain(|(p, o), payload| {
            let keep = !gone(p, o);
            if !keep {
                by_payload.remove(payload);
            }
            keep
        });
        self.delivered.retain(|(p, o)| !gone(p, o));
        self.acks.retain(|(p, o), _| !gone(p, o));
        for (p, high) in self.ends.iter_mut() {
            let end = ends.get(p).copied().unwrap_or_default();
            loss.events += high.saturating_sub(end);
            *high = (*high).min(end);
        }
        if !allowed && loss.lost > 0 {
            pending.anomalies.lost += loss.lost;
            pending.examples.extend(loss.examples.iter().cloned());
        }
        self.pending = pending;
        loss
    }

    fn take_publishes(&mut self, history: &History, until: usize) {
        let record = history.lock();
        for s in &record.stored[self.stored_cursor..until] {
            self.acked_publishes
                .push((s.partition, s.offset, s.payload.clone(), s.answered));
        }
        self.stored_cursor = until;
    }

    fn check_log(
        &mut self,
        log: &HashMap<u32, Partition>,
        from: &HashMap<u32, u64>,
        promised: &HashMap<u32, u64>,
        c: &mut Check,
    ) {
        let example = |c: &mut Check, what: String| {
            if c.examples.len() < 4 * MAX_EXAMPLES {
                c.examples.push(what);
            }
        };
        for (&p, &promised_end) in promised {
            let events = log.get(&p).map(Vec::as_slice).unwrap_or_default();
            let mut next = from[&p];
            for (o, payload) in events {
                if *o > next {
                    c.anomalies.holes += o - next;
                    example(c, format!("hole: partition {p} offsets {next}..{o}"));
                } else if *o < next {
                    c.anomalies.reused += 1;
                    example(c, format!("reused: partition {p} offset {o} read twice"));
                }
                next = o + 1;
                match self.seen.get(&(p, *o)) {
                    Some(old) if old != payload => {
                        c.anomalies.reused += 1;
                        example(c, format!("reused: {p}:{o} held {old}, now {payload}"));
                    }
                    Some(_) => {}
                    None => {
                        self.seen.insert((p, *o), payload.clone());
                        if let Some(first) = self.by_payload.insert(payload.clone(), (p, *o)) {
                            c.anomalies.duplicates += 1;
                            example(
                                c,
                                format!(
                                    "duplicate: {payload} at {}:{} and {p}:{o}",
                                    first.0, first.1
                                ),
                            );
                        }
                    }
                }
            }
            if next < promised_end {
                c.anomalies.holes += promised_end - next;
                example(
                    c,
                    format!("hole: partition {p} ends at {next}, GetTopic said {promised_end}"),
                );
            }
            let high = self.ends.entry(p).or_default();
            if next < *high {
                c.anomalies.truncated += *high - next;
                example(
                    c,
                    format!("truncated: partition {p} ends at {next}, had {high}"),
                );
            }
            *high = (*high).max(next);
        }
        for (p, o, payload, _) in &self.acked_publishes {
            if *o < from[p] {
                continue; // read back intact by an earlier check
            }
            let found = log
                .get(p)
                .and_then(|events| events.binary_search_by_key(o, |(off, _)| *off).ok())
                .map(|i| &log[p][i].1);
            if found != Some(payload) {
                c.anomalies.lost += 1;
                example(
                    c,
                    format!("lost: {payload} answered at {p}:{o}, read back {found:?}"),
                );
            }
        }
    }

    /// Judges every delivery recorded since the last check against the acks
    /// recorded so far (an ack answered before a delivery is always recorded
    /// before this runs).
    fn check_deliveries(&mut self, history: &History, c: &mut Check) {
        let record = history.lock();
        for a in &record.acked[self.acked_cursor..] {
            self.acks
                .entry((a.partition, a.offset))
                .or_default()
                .push(*a);
        }
        self.acked_cursor = record.acked.len();
        let kills = &record.kills;
        for d in &record.delivered[self.delivered_cursor..] {
            if !self.delivered.insert((d.partition, d.offset)) {
                c.redeliveries += 1;
            }
            let Some(acks) = self.acks.get(&(d.partition, d.offset)) else {
                continue;
            };
            let mut regression = None;
            let mut within_grace = None;
            for a in acks.iter().filter(|a| a.answered < d.received) {
                match judge(a, d, kills, self.grace) {
                    Judgement::Allowed(age) => within_grace = within_grace.max(Some(age)),
                    Judgement::Regression(why) => regression = Some(why),
                    Judgement::Unknown => {}
                }
            }
            if let Some(why) = regression {
                c.anomalies.floor_regressions += 1;
                if c.examples.len() < 4 * MAX_EXAMPLES {
                    c.examples.push(format!(
                        "floor regression: {} at {}:{} delivered again (attempt {}): {why}",
                        d.payload, d.partition, d.offset, d.attempt
                    ));
                }
            } else if let Some(age) = within_grace {
                c.acks_back_within_grace += 1;
                c.max_ack_age_back = c.max_ack_age_back.max(Some(age));
            }
        }
        self.delivered_cursor = record.delivered.len();
    }
}

enum Judgement {
    /// The ack was lost to a kill this long after its OK: within the grace.
    Allowed(Duration),
    Regression(String),
    /// A kill came between the call and the OK: the server that settled it
    /// may have died right after, so its loss proves nothing.
    Unknown,
}

/// Whether delivery `d`, coming after ack `a` of the same event returned OK,
/// is allowed: only when a kill came after the OK, before the delivery, and
/// within `grace` of the OK.
fn judge(a: &Acked, d: &Delivered, kills: &[Instant], grace: Duration) -> Judgement {
    let first_after = |t: Instant| kills.partition_point(|k| *k <= t);
    let after_call = first_after(a.called);
    if kills.get(after_call).is_some_and(|k| *k <= a.answered) {
        return Judgement::Unknown;
    }
    match kills.get(after_call) {
        Some(kill) if *kill < d.received => {
            let age = kill.duration_since(a.answered);
            if age <= grace {
                Judgement::Allowed(age)
            } else {
                Judgement::Regression(format!(
                    "its Ack returned OK {} ms before a kill (grace {} ms)",
                    age.as_millis(),
                    grace.as_millis()
                ))
            }
        }
        _ => Judgement::Regression("its Ack had returned OK and no kill came since".into()),
    }
}

/// Each partition's end offset now (GetTopic).
async fn partition_ends(client: &Client, topic: &str) -> eventbus::Result<HashMap<u32, u64>> {
    let t = client.admin().get_topic(topic).await?;
    Ok(t.partition_info
        .iter()
        .map(|p| (p.partition, p.end_offset))
        .collect())
}

/// The events of each partition in `from`, from its offset up to the
/// partition's tail at the call.
async fn replay(
    client: &Client,
    topic: &str,
    from: &HashMap<u32, u64>,
) -> eventbus::Result<HashMap<u32, Partition>> {
    let mut log: HashMap<u32, Partition> = HashMap::new();
    for (&p, &start) in from {
        let mut stream = client
            .events()
            .replay(eventbus::v1::ReplayRequest {
                topic: topic.into(),
                partitions: vec![p],
                start: Some(eventbus::v1::replay_request::Start::StartOffset(start)),
                ..Default::default()
            })
            .await?
            .into_inner();
        let events = log.entry(p).or_default();
        while let Some(msg) = stream.next().await {
            for e in msg?.events {
                events.push((e.offset, String::from_utf8_lossy(&e.payload).into_owned()));
            }
        }
    }
    Ok(log)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(origin: Instant, ms: u64) -> Instant {
        origin + Duration::from_millis(ms)
    }

    fn ack(origin: Instant, called: u64, answered: u64) -> Acked {
        Acked {
            partition: 0,
            offset: 7,
            called: at(origin, called),
            answered: at(origin, answered),
        }
    }

    fn delivery(origin: Instant, received: u64) -> Delivered {
        Delivered {
            partition: 0,
            offset: 7,
            payload: "w0-7".into(),
            attempt: 2,
            received: at(origin, received),
        }
    }

    const GRACE: Duration = Duration::from_millis(100);

    #[test]
    fn an_ack_lost_within_the_grace_may_come_back() {
        let o = Instant::now();
        let kills = [at(o, 1000)];
        let j = judge(&ack(o, 900, 950), &delivery(o, 2000), &kills, GRACE);
        assert!(matches!(j, Judgement::Allowed(age) if age == Duration::from_millis(50)));
    }

    #[test]
    fn an_ack_older_than_the_grace_must_not_come_back() {
        let o = Instant::now();
        let kills = [at(o, 1000)];
        let j = judge(&ack(o, 800, 850), &delivery(o, 2000), &kills, GRACE);
        assert!(matches!(j, Judgement::Regression(_)));
    }

    #[test]
    fn an_acked_event_never_comes_back_without_a_kill() {
        let o = Instant::now();
        // A kill long before the ack, and one after the redelivery: neither counts.
        let kills = [at(o, 100), at(o, 3000)];
        let j = judge(&ack(o, 900, 950), &delivery(o, 960), &kills, GRACE);
        assert!(matches!(j, Judgement::Regression(_)));
    }

    #[test]
    fn an_ack_whose_answer_straddles_a_kill_proves_nothing() {
        let o = Instant::now();
        let kills = [at(o, 1000)];
        let j = judge(&ack(o, 990, 1010), &delivery(o, 2000), &kills, GRACE);
        assert!(matches!(j, Judgement::Unknown));
    }

    fn verifier_with(seen: &[(u32, u64, &str)]) -> Verifier {
        let mut v = Verifier::new(GRACE);
        for (p, o, payload) in seen {
            v.seen.insert((*p, *o), payload.to_string());
            v.by_payload.insert(payload.to_string(), (*p, *o));
            let end = v.ends.entry(*p).or_default();
            *end = (*end).max(o + 1);
        }
        v
    }

    fn log(events: &[(u64, &str)]) -> HashMap<u32, Partition> {
        HashMap::from([(0, events.iter().map(|(o, p)| (*o, p.to_string())).collect())])
    }

    fn judge_log(v: &mut Verifier, read: &HashMap<u32, Partition>, promised_end: u64) -> Anomalies {
        let mut c = Check::default();
        let from = HashMap::from([(0, 0)]);
        v.check_log(read, &from, &HashMap::from([(0, promised_end)]), &mut c);
        c.anomalies
    }

    #[test]
    fn a_clean_log_passes() {
        let mut v = verifier_with(&[(0, 0, "a")]);
        v.acked_publishes.push((0, 1, "b".into(), Instant::now()));
        let a = judge_log(&mut v, &log(&[(0, "a"), (1, "b")]), 2);
        assert_eq!(a, Anomalies::default());
    }

    #[test]
    fn a_power_cut_may_take_only_a_suffix_which_new_publishes_then_reuse() {
        let history = History::default();
        let killed_at = Instant::now();
        for (o, payload) in ["a", "b", "c", "d"].iter().enumerate() {
            history.stored(super::super::history::Stored {
                payload: payload.to_string(),
                partition: 0,
                offset: o as u64,
                duplicate: false,
                answered: killed_at - Duration::from_millis(40 - 10 * o as u64),
            });
        }
        let mut v = verifier_with(&[(0, 0, "a"), (0, 1, "b"), (0, 2, "c")]);
        // The partition ends at 2 after the cut: "c" and "d" are gone.
        let loss = v.forget_past(&HashMap::from([(0, 2)]), &history, killed_at, true);
        assert_eq!(loss.lost, 2);
        assert_eq!(loss.oldest, Some(Duration::from_millis(20)));
        assert_eq!(loss.newest, Some(Duration::from_millis(10)));
        assert_eq!(loss.events, 1, "offset 2 had been read back");
        assert_eq!(
            v.pending.anomalies,
            Anomalies::default(),
            "allowed in buffered mode"
        );
        // New publishes reuse offsets 2 and 3: no anomaly; the prefix must hold.
        let a = judge_log(&mut v, &log(&[(0, "a"), (1, "b"), (2, "e"), (3, "f")]), 4);
        assert_eq!(a, Anomalies::default(), "{a}");
        let a = judge_log(&mut v, &log(&[(0, "a"), (1, "x"), (2, "e"), (3, "f")]), 4);
        assert!(
            a.lost == 1 && a.reused == 1,
            "a changed prefix is still caught: {a}"
        );
    }

    #[test]
    fn in_fsync_mode_a_power_cut_loss_is_an_anomaly() {
        let history = History::default();
        let killed_at = Instant::now();
        history.stored(super::super::history::Stored {
            payload: "a".into(),
            partition: 0,
            offset: 0,
            duplicate: false,
            answered: killed_at,
        });
        let mut v = Verifier::new(GRACE);
        let loss = v.forget_past(&HashMap::from([(0, 0)]), &history, killed_at, false);
        assert_eq!(loss.lost, 1);
        assert_eq!(v.all_anomalies().lost, 1);
    }

    #[test]
    fn finds_holes_reuse_truncation_duplicates_and_losses() {
        let mut v = verifier_with(&[(0, 0, "a"), (0, 1, "b"), (0, 2, "c")]);
        v.acked_publishes.push((0, 2, "c".into(), Instant::now()));
        // Offset 1 now holds another payload, 2 is gone, "a" is stored twice.
        let a = judge_log(&mut v, &log(&[(0, "a"), (1, "x")]), 2);
        assert_eq!(a.reused, 1, "{a}");
        assert_eq!(a.truncated, 1, "{a}");
        assert_eq!(a.lost, 1, "{a}");
        let a = judge_log(&mut v, &log(&[(0, "a"), (1, "b"), (3, "a")]), 5);
        assert_eq!(a.holes, 2, "offset 2 and the promised 4: {a}");
        assert_eq!(a.duplicates, 1, "{a}");
    }
}
