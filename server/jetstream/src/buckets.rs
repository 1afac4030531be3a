//! The KV buckets cluster mode keeps its metadata in (topics,
//! subscriptions, the gateway's shared key): opened the same way, read
//! from their stream leaders, and with ids drawn from a compare-and-set
//! counter.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use eventbus_broker::{Error, Result};

use crate::nats_error;

/// How long a gateway keeps retrying what it needs to start (its buckets,
/// the audit stream, the shared ack-id key) while the cluster does not
/// answer: a fresh cluster electing its meta leader, or a loaded one whose
/// R3 stream creation outlasts one request timeout.
const STARTING_WITHIN: Duration = Duration::from_secs(60);

/// Runs `step` until it succeeds, retrying a cluster error (a timeout, no
/// responders, no meta leader yet) for up to [`STARTING_WITHIN`]. Every
/// step given here is idempotent: it opens or creates. Errors that are not
/// the cluster's (bad config, corrupt metadata) are returned at once.
pub async fn while_starting<T, F, Fut>(doing: &str, step: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let transient = |e: &Error| matches!(e, Error::Storage(_));
    let pause = Duration::from_millis(500);
    retrying(doing, STARTING_WITHIN, pause, transient, step).await
}

/// Runs `step` until it succeeds or fails with an error `transient` does
/// not accept, pausing `pause` between tries, for up to `within`; then the
/// last error is returned. `step` must be idempotent.
pub async fn retrying<T, E, F, Fut>(
    doing: &str,
    within: Duration,
    pause: Duration,
    transient: impl Fn(&E) -> bool,
    mut step: F,
) -> std::result::Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match step().await {
            Err(e) if transient(&e) && tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, doing, "NATS JetStream is not answering yet; retrying");
                tokio::time::sleep(pause).await;
            }
            done => return done,
        }
    }
}

/// Opens (or creates) `bucket` with `replicas`, retrying while the cluster
/// does not answer ([`while_starting`]), and makes its reads go to the
/// bucket's stream leader.
pub async fn open_bucket(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
) -> Result<kv::Store> {
    let doing = format!("opening the {bucket} bucket");
    while_starting(&doing, || open_bucket_once(js, bucket, replicas, &doing)).await
}

async fn open_bucket_once(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
    doing: &str,
) -> Result<kv::Store> {
    let config = kv::Config {
        bucket: bucket.to_string(),
        history: 1,
        num_replicas: replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    let created = js
        .create_or_update_key_value(config)
        .await
        .map_err(|e| nats_error(doing, e))?;
    // With direct gets (the KV default) any replica answers, and one that
    // has not caught up (just restarted, say) answers "no such key" for a
    // key that exists, or does not answer at all.
    let mut stream = js
        .get_stream(format!("KV_{bucket}"))
        .await
        .map_err(|e| nats_error(doing, e))?;
    let mut stream_config = stream
        .info()
        .await
        .map_err(|e| nats_error(doing, e))?
        .config
        .clone();
    if stream_config.allow_direct {
        stream_config.allow_direct = false;
        js.update_stream(stream_config)
            .await
            .map_err(|e| nats_error(doing, e))?;
    }
    drop(created);
    // Opened again so the handle sees the leader-only reads.
    js.get_key_value(bucket)
        .await
        .map_err(|e| nats_error(doing, e))
}

/// A new id from the counter at `key`, advanced by compare-and-set, so ids
/// are never reused, even across gateways. The first id is 1.
///
/// A lost compare-and-set (another gateway took the id) is tried again at
/// once, then, after [`CAS_AT_ONCE`] losses in a row, after short pauses.
/// Any other failure of the write (a stream without a leader yet, a
/// timeout: a cluster just started or electing) is tried again after a
/// pause. Either way for up to [`ID_COUNTER_PATIENCE`]; then the last cause
/// is returned.
pub async fn next_id(store: &kv::Store, bucket: &str, key: &str) -> Result<u32> {
    let deadline = tokio::time::Instant::now() + ID_COUNTER_PATIENCE;
    let mut lost = 0;
    loop {
        let entry = store
            .entry(key)
            .await
            .map_err(|e| nats_error("reading an id counter", e))?;
        let (current, revision) = match entry {
            Some(e) if e.operation == kv::Operation::Put => {
                let n = std::str::from_utf8(&e.value)
                    .ok()
                    .and_then(|s| s.parse::<u32>().ok())
                    .ok_or_else(|| Error::CorruptMetadata {
                        location: format!("{bucket}/{key}"),
                        reason: "not a number".into(),
                    })?;
                (n, Some(e.revision))
            }
            _ => (1, None),
        };
        let next = Bytes::from((current + 1).to_string());
        // Err((true, _)): another writer won the compare-and-set.
        let written = match revision {
            Some(r) => store.update(key, next, r).await.map_err(|e| {
                let cas_lost = e.kind() == kv::UpdateErrorKind::WrongLastRevision;
                (cas_lost, e.to_string())
            }),
            None => store.create(key, next).await.map_err(|e| {
                let cas_lost = e.kind() == kv::CreateErrorKind::AlreadyExists;
                (cas_lost, e.to_string())
            }),
        };
        let (contended, cause) = match written {
            Ok(_) => return Ok(current),
            Err(failed) => failed,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Storage(match contended {
                true => format!("the id counter {bucket}/{key} stayed contended; retry"),
                false => format!("advancing the id counter {bucket}/{key} failed: {cause}; retry"),
            }));
        }
        if contended {
            lost += 1;
            if lost > CAS_AT_ONCE {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        } else {
            lost = 0;
            tracing::warn!(bucket, key, error = %cause, "advancing an id counter failed; retrying");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Compare-and-set rounds [`next_id`] retries at once before it pauses
/// between them.
const CAS_AT_ONCE: u32 = 10;

/// How long [`next_id`] retries a write the cluster failed (not a lost
/// compare-and-set).
const ID_COUNTER_PATIENCE: Duration = Duration::from_secs(10);

/// The bucket of secrets every gateway shares.
pub const SECRETS_BUCKET: &str = "eventbus-secrets";

/// The 32-byte secret `name`: made at random by the first gateway to ask
/// (a create-only put, so two gateways starting together agree), read by
/// every later one. Anyone who can read the cluster's streams can read
/// it, as they can read the events it protects.
pub async fn shared_secret(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
) -> Result<[u8; 32]> {
    let store = open_bucket(js, SECRETS_BUCKET, replicas).await?;
    while_starting("reading a shared secret", || secret_once(&store, name)).await
}

async fn secret_once(store: &kv::Store, name: &str) -> Result<[u8; 32]> {
    let key = hex(name);
    let fresh: [u8; 32] = rand::random();
    match store.create(&key, Bytes::copy_from_slice(&fresh)).await {
        Ok(_) => return Ok(fresh),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
        Err(e) => return Err(nats_error("storing a shared secret", e)),
    }
    let stored = store
        .get(&key)
        .await
        .map_err(|e| nats_error("reading a shared secret", e))?
        .ok_or_else(|| Error::Storage(format!("the shared secret {name} vanished; retry")))?;
    stored
        .as_ref()
        .try_into()
        .map_err(|_| Error::CorruptMetadata {
            location: format!("{SECRETS_BUCKET}/{name}"),
            reason: format!("{} bytes, expected 32", stored.len()),
        })
}

/// `name` as lowercase hex: KV keys refuse names such as `a..b` or `a.`
/// that topics and subscriptions allow.
pub fn hex(name: &str) -> String {
    hex_of(name.as_bytes())
}

/// `bytes` as lowercase hex (a digest, a name).
pub fn hex_of(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(2 * bytes.len());
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The name [`hex`] made, or None for anything else.
pub fn unhex(hex: &str) -> Option<String> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    String::from_utf8(bytes?).ok()
}

/// Every key of `store` that starts with `prefix`.
pub async fn keys_with_prefix(store: &kv::Store, prefix: &str) -> Result<Vec<String>> {
    use futures_util::TryStreamExt as _;
    let keys: Vec<String> = store
        .keys()
        .await
        .map_err(|e| nats_error("listing keys", e))?
        .try_filter(|k| std::future::ready(k.starts_with(prefix)))
        .try_collect()
        .await
        .map_err(|e| nats_error("listing keys", e))?;
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_hex_for_names_kv_would_refuse() {
        for name in ["orders", "a..b", "a.", "acme/orders", "x-y_z.9", ""] {
            let key = hex(name);
            assert!(key.bytes().all(|b| b.is_ascii_hexdigit()), "{key}");
            assert_eq!(unhex(&key).as_deref(), Some(name));
        }
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }
}
