//! `AdminService/CreateBackup`: an online backup on the server, written
//! only under the configured `backup-root`: a RocksDB checkpoint on one
//! node, a snapshot of every eventbus stream in cluster mode
//! (`eventbus_jetstream::backup`).
//!
//! The request's `dir` is a path relative to the root (an absolute path is
//! accepted only when it lies under the root). What the path says is
//! checked first and without touching the filesystem: empty, `..`, `.` or
//! anything outside the root is INVALID_ARGUMENT. What the filesystem says
//! (the parent is missing, the server may not write there, the directory
//! exists, a symlink leads out of the root) is one FAILED_PRECONDITION with
//! one message, so the call cannot be used to probe which paths exist.

use std::path::{Component, Path, PathBuf};

use eventbus_broker::{Backend, Error};
use eventbus_proto::v1::{CreateBackupRequest, CreateBackupResponse};
use tonic::Status;

use super::context::Call;
use super::status::{invalid, to_status};

pub async fn handle(
    call: &Call<'_>,
    backup_root: Option<&Path>,
    req: CreateBackupRequest,
) -> Result<CreateBackupResponse, Status> {
    let Some(root) = backup_root else {
        return Err(Status::failed_precondition(
            "CreateBackup is off on this server: set the config key backup-root \
             (EVENTBUS_BACKUP_ROOT) to a directory for backups, then name each backup by a \
             path relative to it",
        ));
    };
    let relative = parse(root, &req.dir)?;
    let root_owned = root.to_path_buf();
    let target = tokio::task::spawn_blocking(move || place(&root_owned, &relative))
        .await
        .map_err(|_| Status::unavailable("shutting down"))?
        .map_err(|()| unusable(&req.dir))?;
    let started = std::time::Instant::now();
    // The filesystem's answers, all alike (see the module docs). In cluster
    // mode a storage error is the cluster's (a stream leader that does not
    // answer), not the filesystem's: it keeps its status and message.
    let cluster = call.broker.backend() == Backend::JetStream;
    let filesystem = |e: &Error| match e {
        Error::AlreadyExists(_) | Error::FailedPrecondition(_) => true,
        Error::Storage(_) => !cluster,
        _ => false,
    };
    let size_bytes = call.broker.backup(&target).await.map_err(|e| {
        if filesystem(&e) {
            tracing::warn!(dir = %target.display(), error = %e, "backup refused");
            unusable(&req.dir)
        } else {
            to_status(e)
        }
    })?;
    tracing::info!(dir = %target.display(), size_bytes, took = ?started.elapsed(), "backup written");
    Ok(CreateBackupResponse {
        dir: target.display().to_string(),
        size_bytes,
    })
}

/// The broker-free part of CreateBackup: the backup's path relative to
/// `root`, from what the path says alone.
pub fn parse(root: &Path, dir: &str) -> Result<PathBuf, Status> {
    if dir.is_empty() {
        return Err(invalid(
            "dir",
            "required: the new backup directory, as a path relative to the server's backup-root",
        ));
    }
    let path = Path::new(dir);
    let relative = match path.strip_prefix(root) {
        Ok(inside) => inside,
        Err(_) if path.is_absolute() => {
            return Err(invalid(
                "dir",
                "must be a path relative to the server's backup-root (an absolute path only \
                 when it is under backup-root)",
            ))
        }
        Err(_) => path,
    };
    if relative.as_os_str().is_empty() {
        return Err(invalid(
            "dir",
            "must name a new directory under backup-root, not the root itself",
        ));
    }
    if !relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(invalid(
            "dir",
            "may only name directories below backup-root: no '..', '.' or root components",
        ));
    }
    Ok(relative.to_path_buf())
}

/// The real path to write the backup to: its parent must exist and lie
/// under the real root (a symlink may not lead out of it), and it must not
/// exist. The root itself is created when missing. `Err(())` for every
/// reason alike. Blocking.
fn place(root: &Path, relative: &Path) -> Result<PathBuf, ()> {
    std::fs::create_dir_all(root).map_err(drop)?;
    let real_root = std::fs::canonicalize(root).map_err(drop)?;
    let joined = root.join(relative);
    let (parent, name) = (joined.parent().ok_or(())?, joined.file_name().ok_or(())?);
    let real_parent = std::fs::canonicalize(parent).map_err(drop)?;
    if !real_parent.starts_with(&real_root) || !real_parent.is_dir() {
        return Err(());
    }
    let target = real_parent.join(name);
    match std::fs::symlink_metadata(&target) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(target),
        _ => Err(()),
    }
}

/// The one answer for every reason the filesystem refuses a backup.
fn unusable(dir: &str) -> Status {
    Status::failed_precondition(format!(
        "cannot write a backup to {dir:?} under backup-root: name a directory that does not \
         exist yet, inside an existing directory under backup-root that the server can write"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_below_the_root_are_accepted() {
        let root = Path::new("/srv/backups");
        assert_eq!(parse(root, "b1").unwrap(), PathBuf::from("b1"));
        assert_eq!(parse(root, "daily/b1").unwrap(), PathBuf::from("daily/b1"));
        assert_eq!(parse(root, "/srv/backups/b1").unwrap(), PathBuf::from("b1"));
        for bad in [
            "",
            "/etc/b1",
            "../b1",
            "a/../../b1",
            "./b1",
            "/srv/backups",
            "/srv/backupsx/b",
        ] {
            let err = parse(root, bad).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad}: {err:?}");
        }
    }

    #[test]
    fn existing_missing_and_escaping_paths_are_refused_alike() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        // A missing root is created.
        let fresh = root.path().join("fresh-root");
        assert!(place(&fresh, Path::new("b1")).is_ok());
        assert!(fresh.is_dir());
        std::fs::create_dir(root.path().join("exists")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("out")).unwrap();
        assert!(place(root.path(), Path::new("new")).is_ok());
        for refused in ["exists", "missing/new", "out/new"] {
            assert_eq!(place(root.path(), Path::new(refused)), Err(()), "{refused}");
        }
    }
}
