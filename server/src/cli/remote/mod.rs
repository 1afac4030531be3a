//! Operator commands: each one talks to a running server through the Rust
//! SDK (`eventbus`: connection, requests, paging, seek and replay positions,
//! paced redrive) and prints a table or JSON.
//!
//! One module per area; each parses its arguments into SDK values, and
//! [`output`] owns every format decision (tables, JSON shapes, payload
//! encoding, error lines, progress bars).

mod audit;
mod backup;
mod dlq;
mod output;
mod publish;
mod replay;
mod status;
mod sub;
mod subscribe;
mod time;
mod topic;

use clap::Subcommand;
use eventbus::{Admin, Client};
use tonic::transport::Endpoint;

use super::GlobalArgs;
use output::Output;

#[derive(Subcommand)]
pub enum RemoteCommand {
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Publish events: one from an argument, or one per line from a file or stdin.
    Publish(publish::PublishArgs),
    /// Receive deliveries of a subscription and print them (tail).
    Subscribe(subscribe::SubscribeArgs),
    /// Create, list, describe, pause, resume, seek and delete subscriptions.
    #[command(subcommand)]
    Sub(sub::SubCommand),
    /// Inspect, redrive and purge a subscription's dead-letter queue.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Read a topic's history by offset or time, without touching any subscription.
    Replay(replay::ReplayArgs),
    /// One-screen summary: topics with publish rates, subscriptions with
    /// backlog, lag and dead letters, disk usage.
    Status,
    /// Write an online, consistent backup into a new directory under the
    /// server's backup-root while it keeps serving.
    Backup(backup::BackupArgs),
    /// The audit log: every mutating admin call and every refused call,
    /// with who made it, on what, and the result; oldest first.
    Audit(audit::AuditArgs),
}

/// Clap value parser for `--server` / `EVENTBUS_SERVER`: accepts `host:port`
/// (meaning `http://host:port`) or a full `http://` / `https://` URI, so a bad
/// address is a usage error (exit 2) rather than a failed call.
pub fn parse_server(s: &str) -> Result<String, String> {
    let uri = if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
    };
    Endpoint::from_shared(uri.clone()).map_err(|e| {
        format!("not a server address ({e}); expected host:port or http://host:port")
    })?;
    Ok(uri)
}

/// What every command gets: the SDK client, its admin calls and the output
/// mode.
pub struct Ctx {
    pub client: Client,
    pub admin: Admin,
    pub out: Output,
}

/// Runs one operator command on a single-threaded runtime (a CLI makes one
/// call at a time). On failure prints `error: ...` on stderr and exits 1.
pub fn main(global: &GlobalArgs, command: RemoteCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        // Connects on first use, so an unreachable server surfaces as the
        // UNAVAILABLE status of the first call, reported like any other error.
        let client = global.client_builder()?.connect_lazy()?;
        let ctx = Ctx {
            admin: client.admin(),
            client,
            out: Output::new(global.json),
        };
        run(ctx, command).await
    });
    drop(runtime);
    match result {
        Ok(()) => Ok(()),
        // The reader of our stdout went away (`| head`): not a failure.
        Err(err) if output::is_broken_pipe(&err) => Ok(()),
        Err(err) => {
            output::print_error(&err, &global.server);
            std::process::exit(1);
        }
    }
}

/// The first `limit` items of a list (0: all), and whether more follow.
pub async fn first<T>(
    mut items: eventbus::PageStream<T>,
    limit: usize,
) -> anyhow::Result<(Vec<T>, bool)> {
    use tokio_stream::StreamExt as _;
    let limit = if limit == 0 { usize::MAX } else { limit };
    let mut listed = Vec::new();
    while let Some(item) = items.next().await {
        if listed.len() == limit {
            return Ok((listed, true));
        }
        listed.push(item?);
    }
    Ok((listed, false))
}

async fn run(ctx: Ctx, command: RemoteCommand) -> anyhow::Result<()> {
    match command {
        RemoteCommand::Topic(cmd) => topic::run(ctx, cmd).await,
        RemoteCommand::Publish(args) => publish::run(ctx, args).await,
        RemoteCommand::Subscribe(args) => subscribe::run(ctx, args).await,
        RemoteCommand::Sub(cmd) => sub::run(ctx, cmd).await,
        RemoteCommand::Dlq(cmd) => dlq::run(ctx, cmd).await,
        RemoteCommand::Replay(args) => replay::run(ctx, args).await,
        RemoteCommand::Status => status::run(ctx).await,
        RemoteCommand::Backup(args) => backup::run(ctx, args).await,
        RemoteCommand::Audit(args) => audit::run(ctx, args).await,
    }
}
