//! The `eventbus` command line.
//!
//! * `eventbus serve` / `eventbus default-config` run or configure the server
//!   in this process ([`serve`]).
//! * `eventbus restore` and `eventbus migrate` work offline: on a data dir,
//!   or from one (or a cluster backup) into a cluster ([`restore`],
//!   [`migrate`]).
//! * Every other subcommand is an operator command that talks to a running
//!   server over gRPC ([`remote`]): topics, publish, subscribe, subscriptions,
//!   dead letters and replay.

mod bench;
mod migrate;
mod remote;
mod restore;
mod serve;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use eventbus::{Client, ClientBuilder, TlsConfig};

use crate::config::Config;

/// Printed at the end of `eventbus --help`, so scripts know what to expect.
const AFTER_HELP: &str = "\
Server address: --server, else $EVENTBUS_SERVER, else http://127.0.0.1:50051
(`host:port` without a scheme means http://). TLS: an https:// address uses
the system's trusted CAs; --tls-ca ($EVENTBUS_TLS_CA) trusts that CA instead,
--tls-cert and --tls-key ($EVENTBUS_TLS_CERT, $EVENTBUS_TLS_KEY) present a
client certificate (mTLS). Any --tls-* flag turns an http:// address into
https://.

Output: human-readable tables by default. --json prints one JSON document, or
JSON lines (one object per line) for streams: publish results, subscribe,
replay. Times are RFC 3339 strings (UTC), durations are seconds
(`*_seconds` fields). A payload is shown as text when it is valid UTF-8,
otherwise as base64; `payload_encoding` says which (\"utf8\" or \"base64\").
Progress bars are drawn on stderr only when stderr is a terminal and --json
is off.

Exit status:
  0  success
  1  the command failed: the server returned an error (printed on stderr as
     `error: <GRPC_CODE>: <message>`, e.g. `error: NOT_FOUND: ...`), the server
     is unreachable (UNAVAILABLE), or a local input could not be read
  2  usage error: unknown subcommand or flag, missing or malformed argument";

#[derive(Parser)]
#[command(
    name = "eventbus",
    version,
    about = "A durable event bus served over gRPC",
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Flags accepted by every subcommand (before or after it). `serve` and
/// `default-config` ignore them.
#[derive(Args)]
pub struct GlobalArgs {
    /// Server the operator commands talk to: `http://host:port` or
    /// `host:port` (`serve` ignores it; it listens on --listen).
    #[arg(
        long,
        global = true,
        env = "EVENTBUS_SERVER",
        default_value = "http://127.0.0.1:50051",
        value_parser = remote::parse_server
    )]
    pub server: String,
    /// Machine-readable output of the operator commands: one JSON document,
    /// or JSON lines for streams.
    #[arg(long, global = true)]
    pub json: bool,
    /// A JWT sent as `authorization: Bearer <token>` (prefer the
    /// environment variable: a flag shows in `ps`).
    #[arg(long, global = true, env = "EVENTBUS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// An API key sent as `x-api-key` (prefer the environment variable).
    #[arg(long, global = true, env = "EVENTBUS_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// CA certificate(s), PEM, that the server's TLS certificate must chain
    /// to (instead of the system's). Turns TLS on.
    #[arg(long, global = true, env = "EVENTBUS_TLS_CA", value_name = "PEM_FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate, PEM, for servers that require mTLS (with
    /// --tls-key). Turns TLS on.
    #[arg(
        long,
        global = true,
        env = "EVENTBUS_TLS_CERT",
        value_name = "PEM_FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// Private key, PEM, of --tls-cert.
    #[arg(
        long,
        global = true,
        env = "EVENTBUS_TLS_KEY",
        value_name = "PEM_FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Name to verify the server's certificate against, when it differs
    /// from the host in --server (e.g. a tunnel to 127.0.0.1).
    #[arg(
        long,
        global = true,
        env = "EVENTBUS_TLS_SERVER_NAME",
        value_name = "NAME"
    )]
    pub tls_server_name: Option<String>,
}

impl GlobalArgs {
    /// An SDK client builder for --server with the --tls-* settings and
    /// the credentials (--token, --api-key).
    pub fn client_builder(&self) -> anyhow::Result<ClientBuilder> {
        let mut builder = self.transport_builder()?;
        if let Some(token) = &self.token {
            builder = builder.bearer_token(token);
        }
        if let Some(key) = &self.api_key {
            builder = builder.api_key(key);
        }
        Ok(builder)
    }

    fn transport_builder(&self) -> anyhow::Result<ClientBuilder> {
        let tls_flags =
            self.tls_ca.is_some() || self.tls_cert.is_some() || self.tls_server_name.is_some();
        if !tls_flags {
            return Ok(Client::builder(&self.server));
        }
        let mut tls = TlsConfig::from_files(
            self.tls_ca.as_deref(),
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
        )?;
        tls.domain = self.tls_server_name.clone();
        let server = match self.server.strip_prefix("http://") {
            Some(rest) => format!("https://{rest}"),
            None => self.server.clone(),
        };
        Ok(Client::builder(server).tls(tls))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(serve::ServeArgs),
    /// Print the default configuration as TOML.
    DefaultConfig,
    /// Run the peers' benchmark workload (publish, consume, latency) against
    /// a running server; prints one JSON line (peerbench's field names).
    Bench(bench::BenchArgs),
    /// Turn a backup (from `eventbus backup`) into a store again, offline: a
    /// single node's into a new data dir (--data-dir, checked by opening
    /// it), a cluster's into a NATS JetStream cluster (--nats-url).
    Restore(restore::RestoreArgs),
    /// Move a single node's data dir into cluster mode, offline: topics,
    /// events at the same offsets, subscriptions at their positions, dead
    /// letters. Restartable; RUNBOOK.md, "Moving a single node into cluster
    /// mode".
    Migrate(migrate::MigrateArgs),
    /// Read an API key on stdin and print the SHA-256 that `[[auth.api-keys]]`
    /// takes (`sha256 = "..."`); with `--new`, make a random key and print
    /// both.
    HashKey {
        /// Make a new random key (32 bytes, base64url) instead of reading one.
        #[arg(long)]
        new: bool,
    },
    #[command(flatten)]
    Remote(remote::RemoteCommand),
}

/// `eventbus hash-key`: the key never appears on the command line.
fn hash_key(new: bool) -> anyhow::Result<()> {
    use base64::Engine as _;
    let key = if new {
        let bytes: [u8; 32] = rand::random();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    anyhow::ensure!(!key.is_empty(), "no key on stdin");
    if new {
        println!("key     {key}");
    }
    println!("sha256  {}", crate::auth::api_key::hash_key_hex(&key));
    Ok(())
}

/// Parses the command line and runs the chosen command.
///
/// Usage errors exit with 2 (clap). Operator commands report their own
/// failures and exit with 1; `serve` returns its error to `main` as before.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::serve(args),
        Command::DefaultConfig => {
            print!("{}", Config::default_toml());
            Ok(())
        }
        Command::Bench(args) => bench::run(cli.global.client_builder()?, args),
        Command::Restore(args) => restore::run(args),
        Command::Migrate(args) => migrate::run(args),
        Command::HashKey { new } => hash_key(new),
        Command::Remote(command) => remote::main(&cli.global, command),
    }
}
