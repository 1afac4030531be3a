//! `eventbus backup --to DIR`: asks the running server for an online backup
//! into DIR under the server's backup-root.

use clap::Args;
use serde_json::json;

use super::Ctx;

#[derive(Args)]
pub struct BackupArgs {
    /// A new directory on the SERVER, as a path relative to its configured
    /// backup-root (it must not exist; its parent must). A backup-root on
    /// the data dir's filesystem is best: the data files are hard-linked
    /// instead of copied.
    #[arg(long)]
    to: String,
}

pub async fn run(ctx: Ctx, args: BackupArgs) -> anyhow::Result<()> {
    let resp = ctx.admin.create_backup(&args.to).await?;
    if ctx.out.json {
        ctx.out
            .doc(&json!({"dir": resp.dir, "size_bytes": resp.size_bytes}))
    } else {
        ctx.out.text(&format!(
            "backup written to {} ({} bytes); restore with: eventbus restore --from {} --data-dir NEW",
            resp.dir, resp.size_bytes, resp.dir
        ))
    }
}
