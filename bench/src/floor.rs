//! The raw floor: the least a WebSocket fan-out server can do on tokio-tungstenite, so
//! Hubcast's numbers have a lower bound measured in the same run.
//!
//! A client names its groups in the upgrade URL (`/?groups=a,b`) and gets the text frame
//! `ok` once it is a member. A text frame `<group> <payload>` from anyone is forwarded,
//! unchanged and shared (no copy per recipient), to every member of `<group>`. Each
//! connection has a writer task that drains its queue and flushes once per batch, like
//! Hubcast's writer. No auth, no routing beyond one map lookup, no protocol.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Read buffer per connection: the same 4 KiB Hubcast uses, so idle memory compares.
const READ_BUFFER_BYTES: usize = 4 * 1024;

type Members = Vec<(u64, mpsc::UnboundedSender<Message>)>;

#[derive(Default)]
struct Groups {
    members: RwLock<HashMap<String, Members>>,
    next_id: AtomicU64,
}

/// Serves the floor on `listen` until the process is killed.
pub(crate) async fn serve(listen: &str) -> Result<(), String> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let groups = Arc::new(Groups::default());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, typically: wait for connections to end.
                eprintln!("floor: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream, groups.clone()));
    }
}

// tungstenite fixes the callback's error type (an HTTP response); it is never built here.
#[allow(clippy::result_large_err)]
async fn connection(stream: TcpStream, groups: Arc<Groups>) {
    let mut wanted = Vec::new();
    let callback = |request: &Request, response: Response| {
        if let Some(query) = request.uri().query() {
            for pair in query.split('&') {
                if let Some(list) = pair.strip_prefix("groups=") {
                    wanted.extend(list.split(',').filter(|g| !g.is_empty()).map(String::from));
                }
            }
        }
        Ok(response)
    };
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
    let Ok(ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await
    else {
        return;
    };
    let id = groups.next_id.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::unbounded_channel();
    {
        let mut members = groups.members.write().unwrap_or_else(|e| e.into_inner());
        for group in &wanted {
            members
                .entry(group.clone())
                .or_default()
                .push((id, tx.clone()));
        }
    }
    let _ = tx.send(Message::text("ok"));
    let (mut sink, mut stream) = ws.split();
    let writer = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            if sink.feed(first).await.is_err() {
                return;
            }
            while let Ok(next) = rx.try_recv() {
                if sink.feed(next).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(message)) = stream.next().await {
        if let Message::Text(text) = message {
            let Some((group, _)) = text.as_str().split_once(' ') else {
                continue;
            };
            let members = groups.members.read().unwrap_or_else(|e| e.into_inner());
            if let Some(list) = members.get(group) {
                for (_, member) in list {
                    let _ = member.send(Message::Text(text.clone()));
                }
            }
        }
    }
    {
        let mut members = groups.members.write().unwrap_or_else(|e| e.into_inner());
        for group in &wanted {
            if let Some(list) = members.get_mut(group) {
                list.retain(|(member, _)| *member != id);
                if list.is_empty() {
                    members.remove(group);
                }
            }
        }
    }
    drop(tx);
    writer.abort();
}
