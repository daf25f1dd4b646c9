//! Mints a client URL, then sends to a group, a user and the whole hub.
//!
//! Run with a server running (`cargo run -p hubcast-server`), passing the connection string
//! it printed:
//!
//! ```sh
//! HUBCAST_CONNECTION_STRING='Endpoint=http://127.0.0.1:8080;AccessKey=...;Version=1.0;' \
//!     cargo run -p hubcast-sdk --example send
//! ```
//!
//! `HUBCAST_GRPC` sets the gRPC address (default `127.0.0.1:50051`).

use std::time::Duration;

use hubcast_sdk::{ClientTokenOptions, Message, SendOptions, ServiceClient};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let connection_string = std::env::var("HUBCAST_CONNECTION_STRING")
        .map_err(|_| "set HUBCAST_CONNECTION_STRING to the line the server printed")?;
    let grpc = std::env::var("HUBCAST_GRPC").unwrap_or_else(|_| "127.0.0.1:50051".into());
    let client = ServiceClient::connect(&connection_string, &grpc).await?;

    let access = client.client_access(
        "chat",
        &ClientTokenOptions::user("alice")
            .role("webpubsub.joinLeaveGroup")
            .group("room1"),
    );
    println!("a client can connect to: {}", access.url);

    client
        .send_to_group("chat", "room1", "hello, room1", SendOptions::new())
        .await?;
    client
        .send_to_user(
            "chat",
            "alice",
            Message::json(r#"{"kind":"notice","text":"hello, alice"}"#),
            SendOptions::new().ttl(Duration::from_secs(60)),
        )
        .await?;
    client
        .send_to_all(
            "chat",
            Message::binary(vec![0xde, 0xad, 0xbe, 0xef]),
            SendOptions::new().filter("'room1' in groups"),
        )
        .await?;
    println!("sent");
    Ok(())
}
