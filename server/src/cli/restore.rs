//! `eventbus restore --from DIR ...`: turns a backup into a store again,
//! offline. Which kind of backup DIR holds decides the target:
//!
//! * a single node's (RocksDB's `CURRENT` file, from CreateBackup on
//!   `eventbus serve`): `--data-dir NEW` becomes a data dir, checked by
//!   opening it;
//! * a cluster's (`manifest.json` of JetStream stream snapshots, from
//!   CreateBackup on a gateway): `--nats-url URLS` restores every stream
//!   into that cluster ([`eventbus_jetstream::restore`]), after checking
//!   each file's SHA-256 and that the cluster holds none of the streams.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context as _};
use eventbus_jetstream::backup::{Manifest, MANIFEST_FILE};
use eventbus_log::{Log, Options};

use crate::config::{Config, Overrides, Storage};

#[derive(clap::Args)]
pub struct RestoreArgs {
    /// The backup directory (written by `eventbus backup`, CreateBackup).
    #[arg(long)]
    from: PathBuf,
    /// A single node's backup: the new data dir to create. It must not
    /// exist, or be empty. Start the server on it afterwards: `eventbus
    /// serve --data-dir NEW`.
    #[arg(long, conflicts_with_all = ["nats_url", "nats_monitor_url", "replicas"])]
    data_dir: Option<PathBuf>,
    /// A cluster's backup: the NATS servers to restore into,
    /// `nats://host:port`, comma-separated. The cluster must hold none of
    /// the backup's streams; start its gateways after the restore.
    #[arg(long)]
    nats_url: Option<String>,
    /// With --nats-url: the NATS servers' monitoring ports,
    /// `http://host:port`, comma-separated. As a gateway does, the restore
    /// refuses a cluster that does not fsync every write (unless
    /// EVENTBUS_NATS_ALLOW_UNSYNCED=true).
    #[arg(long, requires = "nats_url")]
    nats_monitor_url: Option<String>,
    /// With --nats-url: replicas of every restored stream, instead of the
    /// backed-up ones (e.g. 1 to restore a 3-node cluster's backup onto
    /// one node). The gateways' nats-replicas must match.
    #[arg(long, requires = "nats_url")]
    replicas: Option<usize>,
}

pub fn run(args: RestoreArgs) -> anyhow::Result<()> {
    let cluster_backup = args.from.join(MANIFEST_FILE).is_file();
    let node_backup = args.from.join("CURRENT").is_file();
    match (&args.data_dir, &args.nats_url) {
        (Some(data_dir), None) => {
            ensure!(
                !cluster_backup,
                "{} is a cluster-mode backup (it has {MANIFEST_FILE}: NATS JetStream stream \
                 snapshots); restore it into a cluster with --nats-url nats://host:port,..., \
                 not into a data dir",
                args.from.display()
            );
            ensure!(
                node_backup,
                "{} is not a backup (no RocksDB CURRENT file, no {MANIFEST_FILE})",
                args.from.display()
            );
            restore_data_dir(&args.from, data_dir)
        }
        (None, Some(urls)) => {
            ensure!(
                !node_backup,
                "{} is a single-node (RocksDB) backup; restore it with --data-dir NEW (then \
                 `eventbus migrate` moves a data dir into a cluster)",
                args.from.display()
            );
            ensure!(
                cluster_backup,
                "{} is not a cluster-mode backup (no {MANIFEST_FILE}; a backup still being \
                 written or one that failed has none)",
                args.from.display()
            );
            if let Some(r) = args.replicas {
                // JetStream's own bound on a stream's replicas.
                ensure!(
                    (1..=5).contains(&r),
                    "--replicas {r}: give 1 to 5 (3 in production: a quorum of 2 acknowledges)"
                );
            }
            restore_cluster(
                &args.from,
                urls,
                args.nats_monitor_url.clone(),
                args.replicas,
            )
        }
        _ => bail!(
            "give exactly one target: --data-dir NEW for a single node's backup, or --nats-url \
             URLS for a cluster's (manifest.json)"
        ),
    }
}

fn restore_data_dir(from: &Path, data_dir: &Path) -> anyhow::Result<()> {
    let from = std::fs::canonicalize(from)?;
    let name = data_dir
        .file_name()
        .context("--data-dir must name a directory")?
        .to_owned();
    let parent = match data_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let parent = std::fs::canonicalize(&parent)
        .with_context(|| format!("the parent of {} must exist", data_dir.display()))?;
    let target = parent.join(&name);
    ensure!(
        !target.starts_with(&from),
        "--data-dir must not be inside the backup {}",
        from.display()
    );
    if target.exists() {
        let empty = std::fs::read_dir(&target)
            .with_context(|| format!("reading {}", target.display()))?
            .next()
            .is_none();
        ensure!(
            empty,
            "{} exists and is not empty; restore into a new directory",
            target.display()
        );
    }
    // Build the data dir next to its final place, make it durable and check
    // it, then rename it into place: a failed or interrupted restore never
    // leaves a half-copied data dir under the target name.
    let staging = parent.join(format!(
        ".{}.restoring-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    let result = stage(&from, &staging).and_then(|summary| {
        std::fs::rename(&staging, &target)
            .with_context(|| format!("moving the restored data into {}", target.display()))?;
        sync_dir(&parent)?;
        Ok(summary)
    });
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    println!(
        "restored {} into {} ({} topics):",
        from.display(),
        target.display(),
        summary.len()
    );
    for line in summary {
        println!("{line}");
    }
    println!(
        "start it with: eventbus serve --data-dir {}",
        target.display()
    );
    Ok(())
}

/// Restores a cluster-mode backup into the cluster at `urls`.
fn restore_cluster(
    from: &Path,
    urls: &str,
    monitor_urls: Option<String>,
    replicas: Option<usize>,
) -> anyhow::Result<()> {
    let overrides = Overrides {
        storage: Some(Storage::Jetstream),
        nats_url: Some(urls.to_string()),
        ..Default::default()
    };
    let mut config = Config::load(None, &overrides)?;
    if let Some(url) = monitor_urls {
        config.nats_monitor_url = url;
    }
    // Warnings (an unsynced cluster accepted by nats-allow-unsynced) go to
    // stderr; progress and the summary go to stdout.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .try_init();
    let manifest = Manifest::read(from).map_err(anyhow::Error::msg)?;
    // Every file checked before the cluster is touched: a damaged backup
    // restores nothing.
    eventbus_jetstream::backup::verify_files(from, &manifest).map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        crate::sync_check::check(&config.nats_monitor_url, config.nats_allow_unsynced).await?;
        if config.nats_monitor_url.trim().is_empty() {
            eprintln!(
                "warning: cannot check that the NATS servers fsync every write (sync_interval: \
                 always); give --nats-monitor-url"
            );
        }
        let (client, js) = eventbus_jetstream::connect_client(&config.jetstream_options())
            .await
            .with_context(|| format!("connecting to NATS JetStream at {urls}"))?;
        println!(
            "restoring {} ({} streams, taken {}) into NATS JetStream at {urls}",
            from.display(),
            manifest.streams.len(),
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(manifest.created_ms)
            )
        );
        let started = std::time::Instant::now();
        let summary = eventbus_jetstream::restore::restore(
            &client,
            &js,
            from,
            &manifest,
            replicas,
            &mut |line| println!("{line}"),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        client.flush().await.ok();
        for note in &summary.notes {
            println!("note: {note}");
        }
        wait_for_replicas(&js, &config.nats_monitor_url, &summary.names).await?;
        println!(
            "restored {} streams ({} bytes) in {:.1} s: {} topics with {} events, {} \
             subscriptions, {} dead letters, {} audit records",
            summary.streams,
            summary.bytes,
            started.elapsed().as_secs_f64(),
            summary.topics,
            summary.events,
            summary.subscriptions,
            summary.dead_letters,
            summary.audit_records
        );
        println!(
            "start the gateways with: {}eventbus serve --storage jetstream --nats-url {urls}",
            replicas.map_or(String::new(), |r| format!("EVENTBUS_NATS_REPLICAS={r} "))
        );
        anyhow::Ok(())
    })
}

/// How long the restore waits for every replica to hold what it restored.
const REPLICAS_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Waits until every replica of each stream in `names` holds what its
/// leader holds, as each server reports its own copy (`/jsz` on the
/// monitoring URLs). A follower of a freshly restored stream was seen
/// empty for up to 6 s while its leader counted it current, and a gateway
/// reading from it then listed no topics. Without monitoring URLs it only
/// says it cannot check.
async fn wait_for_replicas(
    js: &async_nats::jetstream::Context,
    monitor_urls: &str,
    names: &[String],
) -> anyhow::Result<()> {
    let urls = crate::sync_check::split_urls(monitor_urls);
    if urls.is_empty() {
        println!(
            "warning: without --nats-monitor-url the restore cannot check that every replica \
             holds its copy yet; give the cluster a minute before starting the gateways"
        );
        return Ok(());
    }
    // (last sequence, messages, replicas) as each stream's leader has it.
    let mut want = std::collections::BTreeMap::new();
    for name in names {
        let mut stream = js
            .get_stream(name)
            .await
            .with_context(|| format!("reading restored stream {name}"))?;
        let info = stream
            .info()
            .await
            .with_context(|| format!("reading restored stream {name}"))?;
        want.insert(
            name.clone(),
            (
                info.state.last_sequence,
                info.state.messages,
                info.config.num_replicas.max(1),
            ),
        );
    }
    let http = crate::sync_check::monitor_client()?;
    let deadline = tokio::time::Instant::now() + REPLICAS_WAIT;
    loop {
        let mut holding: std::collections::BTreeMap<&str, usize> = Default::default();
        for url in &urls {
            let jsz =
                crate::sync_check::jsz(&http, url, "?streams=true", "for the restored streams")
                    .await?;
            let details = jsz["account_details"].as_array().into_iter().flatten();
            for s in details.flat_map(|a| a["stream_detail"].as_array().into_iter().flatten()) {
                let name = s["name"].as_str().unwrap_or_default();
                let Some((name, &(last, messages, _))) = want.get_key_value(name) else {
                    continue;
                };
                if s["state"]["last_seq"].as_u64() == Some(last)
                    && s["state"]["messages"].as_u64() == Some(messages)
                {
                    *holding.entry(name.as_str()).or_default() += 1;
                }
            }
        }
        let behind: Vec<String> = want
            .iter()
            .filter(|(name, w)| holding.get(name.as_str()).copied().unwrap_or(0) < w.2)
            .map(|(name, w)| {
                let n = holding.get(name.as_str()).copied().unwrap_or(0);
                format!("{name} ({n} of {})", w.2)
            })
            .collect();
        if behind.is_empty() {
            println!("every replica holds its stream");
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            println!(
                "warning: after {} s these streams still have replicas without their copy: {} \
                 (give every node's monitoring URL; `eventbus status` shows replicas that lag). \
                 Start the gateways once they caught up",
                REPLICAS_WAIT.as_secs(),
                behind.join(", ")
            );
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// Copies the backup into `dir` (synced), then opens it once: replaying its
/// WAL and reading its metadata proves it sound before it is put in place.
fn stage(from: &Path, dir: &Path) -> anyhow::Result<Vec<String>> {
    copy_files(from, dir)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let log = Log::open(Options::new(dir)).context("the backup does not open")?;
        let mut lines = Vec::new();
        for t in log.topics() {
            lines.push(format!(
                "  topic {}: {} partitions, {} events",
                t.name(),
                t.partition_count(),
                t.retained_events()
            ));
        }
        log.close();
        anyhow::Ok(lines)
    })
}

/// A RocksDB checkpoint is one flat directory of files. Each copy is synced,
/// and the directory too, so the restored store survives a power loss.
fn copy_files(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            bail!("unexpected entry {} in the backup", entry.path().display());
        }
        let target = to.join(entry.file_name());
        std::fs::copy(entry.path(), &target).with_context(|| {
            format!("copying {} to {}", entry.path().display(), target.display())
        })?;
        std::fs::File::open(&target)?.sync_all()?;
    }
    sync_dir(to)
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}
