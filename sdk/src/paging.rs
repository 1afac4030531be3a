//! [`PageStream`]: the pages of a list RPC as one lazy stream of items.
//!
//! The server pages every list (topics, subscriptions, dead letters) and
//! hands out a token for the next page. A `PageStream` follows those tokens
//! for the caller: it asks for the next page only when the current one is
//! used up, so it never holds more than one page however long the list is.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;

use crate::error::Result;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// One page: its items and the token of the next page (empty after the last).
pub(crate) type Page<T> = (Vec<T>, String);

/// Fetches the page at a token, with a page size.
type Fetch<T> = Box<dyn FnMut(u32, String) -> BoxFuture<Result<Page<T>>> + Send>;

/// A [`Stream`] of the items of a paged list, in the server's order, fetched
/// one page at a time as it is polled. Nothing is sent until it is first
/// polled.
///
/// It ends after the last page, or after yielding the first error (the
/// status of the failed page call; items already yielded stay valid).
///
/// ```no_run
/// use tokio_stream::StreamExt;
///
/// # async fn demo(admin: eventbus::Admin) -> eventbus::Result<()> {
/// let mut topics = admin.topics().page_size(100);
/// while let Some(topic) = topics.next().await {
///     println!("{}", topic?.name);
/// }
/// # Ok(()) }
/// ```
pub struct PageStream<T> {
    fetch: Fetch<T>,
    page_size: u32,
    /// The rest of the current page.
    items: std::vec::IntoIter<T>,
    /// The token of the next page; `None` once the last page was fetched (or
    /// a fetch failed).
    next_page: Option<String>,
    /// The page call in flight, started when `items` ran out.
    pending: Option<BoxFuture<Result<Page<T>>>>,
}

impl<T> PageStream<T> {
    /// A stream that calls `fetch(page_size, page_token)` for each page,
    /// starting with an empty token.
    pub(crate) fn new<F, Fut>(page_size: u32, mut fetch: F) -> PageStream<T>
    where
        F: FnMut(u32, String) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Page<T>>> + Send + 'static,
    {
        PageStream {
            fetch: Box::new(move |size, token| Box::pin(fetch(size, token))),
            page_size,
            items: Vec::new().into_iter(),
            next_page: Some(String::new()),
            pending: None,
        }
    }

    /// Items asked for per page call (the server caps it at its
    /// `max-page-size`, 1000 by default; a dead-letter page also ends early
    /// at 3 MiB). Set it before the first poll; 0 means the server's default
    /// of 100.
    pub fn page_size(mut self, page_size: u32) -> Self {
        self.page_size = page_size;
        self
    }
}

// Nothing in a PageStream is pinned in place: the page call is boxed.
impl<T> Unpin for PageStream<T> {}

impl<T> Stream for PageStream<T> {
    type Item = Result<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<T>>> {
        let this = self.get_mut();
        loop {
            if let Some(item) = this.items.next() {
                return Poll::Ready(Some(Ok(item)));
            }
            if let Some(pending) = this.pending.as_mut() {
                let page = std::task::ready!(pending.as_mut().poll(cx));
                this.pending = None;
                match page {
                    Ok((items, next_page_token)) => {
                        this.items = items.into_iter();
                        this.next_page = (!next_page_token.is_empty()).then_some(next_page_token);
                    }
                    Err(err) => {
                        this.next_page = None;
                        return Poll::Ready(Some(Err(err)));
                    }
                }
                continue;
            }
            match this.next_page.take() {
                Some(token) => this.pending = Some((this.fetch)(this.page_size, token)),
                None => return Poll::Ready(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio_stream::StreamExt;

    use super::*;
    use crate::error::Error;

    /// Pages of `page_size` over 0..n, recording each call's token.
    fn numbers(n: u32, calls: Arc<Mutex<Vec<String>>>) -> PageStream<u32> {
        PageStream::new(2, move |size, token: String| {
            calls.lock().unwrap().push(token.clone());
            async move {
                let start: u32 = if token.is_empty() {
                    0
                } else {
                    token.parse().unwrap()
                };
                let end = (start + size).min(n);
                let next = if end < n {
                    end.to_string()
                } else {
                    String::new()
                };
                Ok(((start..end).collect(), next))
            }
        })
    }

    #[tokio::test]
    async fn follows_tokens_one_page_at_a_time() {
        let calls = Arc::default();
        let mut stream = numbers(5, Arc::clone(&calls));
        assert!(calls.lock().unwrap().is_empty(), "lazy until polled");
        assert_eq!(stream.next().await.unwrap().unwrap(), 0);
        assert_eq!(stream.next().await.unwrap().unwrap(), 1);
        assert_eq!(calls.lock().unwrap().len(), 1, "the second page waits");
        let rest: Vec<u32> = stream.map(|r| r.unwrap()).collect().await;
        assert_eq!(rest, [2, 3, 4]);
        assert_eq!(*calls.lock().unwrap(), ["", "2", "4"]);
    }

    #[tokio::test]
    async fn page_size_is_sent_and_an_error_ends_the_stream() {
        let calls = Arc::default();
        let all: Vec<u32> = numbers(7, Arc::clone(&calls))
            .page_size(5)
            .map(|r| r.unwrap())
            .collect()
            .await;
        assert_eq!(all, [0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(*calls.lock().unwrap(), ["", "5"]);

        let mut failing = PageStream::<u32>::new(10, |_, _| async {
            Err(Error::InvalidArgument("bad page".into()))
        });
        assert!(failing.next().await.unwrap().is_err());
        assert!(failing.next().await.is_none());
    }
}
