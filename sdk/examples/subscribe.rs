//! Consumes a subscription with a handler: `Ok` acks, a retryable error
//! nacks, a permanent error dead-letters. Stops on Ctrl-C, or after MAX
//! events when given.
//!
//! ```sh
//! cargo run -p eventbus-sdk --example subscribe -- http://127.0.0.1:50051 [MAX]
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use eventbus::{Client, Code, HandlerError, Message, SubscriptionSettings};
use tokio::sync::Notify;

#[tokio::main]
async fn main() -> eventbus::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let max: Option<usize> = args.next().and_then(|n| n.parse().ok());
    let client = Client::connect(url).await?;

    // Create the subscription if it does not exist yet.
    let settings = SubscriptionSettings {
        from_earliest: true,
        max_delivery_attempts: Some(5),
        ..Default::default()
    };
    match client
        .admin()
        .create_subscription("orders", "billing", settings)
        .await
    {
        Ok(_) => {}
        Err(e) if e.code() == Some(Code::AlreadyExists) => {}
        Err(e) => return Err(e),
    }

    let handled = Arc::new(AtomicUsize::new(0));
    let enough = Arc::new(Notify::new());
    let (count, done) = (handled.clone(), enough.clone());
    let stop = async {
        tokio::select! {
            _ = enough.notified() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    // On stop, handlers already running finish and are acked before it returns.
    client
        .subscribe("orders", "billing")
        .run_until(
            move |msg: Message| {
                let (count, done) = (count.clone(), done.clone());
                async move {
                    // A payload that is not JSON will never parse: dead-letter it.
                    let order: serde_json::Value = msg.json().map_err(HandlerError::permanent)?;
                    println!("attempt {} of {}: {order}", msg.attempt(), msg.event_id());
                    if Some(count.fetch_add(1, Ordering::SeqCst) + 1) == max {
                        done.notify_one();
                    }
                    Ok(())
                }
            },
            8,
            stop,
        )
        .await?;
    println!("handled {} events", handled.load(Ordering::SeqCst));
    Ok(())
}
