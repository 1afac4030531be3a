//! `eventbus subscribe <topic> <subscription>`: join the subscription as a
//! member and print deliveries as they arrive.

use clap::Args;
use eventbus::v1::{AckRequest, Delivery, SubscribeRequest};
use serde_json::json;

use super::output::{event_json, event_text};
use super::Ctx;

/// The server's default flow-control window.
const DEFAULT_IN_FLIGHT: u32 = 256;
/// The server's default max-ack-ids-per-call.
const ACK_IDS_PER_CALL: usize = 1000;

#[derive(Args)]
#[command(after_help = "\
Without --ack this only looks: deliveries stay leased until the command ends,
then the server redelivers them (to this or another member). With --ack each
delivery is acked after it has been printed, so a failed write (closed pipe)
leaves it for redelivery.

Output: one line per delivery. With --json, JSON lines: the event fields
(see `eventbus --help`) plus \"ack_id\" and \"delivery_attempt\".")]
pub struct SubscribeArgs {
    topic: String,
    subscription: String,
    /// Ack each delivery after printing it.
    #[arg(long)]
    ack: bool,
    /// Stop after this many deliveries. Default: run until interrupted.
    #[arg(long, value_name = "N")]
    max: Option<u64>,
    /// Deliveries leased to this command at a time. Default: the server's
    /// (256), or --max if smaller.
    #[arg(long)]
    max_in_flight: Option<u32>,
}

pub async fn run(ctx: Ctx, args: SubscribeArgs) -> anyhow::Result<()> {
    // With --max N, lease no more than N, so nothing beyond them is held
    // (and delayed for other members) while this command exits.
    let max_in_flight = args.max_in_flight.unwrap_or_else(|| match args.max {
        Some(n) => n.clamp(1, u64::from(DEFAULT_IN_FLIGHT)) as u32,
        None => 0,
    });
    if args.max == Some(0) {
        return Ok(());
    }
    // The raw stream, not the SDK's Subscription: this command looks without
    // extending leases, and acks only what it printed.
    let mut events = ctx.client.events();
    let mut stream = events
        .subscribe(SubscribeRequest {
            topic: args.topic.clone(),
            subscription: args.subscription.clone(),
            max_in_flight,
        })
        .await?
        .into_inner();
    let mut received = 0u64;
    while let Some(batch) = stream.message().await? {
        let remaining = args.max.map_or(usize::MAX, |m| (m - received) as usize);
        let deliveries: Vec<Delivery> = batch.deliveries.into_iter().take(remaining).collect();
        for d in &deliveries {
            print(&ctx, d)?;
        }
        received += deliveries.len() as u64;
        // A stream may deliver more per message than one Ack may carry
        // (max-ack-ids-per-call, 1000 by default).
        for chunk in deliveries.chunks(ACK_IDS_PER_CALL).filter(|_| args.ack) {
            events
                .ack(AckRequest {
                    topic: args.topic.clone(),
                    subscription: args.subscription.clone(),
                    ack_ids: chunk.iter().map(|d| d.ack_id.clone()).collect(),
                })
                .await?;
        }
        if args.max.is_some_and(|m| received >= m) {
            break;
        }
    }
    Ok(())
}

fn print(ctx: &Ctx, d: &Delivery) -> anyhow::Result<()> {
    let event = d.event.clone().unwrap_or_default();
    if ctx.out.json {
        let mut v = event_json(&event);
        v["ack_id"] = json!(d.ack_id);
        v["delivery_attempt"] = json!(d.delivery_attempt);
        ctx.out.json_line(&v)
    } else {
        ctx.out.text(&event_text(
            &event,
            &format!("attempt={}", d.delivery_attempt),
        ))
    }
}
