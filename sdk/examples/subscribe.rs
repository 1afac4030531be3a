//! Consumes a subscription with a handler: `Ok` acks, a retryable error
//! nacks, a permanent error dead-letters. Stops on Ctrl-C.
//!
//! ```sh
//! cargo run -p eventbus-sdk --example subscribe -- http://127.0.0.1:50051
//! ```

use eventbus::{Client, HandlerError, Message, SubscriptionSettings};

#[tokio::main]
async fn main() -> eventbus::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
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
        Err(e) if e.code() == Some(eventbus::Code::AlreadyExists) => {}
        Err(e) => return Err(e),
    }

    let consume = client.subscribe("orders", "billing").run(
        |msg: Message| async move {
            // A payload that is not JSON will never parse: dead-letter it.
            let order: serde_json::Value = msg.json().map_err(HandlerError::permanent)?;
            println!("attempt {} of {}: {order}", msg.attempt(), msg.event_id());
            Ok(())
        },
        8,
    );
    tokio::select! {
        result = consume => result,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
