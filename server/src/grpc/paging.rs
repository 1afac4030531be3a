//! Page tokens for the List RPCs: the opaque token is the last name returned.

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
    let size = match page_size as usize {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    };
    let after = if token.is_empty() {
        None
    } else {
        let raw = URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                invalid(
                    "page_token",
                    "is not a token from a previous response; pass next_page_token unchanged",
                )
            })?;
        Some(raw)
    };
    let mut rest: Vec<T> = items
        .into_iter()
        .filter(|i| after.as_deref().is_none_or(|a| name(i) > a))
        .collect();
    let next = if rest.len() > size {
        rest.truncate(size);
        URL_SAFE_NO_PAD.encode(name(rest.last().expect("non-empty")))
    } else {
        String::new()
    };
    Ok((rest, next))
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
    fn bad_token_is_invalid_argument() {
        let err = page(vec!["a".to_string()], 1, "!!", |s| s.as_str()).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }
}
