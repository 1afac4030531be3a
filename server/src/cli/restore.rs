//! `eventbus restore --from DIR --data-dir NEW`: turns a backup written by
//! `eventbus backup` into a data dir, offline, and checks that it opens.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context as _};
use eventbus_log::{Log, Options};

#[derive(clap::Args)]
pub struct RestoreArgs {
    /// The backup directory (written by `eventbus backup`).
    #[arg(long)]
    from: PathBuf,
    /// The new data dir to create. It must not exist, or be empty. Start the
    /// server on it afterwards: `eventbus serve --data-dir NEW`.
    #[arg(long)]
    data_dir: PathBuf,
}

pub fn run(args: RestoreArgs) -> anyhow::Result<()> {
    ensure!(
        args.from.join("CURRENT").is_file(),
        "{} is not a backup (no RocksDB CURRENT file)",
        args.from.display()
    );
    if args.data_dir.exists() {
        let empty = std::fs::read_dir(&args.data_dir)
            .with_context(|| format!("reading {}", args.data_dir.display()))?
            .next()
            .is_none();
        ensure!(
            empty,
            "{} exists and is not empty; restore into a new directory",
            args.data_dir.display()
        );
    }
    copy_files(&args.from, &args.data_dir)?;
    // Opening replays the backup's WAL and checks the metadata; a broken
    // backup fails here, not when the server starts.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let summary = runtime.block_on(async {
        let log = Log::open(Options::new(&args.data_dir)).with_context(|| {
            format!(
                "the restored data dir {} does not open",
                args.data_dir.display()
            )
        })?;
        let mut lines = Vec::new();
        for t in log.topics() {
            let events: u64 = t.partitions.iter().map(|p| p.end() - p.start()).sum();
            lines.push(format!(
                "  topic {}: {} partitions, {} events",
                t.name(),
                t.partition_count(),
                events
            ));
        }
        log.close();
        anyhow::Ok(lines)
    })?;
    println!(
        "restored {} into {} ({} topics):",
        args.from.display(),
        args.data_dir.display(),
        summary.len()
    );
    for line in summary {
        println!("{line}");
    }
    println!(
        "start it with: eventbus serve --data-dir {}",
        args.data_dir.display()
    );
    Ok(())
}

/// A RocksDB checkpoint is one flat directory of files.
fn copy_files(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if !kind.is_file() {
            bail!("unexpected entry {} in the backup", entry.path().display());
        }
        let target = to.join(entry.file_name());
        std::fs::copy(entry.path(), &target).with_context(|| {
            format!("copying {} to {}", entry.path().display(), target.display())
        })?;
    }
    Ok(())
}
