//! Page tokens of the List RPCs (`server/src/grpc/paging.rs`): client bytes
//! that must be a token the server issued.
//!
//! Modes (first byte):
//! * 0, client bytes: the rest as a token (UTF-8, lossily), decoded as a
//!   name token (ListTopics, ListSubscriptions) and as a sequence token
//!   (ListDeadLetters). A decoded name token re-encodes to exactly the
//!   input; every rejection is INVALID_ARGUMENT.
//! * 1, encoder side: an arbitrary set of names paged with an arbitrary page
//!   size yields every name exactly once, in order, in pages no larger than
//!   the limit; an arbitrary sequence number round-trips its token.
#![no_main]

use std::collections::BTreeSet;

use arbitrary::Arbitrary;
use eventbus_fuzz::{expect_invalid_argument, with_mode, within_budget, STORED_BYTES_FACTOR};
use eventbus_server::grpc::parse::{
    decode_name_token, decode_seq_token, name_token, seq_token, Limits, PageRequest,
};

eventbus_fuzz::fuzz_modes!(seeds: seeds, modes: [client_bytes, encoder_side]);

fn client_bytes(data: &[u8]) {
    let token = String::from_utf8_lossy(data);
    match within_budget(token.len(), STORED_BYTES_FACTOR, || {
        decode_name_token(&token)
    }) {
        Ok(Some(name)) => assert_eq!(name_token(&name), token, "one name, one token"),
        Ok(None) => assert!(token.is_empty()),
        Err(status) => expect_invalid_argument(&status),
    }
    match within_budget(token.len(), STORED_BYTES_FACTOR, || {
        decode_seq_token(&token)
    }) {
        Ok(Some(seq)) => assert_eq!(decode_seq_token(&seq_token(seq)).ok(), Some(Some(seq))),
        Ok(None) => assert!(token.is_empty()),
        Err(status) => expect_invalid_argument(&status),
    }
}

#[derive(Debug, Arbitrary)]
struct EncoderInput {
    names: BTreeSet<String>,
    page_size: u32,
    seq: u64,
}

fn encoder_side(data: &[u8]) {
    let Some(input) = eventbus_fuzz::structured::<EncoderInput>(data) else {
        return;
    };
    assert_eq!(
        decode_seq_token(&seq_token(input.seq)).ok(),
        Some(Some(input.seq))
    );

    // Small page sizes exercise many pages; 0 means the default.
    let page_size = input.page_size % 8;
    let limits = Limits::default();
    let limit = limits.page_size(page_size);
    assert!((1..=limits.max_page_size).contains(&limit));
    // Names are never empty (validate_name), and the token of "" would be
    // the empty token, which means "first page".
    let all: Vec<String> = input.names.into_iter().filter(|n| !n.is_empty()).collect();
    let mut seen = Vec::new();
    let mut token = String::new();
    for _ in 0..=all.len() {
        let (items, next) = PageRequest::parse(&limits, page_size, &token)
            .expect("our own token is valid")
            .page(all.clone(), |s| s.as_str());
        assert!(items.len() <= limit);
        seen.extend(items);
        if next.is_empty() {
            break;
        }
        token = next;
    }
    assert_eq!(seen, all, "paging must yield every name once, in order");
}

/// Tokens as the List RPCs return them.
fn seeds() -> Vec<Vec<u8>> {
    vec![
        with_mode(0, name_token("orders.v1").as_bytes()),
        with_mode(0, name_token("payments-eu_2").as_bytes()),
        with_mode(0, seq_token(0).as_bytes()),
        with_mode(0, seq_token(1_234_567).as_bytes()),
    ]
}
