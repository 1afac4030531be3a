//! Page tokens for the List RPCs: the opaque token is the last name returned.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use eventbus_log::limits::Limits;
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
        Ok(PageRequest {
            after,
            size: limits.page_size(page_size),
        })
    }

    /// The token of the next page: after `last`, when `more` follow.
    pub fn next_token(last: Option<&str>, more: bool) -> String {
        match last {
            Some(name) if more => URL_SAFE_NO_PAD.encode(name),
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
    fn bad_token_is_invalid_argument() {
        let err = PageRequest::parse(&Limits::default(), 1, "!!")
            .err()
            .expect("invalid token");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }
}
