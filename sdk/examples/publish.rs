//! Publishes a few JSON events and prints where they were stored.
//!
//! ```sh
//! cargo run -p eventbus-sdk --example publish -- http://127.0.0.1:50051
//! ```

use eventbus::{Client, Event};

#[tokio::main]
async fn main() -> eventbus::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let client = Client::connect(url).await?;
    let orders = client.publisher("orders");

    // `send` queues without waiting, so these share Publish calls.
    let mut pending = Vec::new();
    for id in 0..10 {
        let event = Event::json("order.created", &serde_json::json!({ "id": id }))?
            .key(format!("order-{id}"));
        pending.push(orders.send(event).await?);
    }
    for handle in pending {
        let stored = handle.await?;
        println!("partition {} offset {}", stored.partition, stored.offset);
    }
    orders.close().await;
    Ok(())
}
