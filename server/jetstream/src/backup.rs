//! CreateBackup in cluster mode: a JetStream snapshot of every stream
//! eventbus keeps, one file each, and a manifest; `eventbus restore
//! --nats-url` ([`crate::restore`]) puts them into a cluster again. The
//! protocol is the one `nats stream backup` / `nats stream restore` (jsm.go)
//! speak, from nats-server's `server/jetstream_api.go`:
//!
//! * **Snapshot**: a request on `$JS.API.STREAM.SNAPSHOT.<stream>` (answered
//!   by the stream's leader) names an inbox; the answer carries the stream's
//!   config and state. The leader then sends the snapshot (an s2-compressed
//!   tar of the stream's message blocks and its consumers' state) to the
//!   inbox in chunks. A chunk with a reply subject is flow control: the
//!   leader keeps at most its window (8 MiB) unanswered and gives up after
//!   5 s without an answer. The end is a message with an empty body whose
//!   status is 204, or 408/500 with the reason when the snapshot failed.
//! * **Restore**: see [`restore_stream`].
//!
//! **What is backed up**: topic partitions (`EB_T<id>_P<p>`, with the
//! subscriptions' consumers: positions, leases, delivery counts), dead
//! letters (`EB_D<id>`), redrive queues (`EB_R<id>`, with their consumers),
//! the audit log (`EB_AUDIT`) and the topic and subscription buckets
//! (`KV_eventbus-topics`, `KV_eventbus-subscriptions`). Not the secrets
//! bucket: it holds only the key ack ids are sealed with, and a backup
//! file holding it would let its readers forge ack ids on the live
//! cluster; the first gateway on a restored cluster makes a new one (ack
//! ids from before the restore are void anyway). Streams eventbus does not
//! own are never touched.
//!
//! **Order** ([`Kind`]'s order). Each snapshot is one stream at one
//! instant; the order makes the set hold together:
//!
//! 1. Partitions first: a dead letter is written to `EB_D` before its
//!    event is terminated on the partition, so an event terminated in the
//!    partition's snapshot has its entry in the later `EB_D` one (at worst
//!    an event still pending there is dead-lettered a second time).
//! 2. `EB_D` before `EB_R` (per subscription, back to back): a redrive
//!    writes to `EB_R` before it deletes from `EB_D`, so an entry moving
//!    meanwhile is in both, never in neither. (The other way, an entry
//!    dead-lettered again out of `EB_R` between the two snapshots, is the
//!    one case a backup can miss.)
//! 3. The buckets last: every topic and subscription whose streams were
//!    snapshotted is still in them unless it was deleted meanwhile, and
//!    their id counters are past every id in the backup, so a restored
//!    cluster never hands out an id whose streams came back. What was
//!    created or deleted while the backup ran is sorted out by the restore
//!    (an entry without its streams is dropped, streams without an entry
//!    are left out).

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use eventbus_broker::{now_ms, Error, Result, UnixMillis};
use futures_util::{StreamExt as _, TryStreamExt as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::buckets::hex_of;
use crate::subscriptions::SUBSCRIPTIONS_BUCKET;
use crate::topics::TOPICS_BUCKET;
use crate::{audit, nats_error};

/// The manifest's file name in a backup directory: its presence marks a
/// complete cluster-mode backup (it is written last).
pub const MANIFEST_FILE: &str = "manifest.json";
/// What the manifest's `format` says.
pub const FORMAT: &str = "eventbus-jetstream-snapshots";
/// The manifest version this code writes and reads.
pub const VERSION: u32 = 1;

/// Snapshot chunk size: nats CLI's default.
const CHUNK_BYTES: usize = 128 * 1024;
/// Snapshot bytes the leader may have unanswered: what one backup holds in
/// memory at most (each chunk is answered once it is written).
const WINDOW_BYTES: usize = 8 << 20;
/// How long a JetStream API call (snapshot or restore request) may take.
const API_WAIT: Duration = Duration::from_secs(10);
/// How long a snapshot may send nothing before the backup gives up (the
/// leader itself gives up on a reader after 5 s without an answer).
const CHUNK_WAIT: Duration = Duration::from_secs(30);

/// What a stream is to eventbus, from its name. The order is the backup's
/// (module docs): partitions, then per subscription its dead letters and
/// redrive queue, the audit log, the subscriptions bucket, the topics
/// bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Partition { topic: u32, partition: u32 },
    Subscription { id: u32, redrive: bool },
    Audit,
    SubscriptionsBucket,
    TopicsBucket,
}

impl Kind {
    /// The kind of stream `name`, or None for a stream eventbus does not
    /// back up (not its own, or the secrets bucket).
    pub fn of(name: &str) -> Option<Kind> {
        let number = |s: &str| s.parse::<u32>().ok().filter(|n| n.to_string() == s);
        let kind = if name == audit::STREAM {
            Kind::Audit
        } else if name == format!("KV_{SUBSCRIPTIONS_BUCKET}") {
            Kind::SubscriptionsBucket
        } else if name == format!("KV_{TOPICS_BUCKET}") {
            Kind::TopicsBucket
        } else if let Some(rest) = name.strip_prefix("EB_T") {
            let (t, p) = rest.split_once("_P")?;
            Kind::Partition {
                topic: number(t)?,
                partition: number(p)?,
            }
        } else if let Some(id) = name.strip_prefix("EB_D") {
            Kind::Subscription {
                id: number(id)?,
                redrive: false,
            }
        } else if let Some(id) = name.strip_prefix("EB_R") {
            Kind::Subscription {
                id: number(id)?,
                redrive: true,
            }
        } else {
            return None;
        };
        Some(kind)
    }

    pub fn is_bucket(&self) -> bool {
        matches!(self, Kind::SubscriptionsBucket | Kind::TopicsBucket)
    }
}

/// `manifest.json`: what a backup holds, in the order it was taken.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub created_ms: UnixMillis,
    /// The version of the NATS server the gateway was connected to.
    pub nats_server_version: String,
    pub streams: Vec<StreamEntry>,
}

/// One stream's snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamEntry {
    pub name: String,
    /// The snapshot file, in the backup directory.
    pub file: String,
    /// The file's size and SHA-256 (lowercase hex).
    pub bytes: u64,
    pub sha256: String,
    /// From the snapshot's state: messages and the sequences they span.
    pub messages: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    /// The stream's config and state as the leader reported them with the
    /// snapshot, kept verbatim: the restore request sends them back.
    pub config: serde_json::Value,
    pub state: serde_json::Value,
}

impl Manifest {
    /// Reads and checks `dir`'s manifest. Blocking (a small file).
    pub fn read(dir: &Path) -> std::result::Result<Manifest, String> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let manifest: Manifest = serde_json::from_slice(&text)
            .map_err(|e| format!("{} is not an eventbus backup manifest: {e}", path.display()))?;
        if manifest.format != FORMAT || manifest.version != VERSION {
            return Err(format!(
                "{} is format {:?} version {}; this eventbus reads {FORMAT:?} version {VERSION}",
                path.display(),
                manifest.format,
                manifest.version
            ));
        }
        for s in &manifest.streams {
            if Kind::of(&s.name).is_none() || !is_plain_file_name(&s.file) {
                return Err(format!(
                    "{} names stream {:?} in file {:?}: not one an eventbus backup holds",
                    path.display(),
                    s.name,
                    s.file
                ));
            }
        }
        Ok(manifest)
    }
}

/// A file name without any path in it: the manifest may only name files
/// inside the backup directory.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\\')
        && name != MANIFEST_FILE
}

/// The snapshot file of stream `name`.
fn file_name(name: &str) -> String {
    format!("{name}.tar.s2")
}

/// Writes a backup of every eventbus stream into `dir`, which must not
/// exist (its parent must). Returns the bytes written. A failed backup
/// removes what it wrote.
pub async fn backup(
    client: &async_nats::Client,
    js: &jetstream::Context,
    dir: &Path,
) -> Result<u64> {
    match tokio::fs::create_dir(dir).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::AlreadyExists(format!(
                "backup dir {} already exists; choose a new path",
                dir.display()
            )))
        }
        Err(e) => {
            return Err(Error::FailedPrecondition(format!(
                "cannot create the backup dir {}: {e}",
                dir.display()
            )))
        }
    }
    let written = write_all(client, js, dir).await;
    if written.is_err() {
        let dir = dir.to_path_buf();
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
    }
    written
}

async fn write_all(
    client: &async_nats::Client,
    js: &jetstream::Context,
    dir: &Path,
) -> Result<u64> {
    let mut streams: Vec<(Kind, String)> = js
        .stream_names()
        .try_filter_map(|name| async move { Ok(Kind::of(&name).map(|k| (k, name))) })
        .try_collect()
        .await
        .map_err(|e| nats_error("listing streams for a backup", e))?;
    streams.sort();
    let started = std::time::Instant::now();
    let mut entries = Vec::with_capacity(streams.len());
    for (_, name) in &streams {
        match snapshot(client, name, dir).await? {
            Some(entry) => entries.push(entry),
            // Deleted since it was listed (its topic or subscription with it).
            None => tracing::info!(stream = %name, "stream deleted while the backup ran; left out"),
        }
    }
    let manifest = Manifest {
        format: FORMAT.to_string(),
        version: VERSION,
        created_ms: now_ms(),
        nats_server_version: client.server_info().version,
        streams: entries,
    };
    let data_bytes: u64 = manifest.streams.iter().map(|s| s.bytes).sum();
    let body = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Storage(e.to_string()))?;
    let manifest_bytes = body.len() as u64;
    let dir_owned = dir.to_path_buf();
    tokio::task::spawn_blocking(move || write_manifest(&dir_owned, &body))
        .await
        .map_err(|_| Error::ShuttingDown)?
        .map_err(|e| write_error(dir, e))?;
    tracing::info!(
        dir = %dir.display(),
        streams = manifest.streams.len(),
        bytes = data_bytes + manifest_bytes,
        took = ?started.elapsed(),
        "cluster backup written"
    );
    Ok(data_bytes + manifest_bytes)
}

/// The manifest goes in last, under a temporary name renamed into place,
/// and the directory is synced: a backup with a manifest is complete and
/// durable.
fn write_manifest(dir: &Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = dir.join(format!("{MANIFEST_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(body)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(MANIFEST_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

/// An error writing into the backup dir: a full disk says so, anything
/// else is storage trouble worth a retry.
fn write_error(dir: &Path, e: std::io::Error) -> Error {
    // ENOSPC, EDQUOT.
    if matches!(e.raw_os_error(), Some(28) | Some(122)) {
        return Error::ResourceExhausted(format!(
            "the backup filesystem under {} is full: {e}; free space or choose another backup-root",
            dir.display()
        ));
    }
    Error::Storage(format!("writing the backup into {}: {e}", dir.display()))
}

/// A JetStream API answer's error: `(err_code, description)`.
fn api_error(answer: &serde_json::Value) -> Option<(u64, String)> {
    let e = answer.get("error")?;
    Some((
        e["err_code"].as_u64().unwrap_or(0),
        e["description"]
            .as_str()
            .unwrap_or("unknown error")
            .to_string(),
    ))
}

fn api_failure(doing: &str, (code, description): (u64, String)) -> Error {
    nats_error(doing, format!("{description} (error {code})"))
}

/// Sends `body` to `subject` as a request and reads its JSON answer,
/// waiting at most `wait`: Err when nothing (readable) came back, Ok(Err)
/// with JetStream's `(err_code, description)` when it refused.
async fn request_json(
    client: &async_nats::Client,
    subject: String,
    body: String,
    wait: Duration,
    doing: &str,
) -> Result<std::result::Result<serde_json::Value, (u64, String)>> {
    let answer = client
        .send_request(
            subject,
            async_nats::Request::new()
                .payload(Bytes::from(body))
                .timeout(Some(wait)),
        )
        .await
        .map_err(|e| nats_error(doing, e))?;
    let answer: serde_json::Value = serde_json::from_slice(&answer.payload)
        .map_err(|e| nats_error(doing, format!("unreadable answer: {e}")))?;
    Ok(match api_error(&answer) {
        Some(refused) => Err(refused),
        None => Ok(answer),
    })
}

/// JetStream's "stream not found".
const STREAM_NOT_FOUND: u64 = 10059;

/// Snapshots stream `name` into its file in `dir`; None when the stream no
/// longer exists.
async fn snapshot(
    client: &async_nats::Client,
    name: &str,
    dir: &Path,
) -> Result<Option<StreamEntry>> {
    let doing = format!("taking a snapshot of stream {name}");
    let inbox = client.new_inbox();
    // Subscribed before the request, so no chunk can come first.
    let mut chunks = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| nats_error(&doing, e))?;
    let request = serde_json::json!({
        "deliver_subject": inbox,
        "chunk_size": CHUNK_BYTES,
        "window_size": WINDOW_BYTES,
        "no_consumers": false,
        "jsck": false,
    });
    let subject = format!("$JS.API.STREAM.SNAPSHOT.{name}");
    let answer = match request_json(client, subject, request.to_string(), API_WAIT, &doing).await? {
        Ok(answer) => answer,
        Err((STREAM_NOT_FOUND, _)) => return Ok(None),
        Err(refused) => return Err(api_failure(&doing, refused)),
    };
    let state = answer["state"].clone();
    let seq = |field: &str| state[field].as_u64().unwrap_or(0);
    let file = file_name(name);
    let mut out = Digesting::create(dir.join(&file))
        .await
        .map_err(|e| write_error(dir, e))?;
    loop {
        let chunk = tokio::time::timeout(CHUNK_WAIT, chunks.next())
            .await
            .map_err(|_| {
                nats_error(
                    &doing,
                    format!("nothing arrived for {} s", CHUNK_WAIT.as_secs()),
                )
            })?
            .ok_or_else(|| nats_error(&doing, "the connection closed"))?;
        if chunk.payload.is_empty() {
            // The end: 204 (or no status) when complete.
            match chunk.status {
                None => {}
                Some(s) if s.as_u16() == 204 || s.is_success() => {}
                Some(s) => {
                    return Err(nats_error(
                        &doing,
                        format!(
                            "the server ended it with {} {}",
                            s.as_u16(),
                            chunk.description.unwrap_or_default()
                        ),
                    ))
                }
            }
            break;
        }
        out = out
            .write(chunk.payload)
            .await
            .map_err(|e| write_error(dir, e))?;
        // Answered once written: what waits in memory stays within the
        // window.
        if let Some(reply) = chunk.reply {
            client
                .publish(reply, Bytes::new())
                .await
                .map_err(|e| nats_error(&doing, e))?;
        }
    }
    drop(chunks);
    let (bytes, sha256) = out.finish().await.map_err(|e| write_error(dir, e))?;
    Ok(Some(StreamEntry {
        name: name.to_string(),
        file,
        bytes,
        sha256,
        messages: seq("messages"),
        first_seq: seq("first_seq"),
        last_seq: seq("last_seq"),
        config: answer["config"].clone(),
        state,
    }))
}

/// A file being written and hashed, each chunk on a blocking thread.
struct Digesting {
    file: std::fs::File,
    hash: Sha256,
    bytes: u64,
}

impl Digesting {
    async fn create(path: PathBuf) -> std::io::Result<Digesting> {
        blocking(move || {
            Ok(Digesting {
                file: std::fs::File::create_new(path)?,
                hash: Sha256::new(),
                bytes: 0,
            })
        })
        .await
    }

    async fn write(self, chunk: Bytes) -> std::io::Result<Digesting> {
        blocking(move || {
            use std::io::Write as _;
            let mut me = self;
            me.file.write_all(&chunk)?;
            me.hash.update(&chunk);
            me.bytes += chunk.len() as u64;
            Ok(me)
        })
        .await
    }

    /// Syncs the file; its size and hash.
    async fn finish(self) -> std::io::Result<(u64, String)> {
        blocking(move || {
            self.file.sync_all()?;
            Ok((self.bytes, hex_of(&self.hash.finalize())))
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| std::io::Error::other("shutting down"))?
}

/// The SHA-256 of `path` and its size, read in 1 MiB pieces. Blocking.
pub fn file_digest(path: &Path) -> std::io::Result<(u64, String)> {
    use std::io::Read as _;
    let mut f = std::fs::File::open(path)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((bytes, hex_of(&hash.finalize())))
}

/// Checks every file of `manifest` in `dir` against its size and SHA-256.
/// Blocking. Err names each file that does not match.
pub fn verify_files(dir: &Path, manifest: &Manifest) -> std::result::Result<(), String> {
    let mut bad = Vec::new();
    for s in &manifest.streams {
        let path = dir.join(&s.file);
        match file_digest(&path) {
            Ok((bytes, sha)) if bytes == s.bytes && sha == s.sha256 => {}
            Ok((bytes, sha)) => bad.push(format!(
                "{} ({bytes} bytes, SHA-256 {sha}; the manifest says {} bytes, {})",
                s.file, s.bytes, s.sha256
            )),
            Err(e) => bad.push(format!("{} ({e})", s.file)),
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the backup {} is damaged: {} of its files do not match manifest.json: {}. Nothing was \
         restored; restore an intact copy of the backup",
        dir.display(),
        bad.len(),
        bad.join("; ")
    ))
}

/// What restoring one stream did.
#[derive(Debug, Clone)]
pub struct RestoredStream {
    pub messages: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub bytes: u64,
    pub replicas: u64,
    /// The consumers the restored stream holds (the restoring server's
    /// count; the cluster assigns them right after).
    pub consumers: u64,
}

/// How long a chunk of a restore may wait for its answer (the server
/// writes it before it answers).
const RESTORE_CHUNK_WAIT: Duration = Duration::from_secs(30);
/// How long the server may take to finish a restore once every chunk is
/// in.
const RESTORE_FINISH_WAIT: Duration = Duration::from_secs(300);

/// Restores `entry`'s snapshot from `dir` as a new stream: a request on
/// `$JS.API.STREAM.RESTORE.<stream>` with the backed-up config (its
/// replicas replaced by `replicas` when given) and state answers with a
/// subject; each chunk of the file goes there as a request whose answer
/// is awaited (an empty answer is OK, anything else an error), and an
/// empty message ends it; its answer is the stream as created.
pub async fn restore_stream(
    client: &async_nats::Client,
    dir: &Path,
    entry: &StreamEntry,
    replicas: Option<usize>,
) -> Result<RestoredStream> {
    use tokio::io::AsyncReadExt as _;
    let name = &entry.name;
    let doing = format!("restoring stream {name}");
    let mut config = entry.config.clone();
    if let Some(r) = replicas {
        config["num_replicas"] = serde_json::json!(r);
    }
    let request = serde_json::json!({ "config": config, "state": entry.state });
    let subject = format!("$JS.API.STREAM.RESTORE.{name}");
    // Right after a cluster forms, its JetStream API may have no responder
    // yet (no meta leader): nothing was created, so the request is sent
    // again for a while, as `placement::create_stream` does.
    let (body, pause) = (request.to_string(), std::time::Duration::from_millis(250));
    let no_responders = |e: &Error| e.to_string().contains("no responders");
    let answer = crate::buckets::retrying(
        &doing,
        crate::placement::PATIENCE,
        pause,
        no_responders,
        || request_json(client, subject.clone(), body.clone(), API_WAIT, &doing),
    )
    .await?
    .map_err(|refused| api_failure(&doing, refused))?;
    let Some(deliver) = answer["deliver_subject"].as_str().map(str::to_string) else {
        return Err(nats_error(&doing, "the answer names no deliver subject"));
    };
    let path = dir.join(&entry.file);
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| Error::FailedPrecondition(format!("reading {}: {e}", path.display())))?;
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        let n = file
            .read(&mut buf)
            .await
            .map_err(|e| Error::FailedPrecondition(format!("reading {}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        let reply = client
            .send_request(
                deliver.clone(),
                async_nats::Request::new()
                    .payload(Bytes::copy_from_slice(&buf[..n]))
                    .timeout(Some(RESTORE_CHUNK_WAIT)),
            )
            .await
            .map_err(|e| nats_error(&doing, e))?;
        if !reply.payload.is_empty() {
            return Err(
                match serde_json::from_slice(&reply.payload)
                    .ok()
                    .as_ref()
                    .and_then(api_error)
                {
                    Some(refused) => api_failure(&doing, refused),
                    None => nats_error(&doing, String::from_utf8_lossy(&reply.payload)),
                },
            );
        }
    }
    // The end: an empty message, answered with the stream as created.
    let done = request_json(client, deliver, String::new(), RESTORE_FINISH_WAIT, &doing)
        .await?
        .map_err(|refused| api_failure(&doing, refused))?;
    let state = &done["state"];
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    Ok(RestoredStream {
        messages: n(&state["messages"]),
        first_seq: n(&state["first_seq"]),
        last_seq: n(&state["last_seq"]),
        bytes: n(&state["bytes"]),
        replicas: n(&done["config"]["num_replicas"]),
        consumers: n(&state["consumer_count"]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_eventbus_streams_have_a_kind_and_the_kinds_sort_in_backup_order() {
        assert_eq!(
            Kind::of("EB_T12_P3"),
            Some(Kind::Partition {
                topic: 12,
                partition: 3
            })
        );
        assert_eq!(
            Kind::of("EB_D7"),
            Some(Kind::Subscription {
                id: 7,
                redrive: false
            })
        );
        assert_eq!(
            Kind::of("EB_R7"),
            Some(Kind::Subscription {
                id: 7,
                redrive: true
            })
        );
        assert_eq!(Kind::of("EB_AUDIT"), Some(Kind::Audit));
        assert_eq!(Kind::of("KV_eventbus-topics"), Some(Kind::TopicsBucket));
        assert_eq!(
            Kind::of("KV_eventbus-subscriptions"),
            Some(Kind::SubscriptionsBucket)
        );
        for other in [
            "KV_eventbus-secrets",
            "EB_T1",
            "EB_T01_P0",
            "EB_T1_P",
            "EB_Dx",
            "EB_X1",
            "ORDERS",
            "KV_other",
            "EB_D-1",
        ] {
            assert_eq!(Kind::of(other), None, "{other}");
        }
        let mut names = vec![
            "KV_eventbus-topics",
            "EB_AUDIT",
            "EB_R2",
            "KV_eventbus-subscriptions",
            "EB_D2",
            "EB_T2_P0",
            "EB_D1",
            "EB_T1_P1",
            "EB_T1_P0",
        ];
        names.sort_by_key(|n| Kind::of(n));
        assert_eq!(
            names,
            [
                "EB_T1_P0",
                "EB_T1_P1",
                "EB_T2_P0",
                "EB_D1",
                "EB_D2",
                "EB_R2",
                "EB_AUDIT",
                "KV_eventbus-subscriptions",
                "KV_eventbus-topics"
            ]
        );
    }

    #[test]
    fn manifest_files_stay_inside_the_backup() {
        assert!(is_plain_file_name("EB_T1_P0.tar.s2"));
        for bad in ["", ".", "..", "../x", "a/b", "a\\b", MANIFEST_FILE] {
            assert!(!is_plain_file_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_changed_file_fails_verification_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.tar.s2"), b"snapshot bytes").unwrap();
        let (bytes, sha256) = file_digest(&dir.path().join("a.tar.s2")).unwrap();
        assert_eq!(bytes, 14);
        // printf 'snapshot bytes' | sha256sum
        assert_eq!(sha256.len(), 64);
        let entry = StreamEntry {
            name: "EB_AUDIT".into(),
            file: "a.tar.s2".into(),
            bytes,
            sha256,
            messages: 0,
            first_seq: 0,
            last_seq: 0,
            config: serde_json::Value::Null,
            state: serde_json::Value::Null,
        };
        let manifest = Manifest {
            format: FORMAT.into(),
            version: VERSION,
            created_ms: 0,
            nats_server_version: String::new(),
            streams: vec![entry],
        };
        assert!(verify_files(dir.path(), &manifest).is_ok());
        std::fs::write(dir.path().join("a.tar.s2"), b"snapshot bytez").unwrap();
        let err = verify_files(dir.path(), &manifest).unwrap_err();
        assert!(
            err.contains("a.tar.s2") && err.contains("do not match"),
            "{err}"
        );
    }
}
