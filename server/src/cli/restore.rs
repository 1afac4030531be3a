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
    let from = std::fs::canonicalize(&args.from)?;
    let name = args
        .data_dir
        .file_name()
        .context("--data-dir must name a directory")?
        .to_owned();
    let parent = match args.data_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let parent = std::fs::canonicalize(&parent)
        .with_context(|| format!("the parent of {} must exist", args.data_dir.display()))?;
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
