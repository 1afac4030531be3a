//! `AdminService/CreateBackup`: an online RocksDB checkpoint on the server.

use std::path::Path;

use eventbus_proto::v1::{CreateBackupRequest, CreateBackupResponse};
use tonic::Status;

use super::context::Call;
use super::status::to_status;

pub async fn handle(
    call: &Call<'_>,
    req: CreateBackupRequest,
) -> Result<CreateBackupResponse, Status> {
    let started = std::time::Instant::now();
    let size_bytes = call
        .broker
        .backup(Path::new(&req.dir))
        .await
        .map_err(to_status)?;
    tracing::info!(dir = %req.dir, size_bytes, took = ?started.elapsed(), "backup written");
    Ok(CreateBackupResponse {
        dir: req.dir,
        size_bytes,
    })
}
