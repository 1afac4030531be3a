//! Model-based test of the delivery engine: random sequences of operations run
//! against the real broker (RocksDB, actors, writer; no gRPC) and against a
//! small reference model written only for this test. Any divergence fails.
//!
//! Operations: publish, ack, nack (now or after a delay), dead-letter, time
//! advance past the ack deadline, a member leaving and rejoining (two members
//! share the subscription), a clean restart, a real crash, redrive, purge,
//! seek, pause/resume. After every operation: the exact set of events
//! delivered and their attempt numbers, per-key order in KEY mode, the DLQ
//! contents and size.
//!
//! # Crashes
//! A clean restart flushes the ack state and closes the store; the model stays
//! exact. A real crash ([`LogBroker::crash`]) stops the subscription actors
//! without writing their ack state, as `kill -9` would: what the engine
//! persisted lazily (every `ack-flush-interval`) since the last point where
//! the model *knows* the state reached disk may or may not be there. The
//! model therefore keeps, per event, the last state known durable; after a
//! crash an event whose state changed since is uncertain, with the range of
//! attempt counts it may come back with. The next deliveries and the DLQ
//! listing resolve each uncertain event to one of the states it could be in,
//! and the model checks that it is one of them. Known-durable points: a clean
//! restart, a seek, a settle that dead-lettered (it answers after its flush is
//! committed, which writes the whole dirty state), and, per event, a redrive or
//! a purge (synced admin writes).
//!
//! # Tiers
//! CI runs a fixed seed (reproducible) plus the saved regressions below. The
//! long tier draws random seeds: `PROPTEST_RNG_SEED=random PROPTEST_CASES=2000
//! cargo test --release -p eventbus-log --test model` (see RELIABILITY.md).
//! A failure prints the minimal input; add it to the regressions.
//! `MODEL_TRACE=1` prints each round's deliveries and the model's states.
//!
//! Real time, not tokio's paused clock: auto-advance would fire lease
//! deadlines while the engine waits for RocksDB on other threads. Leases are
//! long (60 s) and "time advance past the deadline" shortens the held leases
//! to 1 ms with ModifyAckDeadline, so they expire for real.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use eventbus_log::delivery::{Delivery, MemberStream, SettleOp};
use eventbus_log::Ordering;
use eventbus_log::{DeadLetterQuery, DeadLetterSelector};
use eventbus_log::{LogBroker, NewEvent, NewSubscription, Options, SeekTarget, TopicConfig};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

const MAX_ATTEMPTS: u32 = 3;
const DEADLINE: Duration = Duration::from_secs(60);
const KEYS: [&str; 3] = ["a", "b", "c"];
/// Members sharing the subscription.
const MEMBERS: usize = 2;
/// The CI tier's seed. Any fixed value works; changing it changes the cases.
const CI_SEED: u64 = 0x5eed_0011;

#[derive(Debug, Clone)]
enum Op {
    Publish(Vec<usize>),
    Ack(usize),
    Nack(usize),
    /// Nack with a delay that overrides the retry policy.
    NackAfter(usize),
    DeadLetter(usize),
    /// A member's stream drops and a new one joins in its place.
    Resubscribe(usize),
    Expire,
    /// Flush, then drop everything and reopen (a clean restart).
    Restart,
    /// Stop without writing the lazily flushed state, then reopen (kill -9).
    Crash,
    Redrive,
    Purge,
    SeekEarliest,
    Pause,
    Resume,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => proptest::collection::vec(0..KEYS.len(), 1..4).prop_map(Op::Publish),
        4 => (0..8usize).prop_map(Op::Ack),
        2 => (0..8usize).prop_map(Op::Nack),
        1 => (0..8usize).prop_map(Op::NackAfter),
        1 => (0..8usize).prop_map(Op::DeadLetter),
        1 => Just(Op::Expire),
        1 => Just(Op::Restart),
        2 => Just(Op::Crash),
        1 => (0..MEMBERS).prop_map(Op::Resubscribe),
        2 => Just(Op::Redrive),
        1 => Just(Op::Purge),
        1 => Just(Op::SeekEarliest),
        1 => Just(Op::Pause),
        1 => Just(Op::Resume),
    ]
}

/// Where one event is in the reference model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for delivery after `attempts` deliveries. After a crash the
    /// count is only known to lie in `attempts..=attempts_hi`.
    Pending {
        attempts: u32,
        attempts_hi: u32,
    },
    InFlight {
        attempts: u32,
    },
    Acked,
    Dead,
    Purged,
    /// After a crash: settled (acked or dead-lettered), or pending with
    /// `lo..=hi` attempts; the engine's next moves tell which.
    Maybe {
        lo: u32,
        hi: u32,
    },
}

impl State {
    fn pending(attempts: u32) -> State {
        State::Pending {
            attempts,
            attempts_hi: attempts,
        }
    }

    fn unsettled(self) -> bool {
        matches!(self, State::Pending { .. } | State::InFlight { .. })
    }
}

#[derive(Debug, Clone, Copy)]
struct Event {
    key: usize,
    state: State,
    /// The state last known to be on disk; see the module docs.
    durable: State,
    /// Deliveries since the last durable point, for the crash range.
    attempts_since_durable: u32,
}

#[derive(Default)]
struct Model {
    events: Vec<Event>,
    paused: bool,
    key_ordered: bool,
}

impl Model {
    fn publish(&mut self, keys: &[usize]) {
        for &key in keys {
            self.events.push(Event {
                key,
                state: State::pending(0),
                durable: State::pending(0),
                attempts_since_durable: 0,
            });
        }
    }

    fn state(&self, o: usize) -> State {
        self.events[o].state
    }

    fn set(&mut self, o: usize, s: State) {
        self.events[o].state = s;
    }

    /// Everything the engine holds is on disk now.
    fn all_durable(&mut self) {
        for e in &mut self.events {
            e.durable = e.state;
            e.attempts_since_durable = 0;
        }
    }

    /// One event's current state is on disk (a synced admin write).
    fn durable(&mut self, o: usize) {
        let e = &mut self.events[o];
        e.durable = e.state;
        e.attempts_since_durable = 0;
    }

    fn delivered(&mut self, o: usize, attempt: u32) {
        self.set(o, State::InFlight { attempts: attempt });
        self.events[o].attempts_since_durable += 1;
    }

    /// A failed attempt (nack or expiry): pending again, or dead once the
    /// attempts are used up.
    fn fail(&mut self, o: usize) {
        if let State::InFlight { attempts } = self.state(o) {
            self.set(
                o,
                if attempts >= MAX_ATTEMPTS {
                    State::Dead
                } else {
                    State::pending(attempts)
                },
            );
        }
    }

    /// A restart ended its lease: pending again, the attempt counted.
    fn released(&mut self, o: usize) {
        if let State::InFlight { attempts } = self.state(o) {
            self.set(o, State::pending(attempts));
        }
    }

    /// A clean restart: leases end, nothing else changes.
    fn restart(&mut self) {
        for o in 0..self.events.len() {
            self.released(o);
        }
        self.all_durable();
    }

    /// A crash: each event is back at its durable state or anywhere on the
    /// way from there to its current state.
    fn crash(&mut self) {
        for e in &mut self.events {
            let durable = match e.durable {
                State::InFlight { attempts } => State::pending(attempts),
                s => s,
            };
            let lo = match durable {
                State::Pending { attempts, .. } => attempts,
                State::Maybe { lo, .. } => lo,
                _ => 0,
            };
            let hi = match e.state {
                State::Pending { attempts_hi, .. } => attempts_hi,
                State::InFlight { attempts } => attempts,
                State::Maybe { hi, .. } => hi,
                _ => lo + e.attempts_since_durable,
            }
            .max(lo);
            e.state = match (durable, e.state) {
                (d, s) if d == s => d,
                (_, State::Purged) => State::Purged,
                (State::Pending { .. } | State::Maybe { .. }, s) if s.unsettled() => {
                    State::Pending {
                        attempts: lo,
                        attempts_hi: hi,
                    }
                }
                (State::Pending { .. } | State::Maybe { .. }, _) => State::Maybe { lo, hi },
                // Settled on disk, and settled for good: redrive and purge
                // are synced, so a durable Acked/Dead can only stay so.
                (d, _) => d,
            };
            e.durable = e.state;
            e.attempts_since_durable = 0;
        }
    }

    fn dead(&self) -> BTreeSet<usize> {
        (0..self.events.len())
            .filter(|&o| self.state(o) == State::Dead)
            .collect()
    }

    fn could_be_dead(&self, o: usize) -> bool {
        matches!(self.state(o), State::Dead | State::Maybe { .. })
    }

    /// Events that must be handed out now, and those that may be (uncertain
    /// after a crash). In KEY mode the engine hands out one event per key
    /// that has none in flight; which one is compared by key, not offset.
    fn deliverable(&self) -> (BTreeSet<usize>, BTreeSet<usize>) {
        let (mut must, mut may) = (BTreeSet::new(), BTreeSet::new());
        if self.paused {
            return (must, may);
        }
        let busy: BTreeSet<usize> = self
            .events
            .iter()
            .filter(|e| self.key_ordered && matches!(e.state, State::InFlight { .. }))
            .map(|e| e.key)
            .collect();
        for (o, e) in self.events.iter().enumerate() {
            if busy.contains(&e.key) {
                continue;
            }
            match e.state {
                State::Pending { .. } => must.insert(o),
                State::Maybe { .. } => may.insert(o),
                _ => false,
            };
        }
        (must, may)
    }

    fn keys(&self, offsets: &BTreeSet<usize>) -> BTreeSet<usize> {
        offsets.iter().map(|&o| self.events[o].key).collect()
    }
}

/// One member's stream and the deliveries it holds.
#[derive(Default)]
struct Member {
    stream: Option<MemberStream>,
    held: BTreeMap<usize, Delivery>,
}

struct Real {
    broker: Option<LogBroker>,
    members: Vec<Member>,
    dir: tempfile::TempDir,
}

async fn open(dir: &std::path::Path) -> LogBroker {
    // After a simulated crash the old actors drop their handles on their next
    // poll; until then RocksDB's LOCK is still held in this process.
    for _ in 0..500 {
        let mut o = Options::new(dir);
        o.durability = eventbus_log::Durability::Buffered;
        match LogBroker::open(o).await {
            Ok(b) => return b,
            Err(_) => {
                tokio::task::yield_now().await;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    panic!("could not reopen the data dir");
}

impl Real {
    fn b(&self) -> &LogBroker {
        self.broker.as_ref().unwrap()
    }

    async fn join(&mut self, m: usize) {
        let stream = self.b().subscribe("t", "s", 1000).await.unwrap();
        self.members[m].stream = Some(stream);
    }

    async fn join_all(&mut self) {
        for m in 0..MEMBERS {
            self.join(m).await;
        }
    }

    /// Every held delivery, by offset.
    fn held(&self) -> BTreeMap<usize, &Delivery> {
        self.members
            .iter()
            .flat_map(|m| m.held.iter().map(|(o, d)| (*o, d)))
            .collect()
    }

    /// Removes the `i`-th held delivery (in offset order, wrapping).
    fn take_held(&mut self, i: usize) -> Option<(usize, Delivery)> {
        let offsets: Vec<usize> = self.held().into_keys().collect();
        let o = *offsets.get(i % offsets.len().max(1))?;
        let d = self
            .members
            .iter_mut()
            .find_map(|m| m.held.remove(&o))
            .expect("held");
        Some((o, d))
    }

    fn drop_members(&mut self) -> Vec<usize> {
        let mut released = Vec::new();
        for m in &mut self.members {
            m.stream = None;
            released.extend(std::mem::take(&mut m.held).into_keys());
        }
        released
    }

    async fn settle(&self, op: SettleOp, d: &Delivery) {
        self.b()
            .settle("t", "s", op, &[d.ack_id.encode()])
            .await
            .unwrap();
    }

    /// Takes deliveries from every member until at least `expected` arrived
    /// (or 10 s passed), then waits a little longer for anything unexpected.
    /// `quiet` is how long nothing may arrive before the round ends: longer
    /// when the model cannot tell whether more is coming (after a crash).
    async fn pull(&mut self, expected: usize, quiet: Duration) -> Vec<(usize, Delivery)> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let wait = if out.len() < expected {
                deadline.saturating_duration_since(tokio::time::Instant::now())
            } else {
                quiet
            };
            match tokio::time::timeout(wait, self.recv_any()).await {
                Ok(Some((m, batch))) => out.extend(batch.into_iter().map(|d| (m, d))),
                Ok(None) | Err(_) => return out,
            }
        }
    }

    /// The next batch of either member.
    async fn recv_any(&mut self) -> Option<(usize, Vec<Delivery>)> {
        let [a, b] = &mut self.members[..] else {
            unreachable!("{MEMBERS} members")
        };
        let (a, b) = (a.stream.as_mut(), b.stream.as_mut());
        let (has_a, has_b) = (a.is_some(), b.is_some());
        tokio::select! {
            Some(batch) = async { a.expect("guarded").recv().await }, if has_a => {
                Some((0, batch.unwrap()))
            }
            Some(batch) = async { b.expect("guarded").recv().await }, if has_b => {
                Some((1, batch.unwrap()))
            }
            else => None,
        }
    }

    /// The DLQ's offsets.
    async fn dlq(&self) -> BTreeSet<usize> {
        let dlq = self
            .b()
            .list_dead_letters("t", "s", None, 1000, DeadLetterQuery::default())
            .await
            .unwrap()
            .dead_letters;
        let offsets: BTreeSet<usize> = dlq.iter().map(|d| d.event.offset as usize).collect();
        assert_eq!(offsets.len(), dlq.len(), "an event dead-lettered twice");
        offsets
    }
}

async fn run(ops: Vec<Op>, key_ordered: bool) {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    broker
        .create_topic(
            "t",
            TopicConfig {
                partitions: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let new = NewSubscription {
        ack_deadline: Some(DEADLINE),
        max_delivery_attempts: Some(MAX_ATTEMPTS),
        ordering: if key_ordered {
            Ordering::Key
        } else {
            Ordering::None
        },
        ..Default::default()
    };
    broker.create_subscription("t", "s", new).await.unwrap();
    let mut real = Real {
        broker: Some(broker),
        members: (0..MEMBERS).map(|_| Member::default()).collect(),
        dir,
    };
    real.join_all().await;
    let mut model = Model {
        key_ordered,
        ..Default::default()
    };

    for op in ops {
        apply(&op, &mut real, &mut model).await;
        compare(&op, &mut real, &mut model).await;
    }
}

/// Runs one operation on the engine and on the model.
async fn apply(op: &Op, real: &mut Real, model: &mut Model) {
    match op {
        Op::Publish(keys) => {
            let events: Vec<NewEvent> = keys
                .iter()
                .map(|&k| NewEvent {
                    key: KEYS[k].into(),
                    event_type: "t".into(),
                    payload: Bytes::from(format!("{}", model.events.len())),
                    ..Default::default()
                })
                .collect();
            let res = real.b().publish("t", &events).await.unwrap().1;
            for (i, r) in res.iter().enumerate() {
                assert_eq!(r.offset as usize, model.events.len() + i, "dense offsets");
            }
            model.publish(keys);
        }
        Op::Ack(i) | Op::Nack(i) | Op::NackAfter(i) | Op::DeadLetter(i) => {
            let Some((o, d)) = real.take_held(*i) else {
                return;
            };
            match op {
                Op::Ack(_) => {
                    real.settle(SettleOp::Ack, &d).await;
                    model.set(o, State::Acked);
                }
                Op::Nack(_) | Op::NackAfter(_) => {
                    // The pull that follows waits for the delayed redelivery;
                    // that it never comes early is the timing test's job.
                    let delay = if matches!(op, Op::NackAfter(_)) {
                        Duration::from_millis(150)
                    } else {
                        Duration::ZERO
                    };
                    let nack = SettleOp::Nack {
                        delay: Some(delay),
                        reason: "n".into(),
                    };
                    real.settle(nack, &d).await;
                    model.fail(o);
                    if model.state(o) == State::Dead {
                        // The reply waited for the committed flush.
                        model.all_durable();
                    }
                }
                _ => {
                    real.settle(SettleOp::DeadLetter { reason: "d".into() }, &d)
                        .await;
                    model.set(o, State::Dead);
                    model.all_durable();
                }
            }
        }
        Op::Expire => {
            let held: Vec<(usize, Delivery)> = real
                .members
                .iter_mut()
                .flat_map(|m| std::mem::take(&mut m.held))
                .collect();
            if held.is_empty() {
                return;
            }
            let ids: Vec<String> = held.iter().map(|(_, d)| d.ack_id.encode()).collect();
            let short = SettleOp::ModifyDeadline(Duration::from_millis(1));
            real.b().settle("t", "s", short, &ids).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            for (o, _) in held {
                model.fail(o);
            }
        }
        Op::Resubscribe(m) => {
            // The old member's leases were attempts: they go back for
            // redelivery, or to the dead-letter queue on the last attempt.
            real.members[*m].stream = None;
            let released: Vec<usize> = std::mem::take(&mut real.members[*m].held)
                .into_keys()
                .collect();
            real.join(*m).await;
            for o in released {
                model.fail(o);
            }
        }
        // The members stay joined until the broker is gone: dropping them one
        // by one first would let the first one's leases go to the second.
        Op::Restart => {
            let b = real.broker.take().unwrap();
            b.shutdown().await;
            real.drop_members();
            real.broker = Some(open(real.dir.path()).await);
            real.join_all().await;
            model.restart();
        }
        Op::Crash => {
            let b = real.broker.take().unwrap();
            b.crash().await;
            real.drop_members();
            real.broker = Some(open(real.dir.path()).await);
            real.join_all().await;
            model.crash();
        }
        Op::Redrive => {
            let n = real
                .b()
                .redrive_dead_letters("t", "s", DeadLetterSelector::All, false, 0)
                .await
                .unwrap();
            let dead = model.dead();
            assert_eq!(n as usize, dead.len(), "redrive count");
            for o in dead {
                model.set(o, State::pending(0));
                model.durable(o);
            }
        }
        Op::Purge => {
            let n = real
                .b()
                .purge_dead_letters("t", "s", DeadLetterSelector::All, false)
                .await
                .unwrap();
            let dead = model.dead();
            assert_eq!(n as usize, dead.len(), "purge count");
            for o in dead {
                model.set(o, State::Purged);
                model.durable(o);
            }
        }
        Op::SeekEarliest => {
            // Seeking makes every event unsettled, attempts starting over;
            // redriven events (all at or after the target) are superseded by
            // the log's copy. An event in the DLQ would be both dead and
            // pending, which this model does not track: skip that case.
            if (0..model.events.len()).any(|o| model.could_be_dead(o)) {
                return;
            }
            real.b().seek("t", "s", SeekTarget::Earliest).await.unwrap();
            for m in &mut real.members {
                m.held.clear();
            }
            for e in &mut model.events {
                e.state = State::pending(0);
            }
            model.all_durable();
        }
        Op::Pause | Op::Resume => {
            let pause = matches!(op, Op::Pause);
            real.b().set_paused("t", "s", pause).await.unwrap();
            model.paused = pause;
        }
    }
}

/// Compares what the engine hands out and holds with the model, resolving
/// what a crash left uncertain.
async fn compare(op: &Op, real: &mut Real, model: &mut Model) {
    let (must, may) = model.deliverable();
    let expected = if model.key_ordered {
        model.keys(&must).len()
    } else {
        must.len()
    };
    let quiet = Duration::from_millis(if may.is_empty() { 30 } else { 300 });
    let got = real.pull(expected, quiet).await;
    let got_offsets: BTreeSet<usize> = got.iter().map(|(_, d)| d.event.offset as usize).collect();
    assert_eq!(
        got.len(),
        got_offsets.len(),
        "an event delivered twice in one round after {op:?}"
    );
    if model.key_ordered {
        // Which event of a key goes first (a redriven one or the next fresh
        // one) is not specified; what is: one event per free key, and never
        // two of a key in flight.
        let busy: BTreeSet<usize> = real.held().keys().map(|&o| model.events[o].key).collect();
        let mut keys_now = BTreeSet::new();
        for &o in &got_offsets {
            let k = model.events[o].key;
            assert!(
                !busy.contains(&k),
                "key {k} delivered while in flight, after {op:?}"
            );
            assert!(
                keys_now.insert(k),
                "two events of key {k} in one round, after {op:?}"
            );
        }
        let (must_keys, may_keys) = (model.keys(&must), model.keys(&may));
        assert!(
            keys_now.is_superset(&must_keys),
            "keys delivered after {op:?}: {keys_now:?}, expected at least {must_keys:?}"
        );
        assert!(
            keys_now.is_subset(&must_keys.union(&may_keys).copied().collect()),
            "keys delivered after {op:?}: {keys_now:?}, expected at most {must_keys:?} + {may_keys:?}"
        );
    } else {
        assert!(
            got_offsets.is_superset(&must),
            "delivered set after {op:?}: {got_offsets:?}, expected at least {must:?}"
        );
        assert!(
            got_offsets.is_subset(&must.union(&may).copied().collect()),
            "delivered set after {op:?}: {got_offsets:?}, expected at most {must:?} + {may:?}"
        );
    }
    if std::env::var_os("MODEL_TRACE").is_some() {
        // (member, offset, attempt) of each delivery, and the model before them.
        let got: Vec<_> = got
            .iter()
            .map(|(m, d)| (*m, d.event.offset, d.attempt))
            .collect();
        let states: Vec<_> = model.events.iter().map(|e| e.state).collect();
        eprintln!("after {op:?}: got {got:?}, model {states:?}");
    }
    for (m, d) in got {
        let o = d.event.offset as usize;
        let (lo, hi) = match model.state(o) {
            State::Pending {
                attempts,
                attempts_hi,
            } => (attempts, attempts_hi),
            State::Maybe { lo, hi } => (lo, hi),
            s => panic!("offset {o} delivered in state {s:?} after {op:?}"),
        };
        assert!(
            (lo + 1..=hi + 1).contains(&d.attempt),
            "attempt {} of offset {o} after {op:?}; expected {}..={}",
            d.attempt,
            lo + 1,
            hi + 1
        );
        model.delivered(o, d.attempt);
        real.members[m].held.insert(o, d);
    }
    // The DLQ holds exactly the dead events; an uncertain one is dead exactly
    // when it is there.
    let real_dead = real.dlq().await;
    for &o in &real_dead {
        assert!(
            model.could_be_dead(o),
            "offset {o} in the DLQ in state {:?} after {op:?}",
            model.state(o)
        );
    }
    resolve(model, &real_dead);
    assert_eq!(real_dead, model.dead(), "DLQ after {op:?}");
    let stats = real.b().get_subscription("t", "s").await.unwrap().stats;
    assert_eq!(
        stats.dead_letter_count as usize,
        real_dead.len(),
        "DLQ size after {op:?}"
    );
}

/// Settles what the DLQ listing and the deliveries decided: an uncertain event
/// in the DLQ is dead; one that was not delivered although nothing held it
/// back was acked before the crash.
fn resolve(model: &mut Model, real_dead: &BTreeSet<usize>) {
    for o in 0..model.events.len() {
        if let State::Maybe { .. } = model.state(o) {
            if real_dead.contains(&o) {
                model.set(o, State::Dead);
                model.durable(o);
            }
        }
    }
    if model.paused {
        return;
    }
    let in_flight_keys: BTreeSet<usize> = model
        .events
        .iter()
        .filter(|e| matches!(e.state, State::InFlight { .. }))
        .map(|e| e.key)
        .collect();
    for o in 0..model.events.len() {
        let State::Maybe { .. } = model.state(o) else {
            continue;
        };
        let key = model.events[o].key;
        let held_back = model.key_ordered
            && (in_flight_keys.contains(&key)
                || model.events[..o].iter().any(|e| {
                    e.key == key && matches!(e.state, State::Pending { .. } | State::Maybe { .. })
                }));
        if !held_back {
            // Deliverable had it been unsettled, and not delivered: acked.
            model.set(o, State::Acked);
            model.durable(o);
        }
    }
}

fn run_case(ops: Vec<Op>, key_ordered: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(ops, key_ordered));
}

/// Inputs that once failed, kept as plain tests so they run on every build
/// whatever the random seed does.
mod regressions {
    use super::*;

    #[test]
    fn redriven_dead_letter_survives_a_restart() {
        // Issue 11, defect 1: after a restart with an empty DLQ, a new dead
        // letter reused the seq of a pending redrive entry; redriving it
        // overwrote that entry, so one event was lost.
        run_case(
            vec![
                Op::Publish(vec![1, 0]),
                Op::DeadLetter(2),
                Op::Redrive,
                Op::Restart,
                Op::Expire,
                Op::Nack(1),
                Op::Redrive,
                Op::Restart,
            ],
            true,
        );
    }

    #[test]
    fn redrive_after_a_crash_keeps_both_events() {
        // The same defect through a real crash, unordered.
        run_case(
            vec![
                Op::Publish(vec![0, 1]),
                Op::DeadLetter(0),
                Op::Redrive,
                Op::Crash,
                Op::DeadLetter(1),
                Op::Redrive,
                Op::Ack(0),
                Op::Crash,
            ],
            false,
        );
    }

    #[test]
    fn a_crash_stops_the_actor_before_its_members_leave() {
        // A crash that let the actor run on while the members' streams were
        // dropped dead-lettered a lease on its last attempt ("member left")
        // after the moment of the crash; the harness now waits for the actor
        // to be gone. Timing-dependent: it failed about one run in four.
        run_case(
            vec![
                Op::Expire,
                Op::Publish(vec![1, 2, 2]),
                Op::Redrive,
                Op::SeekEarliest,
                Op::SeekEarliest,
                Op::Resubscribe(0),
                Op::Crash,
                Op::Redrive,
                Op::Crash,
                Op::DeadLetter(2),
                Op::Nack(6),
                Op::Crash,
                Op::Ack(6),
                Op::Nack(6),
            ],
            true,
        );
    }

    #[test]
    fn seek_supersedes_redriven_events() {
        // Issue 3: publish 2, ack, nack x3 -> DLQ, redrive, seek, crash.
        run_case(
            vec![
                Op::Publish(vec![0, 1]),
                Op::Ack(0),
                Op::Nack(0),
                Op::Nack(0),
                Op::Nack(0),
                Op::Redrive,
                Op::SeekEarliest,
                Op::Restart,
            ],
            false,
        );
    }
}

/// The CI tier runs a fixed seed; `PROPTEST_RNG_SEED=random` (or a number)
/// picks another, as the long tier does.
fn config() -> ProptestConfig {
    let rng_seed = match std::env::var("PROPTEST_RNG_SEED") {
        Ok(v) if v == "random" => RngSeed::Random,
        Ok(v) => RngSeed::Fixed(v.parse().expect("PROPTEST_RNG_SEED: a number or 'random'")),
        Err(_) => RngSeed::Fixed(CI_SEED),
    };
    let default = ProptestConfig::default();
    ProptestConfig {
        // PROPTEST_CASES, when set, is already in the default.
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            default.cases
        } else {
            128
        },
        rng_seed,
        failure_persistence: None,
        ..default
    }
}

// One test per ordering mode: the harness runs them in parallel, and most of
// a case is spent waiting for deliveries.
proptest! {
    #![proptest_config(config())]

    #[test]
    fn unordered_delivery_matches_the_model(ops in proptest::collection::vec(op(), 1..25)) {
        run_case(ops, false);
    }

    #[test]
    fn key_ordered_delivery_matches_the_model(ops in proptest::collection::vec(op(), 1..25)) {
        run_case(ops, true);
    }
}
