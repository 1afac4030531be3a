//! Page tokens for the List RPCs: the opaque token is the last name returned.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use eventbus_broker::{AuditCursor, Limits};
use tonic::Status;

use super::status::invalid;

/// A List call's position: the name to continue after, and the page size.
pub struct PageRequest {
    pub after: Option<String>,
    pub size: usize,
}

impl PageRequest {
    /// Parses `page_size` (0: the default; capped to `max-page-size`) and
    /// `page_token` (empty: the first page).
    pub fn parse(limits: &Limits, page_size: u32, token: &str) -> Result<PageRequest, Status> {
        Ok(PageRequest {
            after: decode_name_token(token)?,
            size: limits.page_size(page_size),
        })
    }

    /// The token of the next page: after `last`, when `more` follow.
    pub fn next_token(last: Option<&str>, more: bool) -> String {
        match last {
            Some(name) if more => name_token(name),
            _ => String::new(),
        }
    }

    /// This page of `items` (sorted by `name`), and the next page's token.
    pub fn page<T>(&self, items: Vec<T>, name: impl Fn(&T) -> &str) -> (Vec<T>, String) {
        let mut rest: Vec<T> = items
            .into_iter()
            .filter(|i| self.after.as_deref().is_none_or(|a| name(i) > a))
            .collect();
        let more = rest.len() > self.size;
        rest.truncate(self.size);
        let next = Self::next_token(rest.last().map(&name), more);
        (rest, next)
    }
}

/// The token of the page after the item named `name`.
pub fn name_token(name: &str) -> String {
    URL_SAFE_NO_PAD.encode(name)
}

/// The name a [`name_token`] resumes after; `None` for the empty token (the
/// first page).
pub fn decode_name_token(token: &str) -> Result<Option<String>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .map(Some)
        .ok_or_else(bad_token)
}

/// The token of the dead-letter page after sequence number `seq`.
pub fn seq_token(seq: u64) -> String {
    URL_SAFE_NO_PAD.encode(seq.to_string())
}

/// The sequence number a [`seq_token`] resumes after; `None` for the empty
/// token (the first page).
pub fn decode_seq_token(token: &str) -> Result<Option<u64>, Status> {
    decode_name_token(token)?
        .map(|s| s.parse().map_err(|_| bad_token()))
        .transpose()
}

/// The token of the audit page after `cursor`.
pub fn audit_token(cursor: AuditCursor) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}.{}", cursor.time_ms, cursor.id))
}

/// The cursor an [`audit_token`] resumes after; `None` for the empty token
/// (the first page).
pub fn decode_audit_token(token: &str) -> Result<Option<AuditCursor>, Status> {
    decode_name_token(token)?
        .map(|s| {
            let (time_ms, id) = s.split_once('.').ok_or_else(bad_token)?;
            Ok(AuditCursor {
                time_ms: time_ms.parse().map_err(|_| bad_token())?,
                id: id.parse().map_err(|_| bad_token())?,
            })
        })
        .transpose()
}

fn bad_token() -> Status {
    invalid(
        "page_token",
        "is not a token from a previous response; pass next_page_token unchanged",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_through_everything_once() {
        let items: Vec<String> = (0..25).map(|i| format!("t{i:02}")).collect();
        let limits = Limits::default();
        let mut token = String::new();
        let mut seen = Vec::new();
        loop {
            let req = PageRequest::parse(&limits, 10, &token).unwrap();
            let (page, next) = req.page(items.clone(), |s| s.as_str());
            seen.extend(page);
            if next.is_empty() {
                break;
            }
            token = next;
        }
        assert_eq!(seen, items);
    }

    #[test]
    fn page_size_is_capped_by_the_limit() {
        let limits = Limits {
            max_page_size: 7,
            ..Limits::default()
        };
        assert_eq!(PageRequest::parse(&limits, 1000, "").unwrap().size, 7);
        assert_eq!(PageRequest::parse(&limits, 0, "").unwrap().size, 7);
    }

    #[test]
    fn tokens_round_trip() {
        for name in ["", "a", "orders.v1", "ü-ß"] {
            assert_eq!(
                decode_name_token(&name_token(name)).unwrap().as_deref(),
                (!name.is_empty()).then_some(name)
            );
        }
        for seq in [0, 1, 99, u64::MAX] {
            assert_eq!(decode_seq_token(&seq_token(seq)).unwrap(), Some(seq));
        }
        assert_eq!(decode_seq_token("").unwrap(), None);
        let cursor = AuditCursor {
            time_ms: 1_700_000_000_000,
            id: u64::MAX,
        };
        assert_eq!(
            decode_audit_token(&audit_token(cursor)).unwrap(),
            Some(cursor)
        );
        assert_eq!(decode_audit_token("").unwrap(), None);
        assert!(decode_audit_token(&seq_token(5)).is_err());
        assert!(decode_seq_token(&name_token("x")).is_err());
    }

    #[test]
    fn bad_token_is_invalid_argument() {
        let err = PageRequest::parse(&Limits::default(), 1, "!!")
            .err()
            .expect("invalid token");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }
}
