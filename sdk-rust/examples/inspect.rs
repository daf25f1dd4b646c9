//! Prints a hub's statistics, its groups and its connections with their details.
//!
//! Run with a server running (`cargo run -p hubcast-server`):
//!
//! ```sh
//! HUBCAST_CONNECTION_STRING='Endpoint=http://127.0.0.1:8080;AccessKey=...;Version=1.0;' \
//!     cargo run -p hubcast-sdk --example inspect -- chat
//! ```
//!
//! The argument is the hub (default `chat`); `HUBCAST_GRPC` sets the gRPC address (default
//! `127.0.0.1:50051`).

use hubcast_sdk::{PageRequest, ServiceClient};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let connection_string = std::env::var("HUBCAST_CONNECTION_STRING")
        .map_err(|_| "set HUBCAST_CONNECTION_STRING to the line the server printed")?;
    let grpc = std::env::var("HUBCAST_GRPC").unwrap_or_else(|_| "127.0.0.1:50051".into());
    let hub = std::env::args().nth(1).unwrap_or_else(|| "chat".into());
    let client = ServiceClient::connect(&connection_string, &grpc).await?;

    let stats = client.hub_stats(&hub).await?;
    println!(
        "hub {}: {} connections, {} users, {} groups",
        stats.hub, stats.connections, stats.users, stats.groups
    );

    let mut page = Some(PageRequest::first(100));
    while let Some(request) = page.take() {
        let groups = client.list_groups(&hub, request).await?;
        for group in &groups.items {
            println!(
                "group {} ({} connections)",
                group.name, group.connection_count
            );
        }
        page = groups.next(100);
    }

    let mut page = Some(PageRequest::first(100));
    while let Some(request) = page.take() {
        let connections = client.list_connections(&hub, None, "", request).await?;
        for c in &connections.items {
            println!(
                "connection {} user={} protocol={} from={} since={} groups={:?}",
                c.connection_id,
                c.user_id.as_deref().unwrap_or("-"),
                if c.subprotocol.is_empty() {
                    "simple"
                } else {
                    &c.subprotocol
                },
                c.remote_address,
                c.connected_at.map(|t| t.seconds).unwrap_or_default(),
                c.groups,
            );
        }
        page = connections.next(100);
    }
    Ok(())
}
