//! `eventbus audit`: the server's audit log (who changed what, and who was
//! refused), oldest first.

use std::time::SystemTime;

use clap::Args;
use eventbus::v1::AuditRecord;
use eventbus::AuditFilter;
use serde_json::{json, Value};

use super::output::{ts_json, ts_text, Table};
use super::time::parse_time;
use super::Ctx;

#[derive(Args)]
pub struct AuditArgs {
    /// Only records at or after this time (RFC 3339, or relative such as
    /// `1h`).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    since: Option<prost_types::Timestamp>,
    /// Only records before this time.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    until: Option<prost_types::Timestamp>,
    /// Only this principal's records (`anonymous` on a server without
    /// authentication).
    #[arg(long, value_name = "NAME")]
    principal: Option<String>,
    /// Print at most this many records; 0 = all.
    #[arg(long, default_value_t = 100)]
    limit: usize,
}

pub async fn run(ctx: Ctx, args: AuditArgs) -> anyhow::Result<()> {
    let time = |ts: Option<prost_types::Timestamp>| ts.and_then(|t| SystemTime::try_from(t).ok());
    let filter = AuditFilter {
        since: time(args.since),
        until: time(args.until),
        principal: args.principal,
    };
    let (listed, more) = super::first(ctx.admin.audit_records(filter), args.limit).await?;
    if more {
        eprintln!(
            "showing the first {} records; use --since, or --limit 0 for all",
            args.limit
        );
    }
    if ctx.out.json {
        return ctx
            .out
            .doc(&Value::Array(listed.iter().map(record_json).collect()));
    }
    let mut table = Table::new(&[
        "TIME",
        "PRINCIPAL",
        "TENANT",
        "ACTION",
        "TARGET",
        "RESULT",
        "REQUEST-ID",
    ]);
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    for r in &listed {
        let action = match r.detail.as_str() {
            "" => r.action.clone(),
            detail => format!("{} ({detail})", r.action),
        };
        table.row(vec![
            ts_text(&r.time),
            dash(&r.principal),
            dash(&r.tenant),
            action,
            dash(&r.target),
            r.result.clone(),
            dash(&r.request_id),
        ]);
    }
    ctx.out
        .text(&format!("{}\n{} records", table.render(), listed.len()))
}

fn record_json(r: &AuditRecord) -> Value {
    json!({
        "id": r.id,
        "time": ts_json(&r.time),
        "principal": r.principal,
        "tenant": r.tenant,
        "action": r.action,
        "target": r.target,
        "params_sha256": r.params_sha256,
        "result": r.result,
        "request_id": r.request_id,
        "detail": r.detail,
    })
}
