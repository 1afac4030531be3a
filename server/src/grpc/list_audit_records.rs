//! `AdminService/ListAuditRecords`: pages through the audit log, oldest
//! first, by time range and principal. Read-only, so not audited itself.

use eventbus_broker::audit::MAX_FIELD_BYTES;
use eventbus_broker::{AuditQuery, AuditRecord, Limits};
use eventbus_proto::v1::{self, ListAuditRecordsRequest, ListAuditRecordsResponse};
use tonic::Status;

use super::context::Call;
use super::convert::{millis_to_timestamp, optional_millis};
use super::paging;
use super::status::{invalid, to_status};

pub async fn handle(
    call: &Call<'_>,
    req: ListAuditRecordsRequest,
) -> Result<ListAuditRecordsResponse, Status> {
    let query = parse(&req, call.broker.limits())?;
    let page = call.broker.list_audit(query).await.map_err(to_status)?;
    Ok(ListAuditRecordsResponse {
        records: page.records.into_iter().map(record).collect(),
        next_page_token: page.next.map_or_else(String::new, paging::audit_token),
    })
}

/// The broker-free part of ListAuditRecords: page position, size and filter.
pub fn parse(req: &ListAuditRecordsRequest, limits: &Limits) -> Result<AuditQuery, Status> {
    if req.principal.len() > MAX_FIELD_BYTES {
        return Err(invalid(
            "principal",
            format!(
                "is {} bytes; principal names have at most {MAX_FIELD_BYTES}",
                req.principal.len()
            ),
        ));
    }
    Ok(AuditQuery {
        start_ms: optional_millis("start_time", &req.start_time)?,
        end_ms: optional_millis("end_time", &req.end_time)?,
        principal: Some(req.principal.clone()).filter(|p| !p.is_empty()),
        after: paging::decode_audit_token(&req.page_token)?,
        limit: limits.page_size(req.page_size),
    })
}

fn record(r: AuditRecord) -> v1::AuditRecord {
    v1::AuditRecord {
        id: r.id,
        time: Some(millis_to_timestamp(r.time_ms)),
        principal: r.principal,
        tenant: r.tenant,
        action: r.action,
        target: r.target,
        params_sha256: r.params_sha256,
        result: r.result,
        request_id: r.request_id,
        detail: r.detail,
    }
}
