//! The Jepsen-style kill loop: the real server binary as a child process,
//! publishers and a consumer group on the Rust SDK, and `kill -9` at a random
//! moment again and again, each time restarting on the same data dir.
//!
//! # Layout
//!
//! * [`history`]: what the clients observed, with instants on one clock;
//! * [`workload`]: the publishers and the consumer group;
//! * [`verify`]: the checks run after every restart and at the end.
//!
//! One cycle: a random 0.3-3 s after the server logged "eventbus serving" (or
//! right after the check, when that took longer), SIGKILL by PID, restart on
//! new 127.0.0.1:0 ports, point the clients' proxy at the new server, check. At the end the publishers stop,
//! the server is killed once more, the consumers ack everything until the
//! subscription's backlog is 0, and the last check also requires every event
//! in the log to have reached a consumer at least once.

pub mod history;
pub mod power;
pub mod verify;
pub mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventbus::{Client, SubscriptionSettings};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{temp_dir, ChildServer, CuttableProxy};
use history::History;
use power::{CutFigures, PowerCut};
use verify::{Anomalies, Check, Scope, Verifier};
use workload::{Load, Workload};

/// `--durability` of the server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    Fsync,
    Buffered,
}

impl Durability {
    pub fn name(self) -> &'static str {
        match self {
            Durability::Fsync => "fsync",
            Durability::Buffered => "buffered",
        }
    }
}

/// A kill loop's settings. [`Config::new`] gives the documented defaults.
#[derive(Clone, Debug)]
pub struct Config {
    /// The server binary (`eventbus` or `eventbus-under-test`), run as `BIN serve`.
    pub server_bin: PathBuf,
    pub cycles: u32,
    pub durability: Durability,
    /// The server is killed a uniformly random time in `up` after it is ready.
    pub up: (Duration, Duration),
    pub partitions: u32,
    pub publishers: usize,
    /// Events per second, all publishers together.
    pub rate: u32,
    /// Members of the consumer group.
    pub members: usize,
    /// Share of deliveries nacked (half with a delay of 10-300 ms).
    pub nack_ratio: f64,
    /// Added to the server's ack-flush-interval to give the floor check's
    /// grace: see [`DEFAULT_GRACE_MARGIN`].
    pub grace_margin: Duration,
    /// Seed of the kill times and the consumers' choices; random when unset.
    pub seed: Option<u64>,
    /// How long the final drain may go without the backlog shrinking before
    /// the run fails.
    pub drain_timeout: Duration,
    /// Every this many cycles the check reads the whole log back; the others
    /// read the tail (see [`Verifier::check`]). The end always reads it all.
    pub full_check_every: u32,
    /// Cut the power with every kill: the data dir is on a [`lossyfs`]
    /// filesystem whose unsynced writes are dropped between the kill and the
    /// restart (see [`power`]).
    pub power_cut: bool,
    /// The server's `write-buffer-bytes` (memtable size) when set: a small
    /// one makes RocksDB flush, switch WAL files and install SST files during
    /// the run, so cuts also land in those steps.
    pub write_buffer_bytes: Option<usize>,
    /// With `power_cut`: before each cut, write back a random half of the
    /// unsynced pages (in no order), as a kernel flushing dirty pages in the
    /// background may have done; otherwise every unsynced page is dropped.
    pub writeback: bool,
}

/// The floor check allows an event back if its Ack returned OK less than
/// ack-flush-interval (20 ms) plus this margin before a kill. The margin covers
/// what lies between an ack's OK and its state reaching the WAL in the page
/// cache: the subscription actor's flush timer firing late on a busy runtime,
/// and the flush waiting in the writer queue behind publish groups. On a
/// loaded 2-core machine those take tens of milliseconds, rarely more; the
/// report prints the oldest ack that came back (`max ack age back`), which
/// RELIABILITY.md records against this margin.
pub const DEFAULT_GRACE_MARGIN: Duration = Duration::from_millis(250);

impl Config {
    pub fn new(server_bin: impl Into<PathBuf>, cycles: u32, durability: Durability) -> Config {
        Config {
            server_bin: server_bin.into(),
            cycles,
            durability,
            up: (Duration::from_millis(300), Duration::from_secs(3)),
            partitions: 4,
            publishers: 4,
            rate: 1000,
            members: 3,
            nack_ratio: 0.15,
            grace_margin: DEFAULT_GRACE_MARGIN,
            seed: None,
            drain_timeout: Duration::from_secs(120),
            full_check_every: 10,
            power_cut: false,
            write_buffer_bytes: None,
            writeback: false,
        }
    }

    /// The floor check's grace: the server's default ack-flush-interval
    /// (the loop runs the server with it) plus the margin. A power cut in
    /// buffered mode may take any unsynced ack state, so there is no bound
    /// then (the report gives the oldest ack that came back).
    pub fn grace(&self) -> Duration {
        if self.power_cut && self.durability == Durability::Buffered {
            return Duration::MAX;
        }
        eventbus_server::Config::default().ack_flush_interval + self.grace_margin
    }
}

/// The figures of a whole run.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub seed: u64,
    pub cycles: u32,
    pub events: u64,
    pub acked_publishes: u64,
    /// Publishes whose retry the server answered from the idempotency window.
    pub duplicate_answers: u64,
    /// Publishes in flight at the kills, added up.
    pub in_flight_at_kills: u64,
    pub publish_retries: u64,
    pub publishes_failed: u64,
    pub deliveries: u64,
    pub acks: u64,
    pub acks_failed: u64,
    pub acks_lease_lost: u64,
    pub nacks: u64,
    pub delayed_nacks: u64,
    pub redeliveries: u64,
    pub acks_back_within_grace: u64,
    /// Acks whose OK came within the grace before a kill (and after the
    /// call began, so the killed server settled them): the ones that may come back.
    pub acks_at_risk: u64,
    /// Of those, the ones whose OK came within the ack-flush-interval.
    pub acks_within_flush_interval: u64,
    pub max_ack_age_back: Option<Duration>,
    pub anomalies: Anomalies,
    pub max_recovery: Duration,
    pub max_check: Duration,
    /// The shortest and longest time the server was up before a kill.
    pub up_range: (Duration, Duration),
    pub client_errors: Vec<String>,
    /// The first few tolerated failures worth a look (acks failing for a
    /// reason other than a lease lost to a restart).
    pub notes: Vec<String>,
    pub final_exit_code: Option<i32>,
    /// The figures of the power cuts, when the loop cut the power.
    pub power: Option<CutFigures>,
    /// The server refused to start after a cut: its exit and last log lines.
    /// The loop ends there.
    pub refused: Option<String>,
}

impl Summary {
    /// True when no check found anything and the run ended as it should.
    pub fn is_clean(&self) -> bool {
        self.anomalies.total() == 0
            && self.client_errors.is_empty()
            && self.final_exit_code == Some(0)
            && self.refused.is_none()
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "kill loop summary (seed {}):", self.seed)?;
        writeln!(
            f,
            "  cycles {}, server up {:.2}-{:.2} s before each kill, max recovery {:.2} s (kill to serving), max check {:.2} s",
            self.cycles,
            self.up_range.0.as_secs_f64(),
            self.up_range.1.as_secs_f64(),
            self.max_recovery.as_secs_f64(),
            self.max_check.as_secs_f64()
        )?;
        writeln!(
            f,
            "  events in log {}, publishes acknowledged {} ({} answered as duplicates of a stored retry), in flight at a kill {}, SDK retries {}, failed {}",
            self.events,
            self.acked_publishes,
            self.duplicate_answers,
            self.in_flight_at_kills,
            self.publish_retries,
            self.publishes_failed
        )?;
        writeln!(
            f,
            "  deliveries {}, acks OK {} (failed {}, {} of them with the lease lost), nacks {} ({} delayed), redeliveries {}, acks OK within the grace before a kill {} ({} within the flush interval), of which came back {} (oldest {} ms)",
            self.deliveries,
            self.acks,
            self.acks_failed,
            self.acks_lease_lost,
            self.nacks,
            self.delayed_nacks,
            self.redeliveries,
            self.acks_at_risk,
            self.acks_within_flush_interval,
            self.acks_back_within_grace,
            self.max_ack_age_back.map_or(0, |d| d.as_millis())
        )?;
        writeln!(
            f,
            "  {}, client errors {}, exit code after SIGTERM {:?}",
            self.anomalies,
            self.client_errors.len(),
            self.final_exit_code
        )?;
        if let Some(p) = &self.power {
            writeln!(f, "  {p}")?;
        }
        if let Some(r) = &self.refused {
            writeln!(f, "  the server refused to start after a power cut: {r}")?;
        }
        for e in &self.client_errors {
            writeln!(f, "  client error: {e}")?;
        }
        for n in &self.notes {
            writeln!(f, "  note: {n}")?;
        }
        write!(
            f,
            "  result: {}",
            if self.is_clean() { "PASS" } else { "FAIL" }
        )
    }
}

/// Runs the loop, printing one line per cycle to stdout, and returns the
/// summary. Panics only when the harness itself cannot go on (the server
/// does not restart, a client call fails after its retries).
pub async fn run(config: Config) -> Summary {
    let seed = config.seed.unwrap_or_else(rand::random);
    let mut rng = StdRng::seed_from_u64(seed);
    let topic = "killloop";
    let load = Load {
        topic: topic.into(),
        subscription: "group".into(),
        publishers: config.publishers,
        rate: config.rate,
        members: config.members,
        nack_ratio: config.nack_ratio,
    };
    println!(
        "kill loop: {} cycles, durability {}, seed {seed}, {} partitions, {} publishers at {} events/s, {} members nacking {:.0} %, grace {} ms",
        config.cycles,
        config.durability.name(),
        config.partitions,
        config.publishers,
        config.rate,
        config.members,
        config.nack_ratio * 100.0,
        match config.grace() {
            Duration::MAX => "unbounded (buffered mode, power cuts)".to_string(),
            g => g.as_millis().to_string(),
        }
    );
    let (_dir, data) = temp_dir();
    let power = config.power_cut.then(PowerCut::mount);
    if let Some(p) = &power {
        println!(
            "power cuts: the data dir is on lossyfs at {}; unsynced writes are dropped at every kill{}",
            p.data_dir().display(),
            if config.writeback {
                ", after a random half of the unsynced pages was written back"
            } else {
                ""
            }
        );
    }
    let mut restarter = Restarter {
        bin: config
            .server_bin
            .to_str()
            .expect("server binary path is UTF-8"),
        data: power.as_ref().map_or(data, |p| p.data_dir().to_path_buf()),
        extra: ["--durability", config.durability.name()],
        env: config
            .write_buffer_bytes
            .map(|b| ("EVENTBUS_WRITE_BUFFER_BYTES", b.to_string()))
            .into_iter()
            .collect(),
        power,
        writeback: config
            .writeback
            .then(|| StdRng::seed_from_u64(seed ^ 0x5eed_cafe)),
        loss_allowed: config.durability == Durability::Buffered,
        figures: CutFigures::default(),
    };

    let mut server = restarter
        .start()
        .await
        .unwrap_or_else(|why| panic!("{why}"));
    let proxy = CuttableProxy::start(server.addr).await;
    let setup = direct(&server).await;
    setup
        .admin()
        .create_topic(topic, config.partitions)
        .await
        .expect("create topic");
    setup
        .admin()
        .create_subscription(
            topic,
            &load.subscription,
            SubscriptionSettings {
                from_earliest: true,
                // Never dead-letter: every event must end acked.
                max_delivery_attempts: Some(0),
                ..Default::default()
            },
        )
        .await
        .expect("create subscription");
    let history = Arc::new(History::default());
    let client = Client::builder(proxy.url())
        .connect_lazy()
        .expect("client for the proxy");
    let mut workload = Workload::start(&client, &load, history.clone(), seed);
    let mut verifier = Verifier::new(config.grace());
    let mut summary = Summary {
        seed,
        cycles: config.cycles,
        up_range: (Duration::MAX, Duration::ZERO),
        ..Default::default()
    };
    let mut ready = Instant::now();
    let mut events_before = 0;

    for cycle in 1..=config.cycles {
        // A check that outlasts the chosen time delays the kill to its end.
        let up = rng.random_range(config.up.0..=config.up.1);
        tokio::time::sleep_until((ready + up).into()).await;
        let killed_at = Instant::now();
        let up = killed_at - ready;
        let in_flight = history.kill(killed_at);
        let label = format!("cycle {cycle}");
        server = match restarter
            .crash(server, killed_at, &mut verifier, &history, topic, &label)
            .await
        {
            Ok(restarted) => restarted,
            Err(why) => return refused(summary, &restarter, verifier, why),
        };
        let recovery = killed_at.elapsed();
        ready = Instant::now();
        proxy.set_target(server.addr);
        let scope = if cycle.is_multiple_of(config.full_check_every.max(1)) {
            Scope::Full
        } else {
            Scope::Tail
        };
        let check = verifier
            .check(&direct(&server).await, topic, &history, scope)
            .await
            .expect("read the log back");
        summary.in_flight_at_kills += in_flight;
        summary.max_recovery = summary.max_recovery.max(recovery);
        summary.up_range = (summary.up_range.0.min(up), summary.up_range.1.max(up));
        let name = match scope {
            Scope::Full => format!("{cycle}/{} (full)", config.cycles),
            Scope::Tail => format!("{cycle}/{}", config.cycles),
        };
        print_cycle(&name, up, in_flight, recovery, &check, events_before);
        events_before = check.events;
        summary.absorb(&check);
    }

    // The end: every publish answered, one more crash, then drain to 0.
    workload.finish_publishing().await;
    let killed_at = Instant::now();
    history.kill(killed_at);
    server = match restarter
        .crash(server, killed_at, &mut verifier, &history, topic, "end")
        .await
    {
        Ok(restarted) => restarted,
        Err(why) => return refused(summary, &restarter, verifier, why),
    };
    let recovery = killed_at.elapsed();
    summary.max_recovery = summary.max_recovery.max(recovery);
    proxy.set_target(server.addr);
    workload.drain();
    let verifying = direct(&server).await;
    // Liveness, not speed: the drain fails when the backlog stops shrinking
    // for `drain_timeout`, however big the log. Only the subscription's stats
    // are polled meanwhile; a full read of a long run's log takes minutes in
    // a debug build and would compete with the consumers it waits for.
    let mut least = u64::MAX;
    let mut progressed = Instant::now();
    let drained = loop {
        let stats = verifying
            .admin()
            .get_subscription(topic, &load.subscription)
            .await
            .expect("subscription stats")
            .stats
            .unwrap_or_default();
        let remaining = stats.backlog + stats.in_flight;
        if remaining < least {
            least = remaining;
            progressed = Instant::now();
        }
        let stalled = progressed.elapsed() > config.drain_timeout;
        if remaining > 0 && !stalled {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        // After the stats: every event they count as settled was delivered
        // and recorded before this check reads the history.
        let mut check = verifier
            .check(&verifying, topic, &history, Scope::Full)
            .await
            .expect("read the log back");
        summary.absorb(&check);
        if check.anomalies.total() > 0 {
            print_cycle("drain", Duration::ZERO, 0, recovery, &check, events_before);
        }
        if remaining == 0 && check.undelivered == 0 {
            break true;
        }
        if stalled {
            println!(
                "drain made no progress for {} s: backlog {}, in flight {}, never delivered {}",
                config.drain_timeout.as_secs(),
                stats.backlog,
                stats.in_flight,
                check.undelivered
            );
            verifier.record_never_delivered(&mut check);
            print_examples(&check);
            break false;
        }
        // Settled by the stats but not yet in the history: look again.
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let publish_retries = workload.publish_retries();
    workload.stop().await;
    let last = verifier
        .check(&verifying, topic, &history, Scope::Full)
        .await
        .expect("read the log back");
    print_cycle("final", Duration::ZERO, 0, recovery, &last, events_before);
    summary.absorb(&last);
    summary.events = last.events;
    summary.acked_publishes = last.acked_publishes;
    summary.anomalies = verifier.totals;
    if !drained {
        println!("the consumers did not drain the subscription");
    }
    summary.final_exit_code = server.terminate().await;

    let record = history.lock();
    summary.duplicate_answers = record.stored.iter().filter(|s| s.duplicate).count() as u64;
    summary.deliveries = record.delivered.len() as u64;
    summary.acks = record.acked.len() as u64;
    let flush_interval = eventbus_server::Config::default().ack_flush_interval;
    for a in &record.acked {
        let next = record.kills.partition_point(|k| *k <= a.called);
        if let Some(kill) = record.kills.get(next).filter(|k| **k > a.answered) {
            let age = *kill - a.answered;
            summary.acks_at_risk += u64::from(age <= config.grace());
            summary.acks_within_flush_interval += u64::from(age <= flush_interval);
        }
    }
    drop(record);
    summary.publish_retries = publish_retries;
    summary.publishes_failed = History::count(&history.publishes_failed);
    summary.acks_failed = History::count(&history.acks_failed);
    summary.acks_lease_lost = History::count(&history.acks_lease_lost);
    summary.nacks = History::count(&history.nacks);
    summary.delayed_nacks = History::count(&history.delayed_nacks);
    summary.client_errors = history.client_errors();
    summary.notes = history.notes();
    summary.power = restarter.power.is_some().then(|| restarter.figures.clone());
    println!("{summary}");
    summary
}

/// Starts the server and brings it back after each crash.
struct Restarter<'a> {
    bin: &'a str,
    data: PathBuf,
    extra: [&'a str; 2],
    env: Vec<(&'static str, String)>,
    /// The lossy filesystem under the data dir, when the loop cuts the power.
    power: Option<PowerCut>,
    /// Draws the seed of each cut's write back, when pages are written back.
    writeback: Option<StdRng>,
    /// Whether the durability mode allows a power cut to take acknowledged
    /// publishes (buffered).
    loss_allowed: bool,
    figures: CutFigures,
}

impl Restarter<'_> {
    async fn start(&self) -> Result<ChildServer, String> {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        ChildServer::try_start(self.bin, &self.data, &self.extra, &env).await
    }

    /// SIGKILL, a power cut when configured, restart. After a cut, and
    /// before any client reaches the new server, the verifier accounts for
    /// what the cut took, printed as `label: ...`. `Err` when the server
    /// refuses to start.
    async fn crash(
        &mut self,
        server: ChildServer,
        killed_at: Instant,
        verifier: &mut Verifier,
        history: &History,
        topic: &str,
        label: &str,
    ) -> Result<ChildServer, String> {
        server.kill9().await;
        let writeback = self.writeback.as_mut().map(|rng| rng.random());
        let report = self.power.as_mut().map(|p| p.cut(writeback));
        let server = self.start().await?;
        if let Some(report) = report {
            let loss = verifier
                .cut(
                    &direct(&server).await,
                    topic,
                    history,
                    killed_at,
                    self.loss_allowed,
                )
                .await
                .expect("read the partition ends after a power cut");
            self.figures.add(&report, &loss);
            println!("{label}: {}", power::describe(&report, &loss));
            for e in &loss.examples {
                println!("    {e}");
            }
        }
        Ok(server)
    }
}

/// Ends a run whose server refused to start after a power cut: the figures
/// so far and the server's own words.
fn refused(
    mut summary: Summary,
    restarter: &Restarter<'_>,
    verifier: Verifier,
    why: String,
) -> Summary {
    summary.anomalies = verifier.all_anomalies();
    summary.power = Some(restarter.figures.clone());
    summary.refused = Some(why);
    println!("{summary}");
    summary
}

impl Summary {
    fn absorb(&mut self, c: &Check) {
        self.redeliveries += c.redeliveries;
        self.acks_back_within_grace += c.acks_back_within_grace;
        self.max_ack_age_back = self.max_ack_age_back.max(c.max_ack_age_back);
        self.max_check = self.max_check.max(c.took);
    }
}

/// A client connected straight to `server` (not through the proxy), for
/// setup and for reading the log back.
async fn direct(server: &ChildServer) -> Client {
    Client::connect(format!("http://{}", server.addr))
        .await
        .expect("connect to the restarted server")
}

fn print_cycle(
    name: &str,
    up: Duration,
    in_flight: u64,
    recovery: Duration,
    c: &Check,
    before: u64,
) {
    println!(
        "cycle {name}: up {:.2}s, {in_flight} publishes in flight at the kill, recovery {:.2}s, check {:.2}s (read {:.2}s) | log {} (+{}), acked publishes {} | {} | redeliveries +{} (acks back within grace {}, oldest {} ms)",
        up.as_secs_f64(),
        recovery.as_secs_f64(),
        c.took.as_secs_f64(),
        c.read.as_secs_f64(),
        c.events,
        c.events.saturating_sub(before),
        c.acked_publishes,
        c.anomalies,
        c.redeliveries,
        c.acks_back_within_grace,
        c.max_ack_age_back.map_or(0, |d| d.as_millis()),
    );
    print_examples(c);
}

fn print_examples(c: &Check) {
    for e in &c.examples {
        println!("    {e}");
    }
}
