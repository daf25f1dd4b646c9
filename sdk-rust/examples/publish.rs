//! Publishes numbered JSON messages to a group and prints each ack.
//!
//! Run with:
//!
//! ```text
//! # 1. A server with a known access key:
//! cargo run -p hubcast-server -- --access-key publish-example-key-0123456789abcdef
//! # 2. A client URL allowed to publish, then the publisher (group, count):
//! export HUBCAST_URL="$(cargo run -q -p hubcast-server -- --access-key publish-example-key-0123456789abcdef \
//!     token --hub chat --user publisher --role webpubsub.sendToGroup)"
//! cargo run -p hubcast-sdk --example publish -- lobby 10
//! ```
//!
//! Add `protobuf` as a third argument to speak `protobuf.reliable.webpubsub.azure.v1`.

use std::time::{SystemTime, UNIX_EPOCH};

use hubcast_sdk::{Client, Payload, Protocol};
use serde::Serialize;

#[derive(Serialize)]
struct Reading {
    n: u32,
    unix_ms: u128,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("HUBCAST_URL").map_err(|_| "set HUBCAST_URL to a client URL")?;
    let mut args = std::env::args().skip(1);
    let group = args.next().unwrap_or_else(|| "lobby".to_owned());
    let count: u32 = args.next().map_or(Ok(10), |c| c.parse())?;
    let protocol = match args.next().as_deref() {
        Some("protobuf") => Protocol::ProtobufReliable,
        _ => Protocol::JsonReliable,
    };

    let (client, _events) = Client::builder(url)
        .with_protocol(protocol)
        .connect()
        .await?;
    println!(
        "connected as {:?} ({})",
        client.connection_id(),
        protocol.name()
    );
    for n in 1..=count {
        let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
        let payload = Payload::json(&Reading { n, unix_ms })?;
        match client.send_to_group(group.as_str(), payload).await {
            Ok(ack) => println!(
                "#{n}: ack {:?} (duplicate: {})",
                ack.ack_id(),
                ack.is_duplicate()
            ),
            Err(e) if e.is_forbidden() => {
                return Err(format!("not allowed to publish to {group}").into());
            }
            Err(e) => println!("#{n}: failed: {e}"),
        }
    }
    client.stop().await;
    Ok(())
}
