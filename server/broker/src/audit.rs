//! The audit log: one record per mutating admin call and per denied call,
//! kept by the backend so that every gateway of a cluster writes to the same
//! log (RocksDB: the `audit` column family, synced; JetStream, issue 14: a
//! stream with sync writes).
//!
//! Records are append-only and ordered by time, then by an id the backend
//! assigns; a listing pages through them with an [`AuditCursor`].

use serde::{Deserialize, Serialize};

use crate::types::UnixMillis;

/// Most records in one [`AuditPage`], whatever the page size asked for.
pub const MAX_PAGE_RECORDS: usize = 1000;

/// Most bytes of records in one [`AuditPage`] ([`AuditRecord::size_bytes`]):
/// with the protobuf framing a page stays under the 4 MiB that gRPC clients
/// receive by default. A page always holds at least one record.
pub const MAX_PAGE_BYTES: usize = 3 << 20;

/// Most records a listing looks at for one page. A filter that matches
/// rarely (one principal among millions of records) then answers with a
/// short or empty page and a cursor to go on from, instead of scanning the
/// whole log in one call.
pub const MAX_SCAN_RECORDS: usize = 100_000;

/// Longest text field of a record, in bytes; longer values are cut (at a
/// character boundary) when the record is made, so no caller can make a
/// record big.
pub const MAX_FIELD_BYTES: usize = 1024;

/// One audited call. The field names are stored (the RocksDB backend keeps a
/// record as its JSON), so they are permanent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditRecord {
    /// Assigned by the backend when the record is appended: increasing in
    /// log order, never reused. 0 in a record not yet appended.
    pub id: u64,
    /// When the call was answered. The backend keeps times non-decreasing in
    /// log order (a clock stepping back is clamped to the last record's
    /// time).
    pub time_ms: UnixMillis,
    /// Who called: the principal's name, or `anonymous` without
    /// authentication.
    pub principal: String,
    /// The caller's tenant; empty for none.
    pub tenant: String,
    /// The RPC, e.g. `CreateTopic`; for a summary of dropped denials,
    /// [`DENIALS_DROPPED`].
    pub action: String,
    /// What the call named: `topic` or `topic/subscription`, the backup
    /// dir; empty for none.
    pub target: String,
    /// Hex SHA-256 of the request message as the client encoded it
    /// (protobuf), so a record can be matched to a request without storing
    /// its contents.
    pub params_sha256: String,
    /// The outcome as a gRPC code name: `OK`, `NOT_FOUND`, `PERMISSION_DENIED`, ...
    pub result: String,
    /// The request id of the call (`x-request-id`).
    pub request_id: String,
    /// Extra words, e.g. how many denials a [`DENIALS_DROPPED`] record
    /// stands for. Usually empty.
    pub detail: String,
}

/// The action of a record that stands for denied calls not recorded one by
/// one (over the denial rate limit); its `detail` says how many.
pub const DENIALS_DROPPED: &str = "DenialsDropped";

impl AuditRecord {
    /// Cuts every text field to [`MAX_FIELD_BYTES`].
    pub fn bounded(mut self) -> AuditRecord {
        for field in [
            &mut self.principal,
            &mut self.tenant,
            &mut self.action,
            &mut self.target,
            &mut self.params_sha256,
            &mut self.result,
            &mut self.request_id,
            &mut self.detail,
        ] {
            truncate(field, MAX_FIELD_BYTES);
        }
        self
    }

    /// Bytes the record adds to a page: its text plus a margin for the id,
    /// the time and framing.
    pub fn size_bytes(&self) -> usize {
        self.principal.len()
            + self.tenant.len()
            + self.action.len()
            + self.target.len()
            + self.params_sha256.len()
            + self.result.len()
            + self.request_id.len()
            + self.detail.len()
            + 64
    }
}

/// Cuts `s` to at most `max` bytes, at a character boundary.
fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let cut = (0..=max)
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        s.truncate(cut);
    }
}

/// Where a listing goes on: after the record with this time and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditCursor {
    pub time_ms: UnixMillis,
    pub id: u64,
}

/// Which records to list.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Records at or after this time; `None`: from the oldest.
    pub start_ms: Option<UnixMillis>,
    /// Records before this time; `None`: up to the newest.
    pub end_ms: Option<UnixMillis>,
    /// Only this principal's records; `None`: everyone's.
    pub principal: Option<String>,
    /// Go on after this record (a previous page's [`AuditPage::next`]).
    pub after: Option<AuditCursor>,
    /// Most records to return, capped at [`MAX_PAGE_RECORDS`]; 0: that cap.
    pub limit: usize,
}

impl AuditQuery {
    pub fn matches(&self, record: &AuditRecord) -> bool {
        self.principal
            .as_deref()
            .is_none_or(|p| record.principal == p)
    }

    /// The page size to use: `limit` within 1..=[`MAX_PAGE_RECORDS`], 0
    /// meaning the cap.
    pub fn page_limit(&self) -> usize {
        match self.limit {
            0 => MAX_PAGE_RECORDS,
            n => n.min(MAX_PAGE_RECORDS),
        }
    }
}

/// One page of an audit listing, oldest first.
#[derive(Debug, Clone, Default)]
pub struct AuditPage {
    pub records: Vec<AuditRecord>,
    /// Where the next page starts, when more records may follow. A page can
    /// be short (even empty) and still have a next one: a listing stops
    /// after [`MAX_SCAN_RECORDS`] records looked at.
    pub next: Option<AuditCursor>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_fields_are_cut_at_a_character_boundary() {
        let r = AuditRecord {
            principal: "ü".repeat(MAX_FIELD_BYTES),
            target: "t".into(),
            ..Default::default()
        }
        .bounded();
        assert!(r.principal.len() <= MAX_FIELD_BYTES);
        assert!(r.principal.len() >= MAX_FIELD_BYTES - 1);
        assert!(r.principal.chars().all(|c| c == 'ü'));
        assert_eq!(r.target, "t");
        assert!(r.size_bytes() < MAX_FIELD_BYTES + 100);
    }

    #[test]
    fn the_page_limit_stays_within_bounds() {
        let q = |limit| AuditQuery {
            limit,
            ..Default::default()
        };
        assert_eq!(q(0).page_limit(), MAX_PAGE_RECORDS);
        assert_eq!(q(1).page_limit(), 1);
        assert_eq!(q(50).page_limit(), 50);
        assert_eq!(q(usize::MAX).page_limit(), MAX_PAGE_RECORDS);
    }

    #[test]
    fn records_round_trip_as_json_and_read_missing_fields_as_empty() {
        let r = AuditRecord {
            id: 7,
            time_ms: 99,
            principal: "ops".into(),
            action: "DeleteTopic".into(),
            result: "OK".into(),
            ..Default::default()
        };
        let json = serde_json::to_vec(&r).unwrap();
        assert_eq!(serde_json::from_slice::<AuditRecord>(&json).unwrap(), r);
        let old: AuditRecord = serde_json::from_str(r#"{"id":1,"action":"CreateTopic"}"#).unwrap();
        assert_eq!(
            (old.id, old.action.as_str(), old.time_ms),
            (1, "CreateTopic", 0)
        );
    }
}
