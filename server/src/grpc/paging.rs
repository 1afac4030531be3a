//! Page tokens for the List RPCs. A token is the base64url (no padding) of
//! the last item returned: a name for topics and subscriptions, the decimal
//! sequence number for dead letters. Tokens are client bytes, so decoding them
//! never trusts them: anything that is not a token we issued is
//! INVALID_ARGUMENT.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use tonic::Status;

use super::status::invalid;

pub const DEFAULT_PAGE_SIZE: usize = 100;
pub const MAX_PAGE_SIZE: usize = 1000;

/// One page of `items` (sorted by `name`) after the position in `token`. Returns
/// the page and the token of the next one (empty when this is the last).
pub fn page<T>(
    items: Vec<T>,
    page_size: u32,
    token: &str,
    name: impl Fn(&T) -> &str,
) -> Result<(Vec<T>, String), Status> {
    let size = page_limit(page_size);
    let after = decode_name_token(token)?;
    let mut rest: Vec<T> = items
        .into_iter()
        .filter(|i| after.as_deref().is_none_or(|a| name(i) > a))
        .collect();
    let next = if rest.len() > size {
        rest.truncate(size);
        name_token(name(rest.last().expect("non-empty")))
    } else {
        String::new()
    };
    Ok((rest, next))
}

/// The number of items per page for a requested `page_size`: 0 takes the
/// default, and no page exceeds the maximum.
pub fn page_limit(requested: u32) -> usize {
    match requested as usize {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
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
        let mut token = String::new();
        let mut seen = Vec::new();
        loop {
            let (page, next) = page(items.clone(), 10, &token, |s| s.as_str()).unwrap();
            seen.extend(page);
            if next.is_empty() {
                break;
            }
            token = next;
        }
        assert_eq!(seen, items);
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
        assert!(decode_seq_token(&name_token("x")).is_err());
    }

    #[test]
    fn bad_token_is_invalid_argument() {
        let err = page(vec!["a".to_string()], 1, "!!", |s| s.as_str()).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }
}
