//! The DLQ runbook: count dead letters by type and reason, then redrive one
//! event type after the handler was fixed.
//!
//! ```sh
//! cargo run -p eventbus-sdk --example dead_letters -- http://127.0.0.1:50051 order.created
//! ```

use std::collections::BTreeMap;

use eventbus::{v1, Client, DeadLetters};

#[tokio::main]
async fn main() -> eventbus::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let fixed_type = args.next();
    let admin = Client::connect(url).await?.admin();

    let dead = admin
        .list_dead_letters(
            "orders",
            "billing",
            v1::DeadLetterFilter::default(),
            100_000,
        )
        .await?;
    let mut groups: BTreeMap<(String, String), usize> = BTreeMap::new();
    for d in &dead {
        let ty = d
            .event
            .as_ref()
            .map(|e| e.r#type.clone())
            .unwrap_or_default();
        *groups.entry((ty, d.reason.clone())).or_default() += 1;
    }
    println!("{:>6}  {:<24} reason", "count", "type");
    for ((ty, reason), n) in groups {
        println!("{n:>6}  {ty:<24} {reason}");
    }

    if let Some(ty) = fixed_type {
        let only_that_type = DeadLetters::Matching(v1::DeadLetterFilter {
            types: vec![ty.clone()],
            ..Default::default()
        });
        let n = admin
            .redrive_dead_letters("orders", "billing", only_that_type, false)
            .await?;
        println!("redrove {n} dead letters of type {ty}");
    }
    Ok(())
}
