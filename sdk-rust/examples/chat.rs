//! A terminal chat room: joins a group, prints what others say, and sends every line you type.
//!
//! Run with:
//!
//! ```text
//! # 1. A server with a known access key:
//! cargo run -p hubcast-server -- --access-key chat-example-key-0123456789abcdef
//! # 2. In two more terminals, one per user (alice, then bob):
//! export HUBCAST_URL="$(cargo run -q -p hubcast-server -- --access-key chat-example-key-0123456789abcdef \
//!     token --hub chat --user alice --role webpubsub.joinLeaveGroup --role webpubsub.sendToGroup)"
//! cargo run -p hubcast-sdk --example chat -- lobby
//! ```
//!
//! Kill the server and start it again: the client reconnects and rejoins the room.

use hubcast_sdk::{Client, Event, Payload};
use tokio::io::{AsyncBufReadExt as _, BufReader};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("HUBCAST_URL").map_err(|_| "set HUBCAST_URL to a client URL")?;
    let room = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "lobby".to_owned());

    let (client, mut events) = Client::builder(url).connect().await?;
    client.join_group(room.as_str()).await?;
    println!(
        "joined {room} as {:?}; type to talk, Ctrl-D to leave",
        client.user_id()
    );

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line? {
                Some(line) if !line.trim().is_empty() => {
                    // Our own lines are not echoed back to us.
                    if let Err(e) = client.send_to_group(room.as_str(), line).no_echo(true).await {
                        eprintln!("not sent: {e}");
                    }
                }
                Some(_) => {}
                None => break,
            },
            event = events.recv() => match event {
                Some(Event::GroupMessage(m)) => {
                    let who = m.from_user_id.as_deref().unwrap_or("someone");
                    match m.payload {
                        Payload::Text(text) => println!("{who}: {text}"),
                        Payload::Json(json) => println!("{who}: {json}"),
                        other => println!("{who} sent {:?} data", other.data_type()),
                    }
                }
                Some(Event::Connected(c)) => println!("(connected: {})", c.connection_id),
                Some(Event::Disconnected(d)) => println!("(disconnected: {:?})", d.reason),
                Some(Event::RejoinGroupFailed(f)) => println!("(could not rejoin {}: {})", f.group, f.error),
                Some(Event::Stopped) | None => break,
                Some(_) => {}
            },
        }
    }
    client.stop().await;
    Ok(())
}
